"""`biogpt analyze FILE...`: what the model sees in each text: tokens, its next-token guesses and
its attention heads' statistics (the Attention tab's analysis, as data)."""

from __future__ import annotations

import argparse
import functools
import json

from ..corpus import Task, add_arguments, run_job
from .engine_options import add_model_arguments, build_engine, one_by_one

CSV_COLUMNS = ["id", "tokens", "next_token", "head_statistics"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("analyze", help="tokens, next-token guesses and attention-head statistics of each text")
    add_arguments(parser, (("text", "jsonl"), ("jsonl", "csv")), batch=1)
    add_model_arguments(parser, "bundled")
    parser.add_argument("--top", type=int, default=3, help="next-token candidates kept at each position (default 3)")
    return parser


def csv_rows(result: dict) -> list[dict]:
    """Lists and tables as JSON text in their cells, one row per document."""
    return [{"id": result["id"], **{k: json.dumps(result[k], ensure_ascii=False) for k in CSV_COLUMNS[1:]}}]


def build(args: argparse.Namespace):
    engine = build_engine(args)

    def analysis(document) -> dict:
        found = engine.analyze(document.text, args.model)
        top = max(1, args.top)
        return {
            "id": document.id, "tokens": list(found.tokens), "offsets": [list(span) for span in found.offsets],
            "next_token": [[[str(label), round(float(p), 6)] for label, p in zip(labels[:top], probs[:top])]
                           for labels, probs in zip(found.top_labels, found.top_probs)],
            "head_statistics": {name: values.round(6).tolist() for name, values in found.head_statistics().items()},
        }

    return one_by_one(analysis)


def run(args: argparse.Namespace) -> int:
    return run_job(args, Task("analyze", functools.partial(build, args), CSV_COLUMNS, csv_rows))
