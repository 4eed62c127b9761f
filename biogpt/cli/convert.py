"""`biogpt convert FAIRSEQ_DIR OUT_DIR`: Microsoft's fairseq checkpoint folder (checkpoint.pt,
dict.txt, bpecodes) -> a standard folder that our classes and transformers' load (biogpt.fairseq)."""

from __future__ import annotations

import argparse
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    from ..paper_tasks import TASKS

    parser = subparsers.add_parser(
        "convert", help="convert Microsoft's fairseq BioGPT checkpoints (pretrained or fine-tuned) to a standard folder",
        description="Read checkpoint.pt (with an allow-listed unpickler), dict.txt and bpecodes; write config.json "
                    "(with the learned-prompt record), model.safetensors, vocab.json, merges.txt.")
    parser.add_argument("fairseq_dir", help="folder with checkpoint.pt (or checkpoint_avg.pt ...), dict.txt, bpecodes")
    parser.add_argument("out_dir", help="folder to write")
    parser.add_argument("--task", choices=sorted(TASKS), default=None,
                        help="the paper task the checkpoint was fine-tuned for (default: read from its data path)")
    return parser


def run(args: argparse.Namespace) -> int:
    from ..fairseq import FairseqCheckpointError, read_fairseq_folder, write_converted

    try:
        converted = read_fairseq_folder(args.fairseq_dir, args.task)
        out = write_converted(converted, args.out_dir)
    except (FairseqCheckpointError, OSError) as error:
        print(f"biogpt convert: {error}", file=sys.stderr)
        return 1
    config, prompt = converted.config, converted.prompt
    print(f"converted {config.num_hidden_layers} layers, hidden {config.hidden_size}, vocabulary {config.vocab_size} "
          f"({len(prompt.learned_tokens)} learned prompt tokens; task {prompt.task or 'unknown'}) to {out}",
          file=sys.stderr)
    print(out)
    return 0
