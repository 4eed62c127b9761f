"""`biogpt train lm|ner|classify ...`: today's trainer (`python -m biogpt.train`), same flags."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser("train", help="pretrain or fine-tune a BioGPT (same flags as python -m biogpt.train)",
                                   add_help=False)
    parser.set_defaults(passes_through=True)  # every argument, --help included, is the trainer's
    return parser


def run(args: argparse.Namespace) -> int:
    import sys

    from ..train.cli import main

    try:
        main(getattr(args, "passed_through", []))
    except SystemExit as exit_:  # the trainer's CLI exits with a status, or with its message
        if isinstance(exit_.code, int) or exit_.code is None:
            return exit_.code or 0
        print(exit_.code, file=sys.stderr)
        return 1
    return 0
