"""One training run from start to end: device and seeds, data, model, the loop, the final
evaluation, metrics.json and the model card. `run_training(config)` is what the CLI calls."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import Callable

import torch

from ..devices import device_description, resolve_device
from .card import write_model_card
from .config import TrainConfig, TrainError
from .final import finish
from .loop import SIMULATED_CRASH, Trainer
from .model_setup import build_model, load_tokenizer, model_max_positions
from .tasks import make_task


def console_log(config: TrainConfig) -> Callable[[str], None]:
    """Lines on stdout prefixed with the task and the seconds since the run started."""

    def log(message: str) -> None:
        print(f"[{config.task} {time.time() - config.started:7.1f}s] {message}", flush=True)

    return log


def training_device(requested: str) -> torch.device:
    # The trainer's "auto" has only ever meant CUDA or CPU (no Apple GPU).
    try:
        return torch.device(resolve_device(requested, accelerators=("cuda",)))
    except ValueError as error:
        raise TrainError(str(error)) from None


def run_training(config: TrainConfig, log: Callable[[str], None] | None = None) -> dict:
    """Train, evaluate and save to config.out; returns the summary written to metrics.json (or,
    after --stop-at-step, {"interrupted_at_step": step}). Raises TrainError (DataError for bad data)."""
    config.check()
    log = log or console_log(config)
    out = Path(config.out)
    device = training_device(config.device)
    random.seed(config.seed)
    torch.manual_seed(config.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tokenizer = load_tokenizer(config)
    log(f"{config.command}")
    log(f"device {device_description(device)}; torch {torch.__version__}; bf16 autocast {'on' if config.bf16 else 'off'}")

    # Data first (tokenisation may fork workers, which must happen before CUDA starts).
    task = make_task(config, tokenizer, log, model_max_positions(config))

    torch.manual_seed(config.seed)
    model = build_model(config, task, tokenizer, log).to(device)
    log(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    task.to_device(device)

    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(config, task, model, tokenizer, device, out, log)
    if not config.resume:  # a fresh run: no stale log or metrics from an earlier run in this folder
        trainer.history_path.unlink(missing_ok=True)
        (out / "metrics.json").unlink(missing_ok=True)
    if config.resume:
        trainer.try_resume()
    stop = trainer.run()
    if stop == SIMULATED_CRASH:
        return {"interrupted_at_step": trainer.state["step"]}

    metrics = finish(config, task, trainer, tokenizer, device, out, log)
    wall = time.time() - config.started
    summary = {
        "task": config.task, "metric": task.metric, "best_valid_step": trainer.state["best_step"],
        "steps": trainer.state["step"], "epochs": trainer.state["step"] / trainer.steps_per_epoch,
        "tokens_seen": trainer.state["tokens"], "stop_reason": trainer.stop_reason,
        "train_loop_s": round(trainer.state["elapsed"], 1), "wall_s": round(wall, 1),
        "device": device_description(device), "torch": torch.__version__, "bf16": config.bf16,
        "save_dtype": config.save_dtype, "data": task.sizes, "command": config.command, **metrics,
    }
    if config.task == "lm":
        summary["heldout_perplexity"] = metrics["valid"]["perplexity"]
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    info = trainer.card_info("finished", metrics)
    info["wall_s"] = wall
    write_model_card(out, task, trainer.model, info)
    if not config.keep_checkpoint:
        trainer.remove_checkpoint()
    parts = [f"valid {task.headline(metrics['valid'])}"]
    if "test" in metrics:
        parts.append(f"test {task.headline(metrics['test'])}")
    print(f"SUMMARY {config.task} {out}: " + " | ".join(parts) + f" | steps {trainer.state['step']} | wall {wall:.1f}s",
          flush=True)
    return summary
