"""The command line: `python -m biogpt.train lm|ner|classify ...` (flags -> TrainConfig -> run).

The only place that turns a TrainError into a message and an exit status: bad data (DataError)
prints "error: FILE, line N: ..." on stderr and exits with 2; any other TrainError exits with 1
and "error: ..." on stderr (what SystemExit with a message does).
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from dataclasses import MISSING, fields

from .config import TASK_DEFAULTS, TrainConfig, TrainError
from .data import DataError
from .run import run_training


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m biogpt.train", description=_description(),
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)

    lm = sub.add_parser("lm", help="causal language model (pretraining)")
    ner = sub.add_parser("ner", help="token classification (BIO) with strict span F1")
    cls = sub.add_parser("classify", help="sequence classification from text<TAB>label TSV")
    prompt = sub.add_parser("prompt", help="the BioGPT paper's tasks in its learned-prompt format (DDI, KD-DTI, ...)")
    for p in (lm, ner, cls, prompt):  # each its own copies: set_defaults on shared parent actions would leak
        _add_common_arguments(p)

    lm.add_argument("--block-size", type=int)

    ner.add_argument("--train-on-dev", action="store_true", help="also train on --valid; validate on a slice of train")
    ner.add_argument("--double-text", action="store_true", help="input '</s> text </s> text', labels on the second copy")
    ner.add_argument("--label-token", choices=["first", "last"], help="which BPE piece of a word is labelled")
    ner.add_argument("--max-length", type=int, help="window length in pieces (default: as many as the positions allow)")
    ner.add_argument("--stride", type=int, help="window stride (default: half a window)")
    ner.add_argument("--entity-types", help="comma-separated types (default: those in the training data)")
    ner.add_argument("--classifier-dropout", type=float)

    cls.add_argument("--multi-label", action="store_true", help="labels joined by --label-sep; sigmoid + tuned threshold")
    cls.add_argument("--label-sep")
    cls.add_argument("--empty-label", help="multi-label: this label means 'none' (all zeros)")
    cls.add_argument("--labels", help="comma-separated label order (default: sorted labels of the training data)")
    cls.add_argument("--max-length", type=int, help="truncate inputs to N tokens (default: the model's positions)")
    cls.add_argument("--train-on-dev", action="store_true", help="also train on --valid; validate on a slice of train")
    from ..paper_tasks import TASKS

    prompt.add_argument("--paper-task", choices=sorted(TASKS), help="which task's data and sentences")
    prompt.add_argument("--learned-prompt", type=int, help="learned prompt tokens (default: Microsoft's for the task)")
    prompt.add_argument("--max-source-positions", type=int, help="source tokens kept (default: Microsoft's)")
    prompt.add_argument("--loss-on", choices=["all", "target"], help="loss on the whole sequence (fairseq's) or the answer")
    prompt.add_argument("--answer-tokens", type=int,
                        help="cap on generated tokens when scoring the test split (default: up to the positions)")
    for name, p in (("lm", lm), ("ner", ner), ("classify", cls), ("prompt", prompt)):
        _set_defaults(p, name)
    return parser


def _description() -> str:
    # The package's docstring opens with the one-line summary --help shows.
    return importlib.import_module(__package__).__doc__.split("\n\n")[0]


def _set_defaults(parser: argparse.ArgumentParser, task: str) -> None:
    """The flags' defaults are TrainConfig's and the task's (TASK_DEFAULTS), written once there."""
    defaults = {f.name: f.default_factory() if f.default_factory is not MISSING else f.default
                for f in fields(TrainConfig) if f.default is not MISSING or f.default_factory is not MISSING}
    defaults.update(TASK_DEFAULTS[task])
    flags = {action.dest for action in parser._actions}
    parser.set_defaults(**{k: v for k, v in defaults.items() if k in flags})


def _add_common_arguments(common: argparse.ArgumentParser) -> None:
    g = common.add_argument_group("data and output")
    g.add_argument("--train", nargs="+", required=True, help="training files (names containing 'test' are refused)")
    g.add_argument("--valid", nargs="+", help="validation files (default: --valid-percent of the training data)")
    g.add_argument("--test", nargs="+", help="test files: used only for the final evaluation")
    g.add_argument("--valid-percent", type=float, help="held-out share of training data when no --valid")
    g.add_argument("--out", required=True, help="output folder (save_pretrained format + tokenizer + metrics)")
    g.add_argument("--tokenizer", help="tokenizer folder (default: --init's if it has one, else the bundled BioGPT tokenizer)")
    g.add_argument("--limit-train", type=int, help="use only the first N training examples (smoke tests)")
    g.add_argument("--limit-eval", type=int, help="use only the first N validation and test examples (smoke tests)")
    g.add_argument("--workers", type=int, help="tokenisation processes")
    g = common.add_argument_group("model")
    g.add_argument("--init", help="start from this checkpoint (folder or hub id); otherwise a new model")
    g.add_argument("--config-json", help="shape of a new model (a config.json)")
    for flag in ("--layers", "--hidden", "--heads", "--intermediate", "--max-positions"):  # a new model's shape
        g.add_argument(flag, type=int)
    g.add_argument("--dropout", type=float, help="hidden and attention dropout (default: the checkpoint's, 0.1 for new)")
    g.add_argument("--freeze-embeddings", action="store_true", help="keep the token embeddings fixed (fine-tuning)")
    g = common.add_argument_group("optimisation")
    g.add_argument("--epochs", type=float)
    g.add_argument("--max-steps", type=int)
    g.add_argument("--max-minutes", type=float, help="time budget for the training loop (0 = none)")
    g.add_argument("--batch-size", type=int)
    g.add_argument("--eval-batch-size", type=int)
    g.add_argument("--grad-accum", type=int)
    g.add_argument("--lr", type=float)
    g.add_argument("--weight-decay", type=float)
    g.add_argument("--beta1", type=float)
    g.add_argument("--beta2", type=float)
    g.add_argument("--warmup-steps", type=int, help="default: 6%% of the planned steps")
    g.add_argument("--schedule", choices=["cosine", "linear", "constant"])
    g.add_argument("--min-lr-ratio", type=float)
    g.add_argument("--clip", type=float, help="gradient-norm clipping (0 = off)")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"])
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or CUDA); weights stay fp32")
    g = common.add_argument_group("evaluation, checkpoints, logging")
    g.add_argument("--eval-every", type=int, help="steps between validations (0 = once an epoch)")
    g.add_argument("--patience", type=int, help="stop after N validations without improvement (0 = never)")
    g.add_argument("--save-every", type=int, help="steps between resumable checkpoints (0 = at each validation, -1 = never)")
    g.add_argument("--checkpoint-dir", help="resumable state (default: OUT/checkpoint)")
    g.add_argument("--keep-checkpoint", action="store_true", help="keep the resumable state after a finished run")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    g.add_argument("--stop-at-step", type=int, help=argparse.SUPPRESS)  # simulates a crash (tests)
    g.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"])
    g.add_argument("--fp16-tolerance", type=float, help="max |logit diff| accepted for stored fp16 weights")
    g.add_argument("--progress", choices=["auto", "bar", "lines"])
    g.add_argument("--log-every", type=int, help="log every N steps (also every --log-seconds)")
    g.add_argument("--log-seconds", type=float)


def main(argv: list[str] | None = None) -> dict:
    started = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        config = TrainConfig.from_namespace(args, started=started, command="python -m biogpt.train " + shlex.join(argv))
        return run_training(config)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except TrainError as error:
        raise SystemExit(f"error: {error}") from None
