"""The serving layer: what the app, the CLI and scripts call, with `Engine` as its facade.

    validation  what a request may hold (Limits, InputError, clean_text, seeds)
    requests    the Generate tab's request, checked into generation keywords
    results     the plain dataclasses every method returns
    registry    which models a visitor may pick; each loaded once, kept in a bounded LRU
    generating  streamed and whole generations; beam searches' turns
    scoring     PubMedQA and zero-shot labels by log-likelihood
    tagging     NER spans and classification with fine-tuned heads
    engine      Engine: check, load, hand to the module above

The errors a caller handles come from here too: InputError (and UntrainedHeadError), a refusal
in one sentence; ModelNotAvailableError, a model neither on disk nor downloadable; and
DecodingStopped, a generation whose reader left.
"""

import importlib

from ..hub import ModelNotAvailableError
from .engine import Engine
from .registry import LoadedModel, ModelRegistry
from .requests import DECODING_MODES, GenerationRequest
from .results import (AnswerResult, ClassificationResult, Entity, GeneratedText, GenerationResult, NerResult,
                      align_tokens)
from .scoring import ZERO_SHOT_TEMPLATE
from .tagging import NER_AGGREGATIONS
from .validation import MAX_SEED, InputError, Limits, UntrainedHeadError, clean_text, parse_stop_strings

# Raised while decoding when `should_stop` says yes; imported on first use, as it brings torch.
_LAZY = {"DecodingStopped": "..generation.run"}


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'biogpt.serving' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)


__all__ = [
    "DecodingStopped", "ModelNotAvailableError",
    "DECODING_MODES", "MAX_SEED", "NER_AGGREGATIONS", "ZERO_SHOT_TEMPLATE", "AnswerResult", "ClassificationResult",
    "Engine", "Entity", "GeneratedText", "GenerationRequest", "GenerationResult", "InputError", "Limits",
    "LoadedModel", "ModelRegistry", "NerResult", "UntrainedHeadError", "align_tokens", "clean_text",
    "parse_stop_strings",
]
