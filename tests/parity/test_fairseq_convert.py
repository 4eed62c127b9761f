"""Microsoft's fairseq checkpoints, built here in their real layout (key names, dict.txt and
bpecodes formats, argparse or cfg settings, metric meters, numpy scalars, learned prompt rows),
converted and compared: with the direct mapping of the weights, with transformers on the
converted folder (logits within 1e-5), and with loading the fairseq folder directly."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import biogpt
from biogpt.fairseq import FairseqCheckpointError, read_fairseq_folder, safe_load
from biogpt.paper_tasks import PromptFormat, input_ids, prompt_format_of
from tests.helpers import max_diff

REPO = Path(__file__).resolve().parents[2]
REAL_VOCAB = Path("/work/shared/tokenizers/biogpt") if Path("/work/shared").is_dir() else REPO.parent / "shared/tokenizers/biogpt"
TOKENIZER_DIR = REAL_VOCAB if REAL_VOCAB.is_dir() else REPO / "assets/tokenizers/biogpt"
DICT_WORDS = 700
LEARNED = 9
# The two published widths (BioGPT, BioGPT-Large) at reduced depth, to fit a CI machine's memory.
SIZES = {"base": dict(dim=1024, heads=16, ffn=4096, layers=2), "large": dict(dim=1600, heads=25, ffn=6400, layers=1)}


def fairseq_dict_lines(count: int) -> list[str]:
    """dict.txt lines ("symbol count") rebuilt from the real vocabulary: "x</w>" -> "x", "x" -> "x@@"."""
    vocab = json.loads((TOKENIZER_DIR / "vocab.json").read_text(encoding="utf-8"))
    ordered = sorted(((i, t) for t, i in vocab.items() if i >= 4), key=lambda item: item[0])[:count]
    return [f"{t[:-4] if t.endswith('</w>') else t + '@@'} {1000000 - i}" for i, t in ordered]


class _MeterModule:
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


def build_fairseq_folder(folder: Path, size: str, seed: int = 0, use_cfg: bool = False) -> dict[str, torch.Tensor]:
    """checkpoint.pt + dict.txt + bpecodes of a fine-tuned RE-DDI-like model; returns its weights."""
    shape = SIZES[size]
    dim, ffn = shape["dim"], shape["ffn"]
    folder.mkdir(parents=True, exist_ok=True)
    lines = fairseq_dict_lines(DICT_WORDS)
    (folder / "dict.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    merges = (TOKENIZER_DIR / "merges.txt").read_text(encoding="utf-8").splitlines()[:3000]
    (folder / "bpecodes").write_text("\n".join(merges) + "\n", encoding="utf-8")
    rows = 4 + DICT_WORDS + LEARNED
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
    with _MeterModule() as meter:
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


@pytest.fixture(scope="module")
def fairseq_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fairseq")
    built = {}
    for size in SIZES:
        weights = build_fairseq_folder(root / size, size, use_cfg=size == "large")
        built[size] = (root / size, weights)
    return built


def test_malicious_pickle_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran"

    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = tmp_path / "checkpoint.pt"
    torch.save({"model": {"decoder.embed_tokens.weight": torch.zeros(2, 2)}, "args": Exploit()}, path)
    with pytest.raises(FairseqCheckpointError, match=r"system.*not on the allow-list"):
        safe_load(path)
    assert not marker.exists()
    # A plain (non-zip) pickle with a GLOBAL of its own is refused the same way.
    legacy = tmp_path / "legacy.pt"
    legacy.write_bytes(pickle.dumps({"x": Exploit()}, protocol=2))
    with pytest.raises(FairseqCheckpointError):
        safe_load(legacy)
    assert not marker.exists()


@pytest.mark.parametrize("size", list(SIZES))
def test_convert_matches_direct_mapping_and_transformers(tmp_path, fairseq_folders, size, one_thread):
    from transformers import BioGptForCausalLM as HfCausalLM

    folder, weights = fairseq_folders[size]
    out = tmp_path / "converted"
    result = subprocess.run([sys.executable, "-m", "biogpt.cli", "convert", str(folder), str(out)],
                            capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert {"config.json", "model.safetensors", "vocab.json", "merges.txt", "tokenizer_config.json"} <= {
        p.name for p in out.iterdir()}

    ours = biogpt.BioGptForCausalLM.from_pretrained(out)
    direct = biogpt.BioGptForCausalLM.from_pretrained(folder)  # the fairseq folder itself
    state = ours.state_dict()
    for name, tensor in weights.items():  # the direct mapping: decoder.X -> biogpt.X, bit for bit
        if name == "decoder.version":
            continue
        ours_name = "output_projection.weight" if name == "decoder.output_projection.weight" else "biogpt." + name[8:]
        assert torch.equal(state[ours_name], tensor), name
    config = json.loads((out / "config.json").read_text())
    assert config["hidden_size"] == SIZES[size]["dim"] and config["num_attention_heads"] == SIZES[size]["heads"]
    assert config["vocab_size"] == 4 + DICT_WORDS + LEARNED

    theirs = HfCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    generator = torch.Generator().manual_seed(1)
    ids = torch.cat([torch.tensor([[2]]), torch.randint(4, 4 + DICT_WORDS + LEARNED, (1, 40), generator=generator)], 1)
    with torch.no_grad():
        ours_logits = ours(ids).logits
        assert max_diff(ours_logits, theirs(ids).logits) <= 1e-5
        assert torch.equal(ours_logits, direct(ids).logits)


def test_prompt_rows_and_tokenizer(tmp_path, fairseq_folders):
    from transformers import BioGptTokenizer as HfTokenizer

    folder, weights = fairseq_folders["base"]
    out = tmp_path / "converted"
    biogpt.fairseq.convert(folder, out)
    vocab = json.loads((out / "vocab.json").read_text())
    first = 4 + DICT_WORDS
    assert [vocab[f"learned{i}</w>"] for i in range(1, LEARNED + 1)] == list(range(first, first + LEARNED))
    model = biogpt.BioGptForCausalLM.from_pretrained(out)
    assert torch.equal(model.biogpt.embed_tokens.weight[first:], weights["decoder.embed_tokens.weight"][first:])
    prompt = prompt_format_of(model)
    assert prompt == PromptFormat(task="ddi", learned_tokens=[f"learned{i}</w>" for i in range(1, 10)],
                                  max_source_positions=640, source="fairseq")

    text = "the interaction between aspirin and warfarin is effect."
    converted = biogpt.BioGptTokenizer.from_pretrained(out)
    direct = biogpt.BioGptTokenizer.from_pretrained(folder)
    theirs = HfTokenizer.from_pretrained(out)
    assert converted.encode(text) == direct.encode(text) == theirs.encode(text)
    ids = input_ids(prompt, converted, text)
    assert ids[0] == 2 and ids[-LEARNED:] == list(range(first, first + LEARNED))
    assert converted.decode(ids[-LEARNED:]) == " ".join(f"learned{i}" for i in range(1, 10))


def test_read_errors_are_sentences(tmp_path, fairseq_folders):
    folder, _ = fairseq_folders["base"]
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "checkpoint.pt").write_bytes((folder / "checkpoint.pt").read_bytes())
    (broken / "bpecodes").write_text("t h 1\n")
    with pytest.raises(FairseqCheckpointError, match="no dict.txt"):
        read_fairseq_folder(broken)
    (broken / "dict.txt").write_text("\n".join(fairseq_dict_lines(DICT_WORDS + 50)) + "\n")
    with pytest.raises(FairseqCheckpointError, match="same model"):
        read_fairseq_folder(broken)
    result = subprocess.run([sys.executable, "-m", "biogpt.cli", "convert", str(broken), str(tmp_path / "o")],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 1 and "same model" in result.stderr and "Traceback" not in result.stderr
