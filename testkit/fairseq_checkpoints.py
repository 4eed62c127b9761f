"""Fairseq-layout BioGPT checkpoints for tests and benchmarks: the real key names, dict.txt and
bpecodes formats, argparse or cfg settings, fairseq metric meters and numpy scalars, learned
prompt rows; random weights at the two published widths (BioGPT, BioGPT-Large), any depth."""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]

# The vocabulary rebuilt from Microsoft's dict.txt (../shared/tokenizers), else the bundled copy of it.
SHARED_VOCAB = REPO.parent / "shared" / "tokenizers" / "biogpt"
TOKENIZER_DIR = SHARED_VOCAB if SHARED_VOCAB.is_dir() else REPO / "assets" / "tokenizers" / "biogpt"
DICT_WORDS = 700
LEARNED = 9
# The two published widths (BioGPT, BioGPT-Large) at reduced depth, to fit a CI machine's memory.
SIZES = {"base": dict(dim=1024, heads=16, ffn=4096, layers=2), "large": dict(dim=1600, heads=25, ffn=6400, layers=1)}


def fairseq_dict_lines(count: int) -> list[str]:
    """dict.txt lines ("symbol count") rebuilt from the real vocabulary: "x</w>" -> "x", "x" -> "x@@"."""
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    ordered = sorted(((i, t) for t, i in vocab.items() if i >= 4), key=lambda item: item[0])[:count]
    return [f"{t[:-4] if t.endswith('</w>') else t + '@@'} {1000000 - i}" for i, t in ordered]


class FakeFairseqMeters:
    """Pickles objects under fairseq's own class names, as a real checkpoint holds them."""

    def __enter__(self):
        module = types.ModuleType("fairseq.logging.meters")

        class AverageMeter:
            def __init__(self):
                self.val, self.sum, self.count = np.float64(1.5), np.float64(3.0), 2

            def state_dict(self):
                return dict(self.__dict__)

        AverageMeter.__module__ = "fairseq.logging.meters"
        AverageMeter.__qualname__ = "AverageMeter"
        module.AverageMeter = AverageMeter
        self.saved = {name: sys.modules.get(name) for name in ("fairseq", "fairseq.logging", "fairseq.logging.meters")}
        for name in ("fairseq", "fairseq.logging"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["fairseq.logging.meters"] = module
        return AverageMeter

    def __exit__(self, *exc):
        for name, module in self.saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def build_fairseq_folder(folder: Path, shape: dict, seed: int = 0, use_cfg: bool = False,
                         dict_words: int = DICT_WORDS) -> dict[str, torch.Tensor]:
    """checkpoint.pt + dict.txt + bpecodes of a fine-tuned RE-DDI-like model of `shape` (see SIZES);
    returns its weights."""
    dim, ffn = shape["dim"], shape["ffn"]
    folder.mkdir(parents=True, exist_ok=True)
    lines = fairseq_dict_lines(dict_words)
    (folder / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    merges = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()[:3000]
    (folder / "bpecodes").write_text("\n".join(merges) + "\n", encoding="utf-8")
    rows = 4 + dict_words + LEARNED
    generator = torch.Generator().manual_seed(seed)

    def rand(*s, scale=0.02):
        return torch.randn(*s, generator=generator) * scale

    model = {"decoder.embed_tokens.weight": rand(rows, dim, scale=0.02), "decoder.embed_positions.weight": rand(1026, dim)}
    for n in range(shape["layers"]):
        p = f"decoder.layers.{n}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            model[p + f"self_attn.{proj}.weight"] = rand(dim, dim)
            model[p + f"self_attn.{proj}.bias"] = rand(dim)
        for norm in ("self_attn_layer_norm", "final_layer_norm"):
            model[p + f"{norm}.weight"] = 1 + rand(dim)
            model[p + f"{norm}.bias"] = rand(dim)
        model[p + "fc1.weight"], model[p + "fc1.bias"] = rand(ffn, dim), rand(ffn)
        model[p + "fc2.weight"], model[p + "fc2.bias"] = rand(dim, ffn), rand(dim)
    model["decoder.layer_norm.weight"], model["decoder.layer_norm.bias"] = 1 + rand(dim), rand(dim)
    model["decoder.output_projection.weight"] = model["decoder.embed_tokens.weight"]
    model["decoder.version"] = torch.tensor([3.0])
    args = argparse.Namespace(
        arch="transformer_lm_prompt_biogpt", task="language_modeling_prompt", data="../../data/DDI/relis-bin",
        decoder_embed_dim=dim, decoder_layers=shape["layers"], decoder_attention_heads=shape["heads"],
        decoder_ffn_embed_dim=ffn, dropout=0.1, attention_dropout=0.1, activation_dropout=0.0, activation_fn="gelu",
        no_scale_embedding=False, learned_prompt=LEARNED, learned_prompt_pattern="learned", prefix=False,
        sep_token="<seqsep>", manual_prompt=None, max_source_positions=640, max_target_positions=1024,
        lr=[np.float64(1e-4)],
    )
    with FakeFairseqMeters() as meter:
        checkpoint = {
            "args": None if use_cfg else args,
            "cfg": {"model": args, "task": {"_name": "language_modeling_prompt"}} if use_cfg else None,
            "model": model,
            "optimizer_history": [{"criterion_name": "CrossEntropyCriterion", "num_updates": np.int64(1200)}],
            "extra_state": {"metrics": {"train": [("loss", meter(), 0)]}, "train_iterator": {"epoch": 100}},
            "last_optimizer_state": {"state": {0: {"exp_avg": rand(4)}}},
        }
        torch.save(checkpoint, folder / "checkpoint.pt")
    return model
