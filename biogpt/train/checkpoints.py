"""Files a run writes: the model folder (save_pretrained + tokenizer, replaced atomically) and the
resumable checkpoint (weights as safetensors; optimizer, counters and RNG through torch.save, read
back with weights_only=True)."""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
from pathlib import Path

import torch

CHECKPOINT_STATE = "trainer_state.pt"
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_BEST = "best.safetensors"


def state_without_tied(model) -> dict[str, torch.Tensor]:
    """The weights to store: a tied output projection is the embedding, stored once."""
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("output_projection.weight", None)
    return state


def save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)


def load_tensors(model, path: Path) -> None:
    from safetensors.torch import load_file

    load_state(model, load_file(path))


def save_model_folder(model, tokenizer, out: Path, dtype: torch.dtype) -> None:
    """save_pretrained in `dtype` (config.json + model.safetensors, written atomically) + tokenizer files."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    clone = copy.deepcopy(model).to("cpu", dtype)
    clone.save_pretrained(tmp)
    for name in ("config.json", "model.safetensors"):
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)
    if not (out / "vocab.json").is_file():
        tokenizer.save_pretrained(out)


def load_state(model, state: dict[str, torch.Tensor]) -> None:
    device = model.device
    missing, unexpected = model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    tied = {"output_projection.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"the saved state does not fit the model (missing {missing}, unexpected {unexpected})")


class CheckpointFolder:
    """The resumable state in one folder, which may be shared or user-chosen: only this class's
    three files are ever written or deleted there."""

    def __init__(self, folder: Path):
        self.folder = folder

    def save(self, model, optimizer, best_state: dict[str, torch.Tensor] | None, counters: dict, settings: dict,
             device: torch.device) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        save_tensors(state_without_tied(model), self.folder / CHECKPOINT_WEIGHTS)
        if best_state is not None:
            save_tensors(best_state, self.folder / CHECKPOINT_BEST)
        state = {
            "optimizer": optimizer.state_dict(),
            "counters": json.dumps(counters),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
            "args": json.dumps(settings),
        }
        tmp = self.folder / (CHECKPOINT_STATE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.folder / CHECKPOINT_STATE)

    def read_state(self) -> dict | None:
        """The saved state (None without a checkpoint); its "args" are the saved settings as JSON."""
        path = self.folder / CHECKPOINT_STATE
        if not path.is_file():
            return None
        return torch.load(path, map_location="cpu", weights_only=True)

    def restore(self, state: dict, model, optimizer, device: torch.device) -> tuple[dict, dict[str, torch.Tensor] | None]:
        """Weights, optimizer and RNG back as saved; returns (counters, best_state)."""
        load_tensors(model, self.folder / CHECKPOINT_WEIGHTS)
        optimizer.load_state_dict(state["optimizer"])
        counters = json.loads(state["counters"])
        best_state = None
        if (self.folder / CHECKPOINT_BEST).is_file():
            from safetensors.torch import load_file

            best_state = load_file(self.folder / CHECKPOINT_BEST)
        torch.set_rng_state(state["rng_cpu"])
        if device.type == "cuda" and state["rng_cuda"].numel():
            torch.cuda.set_rng_state(state["rng_cuda"], device)
        return counters, best_state

    def remove(self) -> None:
        for name in (CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, CHECKPOINT_BEST):
            (self.folder / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()  # only if now empty
