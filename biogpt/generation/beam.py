"""Beam search: a port of transformers' vectorised `_beam_search`, down to the -1e9 sentinels
that decide ties.

Every prompt keeps `num_beams` running beams and `num_beams` finished ones. Each step extends
the running beams by every token, keeps the best `beams_to_keep` candidates (twice num_beams,
so num_beams remain even if the best ones all end here), lets the unfinished ones run on and
the finished ones compete, length-penalised, with those that finished earlier.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn.functional as F

from ..kv_cache import KVCache
from .processors import apply_processors, build_processors, left_padding, private_generator
from .run import check_stop, decode_one, last_position, padded_decoding, prefill
from .settings import GenerationSettings
from .text import stop_string_hit

NEVER = -1.0e9  # transformers' score for a slot that must lose every comparison


@dataclass
class BeamResult:
    sequences: torch.Tensor  # [batch * num_return, length]
    scores: torch.Tensor  # [batch * num_return] length-penalised, as transformers' sequences_scores
    beam_indices: torch.Tensor  # [batch * num_return, new] flat running row that produced each token
    token_logprobs: torch.Tensor | None  # [batch * num_return, new] (details only)
    step_alternatives: list[tuple[torch.Tensor, torch.Tensor]] | None  # per step (values, ids) [rows, k]


def gather_beams(tensor: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    while indices.dim() < tensor.dim():
        indices = indices.unsqueeze(-1)
    return torch.take_along_dim(tensor, indices, dim=1)


def reorder_cache(cache: KVCache, rows: torch.Tensor) -> None:
    """Keep the surviving beams' keys and values, in place in the preallocated buffers."""
    filled = cache.length
    for buffers in (cache.keys, cache.values):
        for layer, buffer in enumerate(buffers):
            if buffer is not None:
                buffer[:, :, :filled] = buffer[:, :, :filled].index_select(0, rows)


@dataclass
class Beams:
    """Some beams of every prompt, [batch, beams, ...]: the running ones, the finished ones, or
    this step's candidates."""

    sequences: torch.Tensor  # [batch, beams, max_length] prompt, new tokens, then fill
    scores: torch.Tensor  # [batch, beams]
    sources: torch.Tensor  # [batch, beams, max_new] flat running row that produced each token; -1 before
    token_logprobs: torch.Tensor | None  # [batch, beams, max_new] each token's log-probability (details only)

    def take(self, indices: torch.Tensor) -> Beams:
        """The beams at `indices` [batch, n] of each prompt."""
        lp = None if self.token_logprobs is None else gather_beams(self.token_logprobs, indices)
        return Beams(gather_beams(self.sequences, indices), gather_beams(self.scores, indices),
                     gather_beams(self.sources, indices), lp)

    def joined(self, other: Beams) -> Beams:
        """These beams, then `other`'s, side by side for each prompt."""
        def cat(mine: torch.Tensor | None, theirs: torch.Tensor | None) -> torch.Tensor | None:
            return None if mine is None else torch.cat((mine, theirs), dim=1)

        return Beams(cat(self.sequences, other.sequences), cat(self.scores, other.scores),
                     cat(self.sources, other.sources), cat(self.token_logprobs, other.token_logprobs))


def beam_search(
    model,
    ids: torch.Tensor,
    mask: torch.Tensor | None,
    settings: GenerationSettings,
    tokenizer=None,
    details_k: int = 0,
    should_stop: Callable[[], bool] | None = None,
) -> BeamResult:
    """`ids` already holds each prompt num_beams times (repeat_interleave), as in transformers.

    `should_stop` is asked before every model call; when it says yes, DecodingStopped is raised."""
    return _BeamSearch(model, ids, mask, settings, tokenizer, details_k).run(model, ids, mask, should_stop)


class _BeamSearch:
    """One beam search's fixed quantities, and the steps that move its beams along."""

    def __init__(self, model, ids, mask, settings: GenerationSettings, tokenizer, details_k: int):
        s = self.settings = settings
        self.tokenizer, self.details_k, self.track = tokenizer, details_k, details_k > 0
        self.num_beams, self.device = s.num_beams, ids.device
        self.flat_rows, self.prompt_length = ids.shape
        self.batch = self.flat_rows // self.num_beams
        self.max_length = self.prompt_length + s.max_new_tokens
        self.vocab = model.config.vocab_size
        self.eos = torch.tensor(s.eos_token_ids, device=self.device) if s.eos_token_ids else None
        self.beams_to_keep = max(2, 1 + len(s.eos_token_ids)) * self.num_beams
        self.top_num_beam_mask = torch.cat((
            torch.ones(self.num_beams, dtype=torch.bool),
            torch.zeros(self.beams_to_keep - self.num_beams, dtype=torch.bool),
        )).to(self.device)
        self.processors = build_processors(s, self.prompt_length, self.vocab, self.device, left_padding(mask))
        self.generator = private_generator(s.seed, self.device) if s.do_sample else None
        self.step_alternatives: list[tuple[torch.Tensor, torch.Tensor]] = []

    def start(self, ids: torch.Tensor) -> tuple[Beams, Beams]:
        """(running, finished): each prompt's first copy may start, the finished slots are empty."""
        s, batch, num_beams, device = self.settings, self.batch, self.num_beams, self.device
        # transformers' fill value for unused slots (`pad or eos[0]`, so a pad id of 0 falls through to eos)
        fill = (s.pad_token_id if s.pad_token_id else s.eos_token_ids[0]) if s.eos_token_ids else -1
        sequences = torch.full((batch, num_beams, self.max_length), fill, dtype=torch.int64, device=device)
        sequences[:, :, : self.prompt_length] = ids.view(batch, num_beams, self.prompt_length)
        scores = torch.zeros((batch, num_beams), dtype=torch.float, device=device)
        scores[:, 1:] = NEVER  # only the first copy of each prompt may start, or all beams would be equal
        sources = torch.full((batch, num_beams, s.max_new_tokens), -1, dtype=torch.int32, device=device)
        token_lp = None
        if self.track:
            token_lp = torch.zeros((batch, num_beams, s.max_new_tokens), dtype=torch.float, device=device)
        running = Beams(sequences, scores, sources, token_lp)
        finished = Beams(sequences.clone(), torch.full((batch, num_beams), NEVER, dtype=torch.float, device=device),
                         sources.clone(), None if token_lp is None else token_lp.clone())
        return running, finished

    def run(self, model, ids, mask, should_stop) -> BeamResult:
        running, finished = self.start(ids)
        is_finished = torch.zeros((self.batch, self.num_beams), dtype=torch.bool, device=self.device)
        can_improve = torch.ones((self.batch, 1), dtype=torch.bool, device=self.device)
        cache = KVCache(len(model.biogpt.layers), capacity=self.max_length - 1)
        full_mask = positions = None
        if mask is not None:
            full_mask, positions = padded_decoding(mask, self.max_length)
        check_stop(should_stop)
        logits = last_position(prefill(model, ids, mask, cache))
        flat_running, length = ids, self.prompt_length
        while True:
            if length > self.prompt_length:
                check_stop(should_stop)
                flat_running = running.sequences[:, :, :length].reshape(self.flat_rows, length)
                if positions is not None:
                    positions = positions + 1
                step_mask = None if full_mask is None else full_mask[:, :length]
                logits = last_position(decode_one(model, flat_running[:, -1], cache, step_mask, positions))
            candidates = self.candidates(running, logits, flat_running, length)
            hits_stop = self.hits_stop(candidates, length)
            # The best num_beams unfinished candidates go on.
            going_on = replace(candidates, scores=candidates.scores + hits_stop.to(torch.float32) * NEVER)
            running = going_on.take(torch.topk(going_on.scores, k=self.num_beams)[1])
            finished, is_finished = self.merge_finished(
                finished, is_finished, candidates, hits_stop, can_improve, length
            )
            # The cache follows the surviving beams. Stop when no running beam can beat the finished ones.
            reorder_cache(cache, running.sources[..., length - self.prompt_length].reshape(-1))
            length += 1
            can_improve = can_improve & self.can_still_improve(running, finished, is_finished, length)
            open_beam = not (bool(torch.all(is_finished)) and self.settings.early_stopping is True)
            if not (bool(torch.any(can_improve)) and open_beam and not bool(torch.all(hits_stop))):
                break
        return self.result(finished)

    def candidates(self, running: Beams, logits: torch.Tensor, flat_running: torch.Tensor, length: int) -> Beams:
        """The best beams_to_keep one-token extensions of the running beams over all of them
        (sampled without replacement when sampling); their scores are accumulated log-probabilities."""
        batch, num_beams, vocab = self.batch, self.num_beams, self.vocab
        log_probs = F.log_softmax(logits.float(), dim=-1)
        log_probs = apply_processors(self.processors, flat_running, log_probs)
        if self.track:
            normalised = F.log_softmax(log_probs, dim=-1)
            self.step_alternatives.append(torch.topk(normalised, min(self.details_k, vocab)))
        accumulated = (log_probs.view(batch, num_beams, vocab) + running.scores[:, :, None]).reshape(batch, -1)
        if self.generator is not None:
            probs = F.softmax(accumulated, dim=-1)
            top_indices = torch.multinomial(probs, num_samples=self.beams_to_keep, generator=self.generator)
            top_scores = torch.gather(accumulated, 1, top_indices)
            top_scores, order = top_scores.sort(dim=-1, descending=True)
            top_indices = top_indices.gather(-1, order)
        else:
            top_scores, top_indices = torch.topk(accumulated, k=self.beams_to_keep)
        source_beams = top_indices // vocab
        step = length - self.prompt_length
        top = running.take(source_beams)
        top.sequences[:, :, length] = top_indices % vocab
        top.sources[:, :, step] = source_beams + torch.arange(batch, device=self.device).view(-1, 1) * num_beams
        if self.track:
            top.token_logprobs[:, :, step] = normalised.view(batch, -1).gather(1, top_indices)
        top.scores = top_scores
        return top

    def hits_stop(self, candidates: Beams, length: int) -> torch.Tensor:
        """[batch, beams_to_keep] which candidates are done: by length, eos or a stop string."""
        s, device = self.settings, self.device
        if length + 1 >= self.max_length:
            return torch.ones((self.batch, self.beams_to_keep), dtype=torch.bool, device=device)
        top_tokens = candidates.sequences[:, :, length]
        hits = torch.zeros_like(top_tokens, dtype=torch.bool) if self.eos is None else torch.isin(top_tokens, self.eos)
        if s.stop and self.tokenizer is not None:
            new = candidates.sequences[:, :, self.prompt_length: length + 1].tolist()
            hits = hits | torch.tensor(
                [[stop_string_hit(self.tokenizer, s.stop, cand) for cand in row] for row in new], device=device
            )
        return hits

    def merge_finished(self, finished: Beams, is_finished: torch.Tensor, candidates: Beams, hits_stop: torch.Tensor,
                       can_improve: torch.Tensor, length: int) -> tuple[Beams, torch.Tensor]:
        """Finished candidates among the top num_beams compete, length-penalised, with earlier finished ones."""
        s = self.settings
        just_finished = hits_stop & self.top_num_beam_mask[None, :]
        final_scores = candidates.scores / ((length + 1 - self.prompt_length) ** s.length_penalty)
        batch_full = torch.all(is_finished, dim=-1, keepdim=True) & (s.early_stopping is True)
        final_scores += batch_full.to(torch.float32) * NEVER
        final_scores += (~can_improve).to(torch.float32) * NEVER
        final_scores += (~just_finished) * NEVER
        everyone = finished.joined(replace(candidates, scores=final_scores))
        merged = torch.topk(everyone.scores, k=self.num_beams)[1]
        return everyone.take(merged), gather_beams(torch.cat((is_finished, just_finished), dim=1), merged)

    def can_still_improve(
        self, running: Beams, finished: Beams, is_finished: torch.Tensor, length: int
    ) -> torch.Tensor:
        """[batch, 1] whether a prompt's best running beam could still beat its worst finished one."""
        s = self.settings
        if s.early_stopping == "never" and s.length_penalty > 0.0:
            best_length = self.max_length - self.prompt_length
        else:
            best_length = length - self.prompt_length
        best_running = running.scores[:, :1] / (best_length**s.length_penalty)
        worst_finished = torch.where(is_finished, torch.min(finished.scores, dim=1, keepdim=True)[0], NEVER)
        return torch.any(best_running > worst_finished, dim=-1, keepdim=True)

    def result(self, finished: Beams) -> BeamResult:
        """The num_return_sequences best finished beams of each prompt, cut to the longest one's length."""
        n, batch = self.settings.num_return_sequences, self.batch
        sequences = finished.sequences[:, :n].reshape(batch * n, self.max_length)
        scores = finished.scores[:, :n].reshape(-1)
        beam_indices = finished.sources[:, :n].reshape(batch * n, -1)
        generated = int(((beam_indices + 1).bool()).sum(dim=1).max())
        token_lp = None
        if self.track:
            token_lp = finished.token_logprobs[:, :n].reshape(batch * n, -1)[:, :generated]
        return BeamResult(
            sequences=sequences[:, : self.prompt_length + generated],
            scores=scores,
            beam_indices=beam_indices[:, :generated],
            token_logprobs=token_lp,
            step_alternatives=self.step_alternatives if self.track else None,
        )
