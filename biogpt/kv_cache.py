"""The KV caches the decoder attends through, and the one protocol they share.

KVCache holds one request's keys and values in preallocated buffers; GroupedKVCache lets the
decode batcher (biogpt.batching) run several requests' rows through one forward while each
attends to its own KVCache; StaticKVCache is the fixed-shape cache that GraphedDecoder
(biogpt.graphed) records as a CUDA graph. They live apart from the model so that decoding code
(biogpt.generation) can build caches without importing the model module: the model imports
this module, never the other way round.
"""

from __future__ import annotations

from typing import Callable, Protocol

import torch

# The model's own attention of queries over keys and values: (output, weights or None).
Attention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, "torch.Tensor | None"]]


class Cache(Protocol):
    """What a decoder layer's attention asks of a cache: one call, and no other branch.

    `attend(layer, q, k, v, attention)` stores the new keys and values `k`, `v` of `layer`
    ([batch, heads, new, head_dim]) and returns `attention(q, keys, values)` over the keys and
    values to attend to: the cached ones and the new ones. A cache decides what those are
    (a growing prefix, a fixed buffer, or one call per request of a group); the arithmetic is
    always the model's. Caches passed to the model's forward (KVCache, GroupedKVCache) also
    have `length` (positions cached before this forward) and `advance(steps)` (called once
    all layers are done); StaticKVCache's position is kept by GraphedDecoder.
    """

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               attention: Attention) -> tuple[torch.Tensor, torch.Tensor | None]: ...


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

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention: Attention):
        return attention(q, *self.update(layer, k, v))

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
    with the same call as when it is decoded alone (the batcher passes no mask, so that is SDPA
    without one). `groups` lists (cache, rows) in row order;
    rows past them are padding, whose attention output is zero and whose logits are ignored.
    """

    def __init__(self, groups: list[tuple[KVCache, int]], padded_rows: int):
        self.groups = groups
        self.padded_rows = padded_rows

    @property
    def length(self) -> int:
        """The longest request's cache: the model checks positions against it."""
        return max(cache.length for cache, _ in self.groups)

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention: Attention):
        if q.shape[2] != 1:
            raise ValueError("Requests decoded together feed one token per row.")
        outputs, start = [], 0
        for cache, rows in self.groups:
            end = start + rows
            out, _ = cache.attend(layer, q[start:end], k[start:end], v[start:end], attention)
            outputs.append(out)
            start = end
        if start < self.padded_rows:
            outputs.append(q.new_zeros(self.padded_rows - start, *q.shape[1:]))
        return torch.cat(outputs), None

    def advance(self, steps: int) -> None:
        for cache, _ in self.groups:
            cache.advance(steps)


class StaticKVCache:
    """Per-layer key and value buffers of fixed shape, written at one device-side position.

    GraphedDecoder's step writes the new token's keys and values at slot `position` (a device
    tensor shared with the decoder, so nothing depends on a host-side value) and attends over
    the whole buffers; its attention mask says which slots count.
    """

    def __init__(self, num_layers: int, batch: int, heads: int, capacity: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device, position: torch.Tensor):
        shape = (batch, heads, capacity, head_dim)
        # Zeros, never torch.empty: a masked slot still enters P @ V with weight 0, and 0 * NaN is NaN.
        self.keys = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.values = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.position = position  # [1] long, shared with the decoder

    def attend(self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attention: Attention):
        self.keys[layer].index_copy_(2, self.position, k)
        self.values[layer].index_copy_(2, self.position, v)
        return attention(q, self.keys[layer], self.values[layer])

    def reset(self) -> None:
        for buffer in self.keys + self.values:
            buffer.zero_()
