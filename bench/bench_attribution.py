"""Attribution cost against a plain forward of the same text on the same model (issue 17).

    .venv/bin/python bench/bench_attribution.py [--tokens 256] [--repeats 3] [--full-repeats 1]
                                           [--skip-full | --skip-bundled]

For a text of --tokens tokens (PubMed from the shared corpus), the last token explained by all
the others, alternating with a plain forward (`model(ids)`, every position's logits, no
gradients) and reporting medians as ratios:

  gradient x input              target: at most 2x the plain forward
  integrated gradients, 32 steps (fixed, max_steps=32)   target: at most 40x on microsoft/biogpt's shape
  integrated gradients, default (32 points, refined where completeness fails; points used shown)
  occlusion (remove), bundled model only: one forward per word and token by nature

on microsoft/biogpt's shape with random weights (bench/common.full_size_checkpoint) and on the
bundled model, where IG with 32 steps must take under 2 s. The completeness gap of each IG run
is printed beside its tolerance.
"""

from __future__ import annotations

import argparse

import torch

from common import REPO, alternate, full_size_checkpoint, machine

from bench_attention import text_of  # the same PubMed text cut to exactly N tokens


def plain_forward(model, batch: torch.Tensor):
    with torch.inference_mode():
        return model(batch).logits


def measure(name: str, model, tokenizer, ids: list[int], repeats: int, extra: bool, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each run, alternating; `extra`: occlusion and IG with its default steps too."""
    from biogpt.interpret import attribute

    position = len(ids) - 1
    batch = torch.tensor([ids])
    results = {}

    def keep(label, **kwargs):
        return lambda: results.__setitem__(label, attribute(model, tokenizer, ids, position, **kwargs))

    runs = {
        "plain forward": lambda: plain_forward(model, batch),
        "gradient x input": keep("gxi", method="gradient_x_input"),
        "IG, 32 steps": keep("ig32", steps=32, max_steps=32),
    }
    if extra:
        runs["IG, default steps"] = keep("ig", steps=32)
        runs["occlusion (remove)"] = keep("occlusion", method="occlusion")
    times = alternate(runs, repeats, warmup)
    plain = times["plain forward"]
    print(f"## {name}: {len(ids)} tokens, the last explained by the {position} before it\n")
    print("| run | median s | x plain forward |\n|---|---:|---:|")
    for run, seconds in times.items():
        print(f"| {run} | {seconds:.3f} | {seconds / plain:.1f} |")
    for label in ("ig32", "ig"):
        if label in results:
            result = results[label]
            print(f"\nIG ({result.steps} points): completeness gap {result.completeness_gap:+.4f} nats, tolerance "
                  f"{result.completeness_tolerance:.4f} (|f(x) - f(b)| = {abs(result.value - result.baseline_value):.3f})")
    print(flush=True)
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-repeats", type=int, default=1, help="timed runs on microsoft/biogpt's shape")
    parser.add_argument("--skip-full", action="store_true", help="only the bundled model")
    parser.add_argument("--skip-bundled", action="store_true", help="only microsoft/biogpt's shape")
    args = parser.parse_args()

    from biogpt import BioGptForCausalLM, BioGptTokenizer

    tokenizer = BioGptTokenizer.from_pretrained("bundled-tokenizer")
    ids = tokenizer.encode(text_of(tokenizer, args.tokens))
    print(f"# Attribution benchmark on {machine()}\n")
    if not args.skip_bundled:
        bundled = BioGptForCausalLM.from_pretrained(REPO / "assets" / "models" / "biogpt-pubmed-small",
                                                    dtype=torch.float32)
        times = measure("bundled model (biogpt-pubmed-small)", bundled.eval(), tokenizer, ids, args.repeats, extra=True)
        print(f"Bundled model, IG with 32 steps: {times['IG, 32 steps']:.2f} s (target: under 2 s)\n")
    if not args.skip_full:
        full = BioGptForCausalLM.from_pretrained(full_size_checkpoint(), dtype=torch.float32).eval()
        # About 40 times a plain forward per IG run: one timed run, only the plain forward warmed up first.
        plain_forward(full, torch.tensor([ids]))
        measure("microsoft/biogpt's shape, random weights", full, tokenizer, ids, args.full_repeats, extra=False,
                warmup=0)


if __name__ == "__main__":
    main()
