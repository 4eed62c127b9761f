"""Decoding: greedy, sampling, beam search, penalties, stop rules and streaming.

Token for token the same as transformers' `generate` (5.x) on the same weights: the logits
processors run in the order transformers builds them, sampling draws with the same
`torch.multinomial` call (so a private generator seeded with `seed` gives what
`torch.manual_seed(seed)` gives transformers) and beam search is a port of its vectorised
implementation, down to the -1e9 sentinels that decide ties.

What differs is the plumbing, which is where the speed comes from: one preallocated KV cache
and one preallocated id buffer per request, a prefill that projects only the last position, a
decode step that feeds one token and builds no mask when nothing is padded, and no per-step
bookkeeping that the request did not ask for.

Three entry points:
  generate(model, input_ids, ...)            -> ids, like transformers
  generate_detailed(model, tokenizer, ...)   -> one GeneratedSequence per output (text, per-token
                                                log-probabilities, alternatives, finish reason)
  stream(model, tokenizer, prompt, ...)      -> one StreamEvent per new token

Probabilities reported (`logprob`, `alternatives`) are those of the distribution the decoder
actually chose from: the model's logits after every processor that was switched on (repetition
penalty, n-gram and bad-word bans, min_new_tokens, and for sampling temperature, top-k, top-p,
typical-p), renormalised with a softmax. With plain greedy decoding that is the model's own
distribution.

The text of a continuation is `tokenizer.decode(new_ids, skip_special_tokens=True)` of the new
tokens only (never the prompt), cut before the first stop string if one ended generation.
"""

from __future__ import annotations

import math
import threading
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from .model import KVCache

FinishReason = str  # "length" | "eos" | "stop"

_UNSET: Any = object()  # tells "not passed" from an explicit None (eos_token_id=None disables eos)

# transformers' GenerationConfig defaults, which BioGPT checkpoints do not override.
DEFAULT_MAX_NEW_TOKENS = 20
DEFAULT_TOP_K = 50


# --------------------------------------------------------------------------------------------
# Public results


@dataclass
class TokenChoice:
    """One candidate for the next token and its probability under the decoding distribution."""

    token_id: int
    token: str
    probability: float


@dataclass
class GeneratedSequence:
    """One generated continuation with everything a UI needs to show how sure the model was."""

    text: str  # the continuation only, special tokens skipped, cut before a stop string
    token_ids: list[int]  # new tokens, including the final eos if one was generated; no padding
    token_logprobs: list[float]  # natural log-probability of each token in token_ids
    alternatives: list[list[TokenChoice]]  # the most likely candidates at each step, best first
    finish_reason: FinishReason
    prompt_index: int = 0  # which prompt of the batch this continues
    beam_score: float | None = None  # beam search only: transformers' `sequences_scores`


@dataclass
class StreamEvent:
    """One new token. `text` is the newly settled text (possibly ""): all events' `text` joined
    equal the final continuation exactly."""

    text: str
    token_id: int
    token: str
    logprob: float
    alternatives: list[TokenChoice]
    finish_reason: FinishReason | None = None  # set on the last event only


# --------------------------------------------------------------------------------------------
# Settings: Hugging Face's names and defaults, checked once with messages a user understands


@dataclass
class GenerationSettings:
    max_new_tokens: int
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = DEFAULT_TOP_K
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: list[list[int]] | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None


_KNOWN_KEYS = {
    "max_new_tokens", "max_length", "min_new_tokens", "min_length", "do_sample", "temperature", "top_k",
    "top_p", "typical_p", "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "num_beams",
    "length_penalty", "early_stopping", "num_return_sequences", "eos_token_id", "pad_token_id", "stop",
    "seed", "use_cache",
}


def resolve_settings(config, prompt_length: int, **kwargs: Any) -> GenerationSettings:
    """Turn generate()'s keywords into checked settings, or raise ValueError saying what to change."""
    unknown = set(kwargs) - _KNOWN_KEYS
    if unknown:
        raise TypeError(f"generate() got unexpected keyword argument(s): {', '.join(sorted(unknown))}.")
    get = kwargs.get
    max_positions = config.max_position_embeddings
    room = max_positions - prompt_length
    if prompt_length < 1:
        raise ValueError("The prompt is empty: give at least one token to continue from.")

    max_new = get("max_new_tokens")
    if max_new is None and get("max_length") is not None:
        max_new = int(get("max_length")) - prompt_length  # transformers: max_length counts the prompt
        if max_new < 1:
            raise ValueError(
                f"max_length={get('max_length')} leaves no room after the {prompt_length}-token prompt; "
                "use max_new_tokens to say how many tokens to add."
            )
    if max_new is None:
        if room < 1:
            raise ValueError(
                f"The prompt has {prompt_length} tokens and fills all {max_positions} positions this model "
                "can see, so there is no room for new tokens; shorten the prompt."
            )
        max_new = min(DEFAULT_MAX_NEW_TOKENS, room)  # transformers' default, capped like transformers
    if isinstance(max_new, bool) or int(max_new) != max_new or max_new < 1:
        raise ValueError(f"max_new_tokens must be a whole number of at least 1, got {max_new!r}.")
    max_new = int(max_new)
    if prompt_length + max_new > max_positions:
        if room < 1:
            raise ValueError(
                f"The prompt has {prompt_length} tokens and fills all {max_positions} positions this model "
                "can see, so there is no room for new tokens; shorten the prompt."
            )
        raise ValueError(
            f"The prompt has {prompt_length} tokens and {max_new} new tokens were asked for, but this model "
            f"sees at most {max_positions} positions; ask for at most {room} new tokens or shorten the prompt."
        )

    min_new = get("min_new_tokens")
    if min_new is None and get("min_length") is not None:
        min_new = max(int(get("min_length")) - prompt_length, 0)
    min_new = 0 if min_new is None else min_new
    if isinstance(min_new, bool) or int(min_new) != min_new or min_new < 0:
        raise ValueError(f"min_new_tokens must be a whole number of at least 0, got {min_new!r}.")

    do_sample = bool(get("do_sample") or False)
    temperature = 1.0 if get("temperature") is None else float(get("temperature"))
    top_k = DEFAULT_TOP_K if get("top_k") is None else get("top_k")
    top_p = 1.0 if get("top_p") is None else float(get("top_p"))
    typical_p = 1.0 if get("typical_p") is None else float(get("typical_p"))
    repetition_penalty = 1.0 if get("repetition_penalty") is None else float(get("repetition_penalty"))
    if do_sample and not temperature > 0:
        raise ValueError(
            f"temperature must be greater than 0 when sampling (got {temperature}); "
            "for deterministic output use do_sample=False instead."
        )
    if isinstance(top_k, bool) or int(top_k) != top_k or top_k < 0:
        raise ValueError(f"top_k must be a whole number of at least 0 (0 turns it off), got {top_k!r}.")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be greater than 0 and at most 1 (1 turns it off), got {top_p}.")
    if not 0 < typical_p <= 1:
        raise ValueError(f"typical_p must be greater than 0 and at most 1 (1 turns it off), got {typical_p}.")
    if not repetition_penalty > 0:
        raise ValueError(
            f"repetition_penalty must be greater than 0 (1 turns it off, above 1 discourages repeats), "
            f"got {repetition_penalty}."
        )

    ngram = get("no_repeat_ngram_size") or 0
    if isinstance(ngram, bool) or int(ngram) != ngram or ngram < 0:
        raise ValueError(f"no_repeat_ngram_size must be a whole number of at least 0, got {ngram!r}.")

    num_beams = 1 if get("num_beams") is None else get("num_beams")
    if isinstance(num_beams, bool) or int(num_beams) != num_beams or num_beams < 1:
        raise ValueError(f"num_beams must be a whole number of at least 1, got {num_beams!r}.")
    num_return = 1 if get("num_return_sequences") is None else get("num_return_sequences")
    if isinstance(num_return, bool) or int(num_return) != num_return or num_return < 1:
        raise ValueError(f"num_return_sequences must be a whole number of at least 1, got {num_return!r}.")
    if num_beams > 1 and num_return > num_beams:
        raise ValueError(
            f"Beam search with {num_beams} beams can return at most {num_beams} sequences, but "
            f"num_return_sequences={num_return}; raise num_beams or lower num_return_sequences."
        )
    if num_beams == 1 and not do_sample and num_return > 1:
        raise ValueError(
            "Greedy decoding gives the same sequence every time, so num_return_sequences must be 1; "
            "use do_sample=True or num_beams > 1 to get several different sequences."
        )
    early_stopping = False if get("early_stopping") is None else get("early_stopping")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}.")
    length_penalty = 1.0 if get("length_penalty") is None else float(get("length_penalty"))

    eos = kwargs.get("eos_token_id", _UNSET)
    if eos is _UNSET:
        eos = config.eos_token_id
    eos_ids = [] if eos is None else [int(eos)] if isinstance(eos, int) else [int(t) for t in eos]
    pad = kwargs.get("pad_token_id", _UNSET)
    if pad is _UNSET:
        pad = config.pad_token_id
    if pad is None:  # transformers pads finished rows with the first eos then
        pad = eos_ids[0] if eos_ids else 0

    bad_words = get("bad_words_ids")
    if bad_words is not None:
        if not isinstance(bad_words, (list, tuple)) or not bad_words or not all(
            isinstance(word, (list, tuple)) and word for word in bad_words
        ):
            raise ValueError(
                "bad_words_ids must be a non-empty list of non-empty lists of token ids, e.g. [[42], [7, 9]]."
            )
        bad_words = [[int(t) for t in word] for word in bad_words]
        out_of_range = sorted({t for word in bad_words for t in word if not 0 <= t < config.vocab_size})
        if out_of_range:
            raise ValueError(
                f"bad_words_ids holds ids outside this model's vocabulary of {config.vocab_size}: {out_of_range}."
            )

    stop = get("stop") or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stop):
        raise ValueError("Each stop string must be a non-empty string.")

    seed = get("seed")
    if seed is not None and (isinstance(seed, bool) or int(seed) != seed):
        raise ValueError(f"seed must be a whole number, got {seed!r}.")

    return GenerationSettings(
        max_new_tokens=max_new, min_new_tokens=int(min_new), do_sample=do_sample, temperature=temperature,
        top_k=int(top_k), top_p=top_p, typical_p=typical_p, repetition_penalty=repetition_penalty,
        no_repeat_ngram_size=int(ngram), bad_words_ids=bad_words, num_beams=int(num_beams),
        length_penalty=length_penalty, early_stopping=early_stopping, num_return_sequences=int(num_return),
        eos_token_ids=eos_ids, pad_token_id=int(pad), stop=stop, seed=None if seed is None else int(seed),
    )


# --------------------------------------------------------------------------------------------
# Logits processors: pure functions of (ids so far, scores) -> scores, written as transformers
# writes them so the numbers agree to the last bit.

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


# --------------------------------------------------------------------------------------------
# Stopping work nobody waits for


class DecodingStopped(Exception):
    """Raised by a decoding loop whose `should_stop` said yes: its reader has gone (a closed
    connection, a Stop button). Checked before every model call, so at most the call already
    running when the reader left is finished after it."""

    def __init__(self, message: str = "Decoding stopped: nobody is waiting for this result any more."):
        super().__init__(message)


def _check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise DecodingStopped()


# --------------------------------------------------------------------------------------------
# The two model calls


def prefill(model, ids: torch.Tensor, mask: torch.Tensor | None, cache: KVCache, hidden_only: bool = False) -> torch.Tensor:
    """Run the whole prompt once, filling the cache; project only the last position to logits
    (or, `hidden_only`, return the last position's final hidden state unprojected)."""
    if hidden_only:
        return model.biogpt(ids, attention_mask=mask, past_key_values=cache, use_cache=True).last_hidden_state[:, -1]
    out = model(ids, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1]


def decode_one(
    model, tokens: torch.Tensor, cache: KVCache, mask: torch.Tensor | None, positions: torch.Tensor | None,
    hidden_only: bool = False,
) -> torch.Tensor:
    """One new token per row against the cache. Without padding no mask and no positions are passed,
    so the model builds neither."""
    kwargs = dict(attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True)
    if hidden_only:
        return model.biogpt(tokens[:, None], **kwargs).last_hidden_state[:, -1]
    return model(tokens[:, None], **kwargs).logits[:, -1]


# --------------------------------------------------------------------------------------------
# Text: incremental decoding for stop strings and streaming


class ContinuationText:
    """The decoded text of one row's new tokens, kept current as tokens arrive, and the part of
    it already handed out as stream deltas.

    Moses detokenisation is not incremental, so the whole continuation is decoded again each
    step. What no later token can change is everything before the last space: the last word
    may still grow (BPE), or be joined by a hyphen ("@-@") or a contraction, while the rules that
    place earlier words look only leftwards. From that, enough characters are held back that a
    stop string cannot start inside text already handed out.
    """

    def __init__(self, tokenizer, stop: list[str]):
        self.tokenizer = tokenizer
        self.stop = stop
        self.hold_back = max((len(s) for s in stop), default=1) - 1
        self.ids: list[int] = []
        self.text = ""
        self.stop_at: int | None = None  # where a stop string began; text is cut there
        self.emitted = 0  # characters of text already handed out

    def append(self, token_id: int) -> bool:
        """Add a token; True if a stop string now appears (the text is then cut before it)."""
        self.ids.append(token_id)
        self.text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if self.stop:
            found = [i for i in (self.text.find(s) for s in self.stop) if i >= 0]
            if found:
                self.stop_at = min(found)
                self.text = self.text[: self.stop_at]
                return True
        return False

    def delta(self, final: bool) -> str:
        """Text settled since the last call; `final` flushes everything that is left."""
        piece, self.emitted = settled_delta(self.text, self.emitted, self.hold_back, final)
        return piece


def settled_delta(text: str, emitted: int, hold_back: int, final: bool) -> tuple[str, int]:
    """The part of `text` after the first `emitted` characters that no later token can change,
    and the new count of characters handed out (see ContinuationText)."""
    end = len(text) if final else max(text.rfind(" ") - hold_back, 0)
    if end <= emitted:
        return "", emitted
    return text[emitted:end], end


def stop_string_hit(tokenizer, stop: list[str], new_ids: list[int]) -> bool:
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    return any(s in text for s in stop)


# --------------------------------------------------------------------------------------------
# Greedy and sampling


@dataclass
class _Step:
    """What one decoding step produced, handed to whoever consumes the loop."""

    index: int
    tokens: torch.Tensor  # [rows] the chosen tokens (pad for rows already finished)
    scores: torch.Tensor | None  # [rows, vocab] processed scores the tokens were chosen from; None when screened
    finished: dict[int, FinishReason]  # rows that finished at this step
    last: bool = False  # no step follows this one
    # With SamplingRun(report=k): per row, the chosen token's log-probability and the k best
    # (log-probability, token) under the same distribution, as plain Python numbers.
    logprobs: list[float] | None = None
    top: tuple[list[list[float]], list[list[int]]] | None = None
    # Each row's decoded continuation after this step, when the run tracks text: a snapshot, so
    # a reader on another thread never sees a later step's text (a batcher runs ahead).
    texts: list[str] | None = None


def _private_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """Sampling draws from its own generator, so concurrent requests and the global RNG never meet.

    Seeded the same way, it yields the same stream as `torch.manual_seed(seed)` gives the global one.
    """
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()  # fresh entropy from the OS; the global RNG is not touched
    else:
        generator.manual_seed(seed)
    return generator


# Screens by model, built on first use and rebuilt if the output projection is changed in place.
_SCREENS: "weakref.WeakKeyDictionary[Any, tuple[tuple[int, int], Any]]" = weakref.WeakKeyDictionary()
_SCREENS_LOCK = threading.Lock()


def greedy_screen(model):
    """The model's int8 screen for plain greedy choices (biogpt.screening), or None where it does
    not apply or would not pay.

    It applies to an fp32 model on the CPU with an unquantized output projection, and pays when
    that projection is at least half the weights read per token (vocabulary >= 12 x layers x
    hidden: the bundled models, not microsoft/biogpt), where it makes decoding about 2.5x faster.
    """
    from .screening import ScreenedArgmax, screen_applicable

    config = model.config
    if model.quantization is not None or type(model.output_projection) is not torch.nn.Linear:
        return None
    weight = model.output_projection.weight
    if (weight.device.type != "cpu" or weight.dtype != torch.float32
            or config.vocab_size < 12 * config.num_hidden_layers * config.hidden_size or not screen_applicable()):
        return None
    version = (weight.data_ptr(), weight._version)
    with _SCREENS_LOCK:
        cached = _SCREENS.get(model)
        if cached is None or cached[0] != version:
            with torch.inference_mode(False), torch.no_grad():
                cached = _SCREENS[model] = (version, ScreenedArgmax(weight, model.output_projection.bias))
    return cached[1]


class SamplingRun:
    """One greedy or sampling request: its cache, id buffer, processors, generator and row states.

    The model calls (`prefill`, `decode`) are kept apart from the choice of tokens (`choose`), so
    a request is decoded the same way alone (`steps`) or merged with other requests between steps
    (biogpt.batching), which feeds `choose` the rows of a shared forward.

    `screen=True` lets plain greedy decoding pick each token with the model's int8 screen
    (`greedy_screen`): the same tokens, proven, without most of the output projection. The
    model calls then return final hidden states, and steps carry no scores. `report=k` makes
    each step carry the chosen tokens' log-probabilities and the k best candidates, computed
    where the token is chosen (for a batcher, on its thread, not on each reader's).
    """

    def __init__(self, model, ids: torch.Tensor, mask: torch.Tensor | None, settings: GenerationSettings,
                 tokenizer=None, track_text: bool = False, screen: bool = False, report: int = 0,
                 should_stop: Callable[[], bool] | None = None):
        s = self.settings = settings
        # Asked before every model call (here and in a batcher): True ends the run with DecodingStopped.
        self.should_stop = should_stop
        self.rows, self.prompt_length = ids.shape
        self.prompt, self.mask = ids, mask
        self.sequences = _new_sequence_buffer(ids, s)  # [rows, prompt + max_new] ids, pad-filled
        self.steps_done = 0
        self.done = False
        self.report = report
        self.reasons: list[FinishReason | None] = [None] * self.rows
        need_text = tokenizer is not None and (bool(s.stop) or track_text)
        self.texts = [ContinuationText(tokenizer, s.stop) for _ in range(self.rows)] if need_text else None
        device = ids.device
        with torch.inference_mode():
            ignore_before = None if mask is None else (mask != 0).int().argmax(dim=1)
            self.processors = build_processors(s, self.prompt_length, model.config.vocab_size, device, ignore_before)
            self.screen = greedy_screen(model) if screen and not s.do_sample and not self.processors else None
            self.generator = _private_generator(s.seed, device) if s.do_sample else None
            self.eos = torch.tensor(s.eos_token_ids, device=device) if s.eos_token_ids else None
            self.unfinished = torch.ones(self.rows, dtype=torch.bool, device=device)
            self.any_finished = False
            self.cache = KVCache(len(model.biogpt.layers), capacity=self.prompt_length + s.max_new_tokens - 1)
            self.full_mask = self.positions = None
            if mask is not None:
                self.full_mask = mask.new_ones((self.rows, self.prompt_length + s.max_new_tokens))
                self.full_mask[:, : self.prompt_length] = mask
                self.positions = mask.sum(dim=-1, keepdim=True) - 1  # of the last prompt token

    def ids(self) -> torch.Tensor:
        """Prompt and the tokens chosen so far, [rows, length]."""
        return self.sequences[:, : self.prompt_length + self.steps_done]

    def last_tokens(self) -> torch.Tensor:
        """[rows] the tokens the next decode step feeds."""
        return self.sequences[:, self.prompt_length + self.steps_done - 1]

    def prefill(self, model, chunk: int | None = None) -> torch.Tensor | None:
        """Feed the prompt to the cache: all of it that is left, or at most `chunk` tokens (a
        padded prompt goes whole). Once its last token is in, returns that position's logits
        (its final hidden state with a screen); before, None."""
        start, end = self.cache.length, self.prompt_length
        if chunk is not None and self.mask is None:
            end = min(end, start + chunk)
        if end < self.prompt_length:
            model.biogpt(self.prompt[:, start:end], past_key_values=self.cache, use_cache=True)
            return None
        return prefill(model, self.prompt[:, start:], self.mask, self.cache, hidden_only=self.screen is not None)

    def decode(self, model) -> torch.Tensor:
        """Logits for the next step of this request alone."""
        length = self.prompt_length + self.steps_done
        if self.positions is not None:
            self.positions = self.positions + 1
        mask = None if self.full_mask is None else self.full_mask[:, :length]
        return decode_one(model, self.last_tokens(), self.cache, mask, self.positions, hidden_only=self.screen is not None)

    def choose(self, logits: torch.Tensor) -> _Step:
        """Pick each row's next token from `logits` [rows, vocab] (final hidden states [rows,
        hidden] with a screen) and record why rows finished."""
        s = self.settings
        step, length = self.steps_done, self.prompt_length + self.steps_done
        finished: dict[int, FinishReason] = {}
        scores = None
        if self.screen is not None:
            tokens = self.screen(logits)  # the final hidden states: the screen projects what it needs
        else:
            scores = apply_processors(self.processors, self.sequences[:, :length], logits.float())
            if self.generator is not None:
                probs = F.softmax(scores, dim=-1)
                tokens = torch.multinomial(probs, num_samples=1, generator=self.generator).squeeze(1)
            else:
                tokens = torch.argmax(scores, dim=-1)
        if self.any_finished:  # finished rows go on with padding, as in transformers
            tokens = torch.where(self.unfinished, tokens, s.pad_token_id)
        self.sequences[:, length] = tokens
        self.steps_done = step + 1

        if self.eos is not None:
            hit_eos = torch.isin(tokens, self.eos) & self.unfinished
            if bool(hit_eos.any()):
                finished.update((row, "eos") for row in hit_eos.nonzero().flatten().tolist())
        if self.texts is not None:
            token_list = tokens.tolist()
            for row, text in enumerate(self.texts):
                if self.reasons[row] is None:
                    if text.append(token_list[row]) and row not in finished:
                        finished[row] = "stop"
        for row, reason in finished.items():
            self.reasons[row] = reason
            self.unfinished[row] = False
            self.any_finished = True
        if step == s.max_new_tokens - 1:
            for row in range(self.rows):
                if self.reasons[row] is None:
                    self.reasons[row] = finished[row] = "length"
        self.done = self.steps_done == s.max_new_tokens or (self.any_finished and not bool(self.unfinished.any()))
        result = _Step(step, tokens, scores, finished, last=self.done,
                       texts=None if self.texts is None else [t.text for t in self.texts])
        if self.report and scores is not None:
            log_probs = F.log_softmax(scores, dim=-1)
            result.logprobs = log_probs.gather(1, tokens[:, None]).squeeze(1).tolist()
            top_values, top_ids = torch.topk(log_probs, min(self.report, log_probs.shape[-1]))
            result.top = (top_values.tolist(), top_ids.tolist())
        return result

    def steps(self, model) -> Iterator[_Step]:
        """Decode alone, one yield per new token. The model is called only when the next step is
        asked for, so a consumer that stops iterating stops the work at once."""
        _check_stop(self.should_stop)
        with torch.inference_mode():
            logits = self.prefill(model)
        while True:
            with torch.inference_mode():
                step = self.choose(logits)
            yield step
            if step.last:
                return
            _check_stop(self.should_stop)
            with torch.inference_mode():
                logits = self.decode(model)


# --------------------------------------------------------------------------------------------
# Beam search: a port of transformers' vectorised `_beam_search`


@dataclass
class _BeamResult:
    sequences: torch.Tensor  # [batch * num_return, length]
    scores: torch.Tensor  # [batch * num_return] length-penalised, as transformers' sequences_scores
    beam_indices: torch.Tensor  # [batch * num_return, new] flat running row that produced each token
    token_logprobs: torch.Tensor | None  # [batch * num_return, new] (details only)
    step_alternatives: list[tuple[torch.Tensor, torch.Tensor]] | None  # per step (values, ids) [rows, k]


def _gather_beams(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


def _reorder_cache(cache: KVCache, rows: torch.Tensor) -> None:
    """Keep the surviving beams' keys and values, in place in the preallocated buffers."""
    filled = cache.length
    for buffers in (cache.keys, cache.values):
        for layer, buffer in enumerate(buffers):
            if buffer is not None:
                buffer[:, :, :filled] = buffer[:, :, :filled].index_select(0, rows)


def _beam_search(
    model,
    ids: torch.Tensor,
    mask: torch.Tensor | None,
    settings: GenerationSettings,
    tokenizer=None,
    details_k: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> _BeamResult:
    """`ids` already holds each prompt num_beams times (repeat_interleave), as in transformers.

    `should_stop` is asked before every model call; when it says yes, DecodingStopped is raised."""
    s = settings
    num_beams, device = s.num_beams, ids.device
    flat_rows, prompt_length = ids.shape
    batch = flat_rows // num_beams
    max_length = prompt_length + s.max_new_tokens
    vocab = model.config.vocab_size
    eos = torch.tensor(s.eos_token_ids, device=device) if s.eos_token_ids else None
    beams_to_keep = max(2, 1 + len(s.eos_token_ids)) * num_beams
    top_num_beam_mask = torch.cat(
        (torch.ones(num_beams, dtype=torch.bool), torch.zeros(beams_to_keep - num_beams, dtype=torch.bool))
    ).to(device)
    # transformers' fill value for unused slots (`pad or eos[0]`, so a pad id of 0 falls through to eos)
    fill = (s.pad_token_id if s.pad_token_id else s.eos_token_ids[0]) if s.eos_token_ids else -1

    ignore_before = None if mask is None else (mask != 0).int().argmax(dim=1)
    processors = build_processors(s, prompt_length, vocab, device, ignore_before)
    generator = _private_generator(s.seed, device) if s.do_sample else None

    running_sequences = torch.full((batch, num_beams, max_length), fill, dtype=torch.int64, device=device)
    running_sequences[:, :, :prompt_length] = ids.view(batch, num_beams, prompt_length)
    sequences = running_sequences.clone()
    running_scores = torch.zeros((batch, num_beams), dtype=torch.float, device=device)
    running_scores[:, 1:] = -1e9  # only the first copy of each prompt may start, or all beams would be equal
    beam_scores = torch.full((batch, num_beams), -1e9, dtype=torch.float, device=device)
    is_finished = torch.zeros((batch, num_beams), dtype=torch.bool, device=device)
    can_improve = torch.ones((batch, 1), dtype=torch.bool, device=device)
    running_indices = torch.full((batch, num_beams, s.max_new_tokens), -1, dtype=torch.int32, device=device)
    beam_indices = running_indices.clone()
    track = details_k > 0
    if track:
        running_token_lp = torch.zeros((batch, num_beams, s.max_new_tokens), dtype=torch.float, device=device)
        token_lp = running_token_lp.clone()
        step_alternatives: list[tuple[torch.Tensor, torch.Tensor]] = []

    cache = KVCache(len(model.biogpt.layers), capacity=max_length - 1)
    full_mask = positions = None
    if mask is not None:
        full_mask = mask.new_ones((flat_rows, max_length))
        full_mask[:, :prompt_length] = mask
        positions = mask.sum(dim=-1, keepdim=True) - 1
    _check_stop(should_stop)
    logits = prefill(model, ids, mask, cache)
    flat_running = ids
    length = prompt_length

    while True:
        if length > prompt_length:
            _check_stop(should_stop)
            flat_running = running_sequences[:, :, :length].reshape(flat_rows, length)
            if positions is not None:
                positions = positions + 1
            logits = decode_one(
                model, flat_running[:, -1], cache, None if full_mask is None else full_mask[:, :length], positions
            )
        log_probs = F.log_softmax(logits.float(), dim=-1)
        log_probs = apply_processors(processors, flat_running, log_probs)
        if track:
            normalised = F.log_softmax(log_probs, dim=-1)
            step_alternatives.append(torch.topk(normalised, min(details_k, vocab)))
        accumulated = (log_probs.view(batch, num_beams, vocab) + running_scores[:, :, None]).reshape(batch, -1)

        # The best beams_to_keep continuations over all beams (sampled without replacement when sampling);
        # twice num_beams, so that num_beams remain even if the best ones all end here.
        if generator is not None:
            probs = F.softmax(accumulated, dim=-1)
            top_indices = torch.multinomial(probs, num_samples=beams_to_keep, generator=generator)
            top_scores = torch.gather(accumulated, 1, top_indices)
            top_scores, order = top_scores.sort(dim=-1, descending=True)
            top_indices = top_indices.gather(-1, order)
        else:
            top_scores, top_indices = torch.topk(accumulated, k=beams_to_keep)
        source_beams = top_indices // vocab
        top_tokens = top_indices % vocab
        step = length - prompt_length
        top_running_indices = _gather_beams(running_indices, source_beams)
        top_sequences = _gather_beams(running_sequences, source_beams)
        top_sequences[:, :, length] = top_tokens
        batch_offset = torch.arange(batch, device=device).view(-1, 1) * num_beams
        top_running_indices[:, :, step] = source_beams + batch_offset
        if track:
            top_token_lp = _gather_beams(running_token_lp, source_beams)
            top_token_lp[:, :, step] = normalised.view(batch, -1).gather(1, top_indices)

        # Which candidates are done: length, eos, stop strings.
        if length + 1 >= max_length:
            hits_stop = torch.ones((batch, beams_to_keep), dtype=torch.bool, device=device)
        else:
            hits_stop = torch.zeros_like(top_tokens, dtype=torch.bool) if eos is None else torch.isin(top_tokens, eos)
            if s.stop and tokenizer is not None:
                new = top_sequences[:, :, prompt_length: length + 1].tolist()
                hits_stop = hits_stop | torch.tensor(
                    [[stop_string_hit(tokenizer, s.stop, cand) for cand in row] for row in new], device=device
                )

        # The best num_beams unfinished candidates go on.
        candidate_scores = top_scores + hits_stop.to(torch.float32) * -1.0e9
        keep = torch.topk(candidate_scores, k=num_beams)[1]
        running_sequences = _gather_beams(top_sequences, keep)
        running_scores = _gather_beams(candidate_scores, keep)
        running_indices = _gather_beams(top_running_indices, keep)
        if track:
            running_token_lp = _gather_beams(top_token_lp, keep)

        # Finished candidates among the top num_beams compete, length-penalised, with earlier finished ones.
        just_finished = hits_stop & top_num_beam_mask[None, :]
        final_scores = top_scores / ((length + 1 - prompt_length) ** s.length_penalty)
        batch_full = torch.all(is_finished, dim=-1, keepdim=True) & (s.early_stopping is True)
        final_scores += batch_full.to(torch.float32) * -1.0e9
        final_scores += (~can_improve).to(torch.float32) * -1.0e9
        final_scores += (~just_finished) * -1.0e9
        merged = torch.topk(torch.cat((beam_scores, final_scores), dim=1), k=num_beams)[1]
        sequences = _gather_beams(torch.cat((sequences, top_sequences), dim=1), merged)
        beam_scores = _gather_beams(torch.cat((beam_scores, final_scores), dim=1), merged)
        beam_indices = _gather_beams(torch.cat((beam_indices, top_running_indices), dim=1), merged)
        is_finished = _gather_beams(torch.cat((is_finished, just_finished), dim=1), merged)
        if track:
            token_lp = _gather_beams(torch.cat((token_lp, top_token_lp), dim=1), merged)

        # The cache follows the surviving beams. Stop when no running beam can beat the finished ones.
        _reorder_cache(cache, running_indices[..., step].reshape(-1))
        length += 1
        if s.early_stopping == "never" and s.length_penalty > 0.0:
            best_length = max_length - prompt_length
        else:
            best_length = length - prompt_length
        best_running = running_scores[:, :1] / (best_length**s.length_penalty)
        worst_finished = torch.where(is_finished, torch.min(beam_scores, dim=1, keepdim=True)[0], -1.0e9)
        can_improve = can_improve & torch.any(best_running > worst_finished, dim=-1, keepdim=True)
        open_beam = not (bool(torch.all(is_finished)) and s.early_stopping is True)
        if not (bool(torch.any(can_improve)) and open_beam and not bool(torch.all(hits_stop))):
            break

    n = s.num_return_sequences
    sequences = sequences[:, :n].reshape(batch * n, max_length)
    scores = beam_scores[:, :n].reshape(-1)
    beam_indices = beam_indices[:, :n].reshape(batch * n, -1)
    generated = int(((beam_indices + 1).bool()).sum(dim=1).max())
    return _BeamResult(
        sequences=sequences[:, : prompt_length + generated],
        scores=scores,
        beam_indices=beam_indices[:, :generated],
        token_logprobs=token_lp[:, :n].reshape(batch * n, -1)[:, :generated] if track else None,
        step_alternatives=step_alternatives if track else None,
    )


# --------------------------------------------------------------------------------------------
# Public API


def _prepare_inputs(model, input_ids, attention_mask, pad_token_id: int | None, eos_ids: list[int]):
    """Ids on the model's device as a 2-D long tensor, and the mask, or None when nothing is padded."""
    ids = torch.as_tensor(input_ids, dtype=torch.long)
    if ids.dim() == 1:
        ids = ids.unsqueeze(0)
    if ids.dim() != 2 or ids.shape[1] == 0 or ids.shape[0] == 0:
        raise ValueError("The prompt is empty: give at least one token to continue from.")
    device = model.device
    ids = ids.to(device)
    can_infer = pad_token_id is not None and pad_token_id not in eos_ids
    if attention_mask is None and can_infer and bool((ids == pad_token_id).any()):
        attention_mask = ids.ne(pad_token_id).long()  # transformers infers the mask from pad tokens
    if attention_mask is not None:
        attention_mask = torch.as_tensor(attention_mask).to(device)
        if attention_mask.dim() == 1:
            attention_mask = attention_mask.unsqueeze(0)
        if attention_mask.shape != ids.shape:
            raise ValueError(
                f"attention_mask has shape {list(attention_mask.shape)} but input_ids has {list(ids.shape)}."
            )
        if not bool(attention_mask.any(dim=-1).all()):
            raise ValueError(
                "One of the prompts is empty (its attention mask is all zeros): give every prompt at least one token."
            )
        if bool((attention_mask == 1).all()):
            attention_mask = None  # no padding: the fast path builds no masks at all
    return ids, attention_mask


def _settings_and_inputs(model, input_ids, attention_mask, kwargs):
    config = model.config
    eos = kwargs.get("eos_token_id", _UNSET)
    eos = config.eos_token_id if eos is _UNSET else eos
    eos_ids = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    pad = kwargs.get("pad_token_id", _UNSET)
    pad = config.pad_token_id if pad is _UNSET else pad
    ids, mask = _prepare_inputs(model, input_ids, attention_mask, pad, eos_ids)
    settings = resolve_settings(config, ids.shape[1], **kwargs)
    expand = max(settings.num_beams, settings.num_return_sequences)
    if expand > 1:
        ids = ids.repeat_interleave(expand, dim=0)
        mask = None if mask is None else mask.repeat_interleave(expand, dim=0)
    return settings, ids, mask


def generate(model, input_ids, attention_mask=None, tokenizer=None, **kwargs: Any) -> torch.Tensor:
    """Like transformers' `generate`: prompt + new tokens, [batch * num_return_sequences, length].

    Rows that finish early are padded with pad_token_id. Keywords and defaults are Hugging
    Face's (20 new tokens unless told otherwise, top_k=50 when sampling), plus `stop` (strings
    that end a row; needs `tokenizer`) and `seed` (for a private random generator).
    """
    settings, ids, mask = _settings_and_inputs(model, input_ids, attention_mask, kwargs)
    if settings.stop and tokenizer is None:
        raise ValueError("Stop strings need the tokenizer to read the text: pass tokenizer=... as well.")
    if settings.num_beams > 1:
        with torch.inference_mode():
            return _beam_search(model, ids, mask, settings, tokenizer).sequences
    run = SamplingRun(model, ids, mask, settings, tokenizer, screen=True)  # only ids are returned: no scores needed
    for _ in run.steps(model):
        pass
    return run.ids()


def _new_sequence_buffer(ids: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    rows, prompt_length = ids.shape
    with torch.inference_mode():
        buffer = ids.new_full((rows, prompt_length + settings.max_new_tokens), settings.pad_token_id)
        buffer[:, :prompt_length] = ids
    return buffer


class _TokenTexts:
    """Display text of single tokens, memoised: the same few candidates recur at every step."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.memo: dict[int, str] = {}

    def __call__(self, token_id: int) -> str:
        text = self.memo.get(token_id)
        if text is None:
            text = self.memo[token_id] = self.tokenizer.decode([token_id], skip_special_tokens=False)
        return text

    def choices(self, logprobs: list[float], ids: list[int]) -> list[TokenChoice]:
        return [TokenChoice(i, self(i), math.exp(v)) for v, i in zip(logprobs, ids)]


def _encode_prompts(tokenizer, prompts, pad_token_id: int):
    """Strings -> left-padded ids and mask (positions come from the mask, so left padding is exact)."""
    if isinstance(prompts, str):
        prompts = [prompts]
    encoded = [list(tokenizer.encode(p)) for p in prompts]
    longest = max(len(e) for e in encoded)
    ids = torch.tensor([[pad_token_id] * (longest - len(e)) + e for e in encoded], dtype=torch.long)
    mask = torch.tensor([[0] * (longest - len(e)) + [1] * len(e) for e in encoded], dtype=torch.long)
    return ids, mask


def generate_detailed(
    model, tokenizer, prompts, attention_mask=None, alternatives: int = 5, batcher=None,
    should_stop: Callable[[], bool] | None = None, **kwargs: Any
) -> list[GeneratedSequence]:
    """Generate and return, per output sequence, its text, tokens, log-probabilities, the
    `alternatives` most likely candidates at each step and why it ended.

    `prompts` is a string, a list of strings, or ids (a tensor or list of lists, with
    `attention_mask` for padded batches). Outputs come in transformers' order: for each prompt,
    its num_return_sequences sequences. A `batcher` (biogpt.batching.DecodeBatcher of this
    model) decodes greedy and sampling requests together with other requests' rows.
    `should_stop` is asked before every model call (beam search included); when it says yes,
    DecodingStopped is raised and no further model call is made for this request.
    """
    if isinstance(prompts, str) or (isinstance(prompts, (list, tuple)) and prompts and isinstance(prompts[0], str)):
        pad = kwargs.get("pad_token_id") if kwargs.get("pad_token_id") is not None else model.config.pad_token_id
        prompts, attention_mask = _encode_prompts(tokenizer, prompts, 1 if pad is None else pad)
    settings, ids, mask = _settings_and_inputs(model, prompts, attention_mask, kwargs)
    prompt_length = ids.shape[1]
    per_prompt = settings.num_return_sequences
    k = max(int(alternatives), 1)
    token_texts = _TokenTexts(tokenizer)
    results: list[GeneratedSequence] = []

    if settings.num_beams > 1:
        with torch.inference_mode():
            beam = _beam_search(model, ids, mask, settings, tokenizer, details_k=k, should_stop=should_stop)
        for row in range(beam.sequences.shape[0]):
            new_ids = beam.sequences[row, prompt_length:].tolist()
            length = int((beam.beam_indices[row] >= 0).sum())
            new_ids = new_ids[:length]
            steps = [(beam.step_alternatives[s], int(beam.beam_indices[row, s])) for s in range(length)]
            alternatives_per_step = [
                token_texts.choices(values[r].tolist(), idx[r].tolist()) for (values, idx), r in steps
            ]
            results.append(_finish_sequence(
                tokenizer, settings, new_ids, beam.token_logprobs[row, :length].tolist(), alternatives_per_step,
                row // per_prompt, beam_score=float(beam.scores[row]),
            ))
        return results

    run = SamplingRun(model, ids, mask, settings, tokenizer, report=k, should_stop=should_stop)
    rows = ids.shape[0]
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    tops: list[list[tuple[list[float], list[int]]]] = [[] for _ in range(rows)]
    done = [False] * rows
    for step in _decode_steps(model, run, batcher):
        top_values, top_ids = step.top
        for row in range(rows):
            if not done[row]:
                logprobs[row].append(step.logprobs[row])
                tops[row].append((top_values[row], top_ids[row]))
                done[row] = row in step.finished
    for row in range(rows):
        count = len(logprobs[row])
        new_ids = run.sequences[row, prompt_length: prompt_length + count].tolist()
        results.append(GeneratedSequence(
            text=run.texts[row].text if run.texts else tokenizer.decode(new_ids, skip_special_tokens=True),
            token_ids=new_ids,
            token_logprobs=logprobs[row],
            alternatives=[token_texts.choices(v, i) for v, i in tops[row]],
            finish_reason=run.reasons[row] or "length",
            prompt_index=row // per_prompt,
        ))
    return results


def _finish_sequence(tokenizer, settings, new_ids, logprobs, alternatives_per_step, prompt_index, beam_score=None):
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    reason: FinishReason = "length"
    if new_ids and new_ids[-1] in settings.eos_token_ids:
        reason = "eos"
    cuts = [i for i in (text.find(s) for s in settings.stop) if i >= 0]
    if cuts and reason != "eos":
        reason, text = "stop", text[: min(cuts)]
    return GeneratedSequence(text, new_ids, logprobs, alternatives_per_step, reason, prompt_index, beam_score)


def stream(model, tokenizer, prompt_or_ids, alternatives: int = 5, batcher=None,
           should_stop: Callable[[], bool] | None = None, **kwargs: Any) -> Iterator[StreamEvent]:
    """Yield one StreamEvent per new token of a single prompt (greedy or sampling).

    Each event's `text` is the part of the continuation that no later token can change; the
    last event flushes the rest, so the deltas joined equal the final text (the continuation
    only, `decode(new_ids, skip_special_tokens=True)`, cut before a stop string). Closing the
    generator (or breaking out of the loop) stops the model calls at once (with a `batcher`, as
    in generate_detailed, within the few steps it may have computed ahead). `should_stop`, asked
    before every model call, ends the stream with DecodingStopped when it says yes.
    """
    if isinstance(prompt_or_ids, str):
        ids = torch.tensor([list(tokenizer.encode(prompt_or_ids))], dtype=torch.long)
    else:
        ids = torch.as_tensor(prompt_or_ids, dtype=torch.long)
        ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
    if ids.shape[0] != 1:
        raise ValueError("stream() continues one prompt at a time; use generate_detailed() for a batch.")
    settings, ids, mask = _settings_and_inputs(model, ids, None, kwargs)
    if settings.num_beams > 1 or settings.num_return_sequences > 1:
        raise ValueError("Streaming shows one sequence as it grows: use num_beams=1 and num_return_sequences=1.")
    k = max(int(alternatives), 1)
    return _stream_events(model, tokenizer, ids, mask, settings, k, batcher, should_stop)


def _decode_steps(model, run: SamplingRun, batcher) -> Iterator[_Step]:
    return run.steps(model) if batcher is None else batcher.steps(run)


def _stream_events(model, tokenizer, ids, mask, settings, k, batcher, should_stop=None) -> Iterator[StreamEvent]:
    # A separate generator so that stream()'s argument checks raise when called, not on first next().
    run = SamplingRun(model, ids, mask, settings, tokenizer, track_text=True, report=k, should_stop=should_stop)
    steps = _decode_steps(model, run, batcher)
    token_texts = _TokenTexts(tokenizer)
    hold_back, emitted = run.texts[0].hold_back, 0
    try:
        for step in steps:
            token_id = int(step.tokens[0])
            reason = step.finished.get(0)
            delta, emitted = settled_delta(step.texts[0], emitted, hold_back, final=reason is not None)
            yield StreamEvent(
                text=delta,
                token_id=token_id,
                token=token_texts(token_id),
                logprob=step.logprobs[0],
                alternatives=token_texts.choices(step.top[0][0], step.top[1][0]),
                finish_reason=reason,
            )
            if reason is not None:
                return
    finally:
        steps.close()


__all__ = [
    "DecodingStopped",
    "GeneratedSequence",
    "GenerationSettings",
    "StreamEvent",
    "TokenChoice",
    "generate",
    "generate_detailed",
    "resolve_settings",
    "stream",
]
