"""The logit lens and the watch list: stored hidden states read through the model's final layer
norm and output projection (the model's weights, but no new forward).

The lens (top-k at every layer and position) is computed once per analysis and memoised; the
watch list reads one position's full distribution at every layer.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch

from .labels import vocab_labels

if TYPE_CHECKING:
    from .analysis import Analysis

LENS_K = 5  # logit-lens candidates kept per layer and position


@dataclass
class LogitLens:
    """Top-k tokens and probabilities at every layer and position: [layers + 1, T, k].

    Row 0 reads the embeddings, row l the residual stream after layer l, each through the
    final layer norm and the output projection; the last row is the model's own prediction.
    """

    ids: np.ndarray  # int64
    probs: np.ndarray  # float32
    labels: np.ndarray  # object
    seconds: float = 0.0


def lens_project(model, hidden: torch.Tensor, is_last: bool) -> torch.Tensor:
    """Log-probabilities from residual streams [..., D]. The last hidden state already went
    through the final layer norm (transformers' convention), so it is not normed twice."""
    hidden = hidden.to(device=model.device, dtype=model.dtype)
    if not is_last:
        hidden = model.biogpt.layer_norm(hidden)
    return torch.log_softmax(model.output_projection(hidden).float(), dim=-1)


def logit_lens(model, tokenizer, analysis: Analysis, k: int = LENS_K, rows_per_chunk: int = 512) -> LogitLens:
    """The logit lens of every layer at every position (see `LogitLens`).

    Costs (layers) x T projections onto the vocabulary, about three plain forwards on
    microsoft/biogpt, which is why it is computed on first request and memoised, not in `analyze`.
    The last row is taken from the analysis (the model's own logits, exactly).
    """
    started = time.perf_counter()
    k = min(k, analysis.top_ids.shape[1])
    steps, length, _ = analysis.hidden_states.shape
    ids = np.empty((steps, length, k), np.int64)
    probs = np.empty((steps, length, k), np.float32)
    flat = torch.from_numpy(analysis.hidden_states[:-1]).reshape(-1, analysis.hidden_states.shape[-1])
    with torch.inference_mode():
        for start in range(0, flat.shape[0], rows_per_chunk):
            hidden = flat[start : start + rows_per_chunk].to(device=model.device, dtype=model.dtype)
            logits = model.output_projection(model.biogpt.layer_norm(hidden)).float()
            top = logits.topk(k, dim=-1)  # top-k and the normaliser, without a full log_softmax copy
            logprobs = top.values - torch.logsumexp(logits, dim=-1, keepdim=True)
            ids[:-1].reshape(-1, k)[start : start + rows_per_chunk] = top.indices.cpu().numpy()
            probs[:-1].reshape(-1, k)[start : start + rows_per_chunk] = logprobs.exp().cpu().numpy()
    ids[-1] = analysis.top_ids[:, :k]
    probs[-1] = analysis.top_probs[:, :k]
    return LogitLens(ids=ids, probs=probs, labels=vocab_labels(tokenizer)[ids], seconds=time.perf_counter() - started)


def lens_column(model, analysis: Analysis, position: int) -> np.ndarray:
    """Full log-probabilities at one position through every layer: [layers + 1, vocab] float32.

    The last row is the model's own distribution (exact after the last token; from the stored
    final hidden state elsewhere).
    """
    hidden = torch.from_numpy(analysis.hidden_states[:, position].astype(np.float32))
    with torch.inference_mode():
        rows = torch.cat([lens_project(model, hidden[:-1], is_last=False), lens_project(model, hidden[-1:], is_last=True)])
    rows = rows.cpu().numpy()
    if position == analysis.length - 1:
        rows[-1] = analysis.next_logprobs
    return rows


@dataclass
class WatchList:
    """Where chosen tokens stand at one position, layer by layer."""

    words: list[str]  # what the user typed
    ids: np.ndarray  # [n] the token each word maps to (its first BPE piece)
    labels: list[str]  # readable tokens
    position: int
    ranks: np.ndarray  # [layers + 1, n] int64, 1 = top prediction
    probs: np.ndarray  # [layers + 1, n] float32


def word_token(tokenizer, word: str) -> int:
    """The token a word begins with when it appears after a space (its first BPE piece)."""
    ids = tokenizer.encode(word.strip(), add_special_tokens=False)
    if not ids:
        raise ValueError(f"{word!r} has no tokens.")
    return int(ids[0])


def watch_ranks(model, tokenizer, analysis: Analysis, position: int, words: Sequence[str]) -> WatchList:
    words = [w.strip() for w in words if w.strip()]
    ids = np.asarray([word_token(tokenizer, w) for w in words], np.int64)
    column = analysis.memo(("column", position), lambda: lens_column(model, analysis, position), keep=4)
    chosen = column[:, ids]  # [layers + 1, n]
    ranks = (column[:, None, :] > chosen[:, :, None]).sum(-1) + 1 if len(ids) else np.zeros((column.shape[0], 0), np.int64)
    return WatchList(
        words=words, ids=ids, labels=[str(x) for x in vocab_labels(tokenizer)[ids]], position=position,
        ranks=np.asarray(ranks, np.int64), probs=np.exp(chosen).astype(np.float32),
    )
