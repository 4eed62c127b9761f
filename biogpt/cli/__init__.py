"""`biogpt`: the command line for corpora and checkpoints. One module per subcommand.

Each module in SUBCOMMANDS exposes `add_parser(subparsers) -> argparse.ArgumentParser` (its
flags) and `run(args) -> int` (the exit status). stdout carries data only; progress, counts and
errors go to stderr. A new subcommand is a new module here plus its name in SUBCOMMANDS.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Module names under biogpt.cli, in the order `biogpt --help` lists them.
SUBCOMMANDS: tuple[str, ...] = ("generate", "ner", "classify", "zero_shot", "pubmedqa", "analyze", "train", "convert", "evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="biogpt", description="BioGPT Studio's command line for corpora and checkpoints.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        module = importlib.import_module(f".{name}", __name__)
        module.add_parser(subparsers).set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "passes_through", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if unknown:
        args.passed_through = unknown
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
