"""The analysis: one text through one model, kept as numpy, and every view derived from it.

`analyze` runs the model once with attentions and hidden states and keeps what it returns as
float16 numpy arrays in an `Analysis`. Its views (head statistics, averaged maps, rollout,
hidden-state norms, PCA) are arithmetic on those arrays, memoised on the analysis, so changing a
layer, head, view or toggle never runs the model again. `nbytes` counts what an analysis keeps
alive, for the cache's byte bound.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar, Hashable, Sequence

import numpy as np
import torch

from .attention import (AGGREGATES, STATISTICS, HeatmapCells, head_statistics, heatmap_cells, hidden_row_totals, mean_over,
                        rollout, token_links)
from .attention import window as token_window
from .hidden_states import hidden_norms, pca_trajectories
from .labels import input_labels, vocab_labels
from .probes import parse_heads

TOP_K = 10  # next-token candidates kept at every position


def nbytes(value: Any, seen: set[int] | None = None) -> int:
    """Bytes that keeping `value` keeps alive: every array and tensor inside it (dataclasses,
    tuples, lists, dicts) counted by the whole buffer it pins, each buffer once.

    A slice of a tensor (`logprobs[-1].numpy()`) reports its own few bytes as `.nbytes` but keeps
    the whole [T, vocab] tensor alive; a byte bound that trusted `.nbytes` was exceeded in RSS
    several times over. So arrays are followed to their base buffer.
    """
    seen = set() if seen is None else seen
    if isinstance(value, np.ndarray):
        if value.dtype == object:  # references to shared strings: a pointer each
            return value.size * value.itemsize
        root = value
        while isinstance(root, np.ndarray) and root.base is not None:
            root = root.base
        if isinstance(root, np.ndarray):
            key, size = id(root), root.nbytes
        elif isinstance(root, torch.Tensor):
            return nbytes(root, seen)
        else:  # a bytes object, mmap or other buffer: at least the array itself
            key, size = id(root), max(value.nbytes, getattr(root, "nbytes", 0) or 0)
    elif isinstance(value, torch.Tensor):
        storage = value.untyped_storage()
        key, size = storage.data_ptr() or id(storage), storage.nbytes()
    elif isinstance(value, dict):
        return sum(nbytes(v, seen) for v in value.values())
    elif isinstance(value, (list, tuple)):
        if value and isinstance(value[0], (str, int, float, tuple)):
            return 8 * len(value)  # small Python objects; pointers dominate what is counted here
        return sum(nbytes(v, seen) for v in value)
    elif hasattr(value, "__dataclass_fields__"):
        return sum(nbytes(getattr(value, f.name), seen) for f in fields(value) if not f.name.startswith("_"))
    else:
        return 0
    if key in seen:
        return 0
    seen.add(key)
    return size


def owned(array: np.ndarray) -> np.ndarray:
    """`array` itself if it holds no more memory than it shows, else a copy that owns just that.

    (`np.ascontiguousarray` is no help: a contiguous slice is returned as is, base and all.)
    """
    return array if nbytes(array) <= array.nbytes else array.copy()


@dataclass(eq=False)
class Analysis:
    """One text through one model: what the forward pass returned, kept as numpy.

    `hidden_states[0]` is the embedding output, `hidden_states[l]` the residual stream after
    layer l, and the last entry is after the final layer norm (as transformers returns them).
    """

    model_id: str
    text: str
    token_ids: np.ndarray  # [T] int64, starting with </s>
    tokens: list[str]  # readable label of each token
    offsets: list[tuple[int, int]]  # character span of each token in `text`; (0, 0) for </s>
    attentions: np.ndarray  # [layers, heads, T, T] float16
    hidden_states: np.ndarray  # [layers + 1, T, hidden] float16 (float32 if float16 would overflow)
    top_ids: np.ndarray  # [T, k] int64: the next-token candidates after each position
    top_probs: np.ndarray  # [T, k] float32
    top_labels: np.ndarray  # [T, k] object: readable candidates
    next_logprobs: np.ndarray  # [vocab] float32: the full distribution after the last token
    seconds: float = 0.0  # time the analysis took
    STATISTICS: ClassVar[dict[str, str]] = STATISTICS  # what `head_statistics` returns, with display names
    AGGREGATES: ClassVar[tuple[str, ...]] = AGGREGATES  # what `attention_map` can show
    _memo: dict = field(default_factory=dict, repr=False)
    _memo_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _key_locks: dict = field(default_factory=dict, repr=False)

    @property
    def num_layers(self) -> int:
        return self.attentions.shape[0]

    @property
    def num_heads(self) -> int:
        return self.attentions.shape[1]

    @property
    def length(self) -> int:
        return len(self.token_ids)

    def __post_init__(self) -> None:
        # What the cache keeps must own its memory, or one kept row pins a whole forward's logits.
        for name in ("token_ids", "attentions", "hidden_states", "top_ids", "top_probs", "top_labels", "next_logprobs"):
            setattr(self, name, owned(np.asarray(getattr(self, name))))

    @property
    def nbytes(self) -> int:
        """Bytes this analysis keeps alive (memoised views included), base buffers counted whole."""
        with self._memo_lock:
            memo = list(self._memo.values())
        seen: set[int] = set()
        arrays = (self.token_ids, self.attentions, self.hidden_states, self.top_ids, self.top_probs, self.next_logprobs)
        # Labels are references to the shared vocabulary strings; tokens and offsets are small objects.
        python_objects = 8 * self.top_labels.size + 100 * (len(self.tokens) + len(self.offsets)) + len(self.text)
        return sum(nbytes(a, seen) for a in arrays) + python_objects + sum(nbytes(v, seen) for v in memo)

    def memo(self, key: Hashable, compute: Callable[[], Any], keep: int | None = None) -> Any:
        """`compute()` once per key (later calls return the stored value).

        Concurrent callers of one key wait for the first; other keys do not wait. With `keep`,
        only the `keep` most recent keys sharing `key[0]` are stored (per-position caches).
        """
        with self._memo_lock:
            if key in self._memo:
                return self._memo[key]
            lock = self._key_locks.setdefault(key, threading.Lock())
        with lock:
            with self._memo_lock:
                if key in self._memo:
                    return self._memo[key]
            value = compute()
            with self._memo_lock:
                self._memo[key] = value
                self._key_locks.pop(key, None)
                if keep is not None:
                    group = [k for k in self._memo if isinstance(k, tuple) and k[:1] == key[:1]]
                    for old in group[:-keep]:
                        del self._memo[old]
            return value

    def memoised(self, key: Hashable) -> bool:
        with self._memo_lock:
            return key in self._memo

    # ----- derived views (memoised) ----------------------------------------------------------

    def attention_map(self, layer: int, head: int = 0, aggregate: str = "head") -> np.ndarray:
        """A [T, T] float32 map: query rows, key columns.

        aggregate: "head" (one head), "heads" (mean of the layer's heads), "layers" (mean of this
        head index over all layers), "all" (mean of every head of every layer), "rollout"
        (attention rollout from the input up to and including `layer`, see `rollout`).
        """
        if aggregate == "head":
            return self.attentions[layer, head].astype(np.float32)
        if aggregate == "heads":
            return self.memo(("heads", layer), lambda: mean_over(self.attentions[layer : layer + 1]), keep=self.num_layers)
        if aggregate == "layers":
            return self.memo(("layers", head), lambda: mean_over(self.attentions[:, head : head + 1]), keep=self.num_heads)
        if aggregate == "all":
            return self.memo(("all",), lambda: mean_over(self.attentions))
        if aggregate == "rollout":
            return self.memo(("rollout",), lambda: rollout(self.attentions))[layer]
        raise ValueError(f"aggregate must be one of {', '.join(AGGREGATES)}, got {aggregate!r}.")

    def heatmap(
        self, layer: int, head: int = 0, aggregate: str = "head", *, hide_first: bool = False, min_weight: float = 0.0,
        start: int = 0, max_side: int = 256,
    ) -> HeatmapCells:
        """`attention_map` made ready to draw at most `max_side` cells a side (see `heatmap_cells`)."""
        return heatmap_cells(self.attention_map(layer, head, aggregate), hide_first, min_weight, start, max_side)

    def hidden_row_totals(self, layer: int, head: int = 0, aggregate: str = "head") -> np.ndarray:
        """[T - 1] float32: what `heatmap(..., hide_first=True)` divides each row by (see attention.hidden_row_totals)."""
        return hidden_row_totals(self.attention_map(layer, head, aggregate))

    def window(self, start: int, size: int) -> tuple[int, int]:
        """[first, last) of `size` consecutive tokens of this text starting near `start`."""
        return token_window(self.length, start, size)

    def parse_heads(self, spec: str) -> tuple[tuple[int, int], ...]:
        """Heads named as in "3.5, 4.*, 2.1-4" (1-based layer.head) -> 0-based pairs of this model."""
        return parse_heads(spec, self.num_layers, self.num_heads)

    def head_statistics(self) -> dict[str, np.ndarray]:
        """Each statistic of `STATISTICS` as a [layers, heads] float32 array."""
        return self.memo(("stats",), lambda: head_statistics(self.attentions))

    def hidden_norms(self) -> np.ndarray:
        return self.memo(("norms",), lambda: hidden_norms(self.hidden_states))

    def pca(self, positions: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        key = ("pca", tuple(int(p) for p in positions))
        return self.memo(key, lambda: pca_trajectories(self.hidden_states, key[1]), keep=8)

    def token_links(self, layer: int, position: int, head: int | None = None, direction: str = "to", top: int = 8):
        return token_links(self.attentions[layer], position, head, direction, top)

    def find_token(self, query: str | int | None) -> int:
        """A position from a number (0-based) or a word of the text; None or "" means the last token."""
        if query is None or (isinstance(query, str) and not query.strip()):
            return self.length - 1
        is_number = isinstance(query, (int, np.integer))
        if is_number or str(query).strip().lstrip("-").isdigit():
            # Python will not read or print integers of over 4,300 digits (and no position has 19).
            if is_number:
                position = int(query)
                huge = abs(position).bit_length() > 60
            else:
                text = str(query).strip()
                huge = len(text.lstrip("-")) > 18
                position = 0 if huge else int(text)
            if huge or not -self.length <= position < self.length:
                shown = "A number that large" if huge else f"Token {position:,}"
                raise ValueError(f"{shown} is not a token position: the text has {self.length} tokens (0 to {self.length - 1}).")
            return position % self.length
        word = str(query).strip().lower()
        for exact in (True, False):
            for position, label in enumerate(self.tokens):
                if (label.lower() == word) if exact else label.lower().startswith(word):
                    return position
        shown = str(query).strip()
        shown = repr(shown if len(shown) <= 40 else shown[:40] + "…")
        raise ValueError(f"{shown} is not a token of this text; type a word from it or a token number.")


def analyze(
    model, tokenizer, text: str, model_id: str = "", top_k: int = TOP_K, head_mask: torch.Tensor | None = None
) -> Analysis:
    """One forward with attentions and hidden states, kept as numpy (float16 for the big arrays).

    `head_mask` ([layers, heads], 0 = switched off) analyses the text with those heads ablated."""
    started = time.perf_counter()
    encoding = tokenizer(text, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    offsets = [tuple(int(x) for x in span) for span in encoding["offset_mapping"]]
    limit = int(model.config.max_position_embeddings)
    if len(ids) > limit:
        raise ValueError(too_long_message(text, len(ids), limit))
    input_ids = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        out = model(input_ids, output_attentions=True, output_hidden_states=True, use_cache=False, head_mask=head_mask)
        length = len(ids)
        layers, heads = len(out.attentions), out.attentions[0].shape[1]
        attentions = np.empty((layers, heads, length, length), np.float16)
        for layer, weights in enumerate(out.attentions):
            attentions[layer] = weights[0].to(torch.float16).cpu().numpy()
        hidden = torch.stack([h[0] for h in out.hidden_states])
        hidden_states = _compact(hidden)
        logprobs = torch.log_softmax(out.logits[0].float(), dim=-1)
        top = logprobs.topk(min(top_k, logprobs.shape[-1]), dim=-1)
        # A copy: a view of the last row would keep all of `logprobs` ([T, vocab] float32) alive.
        next_logprobs = logprobs[-1].cpu().numpy().copy()
        top_ids = top.indices.cpu().numpy()
        top_probs = top.values.exp().cpu().numpy()
    labels = vocab_labels(tokenizer)
    return Analysis(
        model_id=model_id, text=text, token_ids=np.asarray(ids, np.int64),
        tokens=input_labels(tokenizer, text, ids, offsets), offsets=offsets,
        attentions=attentions, hidden_states=hidden_states, top_ids=top_ids, top_probs=top_probs,
        top_labels=labels[top_ids], next_logprobs=next_logprobs, seconds=time.perf_counter() - started,
    )


def too_long_message(text: str, tokens: int, limit: int) -> str:
    """The cap is the model's positions, in tokens; characters are only a guide, read off this text."""
    fits = int(len(text) * limit / max(tokens, 1))
    return (
        f"The text has {tokens:,} tokens ({len(text):,} characters) and this model reads at most {limit:,} tokens, "
        f"about the first {fits:,} characters of this text; shorten it and try again."
    )


def _compact(tensor: torch.Tensor) -> np.ndarray:
    """float16 when every value fits (|x| < 65,504), else float32."""
    if tensor.numel() and tensor.abs().max().item() >= 6.5e4:
        return tensor.float().cpu().numpy()
    return tensor.to(torch.float16).cpu().numpy()
