"""Side by side: two analyses (two texts on one model, one text on two models, or one text with and
without an ablation) and the differences that are defined between them.

Both sides are ordinary `Analysis` objects (each cached by the Interpreter in the one analysis
cache), so each side's heatmap, overview and logit lens are that analysis's own views. What this
module adds is what relates them:

- the token alignment: which token of A is compared with which token of B. Identical token
  sequences align one to one; otherwise only runs of identical tokens align (difflib's matching
  blocks on token ids) and the tokens that differ are listed as compared with nothing, never
  silently paired by position;
- the differences, A minus B, only where they mean something: attention maps on aligned query
  and key tokens and per-head statistics need the same layers and heads; the logit lens needs
  the same layers and vocabulary. Where they are not defined, `no_difference` says why.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

import numpy as np

from .analysis import Analysis
from .attention import STATISTICS, window
from .lens import LogitLens

KINDS = ("texts", "models", "ablation")


@dataclass
class TokenAlignment:
    """Which tokens of A and B are compared: `pairs[i] = (position in A, position in B)`, increasing."""

    pairs: np.ndarray  # [k, 2] int64
    only_a: list[int]  # positions of A compared with nothing
    only_b: list[int]
    identical: bool  # the two token sequences are the same

    def describe(self, tokens_a: list[str], tokens_b: list[str], most: int = 6) -> str:
        """One sentence a visitor can check: how many tokens are compared and which are left out."""
        if self.identical:
            return f"Both sides have the same {len(self.pairs)} tokens; each is compared with itself."

        def listed(positions: list[int], tokens: list[str]) -> str:
            shown = ", ".join(f"{p} {tokens[p]!r}" for p in positions[:most])
            return shown + (f" and {len(positions) - most} more" if len(positions) > most else "") if positions else "none"

        return (
            f"{len(self.pairs)} tokens are the same on both sides and are compared (aligned on runs of identical tokens); "
            f"left out of the difference from A: {listed(self.only_a, tokens_a)}; from B: {listed(self.only_b, tokens_b)}."
        )


def token_alignment(ids_a: np.ndarray, ids_b: np.ndarray) -> TokenAlignment:
    """Align two token sequences on their runs of identical tokens (see the module docstring)."""
    a, b = [int(x) for x in ids_a], [int(x) for x in ids_b]
    if a == b:
        pairs = np.stack([np.arange(len(a))] * 2, axis=1).astype(np.int64)
        return TokenAlignment(pairs, [], [], identical=True)
    matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
    pairs = [(block.a + i, block.b + i) for block in matcher.get_matching_blocks() for i in range(block.size)]
    matched_a, matched_b = {p for p, _ in pairs}, {q for _, q in pairs}
    return TokenAlignment(
        pairs=np.asarray(pairs, np.int64).reshape(-1, 2),
        only_a=[p for p in range(len(a)) if p not in matched_a],
        only_b=[q for q in range(len(b)) if q not in matched_b],
        identical=False,
    )


@dataclass
class AlignedDifference:
    """A - B of one attention map on aligned tokens: row i / column j is the aligned pair
    `pairs[i]` / `pairs[j]` (a window of them when there are more than `max_side`). Keys left out
    of the alignment are left out here too, so rows need not sum to zero."""

    matrix: np.ndarray  # [k, k] float32, NaN above the diagonal (the future)
    pairs: np.ndarray  # [k, 2] the aligned positions the rows and columns stand for
    windowed: bool


@dataclass
class LensDifference:
    """The logit lens of A and B at every layer on aligned positions: does the top prediction
    agree, and how much more probable is A's top token to A than B's top token is to B."""

    agree: np.ndarray  # [layers + 1, k] bool
    top_prob_difference: np.ndarray  # [layers + 1, k] float32
    pairs: np.ndarray  # [k, 2]


@dataclass
class Comparison:
    """Two analyses side by side (see the module docstring)."""

    kind: str  # one of KINDS
    a: Analysis
    b: Analysis
    names: tuple[str, str]  # how each side is called on screen
    alignment: TokenAlignment
    no_difference: str | None  # why no difference is shown, or None when differences are defined

    @property
    def same_shape(self) -> bool:
        return (self.a.num_layers, self.a.num_heads) == (self.b.num_layers, self.b.num_heads)

    def alignment_sentence(self) -> str:
        return self.alignment.describe(self.a.tokens, self.b.tokens)

    def heatmap_difference(self, layer: int, head: int = 0, aggregate: str = "head", start: int = 0,
                           max_side: int = 256) -> AlignedDifference | None:
        """A's map minus B's on aligned query and key tokens; None where no difference is defined."""
        if self.no_difference:
            return None
        first, last = window(len(self.alignment.pairs), start, max_side)
        pairs = self.alignment.pairs[first:last]
        rows_a, rows_b = pairs[:, 0], pairs[:, 1]
        map_a = self.a.attention_map(layer, head, aggregate)[np.ix_(rows_a, rows_a)]
        map_b = self.b.attention_map(layer, head, aggregate)[np.ix_(rows_b, rows_b)]
        future = np.triu(np.ones((len(pairs), len(pairs)), bool), 1)
        matrix = np.where(future, np.nan, map_a - map_b).astype(np.float32)
        return AlignedDifference(matrix, pairs, windowed=last - first < len(self.alignment.pairs))

    def statistics_difference(self, statistic: str) -> np.ndarray | None:
        """A's per-head statistic minus B's, [layers, heads]; None where no difference is defined."""
        if statistic not in STATISTICS:
            raise ValueError(f"A statistic is one of {', '.join(STATISTICS)}, got {statistic!r}.")
        if self.no_difference:
            return None
        return self.a.head_statistics()[statistic] - self.b.head_statistics()[statistic]

    def lens_difference(self, lens_a: LogitLens, lens_b: LogitLens) -> LensDifference | None:
        """Top-1 agreement and top-1 probability difference of the two lenses on aligned positions;
        None when the models differ in layers or vocabulary (the lens rows would not correspond)."""
        if self.no_difference or len(self.a.next_logprobs) != len(self.b.next_logprobs):
            return None
        pairs = self.alignment.pairs
        top_a, top_b = lens_a.ids[:, pairs[:, 0], 0], lens_b.ids[:, pairs[:, 1], 0]
        difference = lens_a.probs[:, pairs[:, 0], 0] - lens_b.probs[:, pairs[:, 1], 0]
        return LensDifference(agree=top_a == top_b, top_prob_difference=difference.astype(np.float32), pairs=pairs)


def compare(kind: str, a: Analysis, b: Analysis, names: tuple[str, str]) -> Comparison:
    """Relate two analyses: their token alignment and whether differences are defined."""
    if kind not in KINDS:
        raise ValueError(f"A comparison is one of {', '.join(KINDS)}, got {kind!r}.")
    reason = None
    if (a.num_layers, a.num_heads) != (b.num_layers, b.num_heads):
        reason = (f"The models differ in shape ({a.num_layers} layers x {a.num_heads} heads against "
                  f"{b.num_layers} x {b.num_heads}), so they are shown side by side without a difference.")
    elif len(a.next_logprobs) != len(b.next_logprobs):
        reason = (f"The models have different vocabularies ({len(a.next_logprobs):,} and {len(b.next_logprobs):,} tokens), "
                  "so they are shown side by side without a difference.")
    alignment = token_alignment(a.token_ids, b.token_ids)
    if reason is None and len(alignment.pairs) == 0:
        reason = "The two texts share no token, so there is nothing to compare token by token."
    return Comparison(kind=kind, a=a, b=b, names=names, alignment=alignment, no_difference=reason)
