"""Generate requests: one sequence streamed token by token, or several (or a beam search) at
once; results as plain GenerationResult values. Beam searches take turns (`BeamTurns`)."""

from __future__ import annotations

import math
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

from .registry import LoadedModel
from .results import GeneratedText, GenerationResult, align_tokens
from .validation import InputError

StopCheck = Callable[[], bool]


class BeamTurns:
    """Beam searches are not merged by the batcher: at most `parallel` run at once, at most
    `waiting` wait for a turn (more are refused with a sentence), and a waiting one whose
    reader leaves gives up its place at once."""

    def __init__(self, parallel: int, waiting: int) -> None:
        self.max_waiting = waiting
        self.semaphore = threading.Semaphore(parallel)
        self.waiting = 0
        self._waiting_lock = threading.Lock()

    def take(self, should_stop: StopCheck | None = None) -> None:
        """Take a turn (give it back with `release`), or raise InputError when the waiting room
        is full, or DecodingStopped when `should_stop` says the reader left while waiting."""
        from ..generation import DecodingStopped

        if self.semaphore.acquire(blocking=False):
            return
        with self._waiting_lock:
            if self.waiting >= self.max_waiting:
                raise InputError(
                    f"{self.waiting} beam searches are already waiting for their turn; try again in a "
                    "minute, or use greedy or sampling, which are served together."
                )
            self.waiting += 1
        try:
            while not self.semaphore.acquire(timeout=0.05):
                if should_stop is not None and should_stop():
                    raise DecodingStopped()
        finally:
            with self._waiting_lock:
                self.waiting -= 1

    def release(self) -> None:
        self.semaphore.release()


def check_room(loaded: LoadedModel, prompt_tokens: int, max_new_tokens: int) -> None:
    """Refuse a request whose prompt and new tokens do not fit in the model's positions."""
    room = loaded.max_positions - prompt_tokens
    if max_new_tokens > room:
        if room < 1:
            raise InputError(
                f"The prompt has {prompt_tokens:,} tokens and fills all {loaded.max_positions:,} positions "
                f"{loaded.name} can read; shorten it."
            )
        raise InputError(
            f"The prompt has {prompt_tokens:,} tokens, so at most {room:,} new tokens fit in the "
            f"{loaded.max_positions:,} positions {loaded.name} can read; lower Max new tokens or shorten the prompt."
        )


def results(loaded: LoadedModel, prompt: str, ids: list[int], kwargs: dict[str, Any], settings: dict[str, Any],
            beam_turns: BeamTurns, should_stop: StopCheck | None = None) -> Iterator[GenerationResult]:
    """The growing result token by token (one sequence, greedy or sampling), or one result at
    the end (several sequences or beam search, which cannot show partial text)."""
    if kwargs.get("num_beams", 1) == 1 and kwargs.get("num_return_sequences", 1) == 1:
        return _stream_one(loaded, prompt, ids, kwargs, settings, should_stop)
    return _generate_all(loaded, prompt, ids, kwargs, settings, beam_turns, should_stop)


def _stream_one(loaded, prompt, ids, kwargs, settings, should_stop=None) -> Iterator[GenerationResult]:
    from ..generation import stream

    try:
        events = stream(loaded.model, loaded.tokenizer, [ids], batcher=loaded.batcher, should_stop=should_stop,
                        alternatives=ALTERNATIVES_ASKED, **kwargs)
    except ValueError as error:
        raise InputError(str(error)) from None
    return _stream_results(loaded, prompt, events, settings)


def _stream_results(loaded, prompt, events, settings) -> Iterator[GenerationResult]:
    started = time.perf_counter()
    first_token = None
    text = ""
    token_ids: list[int] = []
    probabilities: list[float] = []
    alternatives: list[list[tuple[str, float, int]]] = []
    try:
        for event in events:
            if first_token is None:
                first_token = time.perf_counter() - started
            text += event.text
            token_ids.append(event.token_id)
            probabilities.append(math.exp(event.logprob))
            alternatives.append(listed_choices(loaded, event.alternatives))
            sample = _sample(loaded, text, token_ids, probabilities, alternatives, event.finish_reason)
            yield GenerationResult(
                prompt=prompt, samples=[sample], settings=settings, model=loaded.describe(),
                finished=event.finish_reason is not None, elapsed=time.perf_counter() - started,
                first_token_seconds=first_token, new_tokens=len(token_ids),
            )
    finally:
        events.close()


def _generate_all(loaded, prompt, ids, kwargs, settings, beam_turns, should_stop=None) -> Iterator[GenerationResult]:
    from ..generation import generate_detailed

    beam_search = kwargs.get("num_beams", 1) > 1
    started = time.perf_counter()
    try:
        if beam_search:
            beam_turns.take(should_stop)
            try:
                started = time.perf_counter()
                sequences = generate_detailed(loaded.model, loaded.tokenizer, [ids], should_stop=should_stop,
                                              alternatives=ALTERNATIVES_ASKED, **kwargs)
            finally:
                beam_turns.release()
        else:
            sequences = generate_detailed(loaded.model, loaded.tokenizer, [ids], batcher=loaded.batcher,
                                          should_stop=should_stop, alternatives=ALTERNATIVES_ASKED, **kwargs)
    except ValueError as error:
        raise InputError(str(error)) from None
    elapsed = time.perf_counter() - started
    samples = [
        _sample(loaded, s.text, s.token_ids, [math.exp(v) for v in s.token_logprobs],
                [listed_choices(loaded, step) for step in s.alternatives],
                s.finish_reason, s.beam_score)
        for s in sequences
    ]
    yield GenerationResult(
        prompt=prompt, samples=samples, settings=settings, model=loaded.describe(), finished=True,
        elapsed=elapsed, first_token_seconds=None, new_tokens=sum(len(s.token_ids) for s in samples),
    )


# A special token (<pad>, <unk>, <s>...) is listed as an alternative only when the model gave it at
# least this much: below it, it would read "0.0%" and only crowd out real words.
MIN_SPECIAL_PROBABILITY = 0.0005
ALTERNATIVES_SHOWN = 5
ALTERNATIVES_ASKED = 10  # more than shown, so that five remain once specials and repeated surfaces are dropped


def listed_alternatives(loaded, choices) -> list[tuple[str, float]]:
    """The candidates a visitor is shown at one step, best first, as (surface, probability)."""
    return [(surface, probability) for surface, probability, _ in listed_choices(loaded, choices)]


def listed_choices(loaded, choices) -> list[tuple[str, float, int]]:
    """The candidates a visitor is shown at one step, best first, with their token ids (what a
    branch forces): special tokens only with real probability, and each surface once (two ids can
    read the same, e.g. a word and its word-end form); the first, most likely, of them stands for it."""
    special = set(loaded.tokenizer.all_special_ids)
    listed, seen = [], set()
    for choice in choices:
        if choice.token_id in special and choice.probability < MIN_SPECIAL_PROBABILITY:
            continue
        surface = choice.token.strip() if choice.token_id in special else loaded.surface(choice.token_id)
        if surface in seen:
            continue
        seen.add(surface)
        listed.append((surface or choice.token, choice.probability, int(choice.token_id)))
        if len(listed) == ALTERNATIVES_SHOWN:
            break
    return listed


def _sample(loaded, text, token_ids, probabilities, choices, finish_reason, beam_score=None) -> GeneratedText:
    """`choices`: each step's listed (surface, probability, token id)."""
    return GeneratedText(
        text=text,
        token_ids=np.asarray(token_ids, dtype=np.int64),
        token_texts=align_tokens(text, [loaded.surface(i) for i in token_ids]),
        probabilities=np.asarray(probabilities, dtype=np.float32),
        alternatives=[[(surface, p) for surface, p, _ in step] for step in choices],
        finish_reason=finish_reason,
        beam_score=beam_score,
        alternative_ids=[[token_id for _, _, token_id in step] for step in choices],
    )
