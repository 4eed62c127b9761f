"""ZeroGPU (Hugging Face Spaces): the GPU exists only inside functions decorated with `spaces.GPU`.

Where the `spaces` package is present, `on_zero_gpu(engine)` wraps each engine method that runs a
model in `spaces.GPU(duration=...)`, with a duration that fits the request (a generation's length
and beams; seconds for the rest). Elsewhere nothing changes: `gpu_decorator()` is None and the
app never calls `on_zero_gpu`. The app builds the engine with batching off on ZeroGPU: the
background batcher thread would run outside the decorated call, where there is no GPU.
"""

from __future__ import annotations

import functools
import importlib.util
from typing import Any, Callable

# Seconds of GPU a request may hold: a fixed part (attaching the GPU, loading the weights onto
# it) plus, for generation, a part per new token and beam. Long enough for microsoft/biogpt on a
# shared GPU; ZeroGPU queues shorter requests sooner, so not much longer.
BASE_SECONDS = 20
SECONDS_PER_TOKEN = 0.05
MAX_SECONDS = 120
# Engine methods that run a model (the Attention tab's later views reuse the cached analysis).
SHORT_METHODS = ("answer_pubmedqa", "zero_shot", "ner", "classify", "analyze")


def gpu_decorator() -> Callable[..., Any] | None:
    """`spaces.GPU` where the spaces package is installed (on a Space), else None."""
    if importlib.util.find_spec("spaces") is None:
        return None
    import spaces

    return spaces.GPU


def generation_seconds(request: Any) -> int:
    """A Generate request's GPU time: BASE_SECONDS plus SECONDS_PER_TOKEN per token and beam."""
    beams = int(getattr(request, "num_beams", 1) or 1) if getattr(request, "mode", "") == "beam search" else 1
    tokens = int(getattr(request, "max_new_tokens", 64) or 64)
    return int(min(MAX_SECONDS, BASE_SECONDS + SECONDS_PER_TOKEN * tokens * beams))


def on_zero_gpu(engine: Any, gpu: Callable[..., Any]) -> Any:
    """`engine`, its model-running methods now each running inside `gpu(duration=...)` (spaces.GPU,
    or a stand-in in tests). `generate` is a generator there, so the whole decoding runs inside."""
    original_generate = engine.generate

    def generate_on_gpu(request, *args, **kwargs):
        yield from original_generate(request, *args, **kwargs)

    engine.generate = functools.wraps(original_generate)(gpu(duration=lambda request, *a, **k: generation_seconds(request))(
        generate_on_gpu))
    for name in SHORT_METHODS:
        method = getattr(engine, name)
        setattr(engine, name, functools.wraps(method)(gpu(duration=BASE_SECONDS)(method)))
    return engine
