"""Quantized loading (biogpt/quantize.py): each kernel against a reference built from the same
integers, each kernel's self-check against a broken stand-in and every fallback forced
(biogpt/kernels.py), the in-place swap on every head, the quality bounds on the bundled LM per
int8 path, and what a quantized model refuses to do."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from biogpt import kernels
from biogpt import (
    BioGptConfig,
    BioGptForCausalLM,
    BioGptForSequenceClassification,
    BioGptForTokenClassification,
)
from biogpt.quantize import (
    Int4Linear,
    Int8Linear,
    check_mode,
    quantize_int4,
    quantize_int8,
    quantize_model,
    replace_linears,
)
from biogpt.train import perplexity
from testkit import BUNDLED_LM
from testkit.quality import greedy_continuation, quality_texts

# 128 wide so the int4 kernel (groups of 128) takes the layers; vocab 1000 is not a multiple of
# 16, so under int4 the output projection falls back to int8.
SMALL = dict(vocab_size=1000, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=256, max_position_embeddings=64)
HEADS = [BioGptForCausalLM, BioGptForTokenClassification, BioGptForSequenceClassification]
# The int8 path this machine gives by default: "fbgemm-u8" with AVX-512 VNNI, "fbgemm-u7" on
# AVX2 alone, "intmm" where this PyTorch build has no fbgemm engine.
DEFAULT_INT8 = Int8Linear.from_linear(nn.Linear(8, 8)).kernel
# What to distrust so that an int8 layer asking for "fbgemm" lands on each path.
FORCING = {
    "fbgemm-u8": "",
    "fbgemm-u7": "fbgemm-u8",
    "intmm": "fbgemm-u8,fbgemm-u7",
    "int8pack": "fbgemm-u8,fbgemm-u7,intmm",
}


def force_int8_path(monkeypatch, path: str) -> None:
    if not kernels.is_exact(path):
        pytest.skip(f"{path} fails its check on this CPU (only the fallbacks can run here)")
    monkeypatch.setenv(kernels.DISTRUST_ENV, FORCING[path])


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def per_row_int8(x: torch.Tensor) -> torch.Tensor:
    """x after the "intmm" kernel's activation quantization: symmetric int8, one scale per row."""
    row_scale = x.abs().amax(dim=-1, keepdim=True) / 127
    return torch.round(x / row_scale) * row_scale


def dynamic_uint8(x: torch.Tensor, levels: int = 255) -> torch.Tensor:
    """x after fbgemm's dynamic activation quantization: one asymmetric uint8 grid for the whole
    input (127 levels with reduce_range)."""
    low, high = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    scale = (high - low) / levels
    zero = round(-low / scale)
    return ((torch.round(x / scale) + zero).clamp(0, levels) - zero) * scale


def avx2_linear_dynamic(x: torch.Tensor, packed, reduce_range: bool) -> torch.Tensor:
    """fbgemm's dynamic int8 linear as it runs on AVX2 without VNNI: u8 x s8 products added in
    pairs into saturating int16 (vpmaddubsw), then summed in int32."""
    qweight, bias = torch.ops.quantized.linear_unpack(packed)
    q, scale = qweight.int_repr().long(), qweight.q_per_channel_scales().float()
    levels = 127 if reduce_range else 255
    low, high = min(x.min().item(), 0.0), max(x.max().item(), 0.0)
    step = (high - low) / levels
    zero = round(-low / step)
    xq = (torch.round(x / step) + zero).clamp(0, levels).long()
    products = xq[:, None, :] * q[None]  # [rows, out, in]
    pairs = (products[..., 0::2] + products[..., 1::2]).clamp(-(2**15), 2**15 - 1)
    y = (pairs.sum(-1) - zero * q.sum(1)).float() * step * scale
    return y if bias is None else y + bias


def a_linear(out_features: int, in_features: int, seed: int = 0, bias: bool = True) -> nn.Linear:
    torch.manual_seed(seed)
    linear = nn.Linear(in_features, out_features, bias=bias)
    with torch.no_grad():
        linear.weight.mul_(torch.rand(out_features, 1) * 4)  # rows of different ranges: per-row scales matter
    return linear


def an_input(*shape: int, seed: int = 1) -> torch.Tensor:
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed))
    x[..., 3] *= 10  # an outlier channel, as LayerNorm outputs have
    return x


# --------------------------------------------------------------------------------------------
# Layers


def test_int8_rounding_is_per_output_channel():
    weight = a_linear(48, 96).weight.detach()
    q, scale = quantize_int8(weight)
    assert q.dtype == torch.int8 and scale.shape == (48,)
    assert q.abs().amax(dim=1).eq(127).all()  # each row uses its whole range
    assert ((q.float() * scale[:, None] - weight).abs() <= scale[:, None] / 2 * 1.0001).all()


@pytest.mark.parametrize("path", ["fbgemm-u8", "fbgemm-u7"])
def test_int8_fbgemm_equals_its_integer_reference(monkeypatch, path):
    force_int8_path(monkeypatch, path)
    linear = a_linear(48, 96)
    layer = Int8Linear.from_linear(linear)
    assert layer.kernel == path
    q, scale = quantize_int8(linear.weight.detach())
    assert torch.equal(layer.weight_int8, q) and torch.allclose(layer.weight_scale, scale)
    x = an_input(2, 5, 96)
    y = layer(x)
    assert y.shape == (2, 5, 48) and y.dtype == torch.float32
    dequantized = q.float() * scale[:, None]
    exact = dynamic_uint8(x, 255 if path == "fbgemm-u8" else 127) @ dequantized.T + linear.bias
    assert rel_err(y, exact) < 1e-5  # int32 accumulation: exact up to fp32 rounding
    assert rel_err(y, x @ dequantized.T + linear.bias) < (0.03 if path == "fbgemm-u8" else 0.06)  # what 8 or 7 bits cost
    assert layer(x.bfloat16()).dtype == torch.bfloat16


def test_the_avx2_stand_in_saturates_like_the_cpus_it_models():
    """The emulation the next test relies on: wrong at 8 bits (relative error 2.18 was measured on
    an AVX2-only EPYC), exact at 7 bits, against the integer reference."""
    linear = a_linear(48, 96)
    q, scale = quantize_int8(linear.weight.detach())
    packed = kernels.fbgemm_pack(q, scale, linear.bias)
    x = 0.9 + 0.1 * torch.rand(5, 96, generator=torch.Generator().manual_seed(0))  # near the top of the uint8 grid
    dequantized = q.float() * scale[:, None]
    assert rel_err(avx2_linear_dynamic(x, packed, False), dynamic_uint8(x) @ dequantized.T + linear.bias) > 0.1
    assert rel_err(avx2_linear_dynamic(x, packed, True), dynamic_uint8(x, 127) @ dequantized.T + linear.bias) < 1e-5


def test_on_a_cpu_where_fbgemm_saturates_its_check_fails_at_8_bits_and_passes_at_7(monkeypatch):
    monkeypatch.setattr(torch.ops.quantized, "linear_dynamic", avx2_linear_dynamic)
    assert not kernels.fbgemm_accumulates_exactly(reduce_range=False)
    assert kernels.fbgemm_accumulates_exactly(reduce_range=True)


@pytest.mark.parametrize("path", ["intmm", "int8pack", "int4pack"])
def test_each_weight_kernel_check_catches_a_kernel_that_computes_wrongly(monkeypatch, path):
    assert kernels._CHECKS[path]()  # the real kernel passes on this machine
    op = {"intmm": (torch, "_int_mm"), "int8pack": (torch.ops.aten, "_weight_int8pack_mm"),
          "int4pack": (torch.ops.aten, "_weight_int4pack_mm_for_cpu")}[path]
    real = getattr(*op)
    if path == "intmm":  # int16 accumulation, as a narrow kernel would do
        broken = lambda a, b: real(a, b).clamp(-(2**15), 2**15 - 1)  # noqa: E731
    else:  # dropped the last input channel block
        broken = lambda x, *args: real(torch.cat([x[:, :-32], 0 * x[:, -32:]], 1), *args)  # noqa: E731
    monkeypatch.setattr(*op, broken)
    assert not kernels._CHECKS[path]()


def test_a_layer_asking_for_fbgemm_where_8_bits_are_distrusted_computes_with_7(monkeypatch):
    """What an AVX2-only machine does (its check fails), forced here on any CPU."""
    monkeypatch.setenv(kernels.DISTRUST_ENV, "fbgemm-u8")
    layer = Int8Linear.from_linear(a_linear(48, 96))
    assert layer.kernel == "fbgemm-u7" and layer.reduce_range
    assert kernels.fbgemm_reduce_range() is True
    monkeypatch.setenv(kernels.DISTRUST_ENV, "fbgemm-u8,fbgemm-u7")
    assert kernels.fbgemm_reduce_range() is None
    monkeypatch.setenv(kernels.DISTRUST_ENV, "fbgemm-u9")
    with pytest.raises(ValueError, match="unknown kernels"):
        kernels.is_exact("intmm")


def test_intmm_equals_its_per_row_reference_whatever_the_batch():
    linear = a_linear(48, 96)
    layer = Int8Linear.from_linear(linear, kernel="intmm")
    assert layer.kernel == "intmm"
    q, scale = quantize_int8(linear.weight.detach())
    x = an_input(6, 96)
    reference = per_row_int8(x) @ (q.float() * scale[:, None]).T + linear.bias
    y = layer(x)
    assert rel_err(y, reference) < 1e-5
    # Each row is quantized on its own and multiplied in integers: alone or batched, the same bits.
    assert all(torch.equal(layer(x[i : i + 1])[0], y[i]) for i in range(6))


def test_without_a_correct_fbgemm_the_layer_falls_back_to_intmm(monkeypatch):
    monkeypatch.setenv(kernels.DISTRUST_ENV, "fbgemm-u8,fbgemm-u7")
    linear = a_linear(16, 96)
    layer = Int8Linear.from_linear(linear)
    assert layer.kernel == "intmm"
    x = an_input(2, 96)
    assert torch.equal(layer(x), Int8Linear.from_linear(linear, kernel="intmm")(x))


def test_int8pack_equals_its_bf16_reference():
    linear = a_linear(48, 96)
    layer = Int8Linear.from_linear(linear, kernel="int8pack")
    assert layer.kernel == "int8pack"
    q, scale = quantize_int8(linear.weight.detach())
    x = an_input(7, 96)
    reference = x.bfloat16().float() @ (q.float() * scale.bfloat16().float()[:, None]).T + linear.bias
    assert rel_err(layer(x), reference) < 4e-3  # the kernel's bf16 output rounding
    assert layer(x.bfloat16()).dtype == torch.bfloat16
    no_bias = Int8Linear.from_linear(a_linear(16, 96, bias=False), kernel="int8pack")
    assert no_bias(x).shape == (7, 16)


def test_int4_equals_its_dequantized_reference():
    linear = a_linear(32, 256)
    assert Int4Linear.supports(linear) and not Int4Linear.supports(nn.Linear(256, 10))
    layer = Int4Linear.from_linear(linear)
    q, scale, zero = quantize_int4(linear.weight.detach())
    grouped = (q.float().view(32, 2, 128) - 8) * scale.bfloat16().float()[..., None] + zero.bfloat16().float()[..., None]
    dequantized = grouped.view(32, 256)
    assert rel_err(layer.dequantize(), dequantized) < 4e-3
    x = an_input(3, 256)
    assert rel_err(layer(x), x.bfloat16().float() @ dequantized.T + linear.bias) < 1e-2
    assert rel_err(dequantized, linear.weight) < 0.15  # 4 bits: about 10% of the weight's norm


# --------------------------------------------------------------------------------------------
# The swap, through from_pretrained


@pytest.fixture(scope="module")
def small_checkpoints(tmp_path_factory):
    folders = {}
    for cls in HEADS:
        torch.manual_seed(0)
        config = BioGptConfig(**SMALL, id2label={0: "O", 1: "B", 2: "I"}, hidden_dropout_prob=0.0)
        model = cls(config)
        model.init_weights()
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.dim() == 2 and "embed" not in name:
                    param.mul_(5)  # varied outputs, so that "close to fp32" means something
        folder = tmp_path_factory.mktemp(cls.__name__)
        model.save_pretrained(folder)
        folders[cls] = folder
    return folders


class Emulated(nn.Module):
    """What a quantized layer computes, written out in fp32 from the same integers."""

    def __init__(self, linear: nn.Linear, mode: str):
        super().__init__()
        self.int4 = mode == "int4" and Int4Linear.supports(linear)
        weight = linear.weight.detach()
        if self.int4:
            q, scale, zero = quantize_int4(weight)
            groups = weight.shape[1] // 128
            grouped = (q.float().view(weight.shape[0], groups, 128) - 8) * scale.bfloat16().float()[..., None]
            self.weight = (grouped + zero.bfloat16().float()[..., None]).view(weight.shape)
        else:
            q, scale = quantize_int8(weight)
            self.weight = q.float() * scale[:, None]
        self.bias = linear.bias

    def forward(self, x):
        if self.int4:
            y = (x.bfloat16().float() @ self.weight.T).bfloat16().float()
        else:
            flat = x.reshape(-1, x.shape[-1])
            levels = {"fbgemm-u8": 255, "fbgemm-u7": 127}.get(DEFAULT_INT8)
            flat = dynamic_uint8(flat, levels) if levels else per_row_int8(flat)
            y = (flat @ self.weight.T).view(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias


@pytest.mark.parametrize("mode", ["int8", "int4"])
@pytest.mark.parametrize("cls", HEADS, ids=lambda c: c.__name__)
def test_every_linear_is_replaced_and_computes_what_it_should(small_checkpoints, cls, mode):
    folder = small_checkpoints[cls]
    reference = cls.from_pretrained(folder)
    model = cls.from_pretrained(folder, quantize=mode)
    assert reference.quantization is None and model.quantization == mode
    assert not [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    quantized = {name for name, m in model.named_modules() if isinstance(m, (Int8Linear, Int4Linear))}
    expected = {name for name, m in reference.named_modules() if isinstance(m, nn.Linear)}
    assert quantized == expected
    # The embedding keeps its dtype and values; the projection has a quantized copy of its own.
    embed = model.biogpt.embed_tokens.weight
    assert embed.dtype == torch.float32 and torch.equal(embed, reference.biogpt.embed_tokens.weight)
    assert model.dtype == torch.float32
    if cls is BioGptForCausalLM:
        assert type(model.output_projection) is Int8Linear  # vocab 1000: no int4 kernel for it
        assert type(model.biogpt.layers[0].fc1) is (Int8Linear if mode == "int8" else Int4Linear)

    ids = torch.randint(4, SMALL["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        got, fp32 = model(ids).logits, reference(ids).logits
        replace_linears(reference, lambda linear: Emulated(linear, mode))
        emulated = reference(ids).logits
    assert rel_err(got, emulated) < (1e-4 if mode == "int8" else 1e-2)
    if mode == "int8":
        assert rel_err(got, fp32) < 0.06  # measured 0.02-0.04 on these random weights
    if cls is BioGptForCausalLM:
        assert model.generate(ids[:1], max_new_tokens=5).shape == (1, 17)


def test_quantized_bf16_model(small_checkpoints):
    folder = small_checkpoints[BioGptForCausalLM]
    model = BioGptForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, quantize="int8")
    reference = BioGptForCausalLM.from_pretrained(folder)
    ids = torch.randint(4, SMALL["vocab_size"], (1, 9), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        logits = model(ids).logits
    assert logits.dtype == torch.bfloat16 and model.biogpt.embed_tokens.weight.dtype == torch.bfloat16
    assert rel_err(logits, reference(ids).logits) < 0.05


def test_a_quantized_model_refuses_to_be_saved_or_moved(small_checkpoints, tmp_path):
    model = BioGptForCausalLM.from_pretrained(small_checkpoints[BioGptForCausalLM], quantize="int8")
    with pytest.raises(ValueError, match="quantized at load .*Save the original checkpoint instead"):
        model.save_pretrained(tmp_path / "out")
    assert not (tmp_path / "out" / "model.safetensors").exists()
    with pytest.raises(ValueError, match="runs on the CPU only"):
        model.to("meta")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, "int8")


def test_modes_are_refused_where_they_cannot_run(small_checkpoints):
    folder = small_checkpoints[BioGptForCausalLM]
    for mode in ("8bit", "4bit"):
        with pytest.raises(ValueError, match=f"quantize='{mode}' uses bitsandbytes and needs a CUDA GPU"):
            BioGptForCausalLM.from_pretrained(folder, quantize=mode)
    with pytest.raises(ValueError, match="Unknown quantize='int3'; use one of int8, int4, 8bit, 4bit"):
        BioGptForCausalLM.from_pretrained(folder, quantize="int3")
    with pytest.raises(ValueError, match="fast kernels on the CPU only"):
        check_mode("int8", "cuda")
    check_mode(None, "cuda")


# --------------------------------------------------------------------------------------------
# bitsandbytes (CUDA): the swap is checked here on the CPU; the numbers only where a GPU is


def _small_model(cls=BioGptForCausalLM) -> nn.Module:
    torch.manual_seed(0)
    model = cls(BioGptConfig(**SMALL))
    model.init_weights()
    return model.eval()


@pytest.mark.parametrize("mode", ["8bit", "4bit"])
def test_bitsandbytes_swap_puts_its_layers_everywhere(mode):
    bnb = pytest.importorskip("bitsandbytes")
    from biogpt.quantize import _bnb_factory

    model = _small_model().half()
    reference_fc1 = model.biogpt.layers[0].fc1.weight.detach().clone()
    # The public path refuses the CPU; the factory itself is device-agnostic, and bitsandbytes
    # 0.50 quantizes on the CPU too, which is enough to check what lands where.
    replace_linears(model, _bnb_factory(mode, torch.device("cpu"), torch.float16))
    layer_type = bnb.nn.Linear8bitLt if mode == "8bit" else bnb.nn.Linear4bit
    assert not [n for n, m in model.named_modules() if type(m) is nn.Linear]
    assert sum(isinstance(m, layer_type) for m in model.modules()) == 2 * 6 + 1
    fc1 = model.biogpt.layers[0].fc1
    if mode == "8bit":
        assert fc1.weight.dtype == torch.int8 and fc1.weight.shape == reference_fc1.shape
        restored = fc1.weight.float() * fc1.weight.SCB.float()[:, None] / 127
        assert rel_err(restored, reference_fc1) < 0.02
    else:
        assert fc1.weight.bnb_quantized and fc1.weight.quant_type == "nf4"
    assert fc1.bias.dtype == torch.float16
    assert model.biogpt.embed_tokens.weight.dtype == torch.float16  # the embedding is not quantized
    assert model.output_projection.weight.data_ptr() != model.biogpt.embed_tokens.weight.data_ptr()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="bitsandbytes 8bit/4bit run on CUDA; this machine has no GPU")
@pytest.mark.parametrize("mode", ["8bit", "4bit"])
def test_bitsandbytes_logits_close_to_fp16_on_cuda(small_checkpoints, mode):
    pytest.importorskip("bitsandbytes")
    folder = small_checkpoints[BioGptForCausalLM]
    reference = BioGptForCausalLM.from_pretrained(folder, dtype=torch.float16, device="cuda")
    model = BioGptForCausalLM.from_pretrained(folder, device="cuda", quantize=mode)
    assert model.quantization == mode and model.biogpt.embed_tokens.weight.device.type == "cuda"
    ids = torch.randint(4, SMALL["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0)).cuda()
    with torch.inference_mode():
        got, want = model(ids).logits, reference(ids).logits
    if mode == "8bit":  # LLM.int8 is about as close as our int8 (3.9e-2 on the bench's base shape, H200)
        assert rel_err(got, want) < 0.05
        return
    # nf4: first the kernel, against fp16 layers holding bitsandbytes' own dequantized weights
    # (the same numbers up to fp16 rounding), then the quality, where nf4's 16 levels per block
    # of 64 weights, on these x5-scaled random weights, alone gave 0.26 on an H200.
    import bitsandbytes as bnb
    from bitsandbytes.functional import dequantize_4bit

    emulated = BioGptForCausalLM.from_pretrained(folder, dtype=torch.float16, device="cuda")
    swapped = 0
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            weight = dequantize_4bit(module.weight.data, module.weight.quant_state).to(torch.float16)
            # A new Parameter, so the tied output projection stops sharing the embedding's weights.
            emulated.get_submodule(name).weight = torch.nn.Parameter(weight, requires_grad=False)
            swapped += 1
    assert swapped == 6 * SMALL["num_hidden_layers"] + 1
    with torch.inference_mode():
        emulated_logits = emulated(ids).logits
    assert rel_err(got, emulated_logits) < 1e-2
    assert rel_err(got, want) < 0.35


# --------------------------------------------------------------------------------------------
# Issue 7's quality bounds on the bundled (trained) LM


@pytest.fixture(scope="module")
def bundled(one_thread):
    from biogpt import BioGptTokenizer

    if not (BUNDLED_LM / "model.safetensors").is_file():
        pytest.skip("the bundled LM is not in assets/")
    tokenizer = BioGptTokenizer.from_pretrained(BUNDLED_LM)
    titles, abstracts = quality_texts()
    fp32 = BioGptForCausalLM.from_pretrained(BUNDLED_LM)
    prompts = [torch.tensor([tokenizer.encode(title)]) for title in titles]
    continuations = [greedy_continuation(fp32, ids) for ids in prompts]
    return {"tokenizer": tokenizer, "prompts": prompts, "fp32": fp32, "continuations": continuations, "abstracts": abstracts,
            "fp32_perplexity": perplexity(fp32, tokenizer, abstracts)["perplexity"]}


def choice_agreement(model, bundled) -> float:
    """Share of fp32's 1,280 greedy choices the model makes the same, given the same text so far."""
    same = total = 0
    with torch.inference_mode():
        for ids, new in zip(bundled["prompts"], bundled["continuations"]):
            text = torch.cat([ids[0], new]).unsqueeze(0)
            choices = model(text).logits[0, ids.shape[1] - 1 : -1].argmax(-1)
            same += int((choices == new).sum())
            total += len(new)
    return same / total


# Free-running agreement with fp32's greedy text (64 tokens from 20 titles), measured per path:
# on an AVX2-only EPYC fbgemm-u7 78.0%, int8pack 70.6%; on an AVX-512 VNNI EPYC (dev VM) see the
# README. A saturating fbgemm gave 36% there and int4 gives 31%: 60% separates broken kernels from
# correct ones on both machines. It is a guard, not the quality bound (see the docstring below).
FREE_RUNNING_GUARD = 0.60


@pytest.mark.parametrize("variant", ["fbgemm-u8", "fbgemm-u7", "intmm", "int8pack", "bf16"])
def test_bundled_lm_quality_within_issue_bounds(bundled, monkeypatch, variant):
    """Every int8 path, forced through the user's path (from_pretrained(quantize="int8") with the
    faster paths distrusted), and bf16: greedy choices agree with fp32 on >= 95% of 20 prompts x
    64 tokens; perplexity within 1%.

    Agreement is counted per choice, each made on fp32's text so far: one flipped near-tie
    otherwise rewrites the rest of its sequence (fp32's top two logits are within 0.01 at 8 of
    its 1,280 steps), and free-running agreement then measures where near-ties fall:
    transformers' own bf16 keeps 81% that way, int8-grid weights with exact fp32 math 91%
    (bench/bench_quality.py). Free-running int8 is guarded too, loosely (FREE_RUNNING_GUARD).
    """
    if variant == "bf16":
        model = BioGptForCausalLM.from_pretrained(BUNDLED_LM, dtype=torch.bfloat16)
    else:
        force_int8_path(monkeypatch, variant)
        model = BioGptForCausalLM.from_pretrained(BUNDLED_LM, quantize="int8")
        assert {m.kernel for m in model.modules() if isinstance(m, Int8Linear)} == {variant}
    agreement = choice_agreement(model, bundled)
    assert agreement >= 0.95, f"{variant}: {agreement:.2%} of greedy choices agree with fp32"
    tokenizer, abstracts = bundled["tokenizer"], bundled["abstracts"]
    base = bundled["fp32_perplexity"]
    ours = perplexity(model, tokenizer, abstracts)["perplexity"]
    assert abs(ours / base - 1) <= 0.01, f"{variant}: perplexity {ours:.2f} vs fp32 {base:.2f}"

    if variant != "bf16":
        free = [greedy_continuation(model, ids) for ids in bundled["prompts"]]
        same = sum(int((a == b).sum()) for a, b in zip(free, bundled["continuations"])) / (20 * 64)
        print(f"{variant}: per choice {agreement:.2%}, free-running {same:.2%}, perplexity {ours / base - 1:+.2%}")
        assert same >= FREE_RUNNING_GUARD, f"free-running {variant} agrees with fp32 on {same:.2%} of new tokens"


def test_where_the_int4_kernel_fails_its_check_every_layer_is_int8(small_checkpoints, monkeypatch):
    monkeypatch.setenv(kernels.DISTRUST_ENV, "int4pack")
    model = BioGptForCausalLM.from_pretrained(small_checkpoints[BioGptForCausalLM], quantize="int4")
    layers = [m for m in model.modules() if isinstance(m, (Int8Linear, Int4Linear))]
    assert layers and all(type(m) is Int8Linear for m in layers)
