"""AdamW with its parameter groups, and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from .config import TrainConfig


def make_optimizer(model, config: TrainConfig, device) -> torch.optim.Optimizer:
    """No weight decay on biases and norms (the 1-d parameters); fused on CUDA."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8, **kwargs)


def lr_factor(step: int, warmup: int, progress: float, schedule: str, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then decay by `progress` in [0, 1] to min_ratio."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
