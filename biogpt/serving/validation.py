"""Checking what a visitor sends, before any model runs: each refusal is one sentence.

`InputError` (a ValueError) carries a sentence a visitor can act on: too long, empty, unknown
model, absurd setting. Lengths are never cut silently; `Limits` holds every cap.
"""

from __future__ import annotations

import ast
import math
import re
import secrets
from dataclasses import dataclass
from typing import Any

import numpy as np

# A guide only, for caps stated in characters: BioGPT's tokens average about 5 characters of
# PubMed text (4.8 on the bundled examples); the caps themselves are counted in tokens.
CHARS_PER_TOKEN = 5


class InputError(ValueError):
    """A request the engine will not run; the message says what to change, in one sentence."""


class UntrainedHeadError(InputError):
    """The checkpoint has no trained weights for the task's head: its outputs would be noise."""


@dataclass(frozen=True)
class Limits:
    """Caps that keep one visitor from holding the server; each is reported, never applied silently."""

    max_prompt_chars: int = 6_000
    max_document_chars: int = 20_000  # NER reads long texts in windows
    max_classify_chars: int = 6_000
    max_document_tokens: int = 4_096
    max_new_tokens: int = 512
    max_return_sequences: int = 4
    max_beams: int = 8
    max_stop_strings: int = 4
    max_stop_chars: int = 40
    max_candidate_labels: int = 20
    max_label_chars: int = 100
    max_temperature: float = 10.0
    max_repetition_penalty: float = 10.0
    max_no_repeat_ngram: int = 20
    # Beam searches are not merged by the batcher; more than this many at once wait their turn.
    max_parallel_beam_searches: int = 2
    # Beam searches waiting for one of those turns (more are refused with a sentence); the
    # Generate tab keeps its own slots for streams beside them (see ui/generate_tab.py).
    max_waiting_beam_searches: int = 4

    @classmethod
    def local(cls) -> Limits:
        """Caps for a job on one's own machine (the CLI, a notebook): the web's caps keep one visitor
        from holding a shared server and do not apply; what a model can read still does (NER reads
        long documents in windows; classification and generation refuse texts over the positions)."""
        return cls(max_prompt_chars=1_000_000, max_document_chars=10_000_000, max_classify_chars=1_000_000,
                   max_document_tokens=2_000_000, max_new_tokens=100_000, max_return_sequences=64, max_beams=64,
                   max_candidate_labels=1_000, max_label_chars=1_000, max_parallel_beam_searches=64,
                   max_waiting_beam_searches=1_000)


_SURROGATES = re.compile("[\ud800-\udfff]")


def without_surrogates(text: str) -> str:
    """`text` with each lone UTF-16 surrogate replaced by U+FFFD, one character for one."""
    return _SURROGATES.sub("\ufffd", text)


def clean_text(text: Any, what: str, max_chars: int, allow_empty: bool = False) -> str:
    """The text a request may use: a string, not too long, no lone surrogates.

    A browser can send lone UTF-16 surrogates ("\\ud800"), which no encoder accepts; each
    becomes U+FFFD, one character for one, so character offsets into the text stay valid.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InputError(f"The {what} must be text, not {type(text).__name__}.")
    if len(text) > max_chars:
        raise InputError(
            f"The {what} has {len(text):,} characters; the limit here is {max_chars:,}. Shorten it and try again."
        )
    text = without_surrogates(text)
    if not allow_empty and not text.strip():
        raise InputError(f"The {what} is empty: type or paste some text first.")
    return text


def checked_number(value: Any, name: str, low: float, high: float, whole: bool = False) -> float | int:
    """A finite number in [low, high]; sliders send floats, so 3.0 is a fine whole number."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        try:
            value = float(value) if isinstance(value, str) else None
        except ValueError:
            value = None
        if value is None:
            raise InputError(f"{name} must be a number.")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number.") from None
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}.")
    if whole and value != int(value):
        raise InputError(f"{name} must be a whole number, got {value}.")
    if not low <= value <= high:
        span = f"{int(low)} and {int(high)}" if whole else f"{low:g} and {high:g}"
        raise InputError(f"{name} must be between {span}, got {value:g}.")
    return int(value) if whole else value


def parse_stop_strings(text: str | None) -> list[str]:
    r"""Comma-separated stop strings; "\n" stands for a newline, "\," for a literal comma."""
    if not text:
        return []
    parts = re.split(r"(?<!\\),", text)
    return [p.replace("\\,", ",").replace("\\n", "\n").strip(" ") for p in parts if p.strip(" ")]


# torch's CPU generator (mt19937) keeps only the low 32 bits of a seed: 0, 2**32 and 2**40 draw
# the same numbers. So seeds are exactly the 32-bit range, where every seed gives its own stream
# on every device (CUDA's Philox would take 64 bits, but then a seed would mean two things).
MAX_SEED = 2**32 - 1
_SEED_RANGE = f"a whole number from 0 to {MAX_SEED:,} (or -1 for a random one)"


def resolve_seed(requested: Any) -> int:
    """The seed to use: `requested` exactly, or a fresh one for None, "" and -1; anything that
    cannot be that seed exactly (1.5, 2**53 + 1 as a float, 2**32) is refused, never rounded."""
    if requested is None or (isinstance(requested, str) and not requested.strip()):
        return secrets.randbelow(MAX_SEED + 1)
    value = requested
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 24:  # also keeps int() away from huge digit strings
            raise InputError(f"The seed must be {_SEED_RANGE}; {text[:12]}… is not.")
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise InputError(f"The seed must be {_SEED_RANGE}, got {text!r}.") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"The seed must be {_SEED_RANGE}, not {type(requested).__name__}.")
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or not float(value).is_integer():
            raise InputError(f"The seed must be {_SEED_RANGE}, got {float(value)!r}.")
        if abs(value) > 2**53:  # a float this large stands for many integers: which seed was meant is lost
            raise InputError(f"The seed {float(value):.0f} arrived as a rounded decimal number; "
                             f"send {_SEED_RANGE} as an integer.")
    value = int(value)
    if value == -1:
        return secrets.randbelow(MAX_SEED + 1)
    if not 0 <= value <= MAX_SEED:
        shown = f"{value:,}" if len(str(abs(value))) <= 30 else f"a {len(str(abs(value))):,}-digit number"
        raise InputError(f"The seed must be {_SEED_RANGE}, got {shown}.")
    return value


def candidate_labels(labels: Any, limits: Limits) -> list[str]:
    """Zero-shot candidates from a comma/newline-separated string or a list of strings.

    A REST client that sends a JSON list to the text box gets its Python spelling ("['a', 'b']");
    that is read back as the list it was, not split into the labels "['a'" and "'b']".
    """
    if isinstance(labels, str):
        text = labels.strip()
        most = limits.max_candidate_labels * (limits.max_label_chars + 6)  # quotes, comma, space
        if len(text) > most:
            raise InputError(f"The candidate labels have {len(text):,} characters; at most {most:,} are read.")
        parsed = None
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                parsed = None
        if isinstance(parsed, list) and all(isinstance(label, str) for label in parsed):
            labels = parsed
        else:
            labels = [part.strip() for part in re.split(r"[,\n]", labels)]
    elif isinstance(labels, (list, tuple)):
        strange = next((label for label in labels if not isinstance(label, str)), None)
        if strange is not None:
            raise InputError(f"Each candidate label must be text, not {type(strange).__name__}.")
    else:
        raise InputError("The candidate labels must be text separated by commas or a list of texts, "
                         f"not {type(labels).__name__}.")
    return list(dict.fromkeys(without_surrogates(label.strip()) for label in labels if label and label.strip()))
