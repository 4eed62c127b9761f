"""CPU matrix kernels whose correctness depends on the machine: each is checked here, on the
machine it runs on, once, before first use, and a layer that asked for one that fails gets the
next correct one instead, with a log line saying which.

Why: fbgemm's int8 linear multiplies uint8 activations by int8 weights. With AVX-512 VNNI the
products accumulate exactly in int32; on AVX2 without VNNI fbgemm adds pairs of products in
saturating int16 first, so activations near the top of the uint8 grid give results wrong by
large amounts (relative error 2.18 on an AMD EPYC with AVX2 only; the bundled LM's int8 text
then agreed with fp32 on 36% of tokens). With 7-bit activations (`reduce_range`) no pair can
saturate. The other kernels are checked the same way so that a broken build or CPU never
serves wrong numbers silently.

The paths, each a name a test or an operator can distrust:
  "fbgemm-u8"  quantized.linear_dynamic, 8-bit activations: fastest; exact with VNNI
  "fbgemm-u7"  the same with 7-bit activations (reduce_range): exact on AVX2 too
  "intmm"      aten._int_mm on per-row int8 activations: exact integers, the slowest
  "int8pack"   aten._weight_int8pack_mm, weight-only int8 with bf16 activations
  "int4pack"   aten._weight_int4pack_mm_for_cpu, weight-only int4 with bf16 activations

One more check lives with its user, since it is made per model: "batch-rows", the decode
batcher's probe that each row of a shared forward is computed as it would be alone
(biogpt.batching.find_row_block); where it fails, each request gets forwards of its own.

BIOGPT_DISTRUST_KERNELS="fbgemm-u8,int4pack" (comma-separated names) treats those checks as
failed, so every fallback can be forced and tested on any CPU. The checks themselves run once
per process; the variable is read at each choice.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings

import torch

DISTRUST_ENV = "BIOGPT_DISTRUST_KERNELS"
PATHS = ("fbgemm-u8", "fbgemm-u7", "intmm", "int8pack", "int4pack")
FORCIBLE = (*PATHS, "batch-rows")  # what BIOGPT_DISTRUST_KERNELS may name
# What an int8 layer tries, in order, for each kernel it can be asked for.
INT8_PREFERENCE = {
    "fbgemm": ("fbgemm-u8", "fbgemm-u7", "intmm", "int8pack"),
    "intmm": ("intmm", "fbgemm-u8", "fbgemm-u7", "int8pack"),
    "int8pack": ("int8pack", "fbgemm-u8", "fbgemm-u7", "intmm"),
}
DESCRIPTIONS = {
    "fbgemm-u8": "fbgemm, 8-bit activations",
    "fbgemm-u7": "fbgemm, 7-bit activations",
    "intmm": "int8 x int8 integer matmul",
    "int8pack": "weight-only int8, bf16 activations",
    "int4pack": "weight-only int4, bf16 activations",
}
# Per element, fbgemm's uint8 grid is off by at most half a step (nearest rounding; the nudged
# zero point moves the ends of the range by at most half a step too). 1e-3 covers the float error
# of x * (1 / scale) (|x| / scale <= 255, so ~3e-5 steps).
ACTIVATION_HALF_STEP = 0.5 * (1.0 + 1e-3)
SMALL_SCALE_THRESHOLD = 6.1e-5  # fbgemm raises smaller activation scales to this

logger = logging.getLogger(__name__)


def distrusted() -> frozenset[str]:
    """The paths named in BIOGPT_DISTRUST_KERNELS (unknown names are refused, so a typo cannot
    leave a test running the path it meant to avoid)."""
    names = frozenset(n.strip() for n in os.environ.get(DISTRUST_ENV, "").split(",") if n.strip())
    unknown = names - set(FORCIBLE)
    if unknown:
        raise ValueError(f"{DISTRUST_ENV} names unknown kernels {sorted(unknown)}; use some of {', '.join(FORCIBLE)}.")
    return names


def is_exact(path: str) -> bool:
    """Whether `path` computes what it should on this machine (checked once), and is not distrusted."""
    if path not in PATHS:
        raise ValueError(f"Unknown kernel path {path!r}; use one of {', '.join(PATHS)}.")
    return path not in distrusted() and _checked(path)


def int8_path(requested: str = "fbgemm") -> str:
    """The first correct path for an int8 layer that asked for `requested` ("fbgemm", "intmm" or
    "int8pack", or a path name); logs the choice once, as a warning when it is a fallback."""
    family = "fbgemm" if requested.startswith("fbgemm") else requested
    if family not in INT8_PREFERENCE:
        raise ValueError(f"Unknown int8 kernel {requested!r}; use one of {', '.join(INT8_PREFERENCE)}.")
    preference = INT8_PREFERENCE[family]
    if requested in PATHS:  # a path asked for by name: it first, then the rest of its family's order
        preference = (requested, *[p for p in preference if p != requested])
    for path in preference:
        if is_exact(path):
            _log_choice(requested, path, preference)
            return path
    raise RuntimeError("No int8 kernel computes correctly on this machine; load the model without quantize.")


def fbgemm_reduce_range() -> bool | None:
    """For fbgemm's int8 linear here: False (8-bit activations are exact), True (only 7-bit are)
    or None (neither: do not use it)."""
    if is_exact("fbgemm-u8"):
        return False
    if is_exact("fbgemm-u7"):
        return True
    return None


def describe(path: str) -> str:
    """The path in words, e.g. 'fbgemm, 7-bit activations'."""
    return DESCRIPTIONS[path]


@functools.cache
def _log_choice(requested: str, path: str, preference: tuple[str, ...]) -> None:
    skipped = preference[: preference.index(path)]
    if skipped:
        reasons = ", ".join(f"{p} {'distrusted' if p in distrusted() else 'failed its check on this CPU'}" for p in skipped)
        logger.warning("int8 layers use %s, not %s (%s).", describe(path), requested, reasons)
    else:
        logger.info("int8 layers use %s (checked on this CPU).", describe(path))


# ---------------------------------------------------------------------------------------------
# The checks: worst-case operands against references computed in float64 from the same integers


@functools.cache
def _checked(path: str) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # deprecation notices of torch.qint8
            ok = _CHECKS[path]()
    except (AttributeError, RuntimeError, NotImplementedError) as error:  # kernel missing from this build
        logger.info("kernel %s is not available here: %s", path, error)
        return False
    if not ok:
        logger.warning("kernel %s gave wrong results in its self-check on this CPU; it will not be used.", path)
    return ok


def fbgemm_available() -> bool:
    return bool({"fbgemm", "x86"} & set(torch.backends.quantized.supported_engines))


def fbgemm_pack(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    """fbgemm's prepacked per-channel int8 weight [out, in] with one fp32 scale per row, bias folded in.

    Building it needs a quantized tensor (torch.qint8), an API PyTorch has deprecated without a
    replacement for this kernel yet; it is used because fbgemm's dynamic linear measured fastest
    of PyTorch's int8 CPU matmuls on these machines (bench/bench_quantize.py --int8-kernels).
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zero = torch.zeros(q.shape[0], dtype=torch.long)
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
        return torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())


def fbgemm_accumulates_exactly(reduce_range: bool, in_features: int = 256) -> bool:
    """Checks the two facts that fbgemm's results (and the greedy screen's bound) rest on.

    1. Exact integer accumulation: worst case for int16 saturation (activations at the top of
       the uint8 grid, weights at +-127); a saturating kernel is off by thousands of units.
    2. The activation grid: with an identity weight the output is fbgemm's rounded input, which
       must be within ACTIVATION_HALF_STEP steps of the input, the step being the one the screen
       assumes (span of [min(x, 0), max(x, 0)] over 255 levels, or 127 with reduce_range).
    """
    if not fbgemm_available():
        return False
    levels = 127 if reduce_range else 255
    q = _worst_case_weights(32, in_features)
    scale = torch.full((q.shape[0],), 1.0 / 127)
    packed = fbgemm_pack(q, scale, None)
    for x in (torch.ones(1, in_features), -torch.ones(1, in_features),
              torch.linspace(-1, 1, in_features)[None], torch.linspace(0, 1, in_features)[None]):
        got = torch.ops.quantized.linear_dynamic(x, packed, reduce_range)
        want = (x.double() @ (q.double() * scale.double()[:, None]).T).float()
        step = float(x.max().clamp(min=0) - x.min().clamp(max=0)) / levels
        if not torch.allclose(got, want, rtol=0, atol=0.51 * step * in_features + 1e-4):
            return False
    eye = fbgemm_pack(torch.eye(in_features, dtype=torch.int8) * 64, torch.full((in_features,), 1.0 / 64), None)  # W = I exactly
    generator = torch.Generator().manual_seed(0)
    tests = [torch.randn(8, in_features, generator=generator) * 10.0 ** e for e in (-6, -3, 0, 2)]
    outliers = torch.randn(8, in_features, generator=generator)
    outliers[:, :3] *= 50
    tests += [outliers, torch.rand(8, in_features, generator=generator) + 0.5, -torch.rand(8, in_features, generator=generator)]
    for x in tests:
        for row in x:
            row = row[None]
            grid = torch.ops.quantized.linear_dynamic(row, eye, reduce_range)  # fbgemm's rounded input
            span = max(float(row.max()), 0.0) - min(float(row.min()), 0.0)
            step = max(span / levels, SMALL_SCALE_THRESHOLD)
            # fbgemm's float scaling of the output adds a few ulps of |x|
            if float((grid.double() - row.double()).abs().max()) > ACTIVATION_HALF_STEP * step + 1e-6 * float(row.abs().max()):
                return False
    return True


def _worst_case_weights(rows: int, in_features: int) -> torch.Tensor:
    """int8 weights at +-127, rows of one sign and rows of mixed signs: they overflow a narrow sum."""
    q = torch.full((rows, in_features), 127, dtype=torch.int8)
    q[1::2] = -127
    q[2::4, ::2] = -127
    return q


def _worst_case_int8(rows: int = 32, in_features: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations and weights at +-127 with mixed signs: the operands that overflow a narrow sum."""
    q = _worst_case_weights(rows, in_features)
    x = torch.full((4, in_features), 127, dtype=torch.int8)
    x[1] = -127
    x[2, ::3] = -127
    x[3] = torch.arange(in_features) % 255 - 127
    return x, q


def _intmm_is_exact() -> bool:
    x, q = _worst_case_int8()
    return torch.equal(torch._int_mm(x, q.t()), x.long().mm(q.long().t()).int())


def _weight_only_close(got: torch.Tensor, x: torch.Tensor, weight: torch.Tensor) -> bool:
    """A bf16-output kernel against float64: within 1% of sum_j |x_j w_ij| per element (bf16
    rounding of the output and of the activations is well under that; a wrong kernel is off by
    the whole magnitude)."""
    want = x.double() @ weight.double().T
    budget = 1e-2 * (x.double().abs() @ weight.double().abs().T) + 1e-6
    return bool(((got.double() - want).abs() <= budget).all())


def _int8pack_is_exact() -> bool:
    x, q = _worst_case_int8()
    x = (x.float() / 127).to(torch.bfloat16)
    scale = torch.full((q.shape[0],), 2.0**-7, dtype=torch.bfloat16)  # a power of two: exact in bf16
    got = torch.ops.aten._weight_int8pack_mm(x, q, scale)
    return _weight_only_close(got, x, q.double() * scale.double()[:, None])


def _int4pack_is_exact(group: int = 128) -> bool:
    out_features, in_features = 32, 512
    q = (torch.arange(out_features * in_features) * 7 % 16).reshape(out_features, in_features).to(torch.int32)
    q[::2, ::2] = 15  # the ends of the range, mixed
    q[1::2, 1::2] = 0
    groups = in_features // group
    scale = torch.full((out_features, groups), 2.0**-4)
    zero = torch.full((out_features, groups), 0.25)
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1)
    scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    x = torch.ones(3, in_features)
    x[1, ::2] = -1
    x[2] = torch.linspace(-1, 1, in_features)
    x = x.to(torch.bfloat16)
    got = torch.ops.aten._weight_int4pack_mm_for_cpu(x, packed, group, scales_and_zeros)
    weight = (q.double() - 8) * 2.0**-4 + 0.25  # (q - 8) * scale + zero, per group (all alike here)
    return _weight_only_close(got, x, weight)


_CHECKS = {
    "fbgemm-u8": lambda: fbgemm_accumulates_exactly(False),
    "fbgemm-u7": lambda: fbgemm_accumulates_exactly(True),
    "intmm": _intmm_is_exact,
    "int8pack": _int8pack_is_exact,
    "int4pack": _int4pack_is_exact,
}
