"""What a training run is asked to do (`TrainConfig`) and how the library refuses (`TrainError`).

The command line builds a TrainConfig from its flags; a script can build one directly. Library
code raises TrainError (a ValueError) where a run cannot go on; only the command line turns it
into a message and an exit status.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch


class TrainError(ValueError):
    """A run that cannot go on: bad settings, or data that leaves nothing to train or validate."""


# Per-task defaults, shared by the command line (set_defaults) and TrainConfig: a field that only
# one task has (block_size, label_token, multi_label ...) stays None for the other tasks, so the
# resume check compares exactly the settings the task has.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "lm": {"lr": 1e-3, "batch_size": 16, "epochs": 1, "valid_percent": 3.0, "weight_decay": 0.1, "block_size": 512},
    "ner": {"lr": 2e-4, "batch_size": 8, "epochs": 10, "valid_percent": 10.0, "train_on_dev": False,
            "double_text": False, "label_token": "last"},
    "classify": {"lr": 1e-4, "batch_size": 16, "epochs": 5, "valid_percent": 10.0, "train_on_dev": False,
                 "multi_label": False, "label_sep": "|", "empty_label": "empty"},
    "prompt": {"lr": 1e-4, "batch_size": 8, "epochs": 10, "valid_percent": 10.0, "loss_on": "all"},
}

# The settings a resumed run should share with its checkpoint (a difference is warned about).
RESUME_RELEVANT = ("task", "train", "valid", "init", "seed", "batch_size", "grad_accum", "lr", "epochs", "max_steps",
                   "block_size", "double_text", "label_token", "multi_label", "schedule", "warmup_steps")


@dataclass
class TrainConfig:
    """One run's settings; the names are the command-line flags' (--batch-size -> batch_size).
    None means "the task's default" (TASK_DEFAULTS) or, for a task-specific field, "not this task's"."""

    task: str
    train: list[str]
    out: str
    # data and output
    valid: list[str] | None = None
    test: list[str] | None = None
    valid_percent: float | None = None
    tokenizer: str | None = None
    limit_train: int | None = None
    limit_eval: int | None = None
    workers: int = field(default_factory=lambda: min(8, os.cpu_count() or 1))
    # model
    init: str | None = None
    config_json: str | None = None
    layers: int | None = None
    hidden: int | None = None
    heads: int | None = None
    intermediate: int | None = None
    max_positions: int | None = None
    dropout: float | None = None
    freeze_embeddings: bool = False
    # optimisation
    epochs: float | None = None
    max_steps: int = 0
    max_minutes: float = 0
    batch_size: int | None = None
    eval_batch_size: int | None = None  # default: twice batch_size
    grad_accum: int = 1
    lr: float | None = None
    weight_decay: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.98
    warmup_steps: int | None = None
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    clip: float = 1.0
    seed: int = 0
    # where and in which precision it computes
    device: str = "auto"
    bf16: bool = False
    # evaluation, checkpoints, logging
    eval_every: int = 0
    patience: int = 0
    save_every: int = 0
    checkpoint_dir: str | None = None
    keep_checkpoint: bool = False
    resume: bool = False
    stop_at_step: int = 0
    save_dtype: str = "float32"
    fp16_tolerance: float = 1e-2
    progress: str = "auto"
    log_every: int = 0
    log_seconds: float = 10.0
    # lm
    block_size: int | None = None
    # ner and classify
    train_on_dev: bool | None = None
    max_length: int | None = None
    # ner
    double_text: bool | None = None
    label_token: str | None = None
    stride: int | None = None
    entity_types: str | None = None
    classifier_dropout: float | None = None
    # classify
    multi_label: bool | None = None
    label_sep: str | None = None
    empty_label: str | None = None
    labels: str | None = None
    # prompt (the BioGPT paper's fine-tuning format; see prompt_task.py)
    paper_task: str | None = None
    learned_prompt: int | None = None
    max_source_positions: int | None = None
    loss_on: str | None = None
    answer_tokens: int | None = None
    # the run's record: when it started and the command to repeat it (for the card and metrics)
    started: float = field(default_factory=time.time)
    command: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASK_DEFAULTS:
            raise TrainError(f"unknown task {self.task!r}; expected one of {sorted(TASK_DEFAULTS)}")
        for key, value in TASK_DEFAULTS[self.task].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.eval_batch_size = self.eval_batch_size or self.batch_size * 2

    @classmethod
    def from_namespace(cls, namespace: Any, **extra: Any) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in vars(namespace).items() if k in names}, **extra)

    @property
    def save_torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.save_dtype)

    def check(self) -> None:
        """Settings that contradict each other, before any work is done."""
        if self.init and Path(self.init).resolve() == Path(self.out).resolve():
            raise TrainError("--out must differ from --init")
        if self.grad_accum < 1 or self.batch_size < 1:
            raise TrainError("--batch-size and --grad-accum must be at least 1")
        if self.task == "prompt" and (self.freeze_embeddings or not self.paper_task):
            raise TrainError("prompt needs --paper-task, and trains the learned prompt's embedding rows "
                             "(no --freeze-embeddings)")

    def resume_relevant(self) -> dict:
        return {k: getattr(self, k) for k in RESUME_RELEVANT}
