"""Head roles: for every layer and head, how strongly it behaves like a known kind of head, measured
on a probe the engine builds itself (no visitor text is involved, so the scores belong to the model).

The probe is a repeated random token sequence, as in the induction-head literature (Olsson et al.,
2022, "In-context learning and induction heads"): </s>, then n distinct random tokens, then the same
n tokens again. `PROBE_ROWS` such sequences (different random tokens) go through the model in ONE
batched forward with attentions; the scores are read from the attention averaged over the rows.

Scores, each a [layers, heads] float32 array, averaged over query rows (see `role_scores`):
  previous   a[i, i-1]: share on the token just before (rows 1..T-1; as `head_statistics`)
  induction  a[i, i-n+1] for i in the second copy: share on the token that FOLLOWED the earlier
             occurrence of the current token, i.e. prefix matching, the induction head's signature
  duplicate  a[i, i-n] for i in the second copy: share on the earlier occurrence of the same token
  sink       a[i, 0]: share on the first token, </s> (rows 1..T-1; as `head_statistics`)
  locality   sum_j a[i, j] (i - j): mean attended distance in tokens, rows 1..T-1; LOWER is more local
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .attention import head_statistics

PROBE_ROWS = 4  # random sequences in the one batched forward
PROBE_TOKENS = 50  # n: tokens of one random sequence (the probe is 1 + 2n tokens)
PROBE_SEED = 0
UNKNOWN_TOKEN_ID = 3  # <unk> in BioGPT's vocabulary; config.json does not name it

# Role key -> (display name, True if a higher score means more of the role).
ROLES: dict[str, tuple[str, bool]] = {
    "previous": ("Previous-token score", True),
    "induction": ("Induction score", True),
    "duplicate": ("Duplicate-token score", True),
    "sink": ("First-token sink share", True),
    "locality": ("Mean attended distance (tokens)", False),
}
# A head "clearly" plays a role when its score is at least this and CLEAR_MARGIN times the next head's.
CLEAR_SCORE = 0.3
CLEAR_MARGIN = 2.0


def role_scores(attentions: np.ndarray, period: int) -> dict[str, np.ndarray]:
    """Role scores of [layers, heads, T, T] attentions on a probe of </s> + a sequence of `period`
    tokens + the same sequence again (T = 1 + 2 * period). See the module docstring."""
    layers, heads, length, _ = attentions.shape
    if period < 2 or length != 1 + 2 * period:
        raise ValueError(f"A probe of period {period} has {1 + 2 * period} tokens, not {length}.")
    stats = head_statistics(attentions)
    second_copy = np.arange(1 + period, length)  # queries that have seen their token before
    a = attentions.astype(np.float32)
    return {
        "previous": stats["previous"],
        "induction": a[:, :, second_copy, second_copy - period + 1].mean(-1),
        "duplicate": a[:, :, second_copy, second_copy - period].mean(-1),
        "sink": stats["first"],
        "locality": stats["distance"],
    }


def probe_ids(vocab_size: int, first_id: int, period: int, rows: int = PROBE_ROWS, seed: int = PROBE_SEED,
              skip: tuple[int, ...] = ()) -> np.ndarray:
    """[rows, 1 + 2 * period] token ids: `first_id`, then `period` distinct random tokens (never one
    of `skip`, the special tokens), then the same tokens again. Seeded: the same probe every time."""
    pool = np.setdiff1d(np.arange(vocab_size), np.asarray((first_id, *skip), np.int64))
    if len(pool) < period:
        raise ValueError(f"The vocabulary has {len(pool)} ordinary tokens, fewer than the probe's {period}.")
    rng = np.random.default_rng(seed)
    out = np.empty((rows, 1 + 2 * period), np.int64)
    for row in range(rows):
        sequence = rng.choice(pool, size=period, replace=False)
        out[row] = np.concatenate([[first_id], sequence, sequence])
    return out


@dataclass
class HeadRoles:
    """Every head's role scores on the model's own probe (see the module docstring)."""

    model_id: str
    scores: dict[str, np.ndarray]  # role key -> [layers, heads] float32
    probe: np.ndarray  # [rows, 1 + 2 * period] token ids that went through the model
    period: int
    forwards: int  # forward passes the probe cost (one, batched)
    seconds: float = 0.0

    @property
    def num_layers(self) -> int:
        return self.scores["previous"].shape[0]

    @property
    def num_heads(self) -> int:
        return self.scores["previous"].shape[1]

    @property
    def nbytes(self) -> int:
        """What keeping it costs, for the analysis cache's byte bound."""
        return self.probe.nbytes + sum(s.nbytes for s in self.scores.values()) + 200

    def ranking(self, role: str) -> list[tuple[int, int, float]]:
        """(layer, head, score) of every head, strongest first for `role` (lowest distance for locality)."""
        if role not in ROLES:
            raise ValueError(f"A head role is one of {', '.join(ROLES)}, got {role!r}.")
        scores = self.scores[role]
        order = np.argsort(scores.ravel() if not ROLES[role][1] else -scores.ravel(), kind="stable")
        return [(int(i // self.num_heads), int(i % self.num_heads), float(scores.ravel()[i])) for i in order]

    def table(self) -> list[dict[str, float | int]]:
        """One row per head (layer and head 0-based), every role's score: what a sortable table shows."""
        return [
            {"layer": layer, "head": head, **{role: float(self.scores[role][layer, head]) for role in ROLES}}
            for layer in range(self.num_layers)
            for head in range(self.num_heads)
        ]

    def clear_example(self, role: str) -> tuple[int, int] | None:
        """The (layer, head) that clearly plays `role` (score >= CLEAR_SCORE and >= CLEAR_MARGIN times
        the runner-up), or None: lessons say so instead of pretending when there is none."""
        if not ROLES[role][1]:
            raise ValueError("Locality is a distance, not a role a head plays or not; read its ranking.")
        ranked = self.ranking(role)
        (layer, head, best), runner_up = ranked[0], ranked[1][2] if len(ranked) > 1 else 0.0
        return (layer, head) if best >= CLEAR_SCORE and best >= CLEAR_MARGIN * runner_up else None


def head_roles(model, model_id: str = "", period: int = PROBE_TOKENS, rows: int = PROBE_ROWS,
               seed: int = PROBE_SEED) -> HeadRoles:
    """Every head's role scores from one batched forward of the repeated random probe.

    The period shrinks to fit the model's positions (1 + 2n <= max positions)."""
    started = time.perf_counter()
    config = model.config
    period = max(2, min(int(period), (int(config.max_position_embeddings) - 1) // 2))
    # Texts begin with </s> (the tokenizer's document start), so the probe does too.
    first = int(config.eos_token_id if config.eos_token_id is not None else 0)
    specials = tuple(int(t) for t in (config.bos_token_id, config.pad_token_id, config.eos_token_id) if t is not None)
    ids = probe_ids(int(config.vocab_size), first, period, rows, seed, skip=specials + (UNKNOWN_TOKEN_ID,))
    with torch.inference_mode():
        out = model(torch.from_numpy(ids).to(model.device), output_attentions=True, use_cache=False, logits_to_keep=1)
        mean = torch.stack([weights.float().mean(0) for weights in out.attentions]).cpu().numpy()
    return HeadRoles(model_id=model_id, scores=role_scores(mean, period), probe=ids, period=period, forwards=1,
                     seconds=time.perf_counter() - started)
