"""Looking inside BioGPT: one forward pass becomes an `Analysis`; every view is derived from it.

`analyze` runs the model once with attentions and hidden states and keeps what it returns as
float16 numpy arrays. Everything the Attention tab shows afterwards is arithmetic on those
arrays (head statistics, averaged maps, rollout, hidden-state norms, PCA), memoised on the
analysis, so changing a layer, head, view or toggle never runs the model again. `AnalysisCache`
keeps recent analyses keyed by (model id, text) and bounded by the bytes they hold.

Three things need the model's weights but not a new forward: the logit lens (the final layer
norm and the output projection applied to stored hidden states, computed once per analysis and
memoised) and the watch list (one position's full distribution at every layer). Two need new
forward passes by nature: head ablation (`head_mask`) and the generation trace (generation's
greedy SamplingRun, reading each step's attention out of the decoding itself).

Indices here are 0-based (layer 0 is the first decoder layer); the UI shows them 1-based.
Nothing here imports gradio or plotly.
"""

from __future__ import annotations

import functools
import threading
import time
import warnings
import weakref
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch

from .generation import SamplingRun, resolve_settings
from .tokenizer import DASH_WORD, WORD_END, XML_ESCAPES

TOP_K = 10  # next-token candidates kept at every position
LENS_K = 5  # logit-lens candidates kept per layer and position
DEFAULT_CACHE_BYTES = 2 * 1024**3

# Per-head statistics, in the order the overview offers them.
STATISTICS = {
    "entropy": "Entropy (nats)",
    "first": "Share on the first token",
    "previous": "Share on the previous token",
    "distance": "Mean attended distance (tokens)",
}
# What a heatmap can show: one head, or an aggregate.
AGGREGATES = ("head", "heads", "layers", "all", "rollout")

# Moses escapes in BPE pieces, undone for display.
_MOSES_ESCAPES = {**XML_ESCAPES, DASH_WORD: "-"}
CONTINUES = "…"  # marks a BPE piece that continues into the next one (no word end)


# --------------------------------------------------------------------------------------------
# Readable token strings
# --------------------------------------------------------------------------------------------

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


# --------------------------------------------------------------------------------------------
# The analysis
# --------------------------------------------------------------------------------------------


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


def mean_over(attentions: np.ndarray) -> np.ndarray:
    """Mean of [layers, heads, T, T] over layers and heads, in float32, one layer at a time."""
    total = np.zeros(attentions.shape[-2:], np.float32)
    for layer in attentions:
        total += torch.from_numpy(layer).float().sum(0).numpy()
    return total / (attentions.shape[0] * attentions.shape[1])


def analyze(model, tokenizer, text: str, model_id: str = "", top_k: int = TOP_K) -> Analysis:
    """One forward with attentions and hidden states, kept as numpy (float16 for the big arrays)."""
    started = time.perf_counter()
    encoding = tokenizer(text, return_offsets_mapping=True)
    ids = list(encoding["input_ids"])
    offsets = [tuple(int(x) for x in span) for span in encoding["offset_mapping"]]
    limit = int(model.config.max_position_embeddings)
    if len(ids) > limit:
        raise ValueError(too_long_message(text, len(ids), limit))
    input_ids = torch.tensor([ids], device=model.device)
    with torch.inference_mode():
        out = model(input_ids, output_attentions=True, output_hidden_states=True, use_cache=False)
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


# --------------------------------------------------------------------------------------------
# Attention: statistics, maps, rollout, links (pure functions of arrays)
# --------------------------------------------------------------------------------------------


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
    totals = inner.sum(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(totals > 0, inner / totals, np.nan).astype(np.float32)


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


# --------------------------------------------------------------------------------------------
# Hidden states
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Logit lens and watch list (use the model's final layer norm and output projection)
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Head ablation
# --------------------------------------------------------------------------------------------


@dataclass
class Ablation:
    """The next-token distribution after the text, with and without the chosen heads."""

    heads: tuple[tuple[int, int], ...]  # (layer, head), 0-based
    ids: np.ndarray  # [n] the union of both top-k lists, most likely (before) first
    labels: list[str]
    before: np.ndarray  # [n] probabilities with every head
    after: np.ndarray  # [n] probabilities with the heads switched off
    kl: float  # KL(before || after) over the whole vocabulary, in nats
    continuation_before: list[str] | None = None  # greedy continuations, when asked for
    continuation_after: list[str] | None = None


def parse_heads(spec: str, num_layers: int, num_heads: int) -> tuple[tuple[int, int], ...]:
    """"3.5, 4.*, 2.1-4" (1-based layer.head; * = every head; a-b = a range) -> 0-based pairs."""
    heads: list[tuple[int, int]] = []

    def numbers(part: str, limit: int, what: str) -> range:
        part = part.strip()
        if part == "*":
            return range(limit)
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ValueError(f"{part!r} is not a {what} number; write heads as layer.head, e.g. 3.5 or 4.*") from None
        if not 1 <= first <= last <= limit:
            raise ValueError(f"{what.capitalize()} {part} is out of range: this model has {limit} {what}s (1 to {limit}).")
        return range(first - 1, last)

    for item in (spec or "").replace(";", ",").split(","):
        item = item.strip().lower().replace("l", "").replace("h", ".").replace(" ", "")
        if not item:
            continue
        layer_part, dot, head_part = item.partition(".")
        for layer in numbers(layer_part, num_layers, "layer"):
            for head in numbers(head_part if dot else "*", num_heads, "head"):
                heads.append((layer, head))
    return tuple(sorted(set(heads)))


def head_mask_for(heads: Sequence[tuple[int, int]], num_layers: int, num_heads: int) -> torch.Tensor:
    """A [layers, heads] mask of ones with zeros at `heads` (transformers 4.x semantics)."""
    mask = torch.ones(num_layers, num_heads)
    for layer, head in heads:
        mask[layer, head] = 0.0
    return mask


def greedy_run(model, prompt: Sequence[int], steps: int, **forward: Any):
    """A one-row greedy generation.SamplingRun of at most `steps` tokens, ending at </s>;
    `forward` reaches every model call (head_mask, output_attentions)."""
    settings = resolve_settings(model.config, len(prompt), max_new_tokens=steps)
    ids = torch.tensor([list(prompt)], device=model.device)
    return SamplingRun(model, ids, None, settings, forward=forward)


def greedy_continuation(model, ids: Sequence[int], steps: int, head_mask: torch.Tensor | None = None) -> list[int]:
    """Up to `steps` greedy tokens after `ids` (stops at </s>), optionally with heads switched off."""
    limit = int(model.config.max_position_embeddings)
    steps = max(0, min(steps, limit - len(ids)))
    if steps == 0:
        return []
    run = greedy_run(model, ids, steps, head_mask=head_mask)
    return [int(step.tokens[0]) for step in run.steps(model)]


def ablate(
    model, tokenizer, analysis: Analysis, heads: Sequence[tuple[int, int]], k: int = 8, continue_tokens: int = 0
) -> Ablation:
    """Switch off `heads` with `head_mask` and compare the next-token distribution (and, with
    `continue_tokens`, the greedy continuation) with the unablated model's."""
    heads = tuple(sorted({(int(l), int(h)) for l, h in heads}))
    mask = head_mask_for(heads, analysis.num_layers, analysis.num_heads).to(device=model.device, dtype=model.dtype)
    input_ids = torch.from_numpy(analysis.token_ids).view(1, -1).to(model.device)
    with torch.inference_mode():
        logits = model(input_ids, head_mask=mask, use_cache=False, logits_to_keep=1).logits[0, -1]
        after = torch.log_softmax(logits.float(), -1).cpu().numpy()
    before = analysis.next_logprobs
    top_before = np.argsort(-before, kind="stable")[:k]
    top_after = np.argsort(-after, kind="stable")[:k]
    ids = np.asarray(list(dict.fromkeys([*top_before.tolist(), *top_after.tolist()])), np.int64)
    p_before, p_after = np.exp(before), np.exp(after)
    kl = float(np.sum(p_before * (before - after)))
    labels = vocab_labels(tokenizer)
    result = Ablation(
        heads=heads, ids=ids, labels=[str(x) for x in labels[ids]], before=p_before[ids].astype(np.float32),
        after=p_after[ids].astype(np.float32), kl=max(kl, 0.0),
    )
    if continue_tokens > 0:
        prompt = analysis.token_ids.tolist()
        result.continuation_before = [str(x) for x in labels[greedy_continuation(model, prompt, continue_tokens)]]
        result.continuation_after = [str(x) for x in labels[greedy_continuation(model, prompt, continue_tokens, mask)]]
    return result


# --------------------------------------------------------------------------------------------
# Generation trace
# --------------------------------------------------------------------------------------------


@dataclass
class GenerationTrace:
    """A greedy continuation with the attention that chose each new token, read from the decoding.

    Step s reads token P+s-1 (the last one the model has) and chooses token P+s; `attentions[s]`
    is that step's attention, the query at position P+s-1 over keys 0..P+s-1 (later keys are 0).
    Step 0 comes from the prefill, every later step from one cached decoding step.
    """

    prompt_length: int
    token_ids: np.ndarray  # [P + S] prompt then generated tokens
    tokens: list[str]  # readable labels of all of them
    attentions: np.ndarray  # [S, layers, heads, P + S - 1] float16
    probs: np.ndarray  # [S] probability of each chosen token
    seconds: float = 0.0

    @property
    def steps(self) -> int:
        return len(self.token_ids) - self.prompt_length


def trace_generation(model, tokenizer, analysis: Analysis, max_new_tokens: int = 20) -> GenerationTrace:
    """Greedy decoding with `output_attentions=True` at every step, through the KV cache."""
    started = time.perf_counter()
    prompt = analysis.token_ids.tolist()
    limit = int(model.config.max_position_embeddings)
    if len(prompt) >= limit:
        raise ValueError(f"The text already fills the model's {limit} positions; there is no room to generate.")
    steps = max(1, min(int(max_new_tokens), limit - len(prompt)))
    run = greedy_run(model, prompt, steps, output_attentions=True)
    # The trace shows each chosen token's probability, and picks the most probable: choosing from
    # the softmax (the run's last processor) keeps both exactly what they have always been.
    run.processors.append(lambda ids, scores: torch.softmax(scores, -1))
    rows: list[np.ndarray] = []
    chosen: list[int] = []
    probs: list[float] = []
    for step in run.steps(model):
        # One [heads, keys] row per layer: the last query's attention over everything so far.
        rows.append(torch.stack([a[0, :, -1] for a in run.output.attentions]).to(torch.float16).cpu().numpy())
        token = int(step.tokens[0])
        chosen.append(token)
        probs.append(float(step.scores[0, token]))
    total = len(prompt) + len(chosen)
    attentions = np.zeros((len(rows), *rows[0].shape[:2], total - 1), np.float16)
    for step, row in enumerate(rows):
        attentions[step, :, :, : row.shape[-1]] = row
    labels = vocab_labels(tokenizer)
    return GenerationTrace(
        prompt_length=len(prompt), token_ids=np.asarray(prompt + chosen, np.int64),
        tokens=list(analysis.tokens) + [str(labels[t]) for t in chosen], attentions=attentions,
        probs=np.asarray(probs, np.float32), seconds=time.perf_counter() - started,
    )


# --------------------------------------------------------------------------------------------
# The cache and the facade the engine delegates to
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc: its allocator is left as it is
        return None


def release_free_memory() -> None:
    """Give memory that was freed back to the OS (glibc only; elsewhere nothing to do).

    A long analysis frees hundreds of MB of temporaries (logits, fp32 attentions); the pieces
    under glibc's mmap threshold (32 MB) return to its heap, which it keeps: measured here, RSS
    rose 300 MB over the cache's bound after nine 1,000-token analyses, and malloc_trim gave it back.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class AnalysisCache:
    """Recent analyses keyed by (model id, text), least recently used dropped first, bounded by
    the bytes their arrays hold (memoised views included). The newest entry always stays, even
    if alone it is over the bound, so the view in front of the user keeps answering."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = int(max_bytes)
        self._entries: OrderedDict[tuple[str, str], Analysis] = OrderedDict()
        self._lock = threading.Lock()
        self._pending: dict[tuple[str, str], threading.Lock] = {}

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, key: tuple[str, str]) -> bool:
        with self._lock:
            return key in self._entries

    @property
    def nbytes(self) -> int:
        with self._lock:
            entries = list(self._entries.values())
        return sum(entry.nbytes for entry in entries)

    def get(self, key: tuple[str, str]) -> Analysis | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
            return entry

    def get_or_compute(self, key: tuple[str, str], compute: Callable[[], Analysis]) -> Analysis:
        """The cached analysis, or `compute()` once however many callers ask at the same time."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            lock = self._pending.setdefault(key, threading.Lock())
        with lock:
            cached = self.get(key)
            if cached is not None:
                return cached
            try:
                analysis = compute()
            finally:
                with self._lock:
                    self._pending.pop(key, None)
            with self._lock:
                self._entries[key] = analysis
            self.trim()
            return analysis

    def trim(self) -> None:
        """Drop least recently used analyses until the total fits (the newest one always stays)."""
        with self._lock:
            entries = list(self._entries.items())
        sizes = {key: entry.nbytes for key, entry in entries}
        total = sum(sizes.values())
        dropped = []
        with self._lock:
            while len(self._entries) > 1 and total > self.max_bytes:
                key, entry = self._entries.popitem(last=False)
                dropped.append(entry)
                total -= sizes.get(key, 0)
        if dropped:
            del dropped, entries
            release_free_memory()

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


class Interpreter:
    """The Attention tab's side of the engine: analyses cached by (model, text), and the views
    that need the model's weights (logit lens, watch list, ablation, generation trace).

    `load(model_id)` returns an object with `.model` and `.tokenizer` (the engine's LoadedModel)
    or a (model, tokenizer) pair. The engine's methods of the same names delegate here.
    """

    def __init__(self, load: Callable[[str], Any], default_model: str = "bundled", max_bytes: int = DEFAULT_CACHE_BYTES):
        self.load = load
        self.default_model = default_model
        self.cache = AnalysisCache(max_bytes)

    def _model(self, model_id: str | None):
        loaded = self.load(model_id or self.default_model)
        if isinstance(loaded, tuple):
            return loaded
        return loaded.model, loaded.tokenizer

    def cached_analysis(self, text: str, model_id: str | None = None) -> Analysis | None:
        """The analysis if it is in the cache; never runs the model."""
        return self.cache.get((model_id or self.default_model, text))

    def analyze(self, text: str, model_id: str | None = None) -> Analysis:
        model_id = model_id or self.default_model

        def compute() -> Analysis:
            model, tokenizer = self._model(model_id)
            try:
                return analyze(model, tokenizer, text, model_id=model_id)
            finally:
                release_free_memory()  # the forward's temporaries, freed by now

        return self.cache.get_or_compute((model_id, text), compute)

    def logit_lens(self, analysis: Analysis, k: int = LENS_K) -> LogitLens:
        def compute() -> LogitLens:
            model, tokenizer = self._model(analysis.model_id)
            return logit_lens(model, tokenizer, analysis, k)

        lens = analysis.memo(("lens", k), compute)
        self.cache.trim()
        return lens

    def watch_tokens(self, analysis: Analysis, position: int, words: Sequence[str]) -> WatchList:
        model, tokenizer = self._model(analysis.model_id)
        result = watch_ranks(model, tokenizer, analysis, position, words)
        self.cache.trim()
        return result

    def ablate(self, analysis: Analysis, heads: Sequence[tuple[int, int]], k: int = 8, continue_tokens: int = 0) -> Ablation:
        heads = tuple(sorted({(int(l), int(h)) for l, h in heads}))

        def compute() -> Ablation:
            model, tokenizer = self._model(analysis.model_id)
            return ablate(model, tokenizer, analysis, heads, k, continue_tokens)

        return analysis.memo(("ablate", heads, k, int(continue_tokens)), compute, keep=8)

    def trace_generation(self, analysis: Analysis, max_new_tokens: int = 20) -> GenerationTrace:
        def compute() -> GenerationTrace:
            model, tokenizer = self._model(analysis.model_id)
            return trace_generation(model, tokenizer, analysis, max_new_tokens)

        trace = analysis.memo(("trace", int(max_new_tokens)), compute, keep=2)
        self.cache.trim()
        return trace
