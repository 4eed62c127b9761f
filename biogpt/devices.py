"""Which device a run uses: one rule for the app's engine and the trainer.

torch is imported inside the functions: the engine promises that importing it is cheap.
"""

from __future__ import annotations

import platform
from typing import Any


def _mps_available(torch: Any) -> bool:
    return getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()


def resolve_device(requested: str, accelerators: tuple[str, ...] = ("cuda", "mps")) -> str:
    """"auto" is the first of `accelerators` present, else "cpu"; an explicit device that is not
    there is refused with a ValueError saying what to use instead.

    The trainer passes accelerators=("cuda",): its "auto" has never chosen an Apple GPU."""
    import torch

    if requested == "auto":
        if "cuda" in accelerators and torch.cuda.is_available():
            return "cuda"
        if "mps" in accelerators and _mps_available(torch):
            return "mps"
        return "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu.")
    if requested == "mps" and not _mps_available(torch):
        raise ValueError("--device mps was asked for, but this PyTorch has no Apple GPU support; use --device cpu.")
    return requested


def device_description(device: Any) -> str:
    """The GPU's name and CUDA version, or the CPU and its thread count (for logs and model cards)."""
    import torch

    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
