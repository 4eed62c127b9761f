"""A Generate request: the tab's controls, checked into biogpt.generation's keywords."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .validation import InputError, Limits, checked_number, without_surrogates

DECODING_MODES = ("greedy", "sampling", "beam search")


@dataclass
class GenerationRequest:
    """The Generate tab's controls, in Hugging Face's names; `mode` picks the decoding method."""

    prompt: str
    model: str = "bundled"
    max_new_tokens: int = 64
    mode: str = "sampling"
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.9
    typical_p: float = 1.0
    repetition_penalty: float = 1.2
    no_repeat_ngram_size: int = 3
    num_beams: int = 4
    num_return_sequences: int = 1
    seed: int | None = None  # None or -1: draw one (and report it); else 0 to MAX_SEED
    stop: list[str] = field(default_factory=list)

    def decoding_kwargs(self, limits: Limits) -> dict[str, Any]:
        """Checked keywords for biogpt.generation, only those the mode uses."""
        from ..generation.settings import sequence_count_problem

        if self.mode not in DECODING_MODES:
            raise InputError(f"The decoding mode must be one of {', '.join(DECODING_MODES)}, got {self.mode!r}.")
        kwargs: dict[str, Any] = {
            "max_new_tokens": checked_number(self.max_new_tokens, "Max new tokens", 1, limits.max_new_tokens, whole=True),
            "repetition_penalty": checked_number(self.repetition_penalty, "Repetition penalty", 0.01,
                                                 limits.max_repetition_penalty),
            "no_repeat_ngram_size": checked_number(self.no_repeat_ngram_size, "No-repeat n-gram size", 0,
                                                   limits.max_no_repeat_ngram, whole=True),
        }
        returns = checked_number(self.num_return_sequences, "Number of sequences", 1, limits.max_return_sequences, whole=True)
        if self.mode == "sampling":
            kwargs.update(
                do_sample=True,
                temperature=checked_number(self.temperature, "Temperature", 0.01, limits.max_temperature),
                top_k=checked_number(self.top_k, "Top-k", 0, 100_000, whole=True),
                top_p=checked_number(self.top_p, "Top-p", 0.01, 1.0),
                typical_p=checked_number(self.typical_p, "Typical-p", 0.01, 1.0),
                num_return_sequences=returns,
            )
        elif self.mode == "beam search":
            beams = checked_number(self.num_beams, "Beams", 1, limits.max_beams, whole=True)
            kwargs.update(do_sample=False, num_beams=beams, num_return_sequences=returns)
        else:
            kwargs.update(do_sample=False)
        problem = sequence_count_problem(kwargs.get("num_beams", 1), returns, kwargs["do_sample"])
        if problem:
            raise InputError(problem)
        stops = [s for s in (self.stop or []) if s]
        if len(stops) > limits.max_stop_strings:
            raise InputError(f"At most {limits.max_stop_strings} stop strings are allowed, got {len(stops)}.")
        if any(len(s) > limits.max_stop_chars for s in stops):
            raise InputError(f"Each stop string may have at most {limits.max_stop_chars} characters.")
        if stops:
            kwargs["stop"] = [without_surrogates(s) for s in stops]
        return kwargs


@dataclass
class ForcedPrefix:
    """A branch: new tokens to emit first, as token ids and/or the text of a chosen prefix (its
    tokens follow the ids), before decoding continues with the request's settings. Passed as
    `Engine.generate(request, forced=...)`; see biogpt.generation.SAMPLER_RULE for the sampler."""

    token_ids: list[int] = field(default_factory=list)
    text: str = ""

    def resolve(self, tokenizer, vocab_size: int, max_new_tokens: int, mode: str, limits: Limits) -> list[int]:
        """The forced token ids, checked (one sentence per problem): whole ids in the vocabulary,
        the text's tokens after them, no more than the request's new tokens, not with beam search."""
        ids = list(self.token_ids or [])
        if any(isinstance(t, bool) or not isinstance(t, int) for t in ids):
            raise InputError("The forced token ids must be whole numbers, e.g. [1901, 7, 42].")
        outside = sorted({t for t in ids if not 0 <= t < vocab_size})
        if outside:
            raise InputError(f"Forced token ids must be in this model's vocabulary (0 to {vocab_size - 1}); "
                             f"these are not: {outside[:10]}.")
        if self.text:
            if not isinstance(self.text, str):
                raise InputError(f"The forced prefix text must be text, not {type(self.text).__name__}.")
            text = without_surrogates(self.text)
            if len(text) > limits.max_prompt_chars:
                raise InputError(f"The forced prefix text has {len(text):,} characters; "
                                 f"the limit here is {limits.max_prompt_chars:,}.")
            ids += list(tokenizer.encode(text, add_special_tokens=False))
        if not ids:
            return []
        if mode == "beam search":
            raise InputError("Beam search cannot continue from forced tokens; branch from greedy or sampling instead.")
        if len(ids) > max_new_tokens:
            raise InputError(f"The forced prefix has {len(ids):,} tokens but Max new tokens is {max_new_tokens:,}, "
                             "which counts them; raise Max new tokens or force fewer.")
        return ids
