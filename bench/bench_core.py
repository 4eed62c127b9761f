"""Forward pass, load time and load memory: ours vs transformers on the same full-size weights.

    .venv/bin/python bench/bench_core.py [--repeats 5] [--tokens 128]

Prints one table of ratios (ours / transformers; below 1.0 means ours is faster or leaner).
Loads run in fresh subprocesses so import time and peak memory are each process's own.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

import torch

from common import REPO, alternate, full_size_checkpoint, machine

# Each loader prints {"seconds": import+load, "peak_delta": peak RSS growth during load in bytes}.
LOAD_SCRIPT = """
import json, resource, sys, time
start = time.perf_counter()
import torch
{imports}
def hwm():
    # VmHWM belongs to this process; ru_maxrss would inherit the parent's peak across fork.
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM"))
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096
before = rss()
model = {load}
seconds = time.perf_counter() - start
peak = hwm()
weights = sum(p.numel() * p.element_size() for p in model.parameters())
print(json.dumps({{"seconds": seconds, "peak_delta": peak - before, "weights": weights}}))
"""

LOADERS = {
    "ours": ("import biogpt", "biogpt.BioGptForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)"),
    "transformers": ("import transformers", "transformers.BioGptForCausalLM.from_pretrained(sys.argv[1], dtype=torch.bfloat16)"),
}


def measure_load(folder, repeats: int) -> dict[str, dict[str, float]]:
    runs: dict[str, list[dict]] = {name: [] for name in LOADERS}
    for _ in range(repeats):
        for name, (imports, load) in LOADERS.items():
            script = LOAD_SCRIPT.format(imports=imports, load=load)
            out = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True,
                                 cwd=REPO, env={"PYTHONPATH": str(REPO), "TRANSFORMERS_VERBOSITY": "error",
                                                "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}, check=True)
            runs[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {
        name: {key: statistics.median(r[key] for r in results) for key in ("seconds", "peak_delta", "weights")}
        for name, results in runs.items()
    }


def measure_forward(folder, tokens: int, repeats: int) -> dict[str, dict[str, float]]:
    import transformers

    import biogpt

    ours = biogpt.BioGptForCausalLM.from_pretrained(folder)
    theirs_sdpa = transformers.BioGptForCausalLM.from_pretrained(folder).eval()
    theirs_eager = transformers.BioGptForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    ids = torch.randint(4, 42384, (1, tokens), generator=torch.Generator().manual_seed(0))
    rich = dict(output_attentions=True, output_hidden_states=True)
    with torch.inference_mode():
        plain = alternate({"ours": lambda: ours(ids), "transformers": lambda: theirs_sdpa(ids)}, repeats)
        inspect = alternate({"ours": lambda: ours(ids, **rich), "transformers": lambda: theirs_eager(ids, **rich)}, repeats)
    return {"forward": plain, "forward + attentions + hidden states": inspect}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load-repeats", type=int, default=3)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = full_size_checkpoint()
    print(f"# bench_core: microsoft/biogpt shape, random weights, fp32 forward, {args.tokens} tokens, batch 1")
    print(f"# {machine()}")
    print(f"{'what':42s} {'ours':>10s} {'transformers':>13s} {'ratio':>7s}")
    for what, times in measure_forward(folder, args.tokens, args.repeats).items():
        print(f"{what:42s} {times['ours'] * 1000:8.1f}ms {times['transformers'] * 1000:11.1f}ms "
              f"{times['ours'] / times['transformers']:7.2f}")
    load = measure_load(folder, args.load_repeats)
    o, t = load["ours"], load["transformers"]
    print(f"{'import + load in bf16 (fresh process)':42s} {o['seconds']:9.2f}s {t['seconds']:12.2f}s "
          f"{o['seconds'] / t['seconds']:7.2f}")
    print(f"{'peak RSS growth while loading, x bf16 size':42s} {o['peak_delta'] / o['weights']:9.2f}x "
          f"{t['peak_delta'] / t['weights']:11.2f}x {o['peak_delta'] / t['peak_delta']:7.2f}")


if __name__ == "__main__":
    main()
