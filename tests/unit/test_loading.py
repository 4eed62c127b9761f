"""Checkpoint loading and saving: folders, hub cache, .bin files, shards, heads, bad checkpoints."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import biogpt
from biogpt.loading import ModelNotAvailableError, read_safetensors, resolve_model_dir
from testkit import REPO
from tests.helpers import TINY, hf_checkpoint, load_hf, max_diff

IDS = torch.tensor([[2, 17, 400, 33, 981, 5, 77]])


@pytest.mark.parametrize(
    "head,config_kwargs",
    [("BioGptForCausalLM", {}), ("BioGptForTokenClassification", {"num_labels": 5}),
     ("BioGptForSequenceClassification", {"num_labels": 3}), ("BioGptModel", {})],
)
def test_our_save_loads_in_transformers_with_identical_outputs(tmp_path, head, config_kwargs):
    source = hf_checkpoint(tmp_path, TINY, head, **config_kwargs)
    ours = getattr(biogpt, head).from_pretrained(source)
    saved = tmp_path / "ours"
    ours.save_pretrained(saved)
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    theirs = load_hf(saved, head)
    reloaded = getattr(biogpt, head).from_pretrained(saved)
    with torch.no_grad():
        ours_out = ours(IDS)
        key = "last_hidden_state" if head == "BioGptModel" else "logits"
        assert max_diff(getattr(ours_out, key), getattr(theirs(IDS), key)) <= 1e-5
        assert max_diff(getattr(ours_out, key), getattr(reloaded(IDS), key)) == 0
    if config_kwargs:
        assert json.loads((saved / "config.json").read_text())["id2label"]["0"] == "LABEL_0"


def test_hub_style_pytorch_bin_with_output_projection_loads(tmp_path):
    """The hub's original microsoft/biogpt files are pytorch_model.bin holding output_projection.weight."""
    source = hf_checkpoint(tmp_path, TINY)
    theirs = load_hf(source)
    folder = tmp_path / "bin"
    folder.mkdir()
    state = {k: v.clone() for k, v in theirs.state_dict().items()}
    assert "output_projection.weight" in state
    torch.save(state, folder / "pytorch_model.bin")
    (folder / "config.json").write_text((source / "config.json").read_text())
    ours = biogpt.BioGptForCausalLM.from_pretrained(folder)
    assert ours.output_projection.weight is ours.biogpt.embed_tokens.weight
    with torch.no_grad():
        assert max_diff(ours(IDS).logits, theirs(IDS).logits) <= 1e-5


def test_sharded_safetensors_load(tmp_path):
    source = hf_checkpoint(tmp_path, TINY)
    theirs = load_hf(source)
    sharded = tmp_path / "sharded"
    theirs.save_pretrained(sharded, max_shard_size="100KB")
    assert (sharded / "model.safetensors.index.json").is_file()
    ours = biogpt.BioGptForCausalLM.from_pretrained(sharded)
    with torch.no_grad():
        assert max_diff(ours(IDS).logits, theirs(IDS).logits) <= 1e-5


def test_dtype_options(tmp_path):
    source = hf_checkpoint(tmp_path, TINY)
    assert biogpt.BioGptForCausalLM.from_pretrained(source).dtype == torch.float32
    assert biogpt.BioGptForCausalLM.from_pretrained(source, dtype="bfloat16").dtype == torch.bfloat16
    assert biogpt.BioGptForCausalLM.from_pretrained(source, torch_dtype=torch.float16).dtype == torch.float16
    half = tmp_path / "half"
    biogpt.BioGptForCausalLM.from_pretrained(source, dtype=torch.float16).save_pretrained(half)
    assert biogpt.BioGptForCausalLM.from_pretrained(half, dtype="auto").dtype == torch.float16
    with pytest.raises(ValueError, match="Unknown dtype"):
        biogpt.BioGptForCausalLM.from_pretrained(source, dtype="float17")


def test_base_checkpoint_into_a_head_is_flagged_untrained(tmp_path, caplog):
    source = hf_checkpoint(tmp_path, TINY)
    with caplog.at_level(logging.WARNING, logger="biogpt.loading"):
        tagger = biogpt.BioGptForTokenClassification.from_pretrained(source, id2label={0: "O", 1: "B-Chemical", 2: "I-Chemical"})
    assert tagger.head_is_untrained
    assert "classifier.weight" in caplog.text and "initialised at random" in caplog.text
    assert tagger.classifier.weight.shape == (3, TINY["hidden_size"])
    assert torch.isfinite(tagger.classifier.weight).all() and tagger.classifier.weight.std() > 0
    lm = biogpt.BioGptForCausalLM.from_pretrained(source)
    assert not lm.head_is_untrained
    # The shared body is the checkpoint's, whatever the head.
    assert torch.equal(tagger.biogpt.layers[1].fc1.weight, lm.biogpt.layers[1].fc1.weight)


def test_bare_model_checkpoint_into_a_head_and_back(tmp_path):
    source = hf_checkpoint(tmp_path, TINY, "BioGptModel")
    lm = biogpt.BioGptForCausalLM.from_pretrained(source)
    base = biogpt.BioGptModel.from_pretrained(hf_checkpoint(tmp_path, TINY, "BioGptForCausalLM"))
    assert not lm.head_is_untrained  # tied projection comes with the embeddings
    assert isinstance(base, biogpt.BioGptModel)


def test_unexpected_and_misshapen_keys_are_named(tmp_path):
    source = hf_checkpoint(tmp_path, TINY)
    state = read_safetensors(source / "model.safetensors")
    from safetensors.torch import save_file

    extra = tmp_path / "extra"
    extra.mkdir()
    (extra / "config.json").write_text((source / "config.json").read_text())
    save_file({**state, "biogpt.layers.7.fc1.weight": torch.zeros(2, 2)}, extra / "model.safetensors")
    with pytest.raises(ValueError, match=r"biogpt\.layers\.7\.fc1\.weight"):
        biogpt.BioGptForCausalLM.from_pretrained(extra)

    wrong = tmp_path / "wrong"
    wrong.mkdir()
    config = json.loads((source / "config.json").read_text())
    config["intermediate_size"] = 99
    (wrong / "config.json").write_text(json.dumps(config))
    save_file(state, wrong / "model.safetensors")
    with pytest.raises(ValueError, match=r"fc1\.weight \(128, 64\) \(expected \(99, 64\)\)"):
        biogpt.BioGptForCausalLM.from_pretrained(wrong)

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    (truncated / "config.json").write_text((source / "config.json").read_text())
    (truncated / "model.safetensors").write_bytes((source / "model.safetensors").read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        biogpt.BioGptForCausalLM.from_pretrained(truncated)


def test_pickled_objects_are_refused(tmp_path):
    """torch.load(weights_only=True): a .bin holding arbitrary Python objects does not unpickle."""
    source = hf_checkpoint(tmp_path, TINY)
    folder = tmp_path / "evil"
    folder.mkdir()
    (folder / "config.json").write_text((source / "config.json").read_text())
    torch.save({"x": torch.zeros(1), "payload": os.system}, folder / "pytorch_model.bin")
    with pytest.raises(Exception, match="[Ww]eights only load failed|Unsupported"):
        biogpt.BioGptForCausalLM.from_pretrained(folder)


def test_missing_things_say_what_is_wrong(tmp_path):
    with pytest.raises(ModelNotAvailableError, match="neither a folder nor a Hugging Face model id"):
        resolve_model_dir(tmp_path / "nope", ["config.json"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelNotAvailableError, match="no config.json"):
        biogpt.BioGptForCausalLM.from_pretrained(empty)
    (empty / "config.json").write_text("{}")
    with pytest.raises(ModelNotAvailableError, match="has no weights"):
        biogpt.BioGptForCausalLM.from_pretrained(empty)


def make_hub_cache(cache, repo_id: str, files: dict) -> None:
    """Lay out a Hugging Face cache the way huggingface_hub writes one."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, source in files.items():
        (snapshot / name).write_bytes(source.read_bytes())


def test_hub_id_loads_from_the_local_cache_offline(tmp_path):
    """The real path: a hub id, HF_HUB_CACHE and HF_HUB_OFFLINE=1, in a fresh process."""
    source = hf_checkpoint(tmp_path, TINY)
    tokenizer_dir = REPO / "assets" / "tokenizers" / "biogpt"
    cache = tmp_path / "hub"
    make_hub_cache(cache, "microsoft/biogpt", {
        "config.json": source / "config.json", "model.safetensors": source / "model.safetensors",
        "vocab.json": tokenizer_dir / "vocab.json", "merges.txt": tokenizer_dir / "merges.txt",
    })
    script = textwrap.dedent(f"""
        import torch, biogpt
        from biogpt.loading import ModelNotAvailableError
        model = biogpt.BioGptForCausalLM.from_pretrained("microsoft/biogpt")
        direct = biogpt.BioGptForCausalLM.from_pretrained({str(source)!r})
        ids = torch.tensor({IDS.tolist()})
        with torch.no_grad():
            assert torch.equal(model(ids).logits, direct(ids).logits)
        try:
            biogpt.BioGptForCausalLM.from_pretrained("microsoft/BioGPT-Large")
        except ModelNotAvailableError as error:
            print("ERROR:", error)
        print("OK")
    """)
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "ERROR: The model 'microsoft/BioGPT-Large' is not in the local Hugging Face cache" in result.stdout
