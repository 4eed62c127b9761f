"""Microsoft's fine-tuned checkpoints: what converting and running them costs, as ratios on the same weights.

    .venv/bin/python bench/bench_paper_tasks.py [--layers 4] [--docs 16] [--new-tokens 32]

1. Reading checkpoint.pt: our allow-listed unpickler (torch.load(weights_only=True) + the
   allow-list, memory-mapped) against the unrestricted torch.load(weights_only=False) that
   transformers' conversion script and fairseq use, on a fairseq-layout checkpoint of BioGPT's
   width (1024, 16 heads, 4096) at --layers depth with the full 42,384 + 9 learned-token vocabulary.
2. Loading: BioGptForCausalLM.from_pretrained on the fairseq folder directly vs on the converted
   safetensors folder.
3. A paper task end to end: `run_model` (our greedy decoding, left-padded batches of 8) on --docs
   DDI test abstracts against transformers' greedy generate on the same ids and weights (the
   converted folder, 4 layers at 256 wide so it finishes on two cores); outputs checked identical.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import torch

from common import REPO, alternate, machine

import biogpt  # noqa: E402
from biogpt.fairseq import convert, safe_load  # noqa: E402
from biogpt.paper_eval import default_data_dir, read_split  # noqa: E402
from biogpt.paper_tasks import input_ids, prompt_format_of, run_model  # noqa: E402
from testkit.fairseq_checkpoints import LEARNED, FakeFairseqMeters, build_fairseq_folder  # noqa: E402

FULL_DICTIONARY = 42380  # BioGPT's dict.txt lines


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--docs", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    results: dict = {"machine": machine()}
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        build_fairseq_folder(root / "base", dict(dim=1024, heads=16, ffn=4096, layers=args.layers),
                             dict_words=FULL_DICTIONARY)
        checkpoint = root / "base" / "checkpoint.pt"

        def unrestricted():  # needs fairseq's classes importable, as in a fairseq install
            with FakeFairseqMeters():
                return torch.load(checkpoint, map_location="cpu", weights_only=False)

        times = alternate({"allow_listed": lambda: safe_load(checkpoint), "unrestricted": unrestricted}, repeats=3)
        results["read_checkpoint_s"] = times
        results["read_ratio_allow_listed_over_unrestricted"] = times["allow_listed"] / times["unrestricted"]
        convert(root / "base", root / "base-converted")
        times = alternate({"fairseq_folder": lambda: biogpt.BioGptForCausalLM.from_pretrained(root / "base"),
                           "converted": lambda: biogpt.BioGptForCausalLM.from_pretrained(root / "base-converted")},
                          repeats=3)
        results["from_pretrained_s"] = times
        results["load_ratio_fairseq_over_converted"] = times["fairseq_folder"] / times["converted"]

        build_fairseq_folder(root / "small", dict(dim=256, heads=4, ffn=1024, layers=4), dict_words=FULL_DICTIONARY)
        convert(root / "small", root / "small-converted", task="ddi")
        ours = biogpt.BioGptForCausalLM.from_pretrained(root / "small-converted")
        tokenizer = biogpt.BioGptTokenizer.from_pretrained(root / "small-converted")
        from transformers import BioGptForCausalLM as HfCausalLM

        theirs = HfCausalLM.from_pretrained(root / "small-converted").eval()
        sources = [e.source for e in read_split("ddi", default_data_dir() / "DDI" / "test.json")[:args.docs]]
        prompt = prompt_format_of(ours)
        rows = [input_ids(prompt, tokenizer, s) for s in sources]

        def transformers_greedy():
            texts = []
            for start in range(0, len(rows), 8):
                batch = rows[start:start + 8]
                width = max(map(len, batch))
                ids = torch.tensor([[1] * (width - len(r)) + r for r in batch])
                mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in batch])
                with torch.inference_mode():
                    out = theirs.generate(ids, attention_mask=mask, do_sample=False, num_beams=1,
                                          max_new_tokens=args.new_tokens, pad_token_id=1)
                texts += [tokenizer.decode([i for i in row if i != 1], skip_special_tokens=True)
                          for row in out[:, width:].tolist()]
            return texts

        ours_texts = [p.text for p in run_model(ours, tokenizer, "ddi", sources, args.new_tokens)]
        assert ours_texts == transformers_greedy(), "greedy outputs differ from transformers'"
        times = alternate({"ours": lambda: run_model(ours, tokenizer, "ddi", sources, args.new_tokens),
                           "transformers": transformers_greedy}, repeats=3)
        results["ddi_greedy_s"] = times
        results["ddi_speedup_ours_over_transformers"] = times["transformers"] / times["ours"]
    results["settings"] = {"layers": args.layers, "docs": args.docs, "new_tokens": args.new_tokens, "learned": LEARNED}
    out = REPO / "bench" / "results" / "paper_tasks.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
