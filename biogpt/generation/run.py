"""Greedy decoding and sampling: the two model calls (prefill, decode) and one request's run.

gpt-fast's split: `prefill` runs the whole prompt once into a preallocated KV cache and
projects only the last position; `decode_one` feeds one token per row and, when nothing is
padded, builds no mask. A SamplingRun keeps those model calls apart from the choice of tokens
(`choose`), so a request decodes the same way alone (`steps`) or merged with other requests'
rows between steps (biogpt.batching), or with another decoder's model calls (biogpt.graphed).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from ..kv_cache import KVCache
from .processors import apply_processors, build_processors, left_padding, private_generator
from .settings import FinishReason, GenerationSettings
from .text import ContinuationText

# --------------------------------------------------------------------------------------------
# Stopping work nobody waits for


class DecodingStopped(Exception):
    """Raised by a decoding loop whose `should_stop` said yes: its reader has gone (a closed
    connection, a Stop button). Checked before every model call, so at most the call already
    running when the reader left is finished after it."""

    def __init__(self, message: str = "Decoding stopped: nobody is waiting for this result any more."):
        super().__init__(message)


def check_stop(should_stop: Callable[[], bool] | None) -> None:
    if should_stop is not None and should_stop():
        raise DecodingStopped()


# --------------------------------------------------------------------------------------------
# The two model calls. `forward` passes further model keywords (interpret's head_mask and
# output_attentions); each returns the model's whole output, `last_position` what decoding reads.


def prefill(model, ids: torch.Tensor, mask: torch.Tensor | None, cache: KVCache, hidden_only: bool = False,
            **forward: Any):
    """Run the whole prompt once, filling the cache; project only the last position to logits
    (or, `hidden_only`, leave the final hidden states unprojected)."""
    if hidden_only:
        return model.biogpt(ids, attention_mask=mask, past_key_values=cache, use_cache=True, **forward)
    return model(ids, attention_mask=mask, past_key_values=cache, use_cache=True, logits_to_keep=1, **forward)


def decode_one(
    model, tokens: torch.Tensor, cache: KVCache, mask: torch.Tensor | None, positions: torch.Tensor | None,
    hidden_only: bool = False, **forward: Any,
):
    """One new token per row against the cache. Without padding no mask and no positions are passed,
    so the model builds neither."""
    target = model.biogpt if hidden_only else model
    return target(tokens[:, None], attention_mask=mask, position_ids=positions, past_key_values=cache,
                  use_cache=True, **forward)


def last_position(output, hidden_only: bool = False) -> torch.Tensor:
    """[rows, vocab] logits of the last position (its final hidden state, `hidden_only`)."""
    return (output.last_hidden_state if hidden_only else output.logits)[:, -1]


# --------------------------------------------------------------------------------------------
# What one step produced


@dataclass
class Step:
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
    forced: bool = False  # the tokens were forced (settings.forced_token_ids), not chosen


# --------------------------------------------------------------------------------------------
# The int8 screen for plain greedy choices

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
    from ..screening import ScreenedArgmax, screen_applicable

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


# --------------------------------------------------------------------------------------------
# One greedy or sampling request


def padded_decoding(mask: torch.Tensor, total_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For a padded batch: the attention mask over prompt and every new token, [rows, total_length],
    and the position of each row's last prompt token, [rows, 1], which each decode step advances."""
    full_mask = mask.new_ones((mask.shape[0], total_length))
    full_mask[:, : mask.shape[1]] = mask
    return full_mask, mask.sum(dim=-1, keepdim=True) - 1


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
    `forward` holds further keywords for this run's own model calls (interpret passes head_mask
    and output_attentions; a batcher's shared forwards do not take them), and `output` the last
    of those calls' whole output.
    """

    def __init__(self, model, ids: torch.Tensor, mask: torch.Tensor | None, settings: GenerationSettings,
                 tokenizer=None, track_text: bool = False, screen: bool = False, report: int = 0,
                 should_stop: Callable[[], bool] | None = None, forward: dict[str, Any] | None = None):
        s = self.settings = settings
        # Asked before every model call (here and in a batcher): True ends the run with DecodingStopped.
        self.should_stop = should_stop
        self.forward = forward or {}
        self.output = None
        self.rows, self.prompt_length = ids.shape
        self.prompt, self.mask = ids, mask
        self.sequences = new_sequence_buffer(ids, s)  # [rows, prompt + max_new] ids, pad-filled
        self.steps_done = 0
        self.done = False
        self.report = report
        self.reasons: list[FinishReason | None] = [None] * self.rows
        need_text = tokenizer is not None and (bool(s.stop) or track_text)
        self.texts = [ContinuationText(tokenizer, s.stop) for _ in range(self.rows)] if need_text else None
        device = ids.device
        with torch.inference_mode():
            self.processors = build_processors(
                s, self.prompt_length, model.config.vocab_size, device, left_padding(mask)
            )
            self.screen = greedy_screen(model) if screen and not s.do_sample and not self.processors else None
            self.generator = private_generator(s.seed, device) if s.do_sample else None
            self.eos = torch.tensor(s.eos_token_ids, device=device) if s.eos_token_ids else None
            self.unfinished = torch.ones(self.rows, dtype=torch.bool, device=device)
            self.any_finished = False
            self.cache = KVCache(len(model.biogpt.layers), capacity=self.prompt_length + s.max_new_tokens - 1)
            self.full_mask = self.positions = None
            if mask is not None:
                self.full_mask, self.positions = padded_decoding(mask, self.prompt_length + s.max_new_tokens)

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
        hidden_only = self.screen is not None
        self.output = prefill(model, self.prompt[:, start:], self.mask, self.cache, hidden_only, **self.forward)
        return last_position(self.output, hidden_only)

    def decode(self, model) -> torch.Tensor:
        """Logits for the next step of this request alone."""
        length = self.prompt_length + self.steps_done
        if self.positions is not None:
            self.positions = self.positions + 1
        mask = None if self.full_mask is None else self.full_mask[:, :length]
        hidden_only = self.screen is not None
        self.output = decode_one(
            model, self.last_tokens(), self.cache, mask, self.positions, hidden_only, **self.forward
        )
        return last_position(self.output, hidden_only)

    def choose(self, logits: torch.Tensor) -> Step:
        """Pick each row's next token from `logits` [rows, vocab] (final hidden states [rows,
        hidden] with a screen) and record why rows finished."""
        s = self.settings
        step, length = self.steps_done, self.prompt_length + self.steps_done
        forced = step < len(s.forced_token_ids)
        tokens, scores = self._pick(logits, length, forced)
        if forced:  # emitted as given; the sampler's draw (if any) is spent and discarded: SAMPLER_RULE
            tokens = torch.full_like(tokens, s.forced_token_ids[step])
        if self.any_finished:  # finished rows go on with padding, as in transformers
            tokens = torch.where(self.unfinished, tokens, s.pad_token_id)
        self.sequences[:, length] = tokens
        self.steps_done = step + 1
        finished = self._finished_rows(tokens)
        if step == s.max_new_tokens - 1:
            for row in range(self.rows):
                if self.reasons[row] is None:
                    self.reasons[row] = finished[row] = "length"
        self.done = self.steps_done == s.max_new_tokens or (self.any_finished and not bool(self.unfinished.any()))
        result = Step(step, tokens, scores, finished, last=self.done,
                      texts=None if self.texts is None else [t.text for t in self.texts], forced=forced)
        if self.report and scores is not None:
            log_probs = F.log_softmax(scores, dim=-1)
            result.logprobs = log_probs.gather(1, tokens[:, None]).squeeze(1).tolist()
            top_values, top_ids = torch.topk(log_probs, min(self.report, log_probs.shape[-1]))
            result.top = (top_values.tolist(), top_ids.tolist())
        return result

    def _pick(self, logits: torch.Tensor, length: int, forced: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(tokens, the processed scores they were drawn from; None with a screen). A `forced`
        step still computes the scores (their probabilities are reported) and still draws, so the
        generator's state afterwards is the one an unforced run of the same tokens has."""
        if self.screen is not None:
            if forced:  # greedy with a screen reports nothing: no need to project
                return torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device), None
            return self.screen(logits), None  # the final hidden states: the screen projects what it needs
        scores = apply_processors(self.processors, self.sequences[:, :length], logits.float())
        if self.generator is not None:
            probs = F.softmax(scores, dim=-1)
            return torch.multinomial(probs, num_samples=1, generator=self.generator).squeeze(1), scores
        return torch.argmax(scores, dim=-1), scores

    def _finished_rows(self, tokens: torch.Tensor) -> dict[int, FinishReason]:
        """Rows that end with this step's tokens (eos, then stop strings), now marked finished."""
        finished: dict[int, FinishReason] = {}
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
        return finished

    def steps(self, model) -> Iterator[Step]:
        """Decode alone, one yield per new token. The model is called only when the next step is
        asked for, so a consumer that stops iterating stops the work at once."""
        check_stop(self.should_stop)
        with torch.inference_mode():
            logits = self.prefill(model)
        while True:
            with torch.inference_mode():
                step = self.choose(logits)
            yield step
            if step.last:
                return
            check_stop(self.should_stop)
            with torch.inference_mode():
                logits = self.decode(model)


def new_sequence_buffer(ids: torch.Tensor, settings: GenerationSettings) -> torch.Tensor:
    """[rows, prompt + max_new_tokens] ids: the prompt, then pad where new tokens will go."""
    rows, prompt_length = ids.shape
    with torch.inference_mode():
        buffer = ids.new_full((rows, prompt_length + settings.max_new_tokens), settings.pad_token_id)
        buffer[:, :prompt_length] = ids
    return buffer
