"""The Attention tab's side of the engine: analyses kept by (model id, text) in a byte-bounded
`AnalysisCache`, and the `Interpreter` that runs them and the views needing the model's weights."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..config import BioGptConfig
from ..hub import BUNDLED_NAMES, resolve_model_dir
from ..lru import BuildOnceLRU
from .analysis import Analysis, analyze
from .attention import AGGREGATES, STATISTICS
from .attribution import DEFAULT_MAX_STEPS, DEFAULT_STEPS, Attribution, attribute
from .compare import Comparison, compare
from .formula import AttentionRow, attention_row
from .lens import LENS_K, LogitLens, WatchList, logit_lens, watch_ranks, word_token
from .probes import Ablation, GenerationTrace, ablate, head_mask_for, trace_generation
from .roles import HeadRoles, head_roles

DEFAULT_CACHE_BYTES = 2 * 1024**3


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


class AnalysisCache(BuildOnceLRU[Analysis]):
    """Recent analyses keyed by (model id, text), least recently used dropped first, bounded by
    the bytes they keep alive as `Analysis.nbytes` counts them (memoised views included, counted
    again at every trim). The newest entry always stays, even if alone it is over the bound, so
    the view in front of the user keeps answering; freed memory goes back to the OS after drops."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        super().__init__(max_bytes=int(max_bytes), size=lambda analysis: analysis.nbytes, after_evict=release_free_memory)


class Interpreter:
    """The Attention tab's side of the engine: analyses cached by (model, text), and the views
    that need the model's weights (logit lens, watch list, ablation, generation trace).

    `load(model_id)` returns an object with `.model` and `.tokenizer` (the engine's LoadedModel)
    or a (model, tokenizer) pair. The engine's methods of the same names delegate here.
    """

    STATISTICS = STATISTICS  # per-head statistics an analysis offers, key -> display name
    AGGREGATES = AGGREGATES  # what an attention map can show: one head, or an aggregate

    def __init__(self, load: Callable[[str], Any], default_model: str = "bundled", max_bytes: int = DEFAULT_CACHE_BYTES):
        self.load = load
        self.default_model = default_model
        self.cache = AnalysisCache(max_bytes)

    def _model(self, model_id: str | None):
        loaded = self.load(model_id or self.default_model)
        if isinstance(loaded, tuple):
            return loaded
        return loaded.model, loaded.tokenizer

    def model_shape(self, model_id: str | None = None) -> tuple[int, int] | None:
        """(layers, heads) of a model from its config.json alone, None where that file is not on
        disk: loads no weights and downloads nothing (a hub model not yet fetched is None)."""
        name = model_id or self.default_model
        try:
            if name not in BUNDLED_NAMES and not Path(name).expanduser().is_dir():
                return None  # a hub id: resolving it could download
            config = BioGptConfig.from_json_file(resolve_model_dir(name, ["config.json"]) / "config.json")
            return int(config.num_hidden_layers), int(config.num_attention_heads)
        except (OSError, ValueError, TypeError, KeyError):
            return None

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

        return self.cache.get_or_build((model_id, text), compute)

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
        heads = tuple(sorted({(int(layer), int(h)) for layer, h in heads}))

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

    # ----- head roles and side by side (issue 16) -------------------------------------------------
    # Both live in the one analysis cache: head roles under (model id, "head roles"), an ablated
    # analysis under (model id, text, heads off); plain analyses keep their (model id, text) keys.

    def head_roles(self, model_id: str | None = None) -> HeadRoles:
        """Every head's role scores on the model's own probe (one batched forward), once per model."""
        model_id = model_id or self.default_model

        def compute() -> HeadRoles:
            model, _ = self._model(model_id)
            return head_roles(model, model_id)

        return self.cache.get_or_build((model_id, "head roles"), compute)

    def analyze_ablated(self, text: str, heads: Sequence[tuple[int, int]], model_id: str | None = None) -> Analysis:
        """The analysis of `text` with `heads` switched off (their attention reads zero), cached."""
        model_id = model_id or self.default_model
        heads = tuple(sorted({(int(layer), int(h)) for layer, h in heads}))

        def compute() -> Analysis:
            model, tokenizer = self._model(model_id)
            layers, heads_per_layer = model.config.num_hidden_layers, model.config.num_attention_heads
            if not heads or not all(0 <= layer < layers and 0 <= h < heads_per_layer for layer, h in heads):
                raise ValueError(f"Name heads to switch off among this model's {layers} layers x {heads_per_layer} heads.")
            mask = head_mask_for(heads, layers, heads_per_layer).to(device=model.device, dtype=model.dtype)
            try:
                return analyze(model, tokenizer, text, model_id=model_id, head_mask=mask)
            finally:
                release_free_memory()

        return self.cache.get_or_build((model_id, text, ("heads off", heads)), compute)

    def compare_texts(self, text: str, other_text: str, model_id: str | None = None) -> Comparison:
        return compare("texts", self.analyze(text, model_id), self.analyze(other_text, model_id), ("Text A", "Text B"))

    def compare_models(self, text: str, model_id: str | None, other_model_id: str) -> Comparison:
        model_id = model_id or self.default_model
        first = self.analyze(text, model_id)
        # Held while the second runs: the cache may drop the first to make room, and this comparison needs both.
        return compare("models", first, self.analyze(text, other_model_id), (model_id, other_model_id))

    def compare_ablation(self, text: str, heads: Sequence[tuple[int, int]], model_id: str | None = None) -> Comparison:
        whole = self.analyze(text, model_id)
        ablated = self.analyze_ablated(text, heads, model_id)
        shown = ", ".join(f"{layer + 1}.{head + 1}" for layer, head in sorted(set(heads)))
        return compare("ablation", whole, ablated, ("Every head", f"Heads {shown} off"))

    def attention_row(self, analysis: Analysis, layer: int, head: int, position: int) -> AttentionRow:
        """The attention formula on one real row, from the model's weights (memoised on the analysis)."""

        def compute() -> AttentionRow:
            model, _ = self._model(analysis.model_id)
            return attention_row(model, analysis, int(layer), int(head), int(position))

        row = analysis.memo(("formula", int(layer), int(head), int(position)), compute, keep=4)
        self.cache.trim()
        return row

    # ----- attribution (issue 17) -------------------------------------------------------------

    def attribute(self, analysis: Analysis, position: int, method: str = "integrated_gradients",
                  target: str | int | None = None, contrast: str | int | None = None, steps: int = DEFAULT_STEPS,
                  baseline_text: str = "", occlusion: str = "remove", max_steps: int = DEFAULT_MAX_STEPS) -> Attribution:
        """The token at `position` of the analysed text (or `target`, a word or a token id) explained
        by the tokens before it (`interpret.attribution`), with the attention rollout of the last
        token read beside it (after the last layer). A target or contrast word stands for its first
        token; `baseline_text` (integrated gradients) must have as many tokens as the text.
        Memoised on the analysis, a few per text."""
        model, tokenizer = self._model(analysis.model_id)
        target_id, contrast_id = (None if v is None or v == "" else int(v) if isinstance(v, (int, np.integer))
                                  else word_token(tokenizer, str(v)) for v in (target, contrast))
        baseline_ids = tuple(tokenizer.encode(baseline_text)) if baseline_text else None
        key = ("attribution", int(position), method, target_id, contrast_id, int(steps), baseline_ids, occlusion,
               int(max_steps))

        def compute() -> Attribution:
            result = attribute(model, tokenizer, analysis.token_ids.tolist(), position, method, target_id, contrast_id,
                               steps, baseline_ids, baseline_text or None, occlusion, analysis.tokens, max_steps)
            rollout = analysis.attention_map(analysis.num_layers - 1, aggregate="rollout")
            result.rollout = rollout[result.position - 1, :result.position].astype(np.float64)
            return result

        result = analysis.memo(key, compute, keep=8)
        self.cache.trim()
        return result
