"""`biogpt generate FILE...`: a continuation of every prompt (greedy by default: reproducible)."""

from __future__ import annotations

import argparse
import functools

from ..corpus import Task, add_arguments, run_job
from .engine_options import add_model_arguments, build_engine, one_by_one

CSV_COLUMNS = ["id", "prompt", "generated", "finish_reason", "seed"]


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..serving import DECODING_MODES

    parser = subparsers.add_parser("generate", help="continue each prompt with the language model")
    add_arguments(parser, (("text", "jsonl"), ("jsonl", "csv")), batch=1)
    add_model_arguments(parser, "bundled")
    parser.add_argument("--mode", default="greedy", choices=DECODING_MODES)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-k", type=int, default=50)
    parser.add_argument("--top-p", type=float, default=0.9)
    parser.add_argument("--repetition-penalty", type=float, default=1.2)
    parser.add_argument("--no-repeat-ngram-size", type=int, default=3)
    parser.add_argument("--num-beams", type=int, default=4)
    parser.add_argument("--seed", type=int, default=None, help="sampling: the seed of every document (default: a new one each)")
    return parser


def build(args: argparse.Namespace):
    from ..serving import GenerationRequest

    engine = build_engine(args)

    def continuation(document) -> dict:
        request = GenerationRequest(
            prompt=document.text, model=args.model, max_new_tokens=args.max_new_tokens, mode=args.mode,
            temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
            no_repeat_ngram_size=args.no_repeat_ngram_size, num_beams=args.num_beams, seed=args.seed)
        *_, last = engine.generate(request)
        sample = last.samples[0]
        return {"id": document.id, "prompt": document.text, "generated": sample.text,
                "finish_reason": sample.finish_reason, "seed": last.settings.get("seed")}

    return one_by_one(continuation)


def run(args: argparse.Namespace) -> int:
    return run_job(args, Task("generate", functools.partial(build, args), CSV_COLUMNS))
