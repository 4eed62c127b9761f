"""Shared benchmark helpers: the full-size random checkpoint, side-by-side timing, peak memory.

Timings on these shared machines are noisy, so every comparison alternates ours and the
reference in one run and reports medians after a warm-up, as ratios.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
# `python bench/bench_x.py` puts bench/ on the path, not the repository: until the project is an
# installable package (issue 18), this one line is how a benchmark run as a script imports biogpt
# and testkit (the helpers it shares with tests/; never tests/ itself).
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from testkit.checkpoints import perturb_  # noqa: E402


def full_size_checkpoint(perturb: bool = True) -> Path:
    """microsoft/biogpt's shape with random weights, saved once by transformers (fp32 safetensors)."""
    import transformers

    folder = RESULTS / ("full-random-perturbed" if perturb else "full-random")
    if (folder / "model.safetensors").is_file():
        return folder
    torch.manual_seed(0)
    model = transformers.BioGptForCausalLM(transformers.BioGptConfig())
    if perturb:
        perturb_(model, seed=0, scale=2.0)
    model.save_pretrained(folder)
    return folder


def small_checkpoint() -> Path:
    """4 layers, 256 wide, 4 heads, the full 42,384-token vocabulary: where Python overhead shows."""
    import transformers

    folder = RESULTS / "small-random"
    if (folder / "model.safetensors").is_file():
        return folder
    torch.manual_seed(0)
    config = transformers.BioGptConfig(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024)
    model = transformers.BioGptForCausalLM(config)
    perturb_(model, seed=0, scale=5.0)
    model.save_pretrained(folder)
    return folder


def alternate(named: dict[str, Callable[[], object]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each callable, run in turns so that machine noise hits all alike."""
    for _ in range(warmup):
        for fn in named.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in named}
    for _ in range(repeats):
        for name, fn in named.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def machine() -> str:
    """The machine a result was measured on: CPU model, the instruction sets that change which
    kernels are exact or fast (biogpt.cpu), cores, torch and threads."""
    import os

    from biogpt.cpu import cpu_flags, cpu_model

    sets = [name for name in ("avx512_vnni", "avx512_bf16", "amx_bf16", "avx2") if name in cpu_flags()] or ["none of avx2/avx512"]
    return (f"{cpu_model()} ({' '.join(sets)}), {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads")
