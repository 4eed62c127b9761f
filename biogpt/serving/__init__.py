"""The serving layer: what the app, the CLI and scripts call. `Engine` is its facade."""

from .engine import (  # noqa: F401
    DECODING_MODES, MAX_SEED, NER_AGGREGATIONS, ZERO_SHOT_TEMPLATE, AnswerResult, ClassificationResult, Engine, Entity,
    GeneratedText, GenerationRequest, GenerationResult, InputError, Limits, LoadedModel, NerResult, UntrainedHeadError,
    align_tokens, clean_text, parse_stop_strings,
)
