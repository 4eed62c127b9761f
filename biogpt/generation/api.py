"""The public entry points: generate (ids, like transformers), generate_detailed (one
GeneratedSequence per output) and stream (one StreamEvent per new token).

They check the request once (biogpt.generation.settings), put the prompt on the model's
device, and hand it to beam search (biogpt.generation.beam) or to a SamplingRun
(biogpt.generation.run), decoded alone or, with a `batcher`, merged with other requests' rows.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import torch

from .beam import BeamResult, beam_search
from .results import GeneratedSequence, StreamEvent
from .run import SamplingRun, Step
from .settings import FinishReason, requested_eos_ids, requested_pad_id, resolve_settings
from .text import TokenTexts, settled_delta, stop_index


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
    ids, mask = _prepare_inputs(
        model, input_ids, attention_mask, requested_pad_id(config, kwargs), requested_eos_ids(config, kwargs)
    )
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
            return beam_search(model, ids, mask, settings, tokenizer).sequences
    run = SamplingRun(model, ids, mask, settings, tokenizer, screen=True)  # only ids are returned: no scores needed
    for _ in run.steps(model):
        pass
    return run.ids()


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
    k = max(int(alternatives), 1)
    if settings.num_beams > 1:
        with torch.inference_mode():
            beam = beam_search(model, ids, mask, settings, tokenizer, details_k=k, should_stop=should_stop)
        return _beam_sequences(tokenizer, settings, beam, ids.shape[1])
    run = SamplingRun(model, ids, mask, settings, tokenizer, report=k, should_stop=should_stop)
    return _sampled_sequences(tokenizer, run, _decode_steps(model, run, batcher))


def _beam_sequences(tokenizer, settings, beam: BeamResult, prompt_length: int) -> list[GeneratedSequence]:
    token_texts = TokenTexts(tokenizer)
    results: list[GeneratedSequence] = []
    for row in range(beam.sequences.shape[0]):
        new_ids = beam.sequences[row, prompt_length:].tolist()
        length = int((beam.beam_indices[row] >= 0).sum())
        new_ids = new_ids[:length]
        # Each step's alternatives are those of the running row that made this beam's token then.
        steps = [(beam.step_alternatives[s], int(beam.beam_indices[row, s])) for s in range(length)]
        alternatives_per_step = [
            token_texts.choices(values[r].tolist(), idx[r].tolist()) for (values, idx), r in steps
        ]
        results.append(_finish_sequence(
            tokenizer, settings, new_ids, beam.token_logprobs[row, :length].tolist(), alternatives_per_step,
            row // settings.num_return_sequences, beam_score=float(beam.scores[row]),
        ))
    return results


def _sampled_sequences(tokenizer, run: SamplingRun, steps: Iterator[Step]) -> list[GeneratedSequence]:
    """Drain a greedy or sampling run's steps, keeping each row's own until it finishes."""
    rows, prompt_length = run.rows, run.prompt_length
    token_texts = TokenTexts(tokenizer)
    logprobs: list[list[float]] = [[] for _ in range(rows)]
    tops: list[list[tuple[list[float], list[int]]]] = [[] for _ in range(rows)]
    done = [False] * rows
    for step in steps:
        top_values, top_ids = step.top
        for row in range(rows):
            if not done[row]:
                logprobs[row].append(step.logprobs[row])
                tops[row].append((top_values[row], top_ids[row]))
                done[row] = row in step.finished
    results: list[GeneratedSequence] = []
    for row in range(rows):
        count = len(logprobs[row])
        new_ids = run.sequences[row, prompt_length: prompt_length + count].tolist()
        results.append(GeneratedSequence(
            text=run.texts[row].text if run.texts else tokenizer.decode(new_ids, skip_special_tokens=True),
            token_ids=new_ids,
            token_logprobs=logprobs[row],
            alternatives=[token_texts.choices(v, i) for v, i in tops[row]],
            finish_reason=run.reasons[row] or "length",
            prompt_index=row // run.settings.num_return_sequences,
            forced_tokens=min(len(run.settings.forced_token_ids), count),
        ))
    return results


def _finish_sequence(tokenizer, settings, new_ids, logprobs, alternatives_per_step, prompt_index, beam_score=None):
    text = tokenizer.decode(new_ids, skip_special_tokens=True)
    reason: FinishReason = "length"
    if new_ids and new_ids[-1] in settings.eos_token_ids:
        reason = "eos"
    cut = stop_index(text, settings.stop)
    if cut is not None and reason != "eos":
        reason, text = "stop", text[:cut]
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


def _decode_steps(model, run: SamplingRun, batcher) -> Iterator[Step]:
    return run.steps(model) if batcher is None else batcher.steps(run)


def _stream_events(model, tokenizer, ids, mask, settings, k, batcher, should_stop=None) -> Iterator[StreamEvent]:
    # A separate generator so that stream()'s argument checks raise when called, not on first next().
    run = SamplingRun(model, ids, mask, settings, tokenizer, track_text=True, report=k, should_stop=should_stop)
    steps = _decode_steps(model, run, batcher)
    token_texts = TokenTexts(tokenizer)
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
                forced=step.forced,
            )
            if reason is not None:
                return
    finally:
        steps.close()
