"""`biogpt pubmedqa FILE.jsonl`: yes / no / maybe for {"id", "question", "context"} records."""

from __future__ import annotations

import argparse
import functools

from ..corpus import Task, add_arguments, run_job
from .engine_options import add_model_arguments, build_engine, one_by_one

CSV_COLUMNS = ["id", "answer", "yes", "no", "maybe"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("pubmedqa", help='yes/no/maybe for JSONL {"id", "question", "context"} records')
    add_arguments(parser, (("jsonl",), ("jsonl", "csv")))
    add_model_arguments(parser, "bundled")
    return parser


def build(args: argparse.Namespace):
    engine = build_engine(args)

    def answer(document) -> dict:
        result = engine.answer_pubmedqa(document.fields["question"], document.fields["context"], args.model,
                                        document.fields.get("long_answer") or "")
        return {"id": document.id, "answer": result.best,
                **{a: round(float(p), 6) for a, p in zip(result.answers, result.probabilities)}}

    return one_by_one(answer)


def run(args: argparse.Namespace) -> int:
    return run_job(args, Task("pubmedqa", functools.partial(build, args), CSV_COLUMNS,
                              fields=("question", "context"), input_formats=("jsonl",)))
