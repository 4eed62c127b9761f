"""Text of a continuation while it grows: incremental decoding for stop strings and streaming,
and the display text of single tokens."""

from __future__ import annotations

import math

from .results import TokenChoice


class ContinuationText:
    """The decoded text of one row's new tokens, kept current as tokens arrive, and the part of
    it already handed out as stream deltas.

    Moses detokenisation is not incremental, so the whole continuation is decoded again each
    step. What no later token can change is everything before the last space: the last word
    may still grow (BPE), or be joined by a hyphen ("@-@") or a contraction, while the rules that
    place earlier words look only leftwards. From that, enough characters are held back that a
    stop string cannot start inside text already handed out.
    """

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = stop
        self.hold_back = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""
        self.stop_at: int | None = None  # where a stop string began; text is cut there
        self.emitted = 0  # characters of text already handed out

    def append(self, token_id: int) -> bool:
        """Add a token; True if a stop string now appears (the text is then cut before it)."""
        self.ids.append(token_id)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        at = stop_index(self.text, self.stop) if self.stop else None
        if at is None:
            return False
        self.stop_at, self.text = at, self.text[:at]
        return True

    def delta(self, final: bool) -> str:
        """Text settled since the last call; `final` flushes everything that is left."""
        piece, self.emitted = settled_delta(self.text, self.emitted, self.hold_back, final)
        return piece


def settled_delta(text: str, emitted: int, hold_back: int, final: bool) -> tuple[str, int]:
    """The part of `text` after the first `emitted` characters that no later token can change,
    and the new count of characters handed out (see ContinuationText)."""
    end = len(text) if final else max(text.rfind(" ") - hold_back, 0)
    if end <= emitted:
        return "", emitted
    return text[emitted:end], end


def stop_index(text: str, stop: list[str]) -> int | None:
    """Where the earliest of the stop strings begins in `text`, or None if none occurs."""
    found = [i for i in (text.find(s) for s in stop) if i >= 0]
    return min(found) if found else None


def stop_string_hit(tokenizer, stop: list[str], new_ids: list[int]) -> bool:
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    return any(s in text for s in stop)


class TokenTexts:
    """Display text of single tokens, memoised: the same few candidates recur at every step."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.memo: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.memo.get(token_id)
        if text is None:
            text = self.memo[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return text

    def choices(self, logprobs: list[float], ids: list[int]) -> list[TokenChoice]:
        return [TokenChoice(i, self(i), math.exp(v)) for v, i in zip(logprobs, ids)]
