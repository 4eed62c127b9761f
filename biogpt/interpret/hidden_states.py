"""Hidden-state views, pure functions of [layers + 1, T, hidden] arrays: norms and PCA paths."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def hidden_norms(hidden_states: np.ndarray) -> np.ndarray:
    """L2 norm of every token's hidden state at every layer: [layers + 1, T] float32."""
    return np.stack([np.linalg.norm(h.astype(np.float32), axis=-1) for h in hidden_states])


def pca_trajectories(hidden_states: np.ndarray, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    """2-D PCA of chosen tokens' representations through the layers.

    Every vector is first standardised (minus its mean over features, divided by its RMS: a
    layer norm without the learned scale), so the picture follows changes of direction, not the
    growth of the residual stream (the norm view shows that). The principal axes are fitted on
    the chosen tokens at every layer together. Returns (coordinates [tokens, layers + 1, 2],
    explained variance ratio [2]); axes have a fixed sign (largest loading positive).
    """
    positions = list(positions)
    if not positions:
        raise ValueError("Choose at least one token to trace.")
    vectors = torch.from_numpy(hidden_states[:, positions].astype(np.float32)).transpose(0, 1)  # [n, L+1, D]
    vectors = vectors - vectors.mean(-1, keepdim=True)
    vectors = vectors / vectors.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()
    count, steps, dim = vectors.shape
    flat = vectors.reshape(-1, dim).double()
    flat = flat - flat.mean(0)
    _, singular, right = torch.linalg.svd(flat, full_matrices=False)
    components = torch.zeros(2, dim, dtype=torch.float64)
    kept = min(2, right.shape[0])
    components[:kept] = right[:kept]
    for index in range(kept):
        if components[index, components[index].abs().argmax()] < 0:
            components[index] = -components[index]
    coords = (flat @ components.T).reshape(count, steps, 2).float().numpy()
    variance = singular.double().pow(2)
    explained = np.zeros(2, np.float32)
    total = variance.sum().item()
    if total > 0:
        explained[:kept] = (variance[:kept] / total).numpy()
    return coords, explained
