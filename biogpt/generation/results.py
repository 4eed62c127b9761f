"""What generation hands back: one GeneratedSequence per output, or one StreamEvent per token."""

from __future__ import annotations

from dataclasses import dataclass

from .settings import FinishReason


@dataclass
class TokenChoice:
    """One candidate for the next token and its probability under the decoding distribution."""

    token_id: int
    token: str
    probability: float


@dataclass
class GeneratedSequence:
    """One generated continuation with everything a UI needs to show how sure the model was."""

    text: str  # the continuation only, special tokens skipped, cut before a stop string
    token_ids: list[int]  # new tokens, including the final eos if one was generated; no padding
    token_logprobs: list[float]  # natural log-probability of each token in token_ids
    alternatives: list[list[TokenChoice]]  # the most likely candidates at each step, best first
    finish_reason: FinishReason
    prompt_index: int = 0  # which prompt of the batch this continues
    beam_score: float | None = None  # beam search only: transformers' `sequences_scores`
    forced_tokens: int = 0  # the first this many of token_ids were forced (forced_token_ids), not chosen


@dataclass
class StreamEvent:
    """One new token. `text` is the newly settled text (possibly ""): all events' `text` joined
    equal the final continuation exactly."""

    text: str
    token_id: int
    token: str
    logprob: float
    alternatives: list[TokenChoice]
    finish_reason: FinishReason | None = None  # set on the last event only
    forced: bool = False  # this token was forced (forced_token_ids), not chosen
