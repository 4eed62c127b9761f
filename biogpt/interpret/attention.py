"""Attention views, pure functions of [layers, heads, T, T] arrays: per-head statistics, rollout,
the display steps of a heatmap (hiding the first-token sink, the causal mask, thresholds, block
max pooling, windows) and one token's strongest links."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

# Per-head statistics, in the order the overview offers them.
STATISTICS = {
    "entropy": "Entropy (nats)",
    "first": "Share on the first token",
    "previous": "Share on the previous token",
    "distance": "Mean attended distance (tokens)",
}
# What a heatmap can show: one head, or an aggregate.
AGGREGATES = ("head", "heads", "layers", "all", "rollout")


def mean_over(attentions: np.ndarray) -> np.ndarray:
    """Mean of [layers, heads, T, T] over layers and heads, in float32, one layer at a time."""
    total = np.zeros(attentions.shape[-2:], np.float32)
    for layer in attentions:
        total += torch.from_numpy(layer).float().sum(0).numpy()
    return total / (attentions.shape[0] * attentions.shape[1])


def head_statistics(attentions: np.ndarray) -> dict[str, np.ndarray]:
    """Per-head statistics of [layers, heads, T, T] attentions, each a [layers, heads] array.

    For every query row i the head gives a distribution a_i over keys j <= i:
      entropy   -sum_j a_ij log a_ij (nats; 0 = all on one token, log(i+1) = uniform);
      first     a_i0, the share on the first token (</s>, the usual "attention sink");
      previous  a_i,i-1, the share on the token just before;
      distance  sum_j a_ij (i - j), how far back the head looks on average, in tokens.
    Each is averaged over query rows 1..T-1: row 0 can only attend to itself and would say
    nothing (with a single token, row 0 is used).
    """
    layers, heads, length, _ = attentions.shape
    rows = slice(1, None) if length > 1 else slice(0, 1)
    offsets = torch.arange(length)
    distance = (offsets.view(-1, 1) - offsets.view(1, -1)).clamp_min(0).float()
    stats = {name: np.zeros((layers, heads), np.float32) for name in STATISTICS}
    for layer in range(layers):
        a = torch.from_numpy(attentions[layer]).float()[:, rows]  # [heads, rows, keys]
        logs = torch.log(a.clamp_min(1e-30))
        stats["entropy"][layer] = (-(a * logs).sum(-1)).mean(-1).numpy()
        stats["first"][layer] = a[:, :, 0].mean(-1).numpy()
        if length > 1:
            # Row i (i >= 1) of the sliced block sits at index i-1; its previous key is i-1.
            stats["previous"][layer] = torch.diagonal(a, dim1=1, dim2=2).mean(-1).numpy()
        stats["distance"][layer] = (a * distance[rows]).sum(-1).mean(-1).numpy()
    return stats


def rollout(attentions: np.ndarray, residual: float = 0.5) -> np.ndarray:
    """Attention rollout (Abnar & Zuidema, 2020) after each layer, [layers, T, T] float32.

    Each layer mixes tokens through attention and keeps its own stream through the residual
    connection, so its token-mixing matrix is taken as Â_l = 0.5 * mean_heads(A_l) + 0.5 * I,
    with rows renormalised to sum to 1. Mixing composes by matrix product:
        R_0 = Â_0,   R_l = Â_l @ R_{l-1}.
    Row i of R_l says how much of token i's representation after layer l comes from each input
    token, if information flowed only along attention weights.
    """
    layers, _, length, _ = attentions.shape
    identity = torch.eye(length)
    out = np.empty((layers, length, length), np.float32)
    current = identity
    for layer in range(layers):
        mixed = (1 - residual) * torch.from_numpy(attentions[layer]).float().mean(0) + residual * identity
        mixed = mixed / mixed.sum(-1, keepdim=True)
        current = mixed @ current
        out[layer] = current.numpy()
    return out


def hide_first_token(matrix: np.ndarray) -> np.ndarray:
    """Drop the first token (row and column) and renormalise rows: the map without the sink.

    Row i of the result is row i+1 of `matrix` over keys 1..i+1, divided by what is left after
    the first token's share; a row whose whole mass was on the first token becomes NaN.
    """
    inner = matrix[1:, 1:].astype(np.float32)
    totals = hidden_row_totals(matrix)[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, inner / totals, np.nan).astype(np.float32)


def hidden_row_totals(matrix: np.ndarray) -> np.ndarray:
    """What `hide_first_token` divides row i + 1 by: its weight on keys 1.., [T - 1] float32. A page that
    redraws the map itself divides by these same numbers, so its cells equal the server's bit for bit."""
    return matrix[1:, 1:].astype(np.float32).sum(-1)


def threshold(matrix: np.ndarray, minimum: float) -> np.ndarray:
    """Values below `minimum` become NaN (drawn blank), so only the strong links remain."""
    if minimum <= 0:
        return matrix
    return np.where(matrix >= minimum, matrix, np.nan).astype(np.float32)


def causal_mask(matrix: np.ndarray, first_query: int = 0, first_key: int = 0) -> np.ndarray:
    """NaN where a key lies after its query (the future a decoder cannot see), for blank cells."""
    rows = np.arange(matrix.shape[0]).reshape(-1, 1) + first_query
    cols = np.arange(matrix.shape[1]).reshape(1, -1) + first_key
    return np.where(cols <= rows, matrix, np.nan).astype(np.float32)


def block_max(matrix: np.ndarray, max_side: int) -> tuple[np.ndarray, int]:
    """Shrink a square-ish map to at most `max_side` cells a side by the max of each block.

    Max (not mean) keeps thin structure visible: a diagonal or a sink column survives pooling.
    Returns the pooled map and the block size.
    """
    side = max(matrix.shape)
    block = max(1, -(-side // max_side))
    if block == 1:
        return matrix, 1
    rows = -(-matrix.shape[0] // block) * block
    cols = -(-matrix.shape[1] // block) * block
    padded = np.full((rows, cols), np.nan, np.float32)
    padded[: matrix.shape[0], : matrix.shape[1]] = matrix
    blocks = padded.reshape(rows // block, block, cols // block, block)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN block (the blank future) stays NaN
        return np.nanmax(blocks, axis=(1, 3)).astype(np.float32), block


def token_links(
    layer_attentions: np.ndarray, position: int, head: int | None = None, direction: str = "to", top: int = 8
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The strongest links of one token in one layer: (heads, other positions, weights).

    direction "to": what token `position` attends to (its row); "from": which tokens attend to
    it (its column). With `head` None every head contributes its own `top` links.
    """
    if direction not in ("to", "from"):
        raise ValueError("direction must be 'to' or 'from'.")
    heads = range(layer_attentions.shape[0]) if head is None else [head]
    out_heads, out_positions, out_weights = [], [], []
    for h in heads:
        weights = layer_attentions[h, position] if direction == "to" else layer_attentions[h, :, position]
        weights = weights.astype(np.float32)
        count = min(top, int((weights > 0).sum()))
        if count == 0:
            continue
        best = np.argpartition(-weights, count - 1)[:count]
        best = best[np.argsort(-weights[best], kind="stable")]
        out_heads += [h] * len(best)
        out_positions += best.tolist()
        out_weights += weights[best].tolist()
    return np.asarray(out_heads, np.int64), np.asarray(out_positions, np.int64), np.asarray(out_weights, np.float32)

def window(length: int, start: int, size: int) -> tuple[int, int]:
    """[first, last) of a window of `size` tokens starting near `start`, inside `length` tokens."""
    size = min(size, length)
    first = max(0, min(int(start), length - size))
    return first, first + size


@dataclass
class HeatmapCells:
    """One attention map as a heatmap draws it (see `Analysis.heatmap`): NaN cells are blank.

    Rows and columns cover tokens `first`..`last - 1` of the analysis, `block` tokens a cell.
    """

    matrix: np.ndarray  # [rows, cols] float32
    first: int  # position of the first row (and column) in the analysis
    last: int  # one past the last position covered
    block: int  # tokens per cell: 1, or the block size of max pooling
    first_hidden: bool  # the first token's (the sink's) row and column are blank, the other rows renormalised
    windowed: bool  # a window of a long text, not all of it


def heatmap_cells(
    matrix: np.ndarray, hide_first: bool = False, min_weight: float = 0.0, start: int = 0, max_side: int = 256
) -> HeatmapCells:
    """A [T, T] attention map made ready to draw: the sink hidden if asked (and there is more
    than one token), the future blank, then a text longer than `max_side` either windowed from
    `start` (when `start` > 0) or pooled by block max, and weights under `min_weight` blank.

    A hidden sink stays in place as a blank row and column: both settings of the toggle cover the same
    tokens with the same cells, so a cell can be compared across them (and a page redraws only numbers)."""
    first_hidden = hide_first and matrix.shape[0] > 1
    if first_hidden:
        hidden = np.full(matrix.shape, np.nan, np.float32)
        hidden[1:, 1:] = hide_first_token(matrix)
        matrix = hidden
    matrix = causal_mask(matrix)
    length = matrix.shape[0]
    first, last, block, windowed = 0, length, 1, False
    if length > max_side and start > 0:
        first, last = window(length, start, max_side)
        matrix, windowed = matrix[first:last, first:last], True
    elif length > max_side:
        matrix, block = block_max(matrix, max_side)
    matrix = threshold(matrix, float(min_weight or 0.0))
    return HeatmapCells(matrix, first, last, block, first_hidden, windowed)
