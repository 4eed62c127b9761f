"""After training: the best weights saved in --save-dtype, checked against fp32, and the final
validation and test numbers measured on the stored weights (what a user loads)."""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import STUDIO_KEY
from .checkpoints import load_state, save_model_folder
from .config import TrainConfig, TrainError
from .loop import Trainer
from .tasks import Task


@torch.no_grad()
def storage_check(task: Task, reference, stored, device, pad_id: int) -> dict:
    """|logit difference| between the fp32 best weights and the stored (e.g. fp16) ones, at real
    (non-pad) positions of a few validation inputs. Both run in fp32 (what a CPU user gets); on
    CUDA also the stored weights computed in fp16."""
    reference.eval()
    stored.eval()
    half = copy.deepcopy(stored).to(torch.float16) if device.type == "cuda" else None
    worst, worst_half, total, count, scale = 0.0, 0.0, 0.0, 0, 0.0
    for batch in task.sample_batches(4):
        ids = batch["input_ids"].to(device)
        a = reference(input_ids=ids).logits.float()
        diff = (a - stored(input_ids=ids).logits.float()).abs()
        keep = (ids != pad_id) if a.dim() == 3 else torch.ones(a.shape[0], dtype=torch.bool, device=device)
        worst = max(worst, diff[keep].max().item())
        total += diff[keep].sum().item()
        count += diff[keep].numel()
        scale = max(scale, a[keep].abs().max().item())
        if half is not None:
            worst_half = max(worst_half, (a - half(input_ids=ids).logits.float()).abs()[keep].max().item())
    result = {"max_abs_logit_diff": worst, "mean_abs_logit_diff": total / max(count, 1), "max_abs_logit": scale,
              "compute": "fp32 on the stored weights, real (non-pad) positions"}
    if half is not None:
        result["max_abs_logit_diff_fp16_compute"] = worst_half
    return result


def finish(config: TrainConfig, task: Task, trainer: Trainer, tokenizer, device: torch.device, out: Path,
           log: Callable[[str], None]) -> dict:
    """Save the best model to `out` and return its metrics: valid, test (if any), fp16_check (if not fp32)."""
    model = trainer.model
    if trainer.best_state is None:
        raise TrainError("no evaluation ran, so there is no best model to save")
    load_state(model, trainer.best_state)
    model.config.extra[STUDIO_KEY] = task.studio_extra()
    save_model_folder(model, tokenizer, out, config.save_torch_dtype)
    tokenizer.save_pretrained(out)
    stored = task.model_class.from_pretrained(out, device=device)
    model.eval()
    metrics: dict[str, Any] = {}
    if config.save_torch_dtype != torch.float32:
        check = storage_check(task, model, stored, device, tokenizer.pad_token_id)
        check.update(stored_dtype=config.save_dtype, tolerance=config.fp16_tolerance)
        check["within_tolerance"] = check["max_abs_logit_diff"] <= config.fp16_tolerance
    no_autocast = contextlib.nullcontext
    # Final numbers come from the stored weights, computed in fp32: what a user loads.
    metrics["valid"] = task.evaluate(stored, "valid", no_autocast)
    if config.save_torch_dtype != torch.float32:
        fp32_value = task.evaluate(model, "valid", no_autocast)[task.metric]
        check[f"valid_{task.metric}_fp32_weights"] = fp32_value
        check[f"valid_{task.metric}_stored_weights"] = metrics["valid"][task.metric]
        metrics["fp16_check"] = check
        log(f"stored {config.save_dtype} weights: max |logit diff| vs fp32 = {check['max_abs_logit_diff']:.2e} "
            f"(mean {check['mean_abs_logit_diff']:.1e}, logits up to {check['max_abs_logit']:.1f}); validation "
            f"{task.metric} {fp32_value:.4f} (fp32) vs {metrics['valid'][task.metric]:.4f} (stored)"
            + ("" if check["within_tolerance"] else f"  WARNING: above the tolerance {config.fp16_tolerance}"))
    if task.has_split("test"):
        metrics["test"] = task.evaluate(stored, "test", no_autocast)
    return metrics
