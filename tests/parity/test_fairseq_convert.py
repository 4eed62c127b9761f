"""Microsoft's fairseq checkpoints, built here in their real layout (key names, dict.txt and
bpecodes formats, argparse or cfg settings, metric meters, numpy scalars, learned prompt rows),
converted and compared: with the direct mapping of the weights, with transformers on the
converted folder (logits within 1e-5), and with loading the fairseq folder directly."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys

import pytest
import torch

import biogpt
from biogpt.fairseq import FairseqCheckpointError, read_fairseq_folder, safe_load
from biogpt.paper_tasks import PromptFormat, input_ids, prompt_format_of
from testkit.fairseq_checkpoints import DICT_WORDS, LEARNED, REPO, SIZES, build_fairseq_folder, fairseq_dict_lines
from tests.helpers import max_diff


@pytest.fixture(scope="module")
def fairseq_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fairseq")
    built = {}
    for size in SIZES:
        weights = build_fairseq_folder(root / size, SIZES[size], use_cfg=size == "large")
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


def test_omegaconf_cfg_is_read_as_data(tmp_path, monkeypatch):
    """A cfg pickled as omegaconf's DictConfig/AnyNode (names as omegaconf writes them) becomes plain values."""
    import types
    import typing

    from biogpt.fairseq import _training_args

    def record_class(module: str, name: str) -> type:
        cls = type(name, (), {"__getstate__": lambda self: self.__dict__,
                              "__setstate__": lambda self, state: self.__dict__.update(state)})
        cls.__module__, cls.__qualname__ = module, name
        monkeypatch.setitem(sys.modules, module, sys.modules.get(module) or types.ModuleType(module))
        setattr(sys.modules[module], name, cls)
        return cls

    for module in ("omegaconf", "omegaconf.dictconfig", "omegaconf.nodes", "omegaconf.base"):
        monkeypatch.setitem(sys.modules, module, types.ModuleType(module))
    dict_config = record_class("omegaconf.dictconfig", "DictConfig")
    any_node = record_class("omegaconf.nodes", "AnyNode")
    metadata = record_class("omegaconf.base", "ContainerMetadata")

    def container(content: dict):
        meta = metadata()
        meta.__dict__.update(ref_type=typing.Any, object_type=dict, key_type=typing.Any, element_type=typing.Any)
        made = dict_config()
        made.__dict__.update(_content=content, _metadata=meta, _parent=None)
        return made

    def node(value):
        made = any_node()
        made.__dict__.update(_val=value, _metadata=metadata(), _parent=None)
        return made

    model = container({"decoder_attention_heads": node(16), "learned_prompt": node(9),
                       "data": node("../../data/KD-DTI/relis-bin")})
    torch.save({"cfg": container({"model": model}), "model": {}}, tmp_path / "checkpoint.pt")
    monkeypatch.undo()  # omegaconf is not importable when the checkpoint is read, as here
    args = _training_args(safe_load(tmp_path / "checkpoint.pt"))
    assert args == {"decoder_attention_heads": 16, "learned_prompt": 9, "data": "../../data/KD-DTI/relis-bin"}
