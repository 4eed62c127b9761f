"""The KV caches the decoder attends through.

KVCache holds one request's keys and values in preallocated buffers; GroupedKVCache lets the
decode batcher (biogpt.batching) run several requests' rows through one forward while each
attends to its own KVCache. They live apart from the model so that decoding code (biogpt.generation)
can build caches without importing the model module.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class KVCache:
    """Keys and values of every layer in preallocated [batch, heads, capacity, head_dim] buffers.

    `length` positions are filled. A forward writes its new keys after them and advances
    `length` once all layers are done; the buffers grow (doubling) if a call overruns them,
    so a caller that knows the final length (generation) allocates once and never copies.
    """

    def __init__(self, num_layers: int, capacity: int = 0):
        self.num_layers = num_layers
        self.capacity = capacity
        self.length = 0
        self.keys: list[torch.Tensor | None] = [None] * num_layers
        self.values: list[torch.Tensor | None] = [None] * num_layers

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        end = self.length + key.shape[2]
        if self.keys[layer] is None or end > self.keys[layer].shape[2]:
            self._grow(layer, key, end)
        self.keys[layer][:, :, self.length:end] = key
        self.values[layer][:, :, self.length:end] = value
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    def _grow(self, layer: int, like: torch.Tensor, needed: int) -> None:
        old_keys, old_values = self.keys[layer], self.values[layer]
        capacity = max(needed, self.capacity, 2 * old_keys.shape[2] if old_keys is not None else 0)
        batch, heads, _, head_dim = like.shape
        self.keys[layer] = like.new_empty(batch, heads, capacity, head_dim)
        self.values[layer] = like.new_empty(batch, heads, capacity, head_dim)
        if old_keys is not None:
            self.keys[layer][:, :, : self.length] = old_keys[:, :, : self.length]
            self.values[layer][:, :, : self.length] = old_values[:, :, : self.length]
        self.capacity = capacity

    def advance(self, steps: int) -> None:
        self.length += steps

    def reorder(self, batch_indices: torch.Tensor) -> None:
        """Keep rows `batch_indices` (beam search picks which beams survive)."""
        for layer in range(self.num_layers):
            if self.keys[layer] is not None:
                self.keys[layer] = self.keys[layer].index_select(0, batch_indices)
                self.values[layer] = self.values[layer].index_select(0, batch_indices)

    def to_legacy(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """The tuple-of-(key, value) layout that older transformers code passes around."""
        return tuple((k[:, :, : self.length], v[:, :, : self.length]) for k, v in zip(self.keys, self.values))

    @classmethod
    def from_legacy(cls, past: tuple[tuple[torch.Tensor, torch.Tensor], ...]) -> "KVCache":
        cache = cls(len(past))
        for layer, (key, value) in enumerate(past):
            cache.update(layer, key, value)
        cache.advance(past[0][0].shape[2])
        return cache


class GroupedKVCache:
    """The caches of several requests decoded together, one new token per row.

    The rows of all requests go through the linear layers at once (the weights are read once
    for all of them), while attention runs per request against that request's own KVCache,
    with the same call as when it is decoded alone. `groups` lists (cache, rows) in row order;
    rows past them are padding, whose attention output is zero and whose logits are ignored.
    """

    def __init__(self, groups: list[tuple[KVCache, int]], padded_rows: int):
        self.groups = groups
        self.padded_rows = padded_rows

    @property
    def length(self) -> int:
        """The longest request's cache: the model checks positions against it."""
        return max(cache.length for cache, _ in self.groups)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
        if q.shape[2] != 1:
            raise ValueError("Requests decoded together feed one token per row.")
        outputs, start = [], 0
        for cache, rows in self.groups:
            end = start + rows
            keys, values = cache.update(layer, k[start:end], v[start:end])
            outputs.append(F.scaled_dot_product_attention(q[start:end], keys, values, scale=scale))
            start = end
        if start < self.padded_rows:
            outputs.append(q.new_zeros(self.padded_rows - start, *q.shape[1:]))
        return torch.cat(outputs)

    def advance(self, steps: int) -> None:
        for cache, _ in self.groups:
            cache.advance(steps)
