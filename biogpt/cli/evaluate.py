"""`biogpt evaluate TASK MODEL`: Microsoft's evaluation of a fine-tuned paper-task model (converted
with `biogpt convert`, or trained with `biogpt train prompt`) on the task's test split.

stdout: the scores as JSON. stderr: progress and the headline. --predictions writes one JSON line
per example (its id, the generated text, the parsed items and every malformed piece)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..paper_tasks import TASKS

    parser = subparsers.add_parser(
        "evaluate", help="score a fine-tuned paper-task model on its test split as Microsoft's scripts do",
        description="DDI, KD-DTI: hard-match P/R/F1; PubMedQA: accuracy; HoC: micro F1; BC5CDR: a mention-level "
                    "score (not the official BioCreative metric).")
    parser.add_argument("task", choices=sorted(TASKS))
    parser.add_argument("model", help="a converted or trained model folder, or a fairseq folder")
    parser.add_argument("--split", default=None, help="split file (default: the task's test split in ../shared/data)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N examples")
    parser.add_argument("--max-new-tokens", type=int, default=None,
                        help="cap on generated tokens (default: up to the model's positions, as Microsoft's inference)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--predictions", default=None, help="write each example's generation and parse here (JSONL)")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..model import BioGptForCausalLM
    from ..paper_eval import TEST_FILES, default_data_dir, evaluate_model, read_split
    from ..tokenizer import BioGptTokenizer

    split = args.split or str(default_data_dir() / TEST_FILES[args.task])
    started = time.time()
    try:
        if not Path(split).is_file():
            raise ValueError(f"the split file {split} does not exist (set BIOGPT_DATA or pass --split)")
        examples = read_split(args.task, split)[:args.limit]
        if not examples:
            raise ValueError(f"{split} holds no {args.task} examples")
        model = BioGptForCausalLM.from_pretrained(args.model)
        tokenizer = BioGptTokenizer.from_pretrained(args.model)
        scores, parsed = evaluate_model(model, tokenizer, args.task, examples, args.max_new_tokens, args.batch_size)
    except (ValueError, OSError) as error:
        print(f"biogpt evaluate: {error}", file=sys.stderr)
        return 1
    scores.update(model=args.model, split=split, seconds=round(time.time() - started, 1))
    if args.predictions:
        with open(args.predictions, "w", encoding="utf-8") as f:
            for example, output in zip(examples, parsed):
                f.write(json.dumps({"id": example.id, "text": output.text, "items": output.items,
                                    "malformed": output.malformed}) + "\n")
    headline = scores["headline"]
    print(f"{args.task}: {headline} {scores[headline]:.2f} on {len(examples)} examples "
          f"({scores['failed']} failed, {scores['malformed_pieces']} malformed pieces)", file=sys.stderr)
    print(json.dumps(scores, indent=2))
    return 0
