"""Quantized Linear layers and the in-place swap that installs them (`quantize_model`).

Decoding one token reads every weight once, so on a CPU the speed of a step is the bytes of
weights over memory bandwidth: fewer bytes per weight is the way to go faster.

  "int8"  CPU. Weights int8 with one fp32 scale per output channel (symmetric, absmax / 127),
          multiplied by the fastest kernel that passed its check on this CPU (biogpt.kernels).
  "int4"  CPU. Weights 4-bit in groups of 128 input channels with a bf16 scale and zero each.
          Layers the int4 kernel cannot take (output width not a multiple of 16, e.g. a
          classifier), and all layers where the int4 kernel fails its check, are int8 instead.
  "8bit"  CUDA, bitsandbytes' Linear8bitLt (LLM.int8(), outlier threshold 6.0).
  "4bit"  CUDA, bitsandbytes' Linear4bit with nf4 weights.

Every nn.Linear is replaced, the output projection included. When the projection is tied to
the token embedding it gets its own quantized copy; the embedding lookup stays in the model's
dtype. Layers are converted one at a time and each full-precision weight is released as soon
as its quantized form exists, so quantizing needs one layer of extra memory, not a model.

A quantized model records its mode in `model.quantization` and refuses `save_pretrained`:
writing dequantized weights would pass rounded weights off as the checkpoint. Save the
original, and quantize again at load (it takes a second or two).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

from . import kernels

CPU_MODES = ("int8", "int4")
CUDA_MODES = ("8bit", "4bit")
MODES = CPU_MODES + CUDA_MODES
INT4_GROUP = 128

INT8_KERNELS = tuple(kernels.INT8_PREFERENCE)  # what an Int8Linear can be asked for; see kernels.py


def check_mode(mode: str | None, device: str | torch.device) -> None:
    """Raise a ValueError a user understands when `mode` cannot run on `device`."""
    if mode is None:
        return
    device_type = torch.device(device).type
    if mode not in MODES:
        raise ValueError(f"Unknown quantize={mode!r}; use one of {', '.join(MODES)} (or None for none).")
    if mode in CUDA_MODES and device_type != "cuda":
        raise ValueError(
            f"quantize={mode!r} uses bitsandbytes and needs a CUDA GPU (device='cuda'); "
            f"on {device_type} use quantize='int8' or 'int4'."
        )
    if mode in CPU_MODES and device_type != "cpu":
        raise ValueError(
            f"quantize={mode!r} has fast kernels on the CPU only; on {device_type} use quantize='8bit' or '4bit'."
        )


def kernel_note(mode: str | None) -> str:
    """The kernels a model quantized with `mode` runs on this machine, in words ("" for none or a
    CUDA mode): what the app's header says, so an operator sees a fallback without reading logs."""
    if mode not in CPU_MODES:
        return ""
    int8 = kernels.describe(kernels.int8_path())
    if mode == "int4":
        int8 = (f"{kernels.describe('int4pack')}, {int8} where it cannot" if kernels.is_exact("int4pack")
                else f"all layers int8 as the int4 kernel failed its check, {int8}")
    return f"{int8}; checked on this CPU"


def quantize_model(
    model: nn.Module, mode: str, device: str | torch.device | None = None, int8_kernel: str = "fbgemm"
) -> nn.Module:
    """Replace every nn.Linear of `model` by its quantized form, in place; returns `model`.

    `device` is where the model will run (default: where it is). For "8bit"/"4bit" the model
    may sit on the CPU: each layer is quantized on its way to the GPU, and the rest of the
    model follows, so the full-precision weights never all reach GPU memory.
    """
    if getattr(model, "quantization", None):
        raise ValueError(f"This model is already quantized ({model.quantization}).")
    device = torch.device(device) if device is not None else _model_device(model)
    check_mode(mode, device)
    if mode in CUDA_MODES:
        make = _bnb_factory(mode, device, _float_dtype(model))
    elif mode == "int4":
        int4_exact = kernels.is_exact("int4pack")  # where it is not, every layer is int8 (logged by kernels)

        def make(linear):
            if int4_exact and Int4Linear.supports(linear):
                return Int4Linear.from_linear(linear)
            return Int8Linear.from_linear(linear, int8_kernel)
    else:
        def make(linear):
            return Int8Linear.from_linear(linear, int8_kernel)
    replace_linears(model, make)
    if mode in CUDA_MODES:
        _move_unquantized(model, device)
    model.quantization = mode
    return model


def replace_linears(model: nn.Module, make: Callable[[nn.Linear], nn.Module]) -> None:
    """Swap each nn.Linear for make(linear), one at a time, dropping the original as we go."""
    names = [name for name, module in model.named_modules() if type(module) is nn.Linear]
    for name in names:
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        linear = getattr(parent, child)
        with torch.no_grad():
            replacement = make(linear)
        setattr(parent, child, replacement)
        del linear, replacement  # the full-precision weight is freed here unless something else holds it


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _float_dtype(model: nn.Module) -> torch.dtype:
    return next(p.dtype for p in model.parameters() if p.is_floating_point())


# ---------------------------------------------------------------------------------------------
# int8, per output channel


def quantize_int8(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-row int8: weight ~= q * scale[:, None], q in [-127, 127]. Computed in fp32."""
    weight = weight.float()
    scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127.0
    q = torch.round(weight / scale[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scale


class Int8Linear(nn.Module):
    """y = x @ (q * scale).T + bias with int8 q [out, in] and one fp32 scale per output row.

    Four paths through kernels that ship with PyTorch, chosen once per layer: the one asked for
    (`kernel`: "fbgemm", "intmm", "int8pack" or a path name of biogpt.kernels) if it passed its
    check on this machine, else the next correct one (kernels.int8_path); `self.kernel` names the
    path taken. Measured on the full-size model, 2 threads (bench/bench_quantize.py
    --int8-kernels; README, "int8 on every CPU"), and on the bundled LM for quality (greedy
    choices agreeing with fp32's, perplexity):
      "fbgemm-u8"  `quantized.linear_dynamic`, the default where exact (AVX-512 VNNI): x is
                   quantized to uint8 on each call with one scale and zero point for the whole
                   input, then multiplied in integers (exact int32 accumulation). So activations
                   are 8-bit too; for one token that grid is per token, but rows of a batch or a
                   prompt share it, so a row's result depends a little on the rows beside it.
      "fbgemm-u7"  the same with 7-bit activations (reduce_range): the default on AVX2 without
                   VNNI, where 8-bit products saturate in fbgemm's int16 pairs.
      "intmm"      `aten._int_mm` after quantizing each row of x to int8 on its own: rows are
                   independent, exactly (integer products), whatever the batch; no deprecated
                   API. Correct everywhere, and the slowest.
      "int8pack"   `aten._weight_int8pack_mm`: weight-only, x rounded to bf16 (its fast path).
    The fbgemm layer keeps only the packed weight (fbgemm's own copy of q, scale and bias);
    `weight_int8` and `weight_scale` unpack it on demand.
    """

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, kernel: str = "fbgemm"):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.kernel = kernels.int8_path(kernel)
        self.reduce_range = self.kernel == "fbgemm-u7"
        self._packed = kernels.fbgemm_pack(q, scale, bias) if self.kernel.startswith("fbgemm") else None
        if self._packed is None:
            self.register_buffer("_q", q.contiguous())
            self.register_buffer("_scale", scale.float() if self.kernel == "intmm" else scale.to(torch.bfloat16))
            self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear, kernel: str = "fbgemm") -> "Int8Linear":
        q, scale = quantize_int8(linear.weight.detach())
        return cls(q, scale, linear.bias, kernel)

    def _unpacked(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        if self._packed is None:
            return self._q, self._scale.float(), self.bias
        qweight, bias = torch.ops.quantized.linear_unpack(self._packed)
        return qweight.int_repr(), qweight.q_per_channel_scales().float(), bias

    @property
    def weight_int8(self) -> torch.Tensor:
        return self._unpacked()[0]

    @property
    def weight_scale(self) -> torch.Tensor:
        """fp32 [out] (for "int8pack", the bf16 value its kernel multiplies by)."""
        return self._unpacked()[1]

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        q, scale, _ = self._unpacked()
        return (q.float() * scale[:, None]).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x2 = x.reshape(-1, self.in_features)
        if self._packed is not None:
            y = torch.ops.quantized.linear_dynamic(x2.float(), self._packed, self.reduce_range)  # bias included
        else:
            if self.kernel == "intmm":
                rows = x2.float()
                row_scale = rows.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(127.0)
                rows_int8 = torch.round(rows / row_scale).to(torch.int8)
                y = torch._int_mm(rows_int8, self._q.t()) * (row_scale * self._scale.float())
            else:
                y = torch.ops.aten._weight_int8pack_mm(x2.to(torch.bfloat16), self._q, self._scale.to(torch.bfloat16))
            if self.bias is not None:
                y = y + self.bias.to(y.dtype)
        return y.to(x.dtype).reshape(*shape[:-1], self.out_features)

    def _apply(self, fn, recurse=True):
        _refuse_device_move(fn, "int8")
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, kernel={self.kernel}"


def _refuse_device_move(fn, mode: str) -> None:
    """`model.to("cuda")` would leave CPU-packed weights behind: say so instead of failing later."""
    target = fn(torch.empty(0)).device
    if target.type != "cpu":
        raise ValueError(
            f"A model quantized with quantize={mode!r} runs on the CPU only; to use {target.type}, "
            "load the checkpoint again with device='cuda' and quantize='8bit' or '4bit'."
        )


# ---------------------------------------------------------------------------------------------
# int4, groups of 128 input channels


def quantize_int4(weight: torch.Tensor, group: int = INT4_GROUP) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit per group: weight ~= (q - 8) * scale + zero, q in [0, 15] (int32 [out, in])."""
    weight = weight.float()
    out_features, in_features = weight.shape
    grouped = weight.reshape(out_features, in_features // group, group)
    low, high = grouped.amin(dim=-1), grouped.amax(dim=-1)
    scale = ((high - low) / 15).clamp(min=1e-8)
    q = torch.round((grouped - low[..., None]) / scale[..., None]).clamp_(0, 15).to(torch.int32)
    zero = low + 8 * scale
    return q.reshape(out_features, in_features), scale, zero


class Int4Linear(nn.Module):
    """y = x @ W.T + bias with W in 4 bits per weight, `aten._weight_int4pack_mm_for_cpu` (bf16 x)."""

    def __init__(self, q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bias: torch.Tensor | None,
                 group: int = INT4_GROUP):
        super().__init__()
        self.out_features, self.in_features = q.shape
        self.group = group
        self.register_buffer("weight_int4", torch.ops.aten._convert_weight_to_int4pack_for_cpu(q, 1))
        # [in / group, out, 2]: the kernel's layout for (scale, zero).
        self.register_buffer("scales_and_zeros",
                             torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @staticmethod
    def supports(linear: nn.Linear) -> bool:
        return linear.in_features % INT4_GROUP == 0 and linear.out_features % 16 == 0

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int4Linear":
        q, scale, zero = quantize_int4(linear.weight.detach())
        return cls(q, scale, zero, linear.bias)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """The weight the kernel multiplies by, through the kernel itself (identity input)."""
        eye = torch.eye(self.in_features, dtype=torch.bfloat16)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(eye, self.weight_int4, self.group, self.scales_and_zeros).T.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(
            x.reshape(-1, self.in_features).to(torch.bfloat16), self.weight_int4, self.group, self.scales_and_zeros
        ).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*shape[:-1], self.out_features)

    def _apply(self, fn, recurse=True):
        _refuse_device_move(fn, "int4")
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, group={self.group}, "
                f"bias={self.bias is not None}")


# ---------------------------------------------------------------------------------------------
# CUDA: bitsandbytes


def _bnb_factory(mode: str, device: torch.device, dtype: torch.dtype) -> Callable[[nn.Linear], nn.Module]:
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ValueError(f"quantize={mode!r} needs bitsandbytes: pip install bitsandbytes") from None
    compute_dtype = dtype if dtype in (torch.float16, torch.bfloat16) else torch.float16

    def make(linear: nn.Linear) -> nn.Module:
        weight = linear.weight.detach().to("cpu", torch.float16 if mode == "8bit" else compute_dtype)
        bias = linear.bias
        if mode == "8bit":
            new = bnb.nn.Linear8bitLt(linear.in_features, linear.out_features, bias=bias is not None,
                                      has_fp16_weights=False, threshold=6.0, device="meta")
            new.weight = bnb.nn.Int8Params(weight, requires_grad=False, has_fp16_weights=False)
        else:
            new = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=bias is not None,
                                    compute_dtype=compute_dtype, quant_type="nf4", device="meta")
            new.weight = bnb.nn.Params4bit(weight, requires_grad=False, quant_type="nf4", module=new)
        if bias is not None:
            new.bias = nn.Parameter(bias.detach().to("cpu", compute_dtype), requires_grad=False)
        return new.to(device)  # bitsandbytes quantizes the weight on this move

    return make


def _move_unquantized(model: nn.Module, device: torch.device) -> None:
    """Move everything but the bitsandbytes layers (already placed) to `device`."""
    import bitsandbytes as bnb

    skip = (bnb.nn.Linear8bitLt, bnb.nn.Linear4bit)
    for module in model.modules():
        if isinstance(module, skip):
            continue
        for name, param in list(module.named_parameters(recurse=False)):
            if param.device != device:
                setattr(module, name, nn.Parameter(param.detach().to(device), requires_grad=param.requires_grad))
        for name, buffer in list(module.named_buffers(recurse=False)):
            if buffer is not None and buffer.device != device:
                setattr(module, name, buffer.to(device))
