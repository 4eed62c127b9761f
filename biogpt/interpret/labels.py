"""Readable token strings: a BPE piece as a person reads it, the whole vocabulary's labels (cached
per tokenizer) and the labels of an analysed text's tokens."""

from __future__ import annotations

import weakref
from typing import Any, Sequence

import numpy as np

from ..tokenizer import DASH_WORD, WORD_END, XML_ESCAPES

# Moses escapes in BPE pieces, undone for display.
_MOSES_ESCAPES = {**XML_ESCAPES, DASH_WORD: "-"}
CONTINUES = "…"  # marks a BPE piece that continues into the next one (no word end)

_VOCAB_LABELS: "weakref.WeakKeyDictionary[Any, np.ndarray]" = weakref.WeakKeyDictionary()


def piece_label(piece: str, special: bool = False) -> str:
    """A BPE piece as a person reads it: `aspirin</w>` -> `aspirin`, `inflam` -> `inflam…`."""
    if special:
        return piece
    if piece.endswith(WORD_END):
        return _MOSES_ESCAPES.get(piece[: -len(WORD_END)], piece[: -len(WORD_END)])
    return _MOSES_ESCAPES.get(piece, piece) + CONTINUES


def vocab_labels(tokenizer) -> np.ndarray:
    """Readable labels of the whole vocabulary as an object array, so `labels[ids]` vectorises."""
    labels = _VOCAB_LABELS.get(tokenizer)
    if labels is None:
        special = set(tokenizer.all_special_ids)
        pieces = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
        labels = np.array([piece_label(p, i in special) for i, p in enumerate(pieces)], dtype=object)
        _VOCAB_LABELS[tokenizer] = labels
    return labels


def input_labels(tokenizer, text: str, ids: Sequence[int], offsets: Sequence[tuple[int, int]]) -> list[str]:
    """Labels of the analysed tokens: the characters each covers in the text; `</s>` for the marker."""
    labels = vocab_labels(tokenizer)
    out = []
    for token_id, (start, end) in zip(ids, offsets):
        surface = text[start:end].strip() if end > start else ""
        out.append(surface or str(labels[token_id]).rstrip(CONTINUES) or str(labels[token_id]))
    return out
