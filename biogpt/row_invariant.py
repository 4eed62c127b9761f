"""Linear layers whose rows do not depend on how many rows share the call (oneDNN, not MKL).

MKL (behind F.linear) computes a single row with another kernel than several rows, so one
row's result depends on how many rows share the call. oneDNN's matmul gives every row the
same bits for any even number of rows, and decodes a single row about twice as fast here;
the decode batcher (biogpt.batching) runs its shared forwards inside `row_invariant_linears()`,
with rows padded to a probed block. Everywhere else F.linear stays, the kernel transformers uses.
The model's layers call `linear(module, x)`, which picks the kernel for the current thread.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager

import torch
import torch.nn as nn

# Which matrix kernel the decoder's linear layers use, per thread (see row_invariant_linears).
_KERNELS = threading.local()


@contextmanager
def row_invariant_linears():
    """On this thread, compute the decoder's fp32 CPU linear layers with oneDNN instead of MKL."""
    before = getattr(_KERNELS, "onednn", False)
    _KERNELS.onednn = _ONEDNN_LINEAR is not None
    try:
        yield
    finally:
        _KERNELS.onednn = before


def _find_onednn_linear():
    op = getattr(getattr(torch.ops, "mkldnn", None), "_linear_pointwise", None)
    return op if op is not None and torch.backends.mkldnn.is_available() else None


_ONEDNN_LINEAR = _find_onednn_linear()


def linear(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """module(x), through oneDNN inside row_invariant_linears() when it is a plain fp32 CPU nn.Linear."""
    if getattr(_KERNELS, "onednn", False) and type(module) is nn.Linear and x.device.type == "cpu" \
            and x.dtype == torch.float32 and module.weight.dtype == torch.float32:
        rows = x.reshape(-1, x.shape[-1])
        out = _ONEDNN_LINEAR(rows, module.weight, module.bias, "none", [], "")
        return out.view(*x.shape[:-1], out.shape[-1])
    return module(x)
