"""What needs new forward passes by nature: head ablation (`head_mask`) and the generation trace.

Both decode through biogpt.generation's greedy SamplingRun (prefill, then cached decoding steps);
the trace reads each step's attention out of that decoding itself.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..generation import SamplingRun, resolve_settings
from .labels import vocab_labels

if TYPE_CHECKING:
    from .analysis import Analysis


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
    heads = tuple(sorted({(int(layer), int(h)) for layer, h in heads}))
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
