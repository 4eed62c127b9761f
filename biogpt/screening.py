"""Exact greedy choice without the full fp32 output projection: an int8 screen plus a proof.

generate() uses it for plain greedy decoding where it pays (generation.greedy_screen).

Greedy decoding only needs argmax_i f_i, where f = F.linear(h, W, b) is the fp32 projection
the model (and transformers) would compute. On a small model that projection (42,384 x 256
fp32 = 43 MB) costs several times the whole decoder stack. `ScreenedArgmax` finds the same
index from an int8 copy of W (fbgemm's dynamic int8 linear, 10.8 MB, often cache resident):

 1. approximate logits  y~ = fbgemm(h) = (q * s) . h~  (q int8 per row, h~ = h rounded to
    fbgemm's uint8 grid of step `a`, exact int32 accumulation);
 2. a rigorous bound  |f_i - y~_i| <= b_i  for every row i, from quantities that are exact:
      weight rounding     |(w_i - q_i s_i) . h|    <= min(||d_i||_inf ||h||_1, ||d_i||_2 ||h||_2)
      activation grid     |(q_i s_i) . (h - h~)|  <= (a/2)(1 + 1e-3) ||q_i s_i||_1
      fp32 error of f     |f_i - w_i . h|          <= gamma_K * sum_j |w_ij h_j|     (any summation
                                                      order, FMA or not; gamma_K = K u / (1 - K u))
      fp32 error of y~ (fbgemm scales the exact int32 sums in float: a few ulps of |y~_i|, plus
      a few ulps of 255 a ||q_i s_i||_1 if it subtracts the zero-point term in float), of these
      bounds and of the bias: the relative 1e-5 slack and the 1e-3 on the half step (>= 8x margin).
    d_i = w_i - q_i s_i and the norms are computed once in float64 from the exact values.
 3. candidates: rows whose upper bound y~_i + b_i reaches the largest lower bound
    max_k (y~_k - b_k). Every other row j has f_j < f_k for some k, so cannot be the argmax.
    One candidate: it is the answer, no fp32 arithmetic needed (the common case).
 4. several: their exact logits g = F.linear(h, W[C]) from the gathered fp32 rows. g_i is not
    promised to be bit-identical to f_i (measured with MKL here: identical when the gathered row
    count is a multiple of 4; rows in the count's remainder take another code path and differ by
    up to ~6 ulp of the logit), but both are
    within gamma_K sum_j|w_ij h_j| of the real dot product, so |g_i - f_i| <= D_i (twice that).
    If the best g beats every other candidate by more than D_best + D_other, it is argmax f
    (strictly, so ties never arise); otherwise fall back to the full F.linear and torch.argmax.

The fbgemm kernel's int32 accumulation is exact only where it does not saturate (AVX2 without
VNNI pairs u8*s8 products into saturating int16), and the activation term assumes fbgemm's
quantization parameters (ChooseQuantizationParams over [min(h, 0), max(h, 0)], 255 levels). A
construction-time self-test checks both on the engine in use (worst-case operands; an identity
weight that reads back fbgemm's rounded input) and uses reduce_range (7-bit activations, no
saturation possible) if the first fails.

Valid only when greedy picks argmax of the raw logits (no repetition penalty, bans, min_new_tokens)
and fp32 matmuls are IEEE fp32 (torch.get_float32_matmul_precision() == "highest").
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .quantize import quantize_int8

UNIT_ROUNDOFF = 2.0**-24  # fp32
# Per element, fbgemm's uint8 grid is off by at most half a step (nearest rounding; the nudged
# zero point moves the ends of the range by at most half a step too). 1e-3 covers the float error
# of x * (1 / scale) (|x| / scale <= 255, so ~3e-5 steps).
ACTIVATION_HALF_STEP = 0.5 * (1.0 + 1e-3)
SMALL_SCALE_THRESHOLD = 6.1e-5  # fbgemm raises smaller scales to this
RELATIVE_SLACK = 1e-5


@dataclass
class ScreenStats:
    steps: int = 0
    candidates: list[int] = field(default_factory=list)  # per row-step, after the fine filter
    coarse: list[int] = field(default_factory=list)  # per row-step, after the scalar threshold
    exact_rows: int = 0  # rows for which gathered fp32 logits were computed
    fallbacks: int = 0  # full fp32 projections

    def summary(self) -> dict[str, float]:
        n = max(len(self.candidates), 1)
        return {
            "steps": self.steps,
            "mean_candidates": sum(self.candidates) / n,
            "max_candidates": max(self.candidates, default=0),
            "single_candidate_share": sum(c == 1 for c in self.candidates) / n,
            "mean_coarse": sum(self.coarse) / n,
            "fallbacks": self.fallbacks,
        }


def _gamma(k: int) -> float:
    return k * UNIT_ROUNDOFF / (1 - k * UNIT_ROUNDOFF)


def _fbgemm_available() -> bool:
    return bool({"fbgemm", "x86"} & set(torch.backends.quantized.supported_engines))


def _pack(q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zero = torch.zeros(q.shape[0], dtype=torch.long)
        qweight = torch._make_per_channel_quantized_tensor(q, scale.double(), zero, 0)
        return torch.ops.quantized.linear_prepack(qweight, None if bias is None else bias.detach().float())


def fbgemm_accumulates_exactly(reduce_range: bool, in_features: int = 256) -> bool:
    """Checks the two facts the bound rests on, on the kernel and engine in use.

    1. Exact integer accumulation: worst case for int16 saturation (activations at the top of
       the uint8 grid, weights at +-127); a saturating kernel is off by thousands of units.
    2. The activation grid: with an identity weight the output is fbgemm's rounded input, which
       must be within ACTIVATION_HALF_STEP steps of the input, the step being the one the screen
       assumes (span of [min(x, 0), max(x, 0)] over 255 levels, or 127 with reduce_range).
    """
    levels = 127 if reduce_range else 255
    rows = 32
    q = torch.full((rows, in_features), 127, dtype=torch.int8)
    q[1::2] = -127
    q[2::4, ::2] = -127  # mixed signs too
    scale = torch.full((rows,), 1.0 / 127)
    packed = _pack(q, scale, None)
    for x in (torch.ones(1, in_features), -torch.ones(1, in_features),
              torch.linspace(-1, 1, in_features)[None], torch.linspace(0, 1, in_features)[None]):
        got = torch.ops.quantized.linear_dynamic(x, packed, reduce_range)
        want = (x.double() @ (q.double() * scale.double()[:, None]).T).float()
        step = float(x.max().clamp(min=0) - x.min().clamp(max=0)) / levels
        if not torch.allclose(got, want, rtol=0, atol=0.51 * step * in_features + 1e-4):
            return False
    eye = _pack(torch.eye(in_features, dtype=torch.int8) * 64, torch.full((in_features,), 1.0 / 64), None)  # W = I exactly
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


def _fp32_matmuls_are_ieee() -> bool:
    """The reference projection must be IEEE fp32 (no TF32/bf16 shortcuts) for the fp32 bound to hold."""
    if torch.get_float32_matmul_precision() != "highest":
        return False
    for backend in (getattr(torch.backends, "mkldnn", None), getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)):
        precision = getattr(backend, "fp32_precision", "none") if backend is not None else "none"
        if precision not in ("none", "ieee"):
            return False
    return True


def screen_applicable() -> bool:
    """fbgemm is there and fp32 matmuls are IEEE: a screen can be built and trusted."""
    return _fp32_matmuls_are_ieee() and _fbgemm_available()


class ScreenedArgmax:
    """argmax(F.linear(h, weight, bias), -1) for fp32 h [rows, K], same index, most of the work in int8."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        if not _fbgemm_available():
            raise RuntimeError("the int8 screen needs PyTorch's fbgemm/x86 quantized engine")
        self.weight = weight  # the model's own fp32 parameter: no copy
        self.bias = bias
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise ValueError("ScreenedArgmax works on a CPU fp32 weight")
        n, k = weight.shape
        self.out_features, self.in_features = n, k
        with torch.no_grad():
            w = weight.detach().contiguous()
            q, s = quantize_int8(w)
            self._packed = _pack(q, s, bias)
            w64 = w.double()
            deq = q.double() * s.double()[:, None]
            delta = (w64 - deq).abs()
            gamma = _gamma(k)
            up = 1.0 + 1e-6  # rounding these float64 values to fp32 must not shrink them
            # weight term + fp32 error of the reference, per norm of h used
            self._a_inf = ((delta.amax(1) + gamma * w64.abs().amax(1)) * up).float()
            self._a_two = ((delta.norm(dim=1) + gamma * w64.norm(dim=1)) * up).float()
            self._deq_l1 = (deq.abs().sum(1) * up).float()
            # |g_i - f_i| <= 2 gamma sum_j |w_ij h_j| <= 2 gamma min(||w_i||_inf ||h||_1, ||w_i||_2 ||h||_2)
            self._w_inf = (2 * gamma * w64.abs().amax(1) * up).float()
            self._w_two = (2 * gamma * w64.norm(dim=1) * up).float()
            self._max_a_inf = float(self._a_inf.max())
            self._max_a_two = float(self._a_two.max())
            self._max_deq_l1 = float(self._deq_l1.max())
            self._bias_slack = 0.0 if bias is None else float(bias.detach().abs().max()) * 1e-5
            # float64 copies of the fp32 values, for the numpy bookkeeping
            self._np_a_inf, self._np_a_two, self._np_deq_l1, self._np_w_inf, self._np_w_two = (
                t.double().numpy() for t in (self._a_inf, self._a_two, self._deq_l1, self._w_inf, self._w_two)
            )
        self.reduce_range = not fbgemm_accumulates_exactly(False, k)
        if self.reduce_range and not fbgemm_accumulates_exactly(True, k):
            raise RuntimeError("fbgemm's int8 linear does not accumulate exactly here; the screen would not be sound")
        self._levels = 127 if self.reduce_range else 255
        self.stats: ScreenStats | None = None  # set one to count candidates and fallbacks (tests, benchmarks)

    @property
    def nbytes(self) -> int:
        return self.out_features * self.in_features + 6 * 4 * self.out_features

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        """h: [rows, K] fp32 (the final LayerNorm's output at the last position) -> ids [rows]."""
        if h.dim() != 2:
            raise ValueError("h must be [rows, in_features]")
        h = h.detach().contiguous()
        if not _fp32_matmuls_are_ieee():  # e.g. torch.set_float32_matmul_precision("medium") since construction
            return torch.argmax(F.linear(h, self.weight, self.bias), dim=-1)
        approx = torch.ops.quantized.linear_dynamic(h, self._packed, self.reduce_range)  # [rows, N]
        # The bookkeeping is on small or 1-D arrays: numpy, single-threaded, costs microseconds
        # where torch's parallel reductions can stall on a busy machine.
        hn = h.numpy().astype(np.float64)
        if not np.isfinite(hn).all():  # NaN/inf: let the full projection and torch.argmax decide
            if self.stats is not None:
                self.stats.fallbacks += 1
            return torch.argmax(F.linear(h, self.weight, self.bias), dim=-1)
        # One activation step for the whole batch (fbgemm quantizes the input tensor as a whole).
        span = max(float(hn.max()), 0.0) - min(float(hn.min()), 0.0)
        half_step = ACTIVATION_HALF_STEP * max(span / self._levels, SMALL_SCALE_THRESHOLD) * (1 + 1e-6)
        ys = approx.numpy()
        out = [self._row(h[r : r + 1], hn[r], ys[r], half_step) for r in range(h.shape[0])]
        if self.stats is not None:
            self.stats.steps += 1
        return torch.tensor(out, dtype=torch.long)

    def _row(self, h: torch.Tensor, hn: np.ndarray, approx: np.ndarray, half_step: float) -> int:
        h1 = float(np.abs(hn).sum())
        h2 = math.sqrt(float(hn @ hn))
        top = float(approx.max())
        # Coarse: the largest bound of any row, a scalar; rows more than twice it below the top go.
        b_max = min(self._max_a_inf * h1, self._max_a_two * h2) + half_step * self._max_deq_l1
        b_max = b_max * (1 + RELATIVE_SLACK) + RELATIVE_SLACK * abs(top) + self._bias_slack + 1e-30
        coarse = np.flatnonzero(approx >= top - 2.0 * b_max * (1 + 1e-6))
        if self.stats is not None:
            self.stats.coarse.append(len(coarse))
        if len(coarse) == 1:  # it holds the row with the largest lower bound, so it is that row
            if self.stats is not None:
                self.stats.candidates.append(1)
            return int(coarse[0])
        # Fine: per-row bounds over the coarse set (it holds the row with the largest lower bound).
        y = approx[coarse].astype(np.float64)
        b = np.minimum(self._np_a_inf[coarse] * h1, self._np_a_two[coarse] * h2) + half_step * self._np_deq_l1[coarse]
        b = b * (1 + RELATIVE_SLACK) + RELATIVE_SLACK * np.abs(y) + self._bias_slack + 1e-30
        cand = coarse[(y + b) >= (y - b).max()]
        if self.stats is not None:
            self.stats.candidates.append(len(cand))
        if len(cand) == 1:
            return int(cand[0])
        # Exact logits of the candidates from gathered fp32 rows, then a proof that the full
        # projection orders them the same way.
        index = torch.from_numpy(cand)
        bias = None if self.bias is None else self.bias.index_select(0, index)
        g = F.linear(h, self.weight.index_select(0, index), bias)[0].numpy().astype(np.float64)
        if self.stats is not None:
            self.stats.exact_rows += len(cand)
        d = np.minimum(self._np_w_inf[cand] * h1, self._np_w_two[cand] * h2)
        if self.bias is not None:
            d = d + 2 * UNIT_ROUNDOFF * np.abs(g)  # the bias addition rounds once more
        d = d * (1 + RELATIVE_SLACK) + 1e-30
        best = int(np.argmax(g))  # first maximum: the lowest vocabulary index among equals
        others = g + d
        others[best] = -math.inf
        if g[best] - d[best] > others.max():
            return int(cand[best])
        if self.stats is not None:
            self.stats.fallbacks += 1
        return int(torch.argmax(F.linear(h, self.weight, self.bias)[0]))
