"""Attribution: which input tokens drove the model's next-token choice at one position.

The explained value is f = log p(target | tokens before `position`), in nats, or contrastively
f = log p(target) - log p(contrast) ("why X rather than Y"). Three methods:

  gradient_x_input      sum over the hidden size of df/dx * x, x a token's (scaled) embedding:
                        one forward and one backward to the inputs.
  integrated_gradients  (x - b) * the mean gradient along the straight path from a baseline b to
                        x (Sundararajan et al., 2017), the mean taken with composite
                        Gauss-Legendre quadrature (pieces of NODES points, `steps` points at
                        first): the points go through the model as batches (`BATCH_TOKENS`
                        token rows per forward), never one forward per point. Completeness (the
                        attributions sum to f(x) - f(b)) is checked and its gap reported:
                        `completeness_gap`, with the tolerance it must meet, 1% of
                        |f(x) - f(b)| or 1e-3 nats, whichever is larger. Each piece checks its
                        own completeness, so where a trained model's path bends sharply (the
                        bundled model's does: 32 points missed by 2%) the worst pieces are
                        halved until the whole gap is within the tolerance or `max_steps`
                        points are spent.
                        Baselines: "padding" (every token but the leading </s> replaced by the
                        padding token's embedding), or a counterfactual text that tokenizes to
                        the same number of tokens (token i is interpolated towards token i of
                        the other text; tokens the texts share get exactly 0). A text of another
                        length is refused with a sentence that says both lengths.
  occlusion             f(text) - f(text with one word removed), or with that word's tokens
                        replaced by padding tokens ("replace"); each word (and, for the token
                        view, each token) occluded in its own batch row (a one-token word's row
                        serves both), the rows batched `BATCH_TOKENS` token rows per forward.
                        One forward of the text per word and token: the costliest method on a
                        long text.

Gradient methods give token scores and word scores that are their sums (they are additive);
occlusion occludes words for the word scores and tokens for the token scores. Every result
holds the leading </s> too (its gradient score is real; occlusion never removes it, so 0).

Attribution needs gradients through float weights: an int8/int4 model (biogpt.quantize) is
refused with a sentence. The Interpreter adds attention rollout for the same position beside
it (Interpreter.attribute). Nothing here imports gradio or plotly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..tokenizer import WORD_END
from .labels import CONTINUES, vocab_labels

METHODS = ("gradient_x_input", "integrated_gradients", "occlusion")
OCCLUSIONS = ("remove", "replace")
DEFAULT_STEPS = 32  # quadrature points at first
MAX_STEPS = 256
DEFAULT_MAX_STEPS = 128  # points IG may grow to while completeness is not met
NODES = 8  # Gauss-Legendre points per piece of the path
MAX_TOKENS = 1024  # tokens before the explained position; IG holds BATCH_TOKENS rows' activations at once
# Token rows per forward: IG's interpolation steps and occlusion's variants are batched up to this
# many rows x tokens (4 points of a 256-token text), which bounds the activations kept for backward
# (about 1.5 GB on microsoft/biogpt's shape).
BATCH_TOKENS = 1024
ABSOLUTE_TOLERANCE = 1e-3  # nats
RELATIVE_TOLERANCE = 0.01


@dataclass
class Attribution:
    """One position explained: scores per input token and per word (positive: pushed f up)."""

    method: str
    position: int  # the explained token's index; the model reads tokens [0, position)
    target_id: int
    target: str
    contrast_id: int | None  # contrastive: f = log p(target) - log p(contrast)
    contrast: str | None
    token_ids: list[int]  # the tokens read, [position]
    tokens: list[str]  # their labels
    token_scores: np.ndarray  # [position] float64
    words: list[str]
    word_tokens: list[tuple[int, int]]  # each word's token range [start, end)
    word_scores: np.ndarray  # [words] float64
    value: float  # f(input), nats
    baseline: str | None = None  # IG: "padding" or the counterfactual text
    baseline_value: float | None = None  # IG: f(baseline)
    completeness_gap: float | None = None  # IG: sum(token_scores) - (value - baseline_value)
    completeness_tolerance: float | None = None  # IG: the gap must stay within this
    steps: int | None = None  # IG: quadrature points used (more than asked where completeness needed them)
    occlusion: str | None = None  # occlusion: "remove" or "replace"
    rollout: np.ndarray | None = None  # [position] attention rollout of the last token read (Interpreter)
    seconds: float = 0.0


# --------------------------------------------------------------------------------------------
# The explained value, on a batch of embedded inputs


def _embed(model, ids: torch.Tensor) -> torch.Tensor:
    core = model.biogpt
    return core.embed_tokens(ids) * core.embed_scale


def _values(model, embeds: torch.Tensor, last: torch.Tensor, target: int, contrast: int | None) -> torch.Tensor:
    """f for each row of `embeds` [rows, T, hidden], read at each row's position `last` [rows]."""
    hidden = model.biogpt(inputs_embeds=embeds, use_cache=False).last_hidden_state
    hidden = hidden[torch.arange(hidden.shape[0], device=hidden.device), last.to(hidden.device)]
    logits = model.output_projection(hidden)
    logprobs = F.log_softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)), dim=-1)  # fp16 -> fp32
    value = logprobs[:, target]
    return value if contrast is None else value - logprobs[:, contrast]


def _rows_per_batch(length: int) -> int:
    return max(1, BATCH_TOKENS // max(length, 1))


def gradient_x_input(model, ids: torch.Tensor, target: int, contrast: int | None = None) -> tuple[np.ndarray, float]:
    """(token scores [T], f(input)) for ids [T]: one forward, one backward to the inputs."""
    with torch.enable_grad():
        embeds = _embed(model, ids[None]).detach().requires_grad_(True)
        value = _values(model, embeds, torch.tensor([ids.shape[0] - 1]), target, contrast)
        (grad,) = torch.autograd.grad(value.sum(), embeds)
    scores = (grad * embeds.detach()).sum(-1)[0]
    return scores.double().cpu().numpy(), float(value.detach())


def gauss_legendre(steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature points on [0, 1] and their weights (summing to 1)."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return (nodes + 1) / 2, weights / 2


def first_intervals(steps: int) -> list[tuple[float, float]]:
    """[0, 1] cut into pieces of NODES points each (one piece if `steps` is fewer)."""
    pieces = max(1, steps // NODES)
    return [(k / pieces, (k + 1) / pieces) for k in range(pieces)]


def _nodes_per_interval(steps: int) -> int:
    return steps // len(first_intervals(steps))  # `steps` rounded down to a whole number per piece


def integrated_gradients(model, ids: torch.Tensor, baseline_ids: torch.Tensor, target: int,
                         contrast: int | None = None, steps: int = DEFAULT_STEPS,
                         max_steps: int | None = None) -> tuple[np.ndarray, float, float, int]:
    """(token scores [T], f(input), f(baseline), points used).

    Composite Gauss-Legendre: [0, 1] in pieces of NODES points, `steps` points at first. Each
    piece checks its own completeness (its scores sum to f at its end minus f at its start), so
    the pieces where the path bends sharply are known: while the whole gap is over the
    tolerance and `max_steps` (default: `steps`, no refinement) allows, those pieces are halved
    and computed again. All points of a round go through the model as batches.
    """
    x = _embed(model, ids[None]).detach()
    b = _embed(model, baseline_ids[None]).detach()
    nodes = _nodes_per_interval(steps)
    max_steps = steps if max_steps is None else max(max_steps, steps)
    pieces: dict[tuple[float, float], torch.Tensor] = {}  # interval -> its token scores [T] float64
    ends: dict[float, float] = {}  # alpha -> f
    todo = first_intervals(steps)
    while True:
        pieces.update(zip(todo, _interval_scores(model, x, b, todo, nodes, target, contrast)))
        _add_path_values(model, x, b, ends, [0.0, 1.0], target, contrast)
        tolerance = max(RELATIVE_TOLERANCE * abs(ends[1.0] - ends[0.0]), ABSOLUTE_TOLERANCE)
        gap = float(sum(score.sum() for score in pieces.values())) - (ends[1.0] - ends[0.0])
        used = nodes * len(pieces)
        room = (max_steps - used) // nodes  # pieces that may still be added (a halved piece adds one)
        if abs(gap) <= tolerance or room < 1:
            break
        # Only now the pieces' inner ends: which pieces miss their own completeness most.
        _add_path_values(model, x, b, ends, [a for piece in pieces for a in piece], target, contrast)
        gaps = {iv: float(score.sum()) - (ends[iv[1]] - ends[iv[0]]) for iv, score in pieces.items()}
        worst = sorted(gaps, key=lambda iv: -abs(gaps[iv]))[:room]
        todo = []
        for lo, hi in worst:
            del pieces[(lo, hi)]
            todo += [(lo, (lo + hi) / 2), ((lo + hi) / 2, hi)]
    scores = torch.stack(list(pieces.values())).sum(0)
    return scores.cpu().numpy(), ends[1.0], ends[0.0], used


def _interval_scores(model, x: torch.Tensor, b: torch.Tensor, intervals: list[tuple[float, float]], nodes: int,
                     target: int, contrast: int | None) -> list[torch.Tensor]:
    """Each interval's IG share [T] float64: (x - b) . the weighted gradients at its points."""
    alphas, weights = gauss_legendre(nodes)
    points = np.concatenate([lo + (hi - lo) * alphas for lo, hi in intervals])
    point_weights = np.concatenate([(hi - lo) * weights for lo, hi in intervals])
    length = x.shape[1]
    per_batch = _rows_per_batch(length)
    grads_by_point = []
    with torch.enable_grad():
        for start in range(0, len(points), per_batch):  # batches of points, never one forward per point
            alpha = torch.tensor(points[start:start + per_batch], dtype=x.dtype, device=x.device)[:, None, None]
            path = (b + alpha * (x - b)).requires_grad_(True)
            values = _values(model, path, torch.full((alpha.shape[0],), length - 1), target, contrast)
            (grads,) = torch.autograd.grad(values.sum(), path)
            weight = torch.tensor(point_weights[start:start + per_batch], dtype=torch.float64, device=x.device)
            grads_by_point.append((grads.double() * (x - b).double()).sum(-1) * weight[:, None])  # [rows, T]
    per_point = torch.cat(grads_by_point)
    return list(per_point.reshape(len(intervals), nodes, length).sum(1))


def _add_path_values(model, x: torch.Tensor, b: torch.Tensor, ends: dict[float, float], alphas: list[float],
                     target: int, contrast: int | None) -> None:
    """Put f at the points of the path `alphas` that `ends` lacks into it, batched, no gradients."""
    alphas = sorted(set(alphas) - set(ends))
    if alphas:
        ends.update(zip(alphas, _path_values(model, x, b, alphas, target, contrast)))


def _path_values(model, x: torch.Tensor, b: torch.Tensor, alphas: list[float], target: int,
                 contrast: int | None) -> list[float]:
    """f at points of the path, batched, no gradients."""
    out: list[float] = []
    per_batch = _rows_per_batch(x.shape[1])
    with torch.no_grad():
        for start in range(0, len(alphas), per_batch):
            alpha = torch.tensor(alphas[start:start + per_batch], dtype=x.dtype, device=x.device)[:, None, None]
            path = b + alpha * (x - b)
            out += _values(model, path, torch.full((alpha.shape[0],), x.shape[1] - 1), target, contrast).tolist()
    return out


def occlusion_values(model, variants: list[list[int]], target: int, contrast: int | None, pad_id: int) -> np.ndarray:
    """f for each variant (lists of ids, lengths may differ): right-padded, batched, no gradients.
    Causal attention means padding after a row's last token never reaches it."""
    out = []
    with torch.no_grad():
        longest = max(len(v) for v in variants)
        per_batch = _rows_per_batch(longest)
        for start in range(0, len(variants), per_batch):
            chunk = variants[start:start + per_batch]
            width = max(len(v) for v in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long, device=model.device)
            for row, variant in enumerate(chunk):
                ids[row, :len(variant)] = torch.tensor(variant, dtype=torch.long)
            last = torch.tensor([len(v) - 1 for v in chunk])
            out.append(_values(model, _embed(model, ids), last, target, contrast).double().cpu())
    return torch.cat(out).numpy()


def occluded(ids: list[int], span: tuple[int, int], mode: str, pad_id: int) -> list[int]:
    start, end = span
    return ids[:start] + ([pad_id] * (end - start) if mode == "replace" else []) + ids[end:]


# --------------------------------------------------------------------------------------------
# Words, checks, and the whole request


def word_spans(tokenizer, ids: Sequence[int]) -> list[tuple[int, int]]:
    """Token ranges of words: a word ends with a piece marked as a word end (`</w>`); the leading
    </s> (any special token) is a word of its own."""
    special = set(tokenizer.all_special_ids)
    pieces = tokenizer.convert_ids_to_tokens(list(ids))
    spans, start = [], 0
    for index, (token_id, piece) in enumerate(zip(ids, pieces)):
        if token_id in special and index > start:  # close an unfinished word before a special token
            spans.append((start, index))
            start = index
        if token_id in special or piece.endswith(WORD_END) or index == len(ids) - 1:
            spans.append((start, index + 1))
            start = index + 1
    return spans


def check_request(model, length: int, position: int, method: str, steps: int, occlusion: str,
                  max_steps: int = DEFAULT_MAX_STEPS) -> None:
    """One sentence for each thing that cannot be attributed."""
    if method not in METHODS:
        raise ValueError(f"The attribution method must be one of {', '.join(METHODS)}, got {method!r}.")
    if getattr(model, "quantization", None):
        raise ValueError(
            f"This model runs with {model.quantization} weights, which have no gradients to attribute with; "
            "load it without quantization to explain its tokens."
        )
    if isinstance(position, bool) or not isinstance(position, (int, np.integer)) or not 1 <= position <= length:
        raise ValueError(
            f"The position must be a token index from 1 to {length} (the token explained; the model reads the "
            f"tokens before it), got {position!r}."
        )
    if position > MAX_TOKENS:
        raise ValueError(f"Attribution reads at most {MAX_TOKENS:,} tokens before the explained one; "
                         f"pick a position up to {MAX_TOKENS:,} or shorten the text.")
    if method == "integrated_gradients" and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer))
                                             or not 2 <= steps <= MAX_STEPS):
        raise ValueError(f"Integrated gradients takes 2 to {MAX_STEPS} steps, got {steps!r}.")
    if method == "integrated_gradients" and not (isinstance(max_steps, (int, np.integer)) and max_steps <= MAX_STEPS):
        raise ValueError(f"Integrated gradients may refine to at most {MAX_STEPS} steps, got max_steps={max_steps!r}.")
    if method == "occlusion" and occlusion not in OCCLUSIONS:
        raise ValueError(f"Occlusion must be one of {', '.join(OCCLUSIONS)}, got {occlusion!r}.")


def attribute(model, tokenizer, ids: Sequence[int], position: int, method: str = "integrated_gradients",
              target: int | None = None, contrast: int | None = None, steps: int = DEFAULT_STEPS,
              baseline_ids: Sequence[int] | None = None, baseline_text: str | None = None,
              occlusion: str = "remove", labels: Sequence[str] | None = None,
              max_steps: int = DEFAULT_MAX_STEPS) -> Attribution:
    """Explain the token at `position` of `ids` (or `target`, any vocabulary id; at position
    len(ids) the default target is the model's most likely next token) by the tokens before it.

    IG starts with `steps` points and adds points where completeness fails, up to `max_steps`
    (the points used are reported as `steps`). `baseline_ids` (IG): the counterfactual text's ids,
    same length as `ids` (its description,
    `baseline_text`, is reported); None: the padding baseline. `labels`: the tokens' labels
    (an Analysis's), else the vocabulary's.
    """
    started = time.perf_counter()
    ids = [int(t) for t in ids]
    check_request(model, len(ids), position, method, steps, occlusion, max_steps)
    vocab = model.config.vocab_size
    for name, value in (("target", target), ("contrast", contrast)):
        if value is not None and not 0 <= int(value) < vocab:
            raise ValueError(f"The {name} token must be in this model's vocabulary (0 to {vocab - 1}), got {value}.")
    if target is None:
        target = ids[position] if position < len(ids) else None
    if contrast is not None and target is not None and int(contrast) == int(target):
        raise ValueError("The contrast token is the target itself: pick another candidate to compare with.")
    context = ids[:position]
    device = model.device
    context_ids = torch.tensor(context, dtype=torch.long, device=device)
    if target is None:
        with torch.no_grad():
            logits = model(context_ids[None], logits_to_keep=1).logits[0, -1]
        target = int(logits.argmax())
    target = int(target)
    contrast = None if contrast is None else int(contrast)
    spans = word_spans(tokenizer, context)
    names = vocab_labels(tokenizer)
    token_labels = list(labels[:position]) if labels is not None else [str(names[t]) for t in context]
    words = ["".join(token_labels[i].rstrip(CONTINUES) or token_labels[i] for i in range(s, e)) for s, e in spans]
    pad = model.config.pad_token_id
    extra: dict = {}
    if method == "gradient_x_input":
        token_scores, value = gradient_x_input(model, context_ids, target, contrast)
        word_scores = np.array([token_scores[s:e].sum() for s, e in spans])
    elif method == "integrated_gradients":
        if baseline_ids is None:
            base = [context[0]] + [pad] * (position - 1)
            description = "padding"
        else:
            base = [int(t) for t in baseline_ids]
            if len(base) != len(ids):
                raise ValueError(
                    f"The baseline text has {len(base)} tokens and the text {len(ids)}; integrated gradients "
                    "compares them token by token, so give a baseline with the same number of tokens "
                    "(e.g. change one word for another word of as many pieces)."
                )
            base = base[:position]
            description = baseline_text if baseline_text is not None else "counterfactual text"
        token_scores, value, base_value, used = integrated_gradients(
            model, context_ids, torch.tensor(base, dtype=torch.long, device=device), target, contrast, int(steps),
            max(int(max_steps), int(steps)),
        )
        word_scores = np.array([token_scores[s:e].sum() for s, e in spans])
        tolerance = max(RELATIVE_TOLERANCE * abs(value - base_value), ABSOLUTE_TOLERANCE)
        extra = dict(baseline=description, baseline_value=base_value, steps=used, completeness_tolerance=tolerance,
                     completeness_gap=float(token_scores.sum() - (value - base_value)))
    else:
        occludable = [(s, e) for s, e in spans if s > 0]  # the leading </s> stays
        token_units = [(i, i + 1) for i in range(1, position)]
        # A one-token word and its token are the same variant: each distinct variant runs once.
        rows: dict[tuple[int, ...], int] = {tuple(context): 0}
        for span in occludable + token_units:
            rows.setdefault(tuple(occluded(context, span, occlusion, pad)), len(rows))
        values = occlusion_values(model, [list(v) for v in rows], target, contrast, pad)
        value = float(values[0])

        def drop(span: tuple[int, int]) -> float:
            return value - float(values[rows[tuple(occluded(context, span, occlusion, pad))]])

        word_scores = np.array([drop(span) if span in occludable else 0.0 for span in spans])
        token_scores = np.array([0.0] + [drop(span) for span in token_units])
        extra = dict(occlusion=occlusion)
    return Attribution(
        method=method, position=int(position), target_id=target, target=str(names[target]),
        contrast_id=contrast, contrast=None if contrast is None else str(names[contrast]),
        token_ids=context, tokens=token_labels, token_scores=np.asarray(token_scores, np.float64),
        words=words, word_tokens=spans, word_scores=np.asarray(word_scores, np.float64), value=value,
        seconds=time.perf_counter() - started, **extra,
    )
