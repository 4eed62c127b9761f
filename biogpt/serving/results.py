"""What the engine returns: plain dataclasses of strings, floats and numpy arrays, so a tab (or
a test, or a script) never touches torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class GeneratedText:
    """One continuation, token by token, with how sure the decoder was of each token."""

    text: str
    token_ids: np.ndarray  # int64 [n]
    token_texts: list[str]  # each token's slice of `text` ("" for tokens that print nothing); joined == text
    probabilities: np.ndarray  # float32 [n]: probability of each chosen token under the decoding distribution
    alternatives: list[list[tuple[str, float]]]  # top candidates at each step, best first
    finish_reason: str | None = None  # "length" | "eos" | "stop"; None while streaming
    beam_score: float | None = None
    # The token id of each listed alternative, parallel to `alternatives`: what a branch forces.
    alternative_ids: list[list[int]] = field(default_factory=list)


@dataclass
class GenerationResult:
    """What one Generate request produced so far (streaming) or in the end."""

    prompt: str
    samples: list[GeneratedText]
    settings: dict[str, Any]  # everything needed to reproduce it, seed included
    model: str  # "name · device · dtype"
    finished: bool
    elapsed: float  # seconds since the request started decoding
    first_token_seconds: float | None
    new_tokens: int

    @property
    def tokens_per_second(self) -> float:
        decoding = self.elapsed - (self.first_token_seconds or 0.0)
        if self.new_tokens > 1 and decoding > 0:
            return (self.new_tokens - 1) / decoding
        return self.new_tokens / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class AnswerResult:
    """PubMedQA: yes / no / maybe scored by the language model."""

    prompt: str
    answers: list[str]
    probabilities: np.ndarray  # float32 [3], softmax of the log-likelihoods over the three answers
    log_likelihoods: np.ndarray  # float32 [3]
    model: str
    settings: dict[str, Any]

    @property
    def best(self) -> str:
        return self.answers[int(np.argmax(self.probabilities))]


@dataclass
class Entity:
    start: int  # character offsets into the text (Python string indices)
    end: int
    type: str
    text: str
    score: float  # mean confidence of the entity's words


@dataclass
class NerResult:
    text: str
    entities: list[Entity]
    entity_types: list[str]
    aggregation: str  # the strategy used ("auto" resolved)
    model: str
    settings: dict[str, Any]
    num_tokens: int
    elapsed: float


@dataclass
class ClassificationResult:
    text: str
    labels: list[str]
    probabilities: np.ndarray  # float32 [labels]
    predicted: list[str]  # above the threshold (multi-label) or the arg-max
    mode: str  # "supervised" | "zero-shot"
    multi_label: bool
    threshold: float | None  # multi-label only
    model: str
    settings: dict[str, Any]
    scores: np.ndarray | None = None  # zero-shot: the log-likelihood each label got
    elapsed: float = 0.0


def align_tokens(text: str, surfaces: list[str]) -> list[str]:
    """Cut `text` into one slice per token so the slices join back to `text` exactly.

    Decoding undoes Moses tokenisation (spaces around punctuation go, escapes are unescaped),
    so a token's own surface form is found in the text from where the previous one ended; the
    whitespace before it joins its slice. A token not found there (a special token, or one cut
    off by a stop string) gets "".
    """
    slices: list[str] = []
    position = 0
    for surface in surfaces:
        found = text.find(surface, position) if surface else -1
        # Only whitespace may lie between two tokens' texts; anything else means "not this token".
        if found < 0 or text[position:found].strip():
            slices.append("")
            continue
        end = found + len(surface)
        slices.append(text[position:end])
        position = end
    if position < len(text):
        # Rare: detokenisation changed a character. Keep the text whole on the last visible token.
        last = max((i for i, s in enumerate(slices) if s), default=len(slices) - 1)
        if last >= 0:
            slices[last] += text[position:]
    return slices
