"""The model flags every corpus subcommand shares, and the engine they build (biogpt.serving.Engine
with Limits.local(): a job on one's own machine is not held to the web app's caps)."""

from __future__ import annotations

import argparse
from typing import Any, Callable, Iterable, Iterator


def add_model_arguments(parser: argparse.ArgumentParser, default_model: str) -> None:
    parser.add_argument("--model", default=default_model, help=f"hub id, folder or bundled name (default {default_model})")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"])
    parser.add_argument("--quantize", default="none", choices=["none", "int8", "int4", "8bit", "4bit"])


def build_engine(args: argparse.Namespace):
    from ..serving import Engine, Limits

    return Engine(default_model=args.model, device=args.device, dtype=args.dtype, allowed_models=[args.model],
                  max_loaded_models=2, limits=Limits.local(), quantize=None if args.quantize == "none" else args.quantize,
                  batching=False)


def one_by_one(handle: Callable[[Any], dict[str, Any]]) -> Callable[[Iterable[Any]], Iterator[Any]]:
    """A task's process from a function of one document: its result, or the refusal it raised
    (an InputError: a sentence) in the result's place."""
    from ..serving import InputError

    def process(documents: Iterable[Any]) -> Iterator[Any]:
        for document in documents:
            try:
                yield handle(document)
            except InputError as refusal:
                yield refusal

    return process
