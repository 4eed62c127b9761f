"""What reduced precision costs on the bundled LM (a trained model): greedy agreement with fp32,
counted two ways, and held-out perplexity, for our int8/int4/bf16 and for transformers' bf16.

20 prompts (PubMed titles) x 64 greedy tokens, against the same model in fp32:
  per choice    each choice made on fp32's text so far (teacher forced). Issue 7's bound: >= 95%.
  free-running  each model continues its own text. After the first token that differs the two
                texts part, so every later token counts as a disagreement too: one flipped
                near-tie anywhere costs the rest of its sequence.
For each sequence that parts, fp32's top-2 margin at the parting step says how close a call it
was. Two controls compute everything in fp32 from rounded Linear weights, so they show what
the weight grid alone does, with no kernel involved. transformers' bf16 against transformers' fp32 is the
reference for our bf16.

    python bench/bench_quality.py [--threads 2]
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torch.nn as nn

from common import machine
from testkit import BUNDLED_LM
from testkit.quality import QUALITY_NEW_TOKENS, QUALITY_PROMPTS, greedy_continuation, quality_texts

from biogpt import BioGptForCausalLM, BioGptTokenizer
from biogpt.quantize import quantize_int8, quantize_model
from biogpt.train import perplexity

def teacher_forced_logits(model, ids: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """The logits of each of `new`'s choices, made on the prompt and `new` so far."""
    with torch.inference_mode():
        return model(torch.cat([ids[0], new]).unsqueeze(0)).logits[0, ids.shape[1] - 1 : -1].float()


class Reference:
    """One fp32 model's greedy continuations and its top-2 margin at every step."""

    def __init__(self, model, prompts: list[torch.Tensor]):
        self.prompts = prompts
        self.continuations = [greedy_continuation(model, ids) for ids in prompts]
        self.margins = []
        for ids, new in zip(prompts, self.continuations):
            top2 = teacher_forced_logits(model, ids, new).topk(2, dim=-1).values
            self.margins.append(top2[:, 0] - top2[:, 1])

    def compare(self, model) -> dict:
        choices = free = 0
        partings = []  # (prompt, step, fp32's margin there)
        for i, (ids, new) in enumerate(zip(self.prompts, self.continuations)):
            choices += int((teacher_forced_logits(model, ids, new).argmax(-1) == new).sum())
            own = greedy_continuation(model, ids)
            free += int((own == new).sum())
            differ = (own != new).nonzero()
            if len(differ):
                step = int(differ[0])
                partings.append((i, step, float(self.margins[i][step])))
        total = len(self.prompts) * QUALITY_NEW_TOKENS
        return {"choice": choices / total, "free": free / total, "partings": partings}


def rounded_weights(model: nn.Module, linear_weight) -> nn.Module:
    """`model` with each Linear's weight replaced by linear_weight(weight), still fp32."""
    with torch.no_grad():
        for module in model.modules():
            if type(module) is nn.Linear:
                module.weight = nn.Parameter(linear_weight(module.weight.detach()), requires_grad=False)
    return model


def int8_grid(weight: torch.Tensor) -> torch.Tensor:
    q, scale = quantize_int8(weight)
    return q.float() * scale[:, None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import transformers

    print(machine())
    tokenizer = BioGptTokenizer.from_pretrained(BUNDLED_LM)
    titles, abstracts = quality_texts()
    prompts = [torch.tensor([tokenizer.encode(title)]) for title in titles]

    def ours(**kwargs):
        return BioGptForCausalLM.from_pretrained(BUNDLED_LM, **kwargs)

    def theirs(dtype):
        return transformers.BioGptForCausalLM.from_pretrained(BUNDLED_LM, dtype=dtype).eval()

    ours_fp32, theirs_fp32 = ours(), theirs(torch.float32)
    references = {"ours": Reference(ours_fp32, prompts), "transformers": Reference(theirs_fp32, prompts)}
    same = all(torch.equal(a, b) for a, b in zip(references["ours"].continuations, references["transformers"].continuations))
    print(f"ours fp32 and transformers fp32 make the same {QUALITY_PROMPTS * QUALITY_NEW_TOKENS} greedy tokens: {same}")
    margins = torch.cat(references["ours"].margins)
    print(
        f"fp32's top-2 margin (logits) at its {len(margins)} greedy steps: under 0.01 at {int((margins < 0.01).sum())}, "
        f"under 0.001 at {int((margins < 0.001).sum())}; median {margins.median():.3f}"
    )
    base_perplexity = {"ours": perplexity(ours_fp32, tokenizer, abstracts)["perplexity"],
                       "transformers": perplexity(theirs_fp32, tokenizer, abstracts)["perplexity"]}

    variants = {
        "ours int8 (fbgemm, default)": ("ours", lambda: ours(quantize="int8")),
        "ours int8 (intmm)": ("ours", lambda: quantize_model(ours(), "int8", int8_kernel="intmm")),
        "ours int8 (int8pack)": ("ours", lambda: quantize_model(ours(), "int8", int8_kernel="int8pack")),
        "ours int4": ("ours", lambda: ours(quantize="int4")),
        "ours bf16": ("ours", lambda: ours(dtype=torch.bfloat16)),
        "transformers bf16": ("transformers", lambda: theirs(torch.bfloat16)),
        "control: int8-grid Linear weights, fp32 math": ("ours", lambda: rounded_weights(ours(), int8_grid)),
        "control: bf16-grid Linear weights, fp32 math": ("ours", lambda: rounded_weights(ours(), lambda w: w.bfloat16().float())),
    }
    print(f"\n{QUALITY_PROMPTS} prompts x {QUALITY_NEW_TOKENS} greedy tokens against the same implementation in fp32; "
          "parted: sequences whose free-running text differs, and fp32's largest top-2 margin where one parted")
    print(f"{'variant':46s} {'per choice':>10s} {'free-running':>12s} {'parted':>7s} {'largest margin':>15s} {'perplexity':>11s}")
    for name, (implementation, load) in variants.items():
        model = load()
        result = references[implementation].compare(model)
        ppl = perplexity(model, tokenizer, abstracts)["perplexity"] / base_perplexity[implementation] - 1
        largest = max((margin for _, _, margin in result["partings"]), default=float("nan"))
        print(f"{name:46s} {result['choice']:10.2%} {result['free']:12.2%} {len(result['partings']):7d} "
              f"{largest:15.4f} {ppl:+11.2%}", flush=True)
        del model


if __name__ == "__main__":
    main()
