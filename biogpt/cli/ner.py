"""`biogpt ner FILE...`: entity spans of every document, batched (Engine.ner_many)."""

from __future__ import annotations

import argparse
import collections
import functools

from ..corpus import Task, add_arguments, run_job
from .engine_options import add_model_arguments, build_engine

CSV_COLUMNS = ["id", "start", "end", "type", "text", "score"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("ner", help="named entities of each document (JSONL, CSV, PubTator, BioC out)")
    add_arguments(parser, (("text", "jsonl", "pubtator", "bioc"), ("jsonl", "csv", "pubtator", "bioc")))
    add_model_arguments(parser, "bundled-ner")
    parser.add_argument("--aggregation", default="auto", choices=["auto", "first", "last", "average", "max"],
                        help="how a word's tag is read from its pieces (auto: as the model was trained)")
    return parser


def csv_rows(result: dict) -> list[dict]:
    """One row per entity; a document without entities still gets a row (its id), so resume sees it."""
    return [{"id": result["id"], **entity} for entity in result["entities"]] or [{"id": result["id"]}]


def build(args: argparse.Namespace):
    engine = build_engine(args)

    def process(documents):
        waiting = collections.deque()

        def texts():
            for document in documents:
                waiting.append(document)
                yield document.text

        # zip asks ner_many first: the document it answers is then in `waiting`
        for found, document in zip(engine.ner_many(texts(), args.model, args.aggregation, batch_docs=args.batch),
                                   _popping(waiting)):
            if isinstance(found, Exception):
                yield found
                continue
            result = {"id": document.id, "text": document.text,
                      "entities": [{"start": e.start, "end": e.end, "type": e.type, "text": e.text,
                                    "score": round(float(e.score), 6)} for e in found.entities]}
            if "title_length" in document.fields:
                result["title_length"] = document.fields["title_length"]
            yield result

    return process


def _popping(queue: collections.deque):
    while True:
        yield queue.popleft()


def task(args: argparse.Namespace) -> Task:
    return Task("ner", functools.partial(build, args), CSV_COLUMNS, csv_rows,
                input_formats=("text", "jsonl", "pubtator", "bioc"), output_formats=("jsonl", "csv", "pubtator", "bioc"))


def run(args: argparse.Namespace) -> int:
    return run_job(args, task(args))
