"""int8 decoding on the CPU against transformers' fp32 `generate`, side by side in one run.

Full-size random BioGPT (microsoft/biogpt's shapes), 2 threads, batch 1, greedy, a 16-token
prompt and 64 new tokens (eos off, so every run makes exactly 64). Each variant's
`generate` runs in turn with the others, repeated; medians after a warm-up. Reported:
tokens/s (new tokens over the whole call), time to first token (a call with one new token),
and both as ratios to transformers fp32. Targets (issue 7): int8 >= 2.5x transformers' tokens/s,
time to first token no worse (ratio <= 1).

    python bench/bench_quantize.py [--repeats 5] [--kernels] [--int8-kernels]

`--kernels` first times the matrix products alone (every Linear of the model, one call each)
for each int8 kernel PyTorch ships, at 1, 16 and 128 tokens, and `--int8-kernels` adds whole
decoding with Int8Linear's other paths (fbgemm with 7-bit activations, intmm, int8pack): the
measurements behind its choice of kernel and the README's speed of each fallback.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn.functional as F

from common import alternate, full_size_checkpoint, machine

from biogpt import BioGptForCausalLM
from biogpt.kernels import fbgemm_pack
from biogpt.quantize import Int8Linear, quantize_int4, quantize_int8, quantize_model


def kernel_table(repeats: int) -> None:
    """Seconds for all Linear weights of a full-size BioGPT applied to M tokens, per kernel."""
    torch.manual_seed(0)
    hidden, inner, vocab, layers = 1024, 4096, 42384, 24
    sample_layers = 4  # 4 distinct layers, timed and scaled to 24, plus the output projection
    shapes = [(hidden, hidden)] * 4 + [(inner, hidden), (hidden, inner)]
    weights = [torch.randn(n, k) * 0.02 for _ in range(sample_layers) for n, k in shapes]
    head = torch.randn(vocab, hidden) * 0.02

    def prepare(w):
        q, scale = quantize_int8(w)
        q4, s4, z4 = quantize_int4(w)
        return {
            "k": w.shape[1], "fp32": w, "bf16": w.bfloat16(), "q": q, "scale": scale, "scale_bf16": scale.bfloat16(),
            "packed": fbgemm_pack(q, scale, None),
            "int4": torch.ops.aten._convert_weight_to_int4pack_for_cpu(q4, 1),
            "int4_sz": torch.stack([s4, z4], -1).transpose(0, 1).contiguous().bfloat16(),
        }

    body, top = [prepare(w) for w in weights], [prepare(head)]

    def int_mm(x, d):  # what Int8Linear's "intmm" kernel does, activation quantization included
        row_scale = x.abs().amax(dim=1, keepdim=True).clamp_(min=1e-12).div_(127.0)
        return torch._int_mm(torch.round(x / row_scale).to(torch.int8), d["q"].t()) * (row_scale * d["scale"])

    kernels = {
        "fp32 F.linear": lambda x, d: F.linear(x, d["fp32"]),
        "bf16 F.linear": lambda x, d: F.linear(x.bfloat16(), d["bf16"]),
        "int8 fbgemm linear_dynamic (W8A8)": lambda x, d: torch.ops.quantized.linear_dynamic(x, d["packed"], False),
        "int8 fbgemm, reduce_range (W8A7)": lambda x, d: torch.ops.quantized.linear_dynamic(x, d["packed"], True),
        "int8 _int_mm, x int8 per row": int_mm,
        "int8 _weight_int8pack_mm (bf16 x)":
            lambda x, d: torch.ops.aten._weight_int8pack_mm(x.bfloat16(), d["q"], d["scale_bf16"]),
        "int8 dequantize + bf16 F.linear": lambda x, d: F.linear(x.bfloat16(), d["q"].bfloat16() * d["scale_bf16"][:, None]),
        "int4 _weight_int4pack_mm_for_cpu":
            lambda x, d: torch.ops.aten._weight_int4pack_mm_for_cpu(x.bfloat16(), d["int4"], 128, d["int4_sz"]),
    }
    print(f"\nMatrix products only, all Linear weights of a full-size BioGPT ({layers} layers + output projection), ms:")
    print(f"{'kernel':36s} " + " ".join(f"{f'M={m}':>9s}" for m in (1, 16, 128)) + "   M=1 as tokens/s")
    results = {name: [] for name in kernels}
    for m in (1, 16, 128):
        inputs = {hidden: torch.randn(m, hidden), inner: torch.randn(m, inner)}

        def run(fn, ds):
            for d in ds:
                fn(inputs[d["k"]], d)

        timed = {}
        for name, fn in kernels.items():
            timed[name + " body"] = lambda fn=fn: run(fn, body)
            timed[name + " head"] = lambda fn=fn: run(fn, top)
        medians = alternate(timed, repeats=repeats if m == 1 else max(2, repeats // 2))
        for name in kernels:
            results[name].append(medians[name + " body"] * layers / sample_layers + medians[name + " head"])
    for name, times in results.items():
        print(f"{name:36s} " + " ".join(f"{1e3 * t:9.1f}" for t in times) + f"   {1 / times[0]:6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--kernels", action="store_true", help="also time the int8 kernels alone")
    parser.add_argument("--int8-kernels", action="store_true", help="also decode with Int8Linear's other paths")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    print(machine())
    if args.kernels:
        kernel_table(args.repeats)

    import transformers

    folder = full_size_checkpoint()
    models = {}
    start = time.perf_counter()
    models["transformers fp32"] = transformers.BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    loads = {"transformers fp32": time.perf_counter() - start}
    for name, kwargs in {
        "ours fp32": {},
        "ours bf16": {"dtype": torch.bfloat16},
        "ours int8": {"quantize": "int8"},
        "ours int4 (optional mode)": {"quantize": "int4"},
    }.items():
        start = time.perf_counter()
        models[name] = BioGptForCausalLM.from_pretrained(folder, **kwargs)
        loads[name] = time.perf_counter() - start
    kernel = next(m.kernel for m in models["ours int8"].modules() if isinstance(m, Int8Linear))
    if args.int8_kernels:
        for other in ("fbgemm-u7", "intmm", "int8pack"):
            start = time.perf_counter()
            models[f"ours int8 ({other})"] = quantize_model(BioGptForCausalLM.from_pretrained(folder), "int8", int8_kernel=other)
            loads[f"ours int8 ({other})"] = time.perf_counter() - start

    generator = torch.Generator().manual_seed(0)
    prompt = torch.randint(4, 42384, (1, args.prompt_tokens), generator=generator)
    prompt[0, 0] = 2  # a BioGPT prompt starts with </s>
    mask = torch.ones_like(prompt)
    config = models["ours fp32"].config

    def call(model, new_tokens):
        keywords = dict(max_new_tokens=new_tokens, do_sample=False, eos_token_id=None, pad_token_id=config.pad_token_id)
        with torch.inference_mode():
            return model.generate(prompt, attention_mask=mask, **keywords)

    outputs = {name: call(model, args.new_tokens)[0, args.prompt_tokens:] for name, model in models.items()}
    ttft = alternate({name: (lambda m=m: call(m, 1)) for name, m in models.items()}, repeats=args.repeats)
    full = alternate({name: (lambda m=m: call(m, args.new_tokens)) for name, m in models.items()}, repeats=args.repeats, warmup=0)

    reference = "transformers fp32"
    tps = {name: args.new_tokens / seconds for name, seconds in full.items()}
    print(
        f"\nbatch 1, greedy, {args.prompt_tokens}-token prompt, {args.new_tokens} new tokens, "
        f"medians of {args.repeats} alternating runs after a warm-up; int8 kernel: {kernel}"
    )
    print(f"{'variant':26s} {'tokens/s':>9s} {'x ref':>7s} {'TTFT ms':>9s} {'TTFT / ref':>11s} {'load s':>7s} "
          f"{'same tokens as ref':>19s}")
    for name in models:
        same = (outputs[name] == outputs[reference]).float().mean().item()
        print(
            f"{name:26s} {tps[name]:9.2f} {tps[name] / tps[reference]:7.2f} {1e3 * ttft[name]:9.1f} "
            f"{ttft[name] / ttft[reference]:11.2f} {loads[name]:7.2f} {same:19.0%}"
        )
    int8 = "ours int8"
    print(
        f"\nint8 vs transformers fp32: {tps[int8] / tps[reference]:.2f}x tokens/s (target >= 2.5), "
        f"time to first token {ttft[int8] / ttft[reference]:.2f}x (target <= 1)"
    )
    print("(the weights are random, so token agreement here says nothing about quality: see tests/unit/test_quantize.py)")


if __name__ == "__main__":
    main()
