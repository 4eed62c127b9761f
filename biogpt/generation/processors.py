"""Logits processors and their filters: pure functions of (ids so far, scores) -> scores.

Written as transformers writes them, so the numbers agree to the last bit; build_processors
lists them in the order transformers' `_get_logits_processor` applies them.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from .settings import GenerationSettings

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def repetition_penalty(
    ids: torch.Tensor, scores: torch.Tensor, penalty: float, ignore_before: torch.Tensor | None
) -> torch.Tensor:
    """Divide positive (multiply negative) scores of every token already in the row; left padding is ignored.

    transformers' gather / where / scatter: only the row's own tokens are computed.
    """
    if ignore_before is not None:
        # A padding slot stands in for the row's first real token instead: scattering that token's
        # penalised score twice changes nothing.
        first_real = ids.gather(1, ignore_before[:, None])
        positions = torch.arange(ids.shape[1], device=ids.device)
        ids = torch.where(positions[None, :] < ignore_before[:, None], first_real, ids)
    seen = scores.gather(1, ids)
    return scores.scatter(1, ids, torch.where(seen < 0, seen * penalty, seen / penalty))


def no_repeat_ngram(ids: torch.Tensor, scores: torch.Tensor, n: int) -> torch.Tensor:
    """Ban every token that would complete an n-gram already present in the row (prompt included)."""
    length = ids.shape[-1]
    if length < n:
        return scores
    prefix = ids[:, length + 1 - n:]
    windows = ids.unfold(dimension=1, size=n, step=1)
    matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1)
    vocab = scores.shape[-1]
    banned = scores.new_zeros((scores.shape[0], vocab + 1), dtype=torch.bool)
    banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
    return scores.masked_fill(banned[:, :vocab], -float("inf"))


def make_bad_words(bad_words_ids: list[list[int]], eos_ids: list[int], vocab: int, device) -> Processor | None:
    """Ban single tokens outright and the last token of longer sequences when their prefix just occurred.

    Like transformers, a bad word that is just an eos token is dropped (generation must be able to end).
    """
    words = [w for w in bad_words_ids if not (len(w) == 1 and w[0] in eos_ids)]
    if not words:
        return None
    always = torch.zeros(vocab, dtype=torch.bool, device=device)
    always[[w[0] for w in words if len(w) == 1]] = True
    by_prefix_length: dict[int, list[list[int]]] = {}
    for w in words:
        if len(w) > 1:
            by_prefix_length.setdefault(len(w) - 1, []).append(w)
    groups = [
        (torch.tensor([w[:-1] for w in group], device=device), torch.tensor([w[-1] for w in group], device=device))
        for group in by_prefix_length.values()
    ]

    def bad_words(ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        banned = always.expand_as(scores)
        for prefixes, last_tokens in groups:
            if prefixes.shape[1] > ids.shape[1]:
                continue
            matching = (ids[:, None, -prefixes.shape[1]:] == prefixes).all(dim=-1)  # [rows, words]
            # index_add, not indexed assignment: several words may end in the same token.
            hits = torch.zeros(scores.shape, device=scores.device).index_add_(1, last_tokens, matching.float())
            banned = banned | (hits > 0)
        return scores.masked_fill(banned, -math.inf)

    return bad_words


def suppress_eos(scores: torch.Tensor, eos_mask: torch.Tensor) -> torch.Tensor:
    return torch.where(eos_mask, -math.inf, scores)


def top_k_filter(scores: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, scores.shape[-1])
    kth_best = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth_best, -math.inf)


def top_p_filter(scores: torch.Tensor, top_p: float, keep: int) -> torch.Tensor:
    """Keep the smallest set of best tokens whose probabilities add up to more than top_p."""
    few = _top_p_among_few(scores, top_p, keep)
    if few is not None:
        return few
    sorted_scores, sorted_indices = torch.sort(scores, descending=False)
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -keep:] = 0
    remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
    return scores.masked_fill(remove, -math.inf)


def _top_p_among_few(scores: torch.Tensor, top_p: float, keep: int) -> torch.Tensor | None:
    """top_p_filter when an earlier filter left only a few finite scores, without sorting the
    whole vocabulary; None when it does not apply."""
    finite = torch.isfinite(scores)
    few = int(finite.sum(dim=-1).max())
    if few == 0 or few * 8 > scores.shape[-1] or not bool((finite | (scores == -math.inf)).all()):
        return None
    values, indices = torch.topk(scores, few)
    return _top_p_from_best(scores, values, indices, top_p, keep)


def _top_p_from_best(scores: torch.Tensor, values: torch.Tensor, indices: torch.Tensor, top_p: float,
                     keep: int) -> torch.Tensor | None:
    """top_p_filter given the best scores per row, descending (`values`, `indices` from topk),
    when every other score is -inf; None if equal scores straddle the cut.

    The sorted row is rebuilt exactly (the -inf scores, then the best ones ascending), so the
    softmax and cumulative sum run on the same numbers as after a full sort and give the same
    bits. Only the order among equal scores can differ from torch.sort's; if equal scores fall
    on both sides of the cut, the caller lets the full sort decide, as in transformers.
    """
    vocab, few = scores.shape[-1], values.shape[-1]
    ascending, ascending_indices = values.flip(-1), indices.flip(-1)
    sorted_scores = scores.new_full(scores.shape, -math.inf)
    sorted_scores[:, vocab - few:] = ascending
    cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
    remove_sorted = cumulative <= (1 - top_p)
    remove_sorted[..., -keep:] = 0
    remove_few = remove_sorted[:, vocab - few:]
    if bool(((ascending[:, 1:] == ascending[:, :-1]) & (remove_few[:, 1:] != remove_few[:, :-1])).any()):
        return None
    remove = torch.zeros_like(remove_sorted).scatter_(1, ascending_indices, remove_few)
    return scores.masked_fill(remove, -math.inf)


def top_k_top_p_filter(scores: torch.Tensor, k: int, top_p: float, keep: int) -> torch.Tensor:
    """top_k_filter then top_p_filter, the same bits, from one topk: the k best scores, sorted,
    are all that top-p reads once top-k has set the rest to -inf."""
    k = min(k, scores.shape[-1])
    if k == scores.shape[-1]:
        return top_p_filter(top_k_filter(scores, k), top_p, keep)
    values, indices = torch.topk(scores, k + 1)  # one more, to see ties at the k-th score
    kth_best = values[..., k - 1, None]
    filtered = scores.masked_fill(scores < kth_best, -math.inf)
    if not bool((values[..., k] < values[..., k - 1]).all()):  # ties kept more than k (or -inf ran out)
        return top_p_filter(filtered, top_p, keep)
    few = _top_p_from_best(filtered, values[..., :k], indices[..., :k], top_p, keep)
    return few if few is not None else top_p_filter(filtered, top_p, keep)


def typical_filter(scores: torch.Tensor, mass: float, keep: int) -> torch.Tensor:
    """Keep the tokens whose surprise is closest to the entropy, up to `mass` of probability."""
    log_probs = F.log_softmax(scores, dim=-1)
    entropy = -(log_probs * log_probs.exp()).nansum(-1, keepdim=True)
    shifted = torch.abs(-log_probs - entropy)
    sorted_shifted, sorted_indices = torch.sort(shifted, descending=False)
    cumulative = scores.gather(-1, sorted_indices).softmax(dim=-1).cumsum(dim=-1)
    last = (cumulative < mass).sum(dim=1)
    last.clamp_(max=sorted_shifted.shape[-1] - 1)
    remove_sorted = sorted_shifted > sorted_shifted.gather(1, last.view(-1, 1))
    remove_sorted[..., :keep] = 0
    remove = remove_sorted.scatter(1, sorted_indices, remove_sorted)
    return scores.masked_fill(remove, -math.inf)


def build_processors(
    settings: GenerationSettings, prompt_length: int, vocab: int, device, ignore_before: torch.Tensor | None
) -> list[Processor]:
    """The processors transformers' `_get_logits_processor` would build, in its order.

    Penalties and bans first, then (sampling only) the warpers temperature, top-k, top-p, typical-p.
    """
    s = settings
    processors: list[Processor] = []
    if s.repetition_penalty != 1.0:
        processors.append(lambda ids, x: repetition_penalty(ids, x, s.repetition_penalty, ignore_before))
    if s.no_repeat_ngram_size > 0:
        processors.append(lambda ids, x: no_repeat_ngram(ids, x, s.no_repeat_ngram_size))
    if s.bad_words_ids is not None:
        bad_words = make_bad_words(s.bad_words_ids, s.eos_token_ids, vocab, device)
        if bad_words is not None:
            processors.append(bad_words)
    if s.min_new_tokens > 0 and s.eos_token_ids:
        eos_mask = torch.isin(torch.arange(vocab, device=device), torch.tensor(s.eos_token_ids, device=device))
        processors.append(
            lambda ids, x: suppress_eos(x, eos_mask) if ids.shape[-1] - prompt_length < s.min_new_tokens else x
        )
    if s.do_sample:
        # Beam sampling keeps one token more than there are eos ids so a beam can always go on.
        keep = len(s.eos_token_ids) + 1 if s.num_beams > 1 and s.eos_token_ids else 2 if s.num_beams > 1 else 1
        if s.temperature != 1.0:
            processors.append(lambda ids, x: x / s.temperature)
        if s.top_k != 0 and s.top_p < 1.0:
            processors.append(lambda ids, x: top_k_top_p_filter(x, max(s.top_k, keep), s.top_p, keep))
        elif s.top_k != 0:
            processors.append(lambda ids, x: top_k_filter(x, max(s.top_k, keep)))
        elif s.top_p < 1.0:
            processors.append(lambda ids, x: top_p_filter(x, s.top_p, keep))
        if s.typical_p < 1.0:
            processors.append(lambda ids, x: typical_filter(x, s.typical_p, keep))
    return processors


def apply_processors(processors: list[Processor], ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    for process in processors:
        scores = process(ids, scores)
    return scores


def left_padding(mask: torch.Tensor | None) -> torch.Tensor | None:
    """Where each row's first real token sits (the repetition penalty skips what is before), or
    None when nothing is padded."""
    return None if mask is None else (mask != 0).int().argmax(dim=1)


def private_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """Sampling draws from its own generator, so concurrent requests and the global RNG never meet.

    Seeded the same way, it yields the same stream as `torch.manual_seed(seed)` gives the global one.
    """
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh entropy from the OS; the global RNG is not touched
    else:
        generator.manual_seed(seed)
    return generator
