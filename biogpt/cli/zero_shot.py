"""`biogpt zero-shot --labels A,B FILE...`: candidate labels scored by the language model."""

from __future__ import annotations

import argparse
import functools

from ..corpus import Task, add_arguments, run_job
from .classify import CSV_COLUMNS, as_record, csv_rows
from .engine_options import add_model_arguments, build_engine, one_by_one


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..serving import ZERO_SHOT_TEMPLATE

    parser = subparsers.add_parser("zero-shot", help="candidate labels of each document, scored by the language model")
    add_arguments(parser, (("text", "jsonl"), ("jsonl", "csv")))
    add_model_arguments(parser, "bundled")
    parser.add_argument("--labels", required=True, help="candidate labels, comma-separated")
    parser.add_argument("--template", default=ZERO_SHOT_TEMPLATE, help="prompt with {text} and {label}")
    parser.add_argument("--no-normalize", action="store_true", help="score labels by total, not per-token, log-likelihood")
    return parser


def build(args: argparse.Namespace):
    engine = build_engine(args)
    return one_by_one(lambda document: as_record(document.id, engine.zero_shot(
        document.text, args.labels, args.template, args.model, normalize=not args.no_normalize)))


def run(args: argparse.Namespace) -> int:
    return run_job(args, Task("zero-shot", functools.partial(build, args), CSV_COLUMNS, csv_rows))
