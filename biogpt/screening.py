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
self-test checks both on the machine in use, once (biogpt.kernels: worst-case operands; an
identity weight that reads back fbgemm's rounded input), and the screen uses reduce_range (7-bit
activations, no saturation possible) where the 8-bit check fails or is distrusted.

Valid only when greedy picks argmax of the raw logits (no repetition penalty, bans, min_new_tokens)
and fp32 matmuls are IEEE fp32 (torch.get_float32_matmul_precision() == "highest").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from . import kernels
from .kernels import ACTIVATION_HALF_STEP, SMALL_SCALE_THRESHOLD
from .quantize import quantize_int8

UNIT_ROUNDOFF = 2.0**-24  # fp32
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
    """fbgemm is exact here (at 8- or 7-bit activations) and fp32 matmuls are IEEE: a screen can
    be built and trusted."""
    return _fp32_matmuls_are_ieee() and kernels.fbgemm_reduce_range() is not None


class ScreenedArgmax:
    """argmax(F.linear(h, weight, bias), -1) for fp32 h [rows, K], same index, most of the work in int8."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None):
        reduce_range = kernels.fbgemm_reduce_range()
        if reduce_range is None:
            raise RuntimeError("the int8 screen needs PyTorch's fbgemm int8 linear, exact on this CPU")
        self.weight = weight  # the model's own fp32 parameter: no copy
        self.bias = bias
        if weight.dtype != torch.float32 or weight.device.type != "cpu":
            raise ValueError("ScreenedArgmax works on a CPU fp32 weight")
        n, k = weight.shape
        self.out_features, self.in_features = n, k
        with torch.no_grad():
            w = weight.detach().contiguous()
            q, s = quantize_int8(w)
            self._packed = kernels.fbgemm_pack(q, s, bias)
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
        self.reduce_range = reduce_range
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
