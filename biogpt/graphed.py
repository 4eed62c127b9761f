"""Decoding at a fixed batch size with a static KV cache, replayed as one CUDA graph per step.

On a GPU, decoding one token of BioGPT is a few hundred small kernels, each done in
microseconds; launched one by one from Python, the launches take longer than the work. The
fix (gpt-fast, vLLM, transformers' static cache) is to make every decode step have the same
shapes and the same memory addresses, record it once as a CUDA graph, and replay the graph:
one launch per token. What that needs here:

  - a KV cache of fixed capacity, [batch, heads, capacity, head_dim] per layer, allocated once;
  - the new token's keys and values written at slot `position` with `index_copy_`, where
    `position` is a device tensor (a Python int would be baked into the graph);
  - attention over the whole capacity with an additive mask that hides the slots after
    `position` (and a row's left padding), so no shape depends on how far decoding has gone;
  - the token and position embeddings looked up from device tensors.

The prompt runs through the model's normal forward (SDPA, flash attention where the GPU has
it) and its keys and values are copied into the static cache. The decode step calls the
model's own decoder layers, so the weights, their dtype and any quantized Linear modules are
the model's; nothing is copied. On the CPU (or with use_graph=False) the same step runs
eagerly, which is how the tests check all of this without a GPU.

With `compile=True` the step is first compiled by torch.compile (Inductor): layer norms,
residual adds, GELU and the cache writes fuse into fewer kernels, and the graph records the
compiled step. Compiling takes from seconds to minutes, once per decoder, on its first step.

Token choice happens outside the graph, with generate()'s own processors (penalties, bans,
temperature, top-k, top-p, typical-p), then argmax or sampling: one graph serves every
setting, and random-number state stays out of the captured work.
With the same seed, sampling draws what `model.generate(..., seed=...)` draws.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch

from .generation import SamplingRun, resolve_settings
from .kv_cache import StaticKVCache
from .model import POSITION_OFFSET

# Eager runs before capture: they let cuBLAS and the SDPA kernels pick and allocate their
# workspaces outside the graph, as PyTorch's CUDA graph recipe asks.
WARMUP_STEPS = 3
# The attention mask's last dimension is the capacity; multiples of 16 keep the memory-efficient
# SDPA kernel from padding the mask on every step.
CAPACITY_MULTIPLE = 16


class GraphedDecoder:
    """Greedy or sampled decoding of `batch_size` prompts at a time with a static KV cache.

        decoder = GraphedDecoder(model, batch_size=1, capacity=256)
        ids = decoder.generate(input_ids, max_new_tokens=128)   # like model.generate

    `capacity` bounds prompt + new tokens (default: the model's max_position_embeddings; it is
    rounded up to a multiple of 16 and capped there); attention reads the whole capacity every
    step, so keep it near what requests need. The decoder captures its CUDA graph on the first decode
    step and reuses it for every later request, so the model must stay where it is (no `.to()`
    afterwards) and must be in eval mode. If capture fails, the same step runs eagerly and
    `graph_error` says why. Models with bitsandbytes 8-bit layers are refused (see
    `_eight_bit_layer`): use model.generate for them.

    `compile=True` runs the step through torch.compile before it is captured (see the module's
    docstring).

    prefill() and decode() are the two steps, for callers that drive the loop themselves; the
    logits they return live in a buffer that the next call overwrites.
    """

    def __init__(self, model, batch_size: int, capacity: int | None = None, use_graph: bool | None = None,
                 compile: bool = False):
        if model.training:
            raise ValueError("GraphedDecoder needs the model in eval mode (dropout would be captured): call model.eval().")
        eight_bit = _eight_bit_layer(model)
        if eight_bit is not None:
            raise ValueError(
                f"GraphedDecoder does not take bitsandbytes 8-bit models: {eight_bit} looks for outliers with a "
                "host synchronisation on every call, so its step cannot be recorded as a CUDA graph. "
                "Use model.generate (or quantize='4bit', which GraphedDecoder takes)."
            )
        base = model.biogpt
        config = model.config
        self.model = model
        self.batch_size = batch_size
        self.device = base.embed_tokens.weight.device
        self.dtype = base.embed_tokens.weight.dtype
        max_positions = config.max_position_embeddings
        capacity = max_positions if capacity is None else capacity
        if capacity < 2:
            raise ValueError(f"capacity must be at least 2 (a prompt token and a new one), got {capacity}.")
        rounded = -(-capacity // CAPACITY_MULTIPLE) * CAPACITY_MULTIPLE
        self.capacity = min(rounded, max_positions)

        self.graph_error: str | None = None
        if use_graph is None:
            use_graph = self.device.type == "cuda"
        if use_graph and self.device.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device; this one is on {self.device.type}.")
        self.uses_graph = use_graph
        self._graph: torch.cuda.CUDAGraph | None = None
        # Fixed shapes (dynamic=False) and no graph breaks: one compiled step, recorded whole.
        self._run_step = torch.compile(self._step, fullgraph=True, dynamic=False) if compile else self._step

        with torch.inference_mode():
            # The step's inputs: fixed tensors whose contents change between replays.
            self.tokens = torch.zeros(batch_size, dtype=torch.long, device=self.device)
            self.position = torch.zeros(1, dtype=torch.long, device=self.device)
            self.row_start = torch.zeros(batch_size, dtype=torch.long, device=self.device)  # left padding per row
            self.slots = torch.arange(self.capacity, device=self.device)
            self.cache = StaticKVCache(
                len(base.layers), batch_size, config.num_attention_heads, self.capacity, config.head_dim,
                self.dtype, self.device, self.position,
            )
        self._logits: torch.Tensor | None = None  # the graph's output buffer once captured
        self.length = 0  # slots filled: the next token is written at this position

    # ----------------------------------------------------------------------------------------
    # The two steps

    @torch.inference_mode()
    def prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Run the prompts through the model's own forward and fill the cache; logits [batch, vocab].

        Padding must be on the left (as for batched generation); `attention_mask` None means none.
        """
        ids = torch.as_tensor(input_ids, dtype=torch.long).to(self.device)
        if ids.dim() != 2 or ids.shape[0] != self.batch_size or ids.shape[1] == 0:
            raise ValueError(f"input_ids must be [{self.batch_size}, length >= 1] for this decoder, got {list(ids.shape)}.")
        length = ids.shape[1]
        if length > self.capacity:
            raise ValueError(f"The prompt has {length} tokens; this decoder holds {self.capacity} in all, "
                             "so make one with a larger capacity.")
        mask = None if attention_mask is None else torch.as_tensor(attention_mask).to(self.device)
        row_start = torch.zeros(self.batch_size, dtype=torch.long, device=self.device)
        if mask is not None:
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask has shape {list(mask.shape)} but input_ids has {list(ids.shape)}.")
            row_start = length - mask.long().sum(dim=-1)
            left_padded = torch.arange(length, device=self.device)[None, :] >= row_start[:, None]
            if not torch.equal(mask.bool(), left_padded) or bool((row_start >= length).any()):
                raise ValueError("GraphedDecoder takes left padding only, and every prompt needs at least one token.")
            if not bool(row_start.any()):
                mask = None  # nothing padded: the model's fast causal path

        out = self.model(ids, attention_mask=mask, use_cache=True, logits_to_keep=1)
        self.cache.reset()  # stale slots of an earlier request must not hold NaN or inf (see StaticKVCache)
        for layer, (key, value) in enumerate(out.past_key_values.to_legacy()):
            self.cache.keys[layer][:, :, :length].copy_(key)
            self.cache.values[layer][:, :, :length].copy_(value)
        self.row_start.copy_(row_start)
        self.length = length
        return out.logits[:, -1]

    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row (a [batch] tensor on the model's device); logits [batch, vocab]."""
        if self.length == 0:
            raise ValueError("Call prefill() with the prompts before decode().")
        if self.length >= self.capacity:
            raise ValueError(f"The cache is full ({self.capacity} positions); make a decoder with a larger capacity.")
        self.tokens.copy_(tokens)
        self.position.fill_(self.length)
        if self.uses_graph:
            if self._graph is None:
                self._capture()
            if self._graph is not None:
                self._graph.replay()
                self.length += 1
                return self._logits
        logits = self._run_step()
        self.length += 1
        return logits

    def _step(self) -> torch.Tensor:
        """One token per row at slot `position`: nothing here depends on a host-side value."""
        base = self.model.biogpt
        positions = (self.position - self.row_start)[:, None]  # counted over real tokens, as generate does
        hidden = base.embed_tokens(self.tokens[:, None]) * base.embed_scale
        hidden = hidden + base.embed_positions(positions + POSITION_OFFSET)
        visible = (self.slots[None, :] >= self.row_start[:, None]) & (self.slots[None, :] <= self.position)
        bias = torch.zeros(visible.shape, dtype=self.dtype, device=self.device)
        bias = bias.masked_fill(~visible, torch.finfo(self.dtype).min)[:, None, None, :]  # [batch, 1, 1, capacity]
        for index, layer in enumerate(base.layers):
            hidden, _ = layer(hidden, bias, False, self.cache, index, None, False)
        hidden = base.layer_norm(hidden)
        return self.model.output_projection(hidden)[:, 0]

    def _capture(self) -> None:
        """PyTorch's recipe: warm up on a side stream, then record one step into a graph.

        Warm-up steps run the real step at the current position, which only rewrites the slot
        that the replay writes again, so capturing in the middle of a request is harmless.
        """
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(WARMUP_STEPS):
                self._run_step()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._logits = self._run_step()
        except Exception as error:  # noqa: BLE001 - whatever capture forbids, the eager step still works
            self.graph_error = f"capture failed: {error}".splitlines()[0]
            self.uses_graph = False
            self._logits = None
            warnings.warn(f"GraphedDecoder runs eagerly: {self.graph_error}", RuntimeWarning, stacklevel=3)
            return
        self._graph = graph

    # ----------------------------------------------------------------------------------------
    # The loop

    @torch.inference_mode()
    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        """Prompt + new tokens, [batch, length], as `model.generate` gives them.

        Takes generate's keywords and defaults for greedy decoding and sampling: max_new_tokens,
        do_sample, temperature, top_k, top_p, typical_p, seed, eos_token_id, pad_token_id,
        min_new_tokens, and the penalties and bans (repetition_penalty, no_repeat_ngram_size,
        bad_words_ids), which run on the logits outside the graph as generate runs them. Rows
        that end early are padded with pad_token_id. Beams, several sequences per prompt and stop
        strings are refused: use model.generate for those. Unlike model.generate, the padding
        mask is never guessed from pad tokens: pass attention_mask when prompts are padded.
        """
        ids = torch.as_tensor(input_ids, dtype=torch.long)
        if ids.dim() == 1:
            ids = ids.unsqueeze(0)
        s = resolve_settings(self.model.config, ids.shape[1], **kwargs)
        _refuse_unsupported(s)
        prompt_length = ids.shape[1]
        if prompt_length + s.max_new_tokens - 1 > self.capacity:
            raise ValueError(
                f"{prompt_length} prompt tokens and {s.max_new_tokens} new ones need {prompt_length + s.max_new_tokens - 1} "
                f"cache positions; this decoder has {self.capacity}."
            )
        ids = ids.to(self.device)
        mask = None if attention_mask is None else torch.as_tensor(attention_mask).to(self.device)
        # generate()'s own token choice (processors, draws, eos, padding of finished rows); the
        # model calls are this decoder's. (The run's KVCache stays empty: it allocates on first use.)
        run = SamplingRun(self.model, ids, mask, s)
        step = run.choose(self.prefill(ids, mask))
        while not step.last:
            step = run.choose(self.decode(step.tokens))
        return run.ids()


def _refuse_unsupported(s) -> None:
    unsupported = {
        "num_beams": s.num_beams > 1,
        "num_return_sequences": s.num_return_sequences > 1,
        "stop": bool(s.stop),
    }
    asked = [name for name, used in unsupported.items() if used]
    if asked:
        raise ValueError(
            f"GraphedDecoder does greedy decoding and sampling, one sequence per prompt, without stop "
            f"strings; use model.generate for {', '.join(asked)}."
        )


def _eight_bit_layer(model) -> str | None:
    """The name of the model's first bitsandbytes 8-bit layer with an outlier threshold, if any.

    Such a layer (Linear8bitLt, LLM.int8()) calls `outliers.any()` on every input, a host
    synchronisation that stream capture forbids. Running the static-cache step eagerly instead
    gained nothing on an H200 (15.3 vs 14.9 tokens/s for model.generate), and its logits differed
    from the model's own step-by-step decoding by 14% (bench/gpu.sh, 2026-11-26; 4-bit layers:
    1.3e-4), which is not understood. So these models are refused rather than served from there.
    """
    for name, module in model.named_modules():
        state = getattr(module, "state", None)
        if type(module).__name__ == "Linear8bitLt" and getattr(state, "threshold", 0.0) > 0.0:
            return f"{name} (outlier threshold {state.threshold})"
    return None
