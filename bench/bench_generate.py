"""Generation speed: ours vs transformers' `generate` on the same weights, CPU, 2 threads.

    .venv/bin/python bench/bench_generate.py [--quick] [--repeats 5] [--only small|full]

Batch 1, greedy, a 16-token prompt, 64 new tokens (eos off, so both sides make all 64), fp32:
  - tokens/s: 64 / the whole generate() call (prefill included), median of alternating runs;
  - time to first token: a generate() call that makes one token (prefill + first choice);
  - peak memory: RSS growth during one generate() call in a fresh process (the peak is reset
    through /proc/self/clear_refs after loading, so loading does not hide it).
Two models: microsoft/biogpt's shape (24 x 1024, memory-bound: the target is parity) and a
4-layer 256-wide one with the full 42,384 vocabulary (the bundled demo model when it is in
assets/, else a random one of that shape), where per-token overhead matters (target 2x).
The outputs of both sides are checked equal before timing. Ratios are ours / transformers for
times (below 1 is better) and ours / transformers for tokens/s (above 1 is better).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings

import torch

from common import REPO, alternate, full_size_checkpoint, machine, small_checkpoint

PROMPT_TOKENS = 16
NEW_TOKENS = 64
GREEDY = dict(do_sample=False, eos_token_id=None)


def prompt_ids() -> torch.Tensor:
    ids = torch.randint(4, 42384, (1, PROMPT_TOKENS), generator=torch.Generator().manual_seed(0))
    ids[0, 0] = 2  # a BioGPT prompt starts with </s>
    return ids


def load_pair(folder):
    import transformers

    import biogpt

    # Both in fp32: transformers 5 would otherwise load a checkpoint stored in fp16 (the bundled one) as fp16.
    ours = biogpt.BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32)
    theirs = transformers.BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()  # default sdpa
    return ours, theirs


def measure_speed(folder, repeats: int) -> dict[str, dict[str, float]]:
    ours, theirs = load_pair(folder)
    ids = prompt_ids()

    def run(model, new_tokens):
        with torch.inference_mode():
            return model.generate(ids, max_new_tokens=new_tokens, **GREEDY)

    a, b = run(ours, NEW_TOKENS), run(theirs, NEW_TOKENS)
    if not torch.equal(a, b) or a.shape[1] != PROMPT_TOKENS + NEW_TOKENS:
        raise SystemExit(f"outputs differ: ours {a.tolist()} transformers {b.tolist()}")
    whole = alternate({"ours": lambda: run(ours, NEW_TOKENS), "transformers": lambda: run(theirs, NEW_TOKENS)}, repeats)
    first = alternate({"ours": lambda: run(ours, 1), "transformers": lambda: run(theirs, 1)}, repeats)
    return {name: {"tokens_per_s": NEW_TOKENS / whole[name], "ttft": first[name]} for name in whole}


MEMORY_SCRIPT = """
import json, sys, warnings
warnings.filterwarnings("ignore")
import torch
torch.set_num_threads(2)
side, folder = sys.argv[1], sys.argv[2]
if side == "ours":
    import biogpt
    model = biogpt.BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32)
else:
    import transformers
    transformers.logging.set_verbosity_error()
    model = transformers.BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
ids = torch.randint(4, 42384, (1, {prompt}), generator=torch.Generator().manual_seed(0))
def status(key):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) * 1024 for l in f if l.startswith(key))
with torch.inference_mode():
    model.generate(ids, max_new_tokens=2, do_sample=False, eos_token_id=None)  # warm the allocator's code paths
    before = status("VmRSS:")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (the peak) to the current RSS
    model.generate(ids, max_new_tokens={new}, do_sample=False, eos_token_id=None)
print(json.dumps({{"peak_growth": status("VmHWM:") - before, "rss": before}}))
"""


def measure_memory(folder) -> dict[str, dict[str, float]]:
    script = MEMORY_SCRIPT.format(prompt=PROMPT_TOKENS, new=NEW_TOKENS)
    env = {"PYTHONPATH": str(REPO), "TRANSFORMERS_VERBOSITY": "error", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    result = {}
    for side in ("ours", "transformers"):
        out = subprocess.run([sys.executable, "-c", script, side, str(folder)], capture_output=True, text=True,
                             cwd=REPO, env=env)
        if out.returncode:
            print(f"# memory measurement failed for {side}: {out.stderr.strip().splitlines()[-1:]}")
            return None
        result[side] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def report(title: str, speed, memory) -> None:
    o, t = speed["ours"], speed["transformers"]
    print(f"\n## {title}")
    print(f"{'what':34s} {'ours':>11s} {'transformers':>13s} {'ratio':>7s}")
    print(f"{'tokens/s (higher is better)':34s} {o['tokens_per_s']:11.1f} {t['tokens_per_s']:13.1f} "
          f"{o['tokens_per_s'] / t['tokens_per_s']:6.2f}x")
    print(f"{'time to first token':34s} {o['ttft'] * 1000:9.1f}ms {t['ttft'] * 1000:11.1f}ms "
          f"{o['ttft'] / t['ttft']:7.2f}")
    if memory:
        mo, mt = memory["ours"]["peak_growth"], memory["transformers"]["peak_growth"]
        print(f"{'peak RSS growth during generate':34s} {mo / 2**20:9.1f}MB {mt / 2**20:11.1f}MB "
              f"{mo / mt if mt else float('nan'):7.2f}")
        print(f"{'RSS with the model loaded':34s} {memory['ours']['rss'] / 2**20:9.0f}MB "
              f"{memory['transformers']['rss'] / 2**20:11.0f}MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 timed rounds, no memory subprocesses")
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds (default 7, --quick 3)")
    parser.add_argument("--only", choices=("small", "full"), default=None)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    warnings.filterwarnings("ignore")
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(2)
    print(f"# bench_generate: greedy, batch 1, {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens, fp32, "
          f"medians of {repeats} alternating runs after a warm-up")
    print(f"# {machine()}")
    bundled = REPO / "assets" / "models" / "biogpt-pubmed-small"
    if (bundled / "config.json").is_file():  # the demo model the issue names, once it exists
        small = ("small: the bundled demo model, 4 layers x 256, 42,384 vocabulary (target >= 2x)", lambda: bundled)
    else:
        small = ("small: 4 layers x 256, full 42,384 vocabulary, random (target >= 2x)", small_checkpoint)
    models = {
        "small": small,
        "full": ("full: microsoft/biogpt shape, 24 layers x 1024 (target >= 1.0x)", full_size_checkpoint),
    }
    for key, (title, checkpoint) in models.items():
        if args.only and key != args.only:
            continue
        folder = checkpoint()
        speed = measure_speed(folder, repeats)
        memory = None if args.quick else measure_memory(folder)
        report(title, speed, memory)


if __name__ == "__main__":
    main()
