"""`biogpt classify FILE...`: the fine-tuned classifier's labels for every document."""

from __future__ import annotations

import argparse
import functools

from ..corpus import Task, add_arguments, run_job
from .engine_options import add_model_arguments, build_engine, one_by_one

CSV_COLUMNS = ["id", "predicted", "probabilities"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("classify", help="labels of each document with a fine-tuned classifier (HoC by default)")
    add_arguments(parser, (("text", "jsonl"), ("jsonl", "csv")))
    add_model_arguments(parser, "bundled-hoc")
    return parser


def as_record(identifier: str, result) -> dict:
    """A ClassificationResult as an output record (shared with zero-shot)."""
    return {"id": identifier, "predicted": list(result.predicted),
            "probabilities": {label: round(float(p), 6) for label, p in zip(result.labels, result.probabilities)}}


def csv_rows(result: dict) -> list[dict]:
    """Labels joined by '|'; probabilities as label=p, '|'-joined (one row per document)."""
    return [{"id": result["id"], "predicted": "|".join(result["predicted"]),
             "probabilities": "|".join(f"{label}={p}" for label, p in result["probabilities"].items())}]


def build(args: argparse.Namespace):
    engine = build_engine(args)
    return one_by_one(lambda document: as_record(document.id, engine.classify(document.text, args.model)))


def run(args: argparse.Namespace) -> int:
    return run_job(args, Task("classify", functools.partial(build, args), CSV_COLUMNS, csv_rows))
