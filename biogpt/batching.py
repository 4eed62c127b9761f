"""Concurrent greedy and sampling requests on one model, decoded together between steps.

Decoding one token reads every weight of the model; with several requests in flight, one
forward over all their rows reads them once. A `DecodeBatcher` owns a thread per model that
admits new requests (each prompt is prefilled on its own, a long one in chunks between the
others' steps), then repeatedly runs one forward over the last token of every active
request, hands each request its rows of the logits and lets the request choose its tokens
with its own processors and random generator (`SamplingRun.choose`, the same code as
decoding alone). Attention runs per request against its own cache (`GroupedKVCache`), so
requests of different lengths need no padding masks.

Each result is identical, bit for bit, to what the request gets through the batcher alone.
That needs care: a matrix product does not compute a row the same way for every number of
rows (MKL, behind F.linear, uses another kernel for a single row and treats rows past a
multiple of 4 apart). So the shared forwards run their linear layers through oneDNN
(`biogpt.row_invariant`), which gives a row the same bits for any even number of rows
(and decodes one row about twice as fast as MKL here), every forward is padded to a multiple
of a row block, and before first use a probe checks on this model and machine, for every
padded size up to `max_rows`, that each row of a forward equals the same request's logits
alone. Sizes that fail are never used (batches are capped below them); if even the smallest
block fails, requests are served one forward each.

A prompt longer than `prefill_chunk` tokens goes into its cache in chunks of that size, one
chunk per step of the others, so a pasted abstract does not freeze everyone else's stream for
its whole prefill. Chunk boundaries are fixed by the prompt alone (never by what else runs), so
this keeps results identical to the request alone through the batcher.

Compared with `generate()` (MKL, one unpadded row, transformers' kernel, a prompt in one
piece), batched logits may differ in the last bits, which can flip a near-tie between two
tokens. They are deterministic and independent of other users' requests.
"""

from __future__ import annotations

import math
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator

import torch

from . import kernels
from .generation import DecodingStopped, SamplingRun, Step, resolve_settings
from .kv_cache import GroupedKVCache
from .row_invariant import row_invariant_linears

ROW_BLOCKS = (2, 4, 8, 16)
# Prompt tokens fed per step of the others. microsoft/biogpt on 2 cores prefills 1,000 tokens in
# 4.0 s in one piece, and in 4.6 s in chunks of 256, none longer than 1.2 s (128: 5.5 s, 0.8 s).
PREFILL_CHUNK = 256
# Steps a request may run ahead of its reader. A reader that stops reading pauses its request
# after this many, so stopping a stream stops the work and unread logits cannot pile up.
MAX_AHEAD = 2
# Requests choosing their tokens at once (one per core here; the kernels they run are small).
CHOOSE_THREADS = 2


@dataclass
class _Request:
    run: SamplingRun
    outbox: "queue.SimpleQueue[Step | BaseException]" = field(default_factory=queue.SimpleQueue)
    ahead: int = 0  # steps put in the outbox and not yet taken
    cancelled: bool = False


class DecodeBatcher:
    """Merges concurrent greedy/sampling requests on `model` (a BioGptForCausalLM in eval mode).

    `steps(run)` yields the request's steps as `run.steps(model)` does; the work happens on the
    batcher's thread, which starts on first use. `close()` refuses new requests and lets the
    thread end once those in flight are done.
    """

    def __init__(self, model, max_rows: int = 32, prefill_chunk: int | None = PREFILL_CHUNK):
        self.model = model
        self.max_rows = max_rows
        self.prefill_chunk = prefill_chunk  # None: every prompt in one piece
        self.row_block: int | None = None  # set by calibrate(); 0: rows depend on each other here
        self.forwards = 0  # decode forwards run so far, and the most requests one of them served
        self.most_requests_merged = 0
        self._incoming: list[_Request] = []
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._calibrating = threading.Lock()

    def calibrate(self) -> None:
        """Find the row block and the largest safe batch now (else the first request does it)."""
        with self._calibrating:
            if self.row_block is None:
                self.row_block, self.max_rows = find_row_block(self.model, self.max_rows)

    # ----- the reader's side ------------------------------------------------------------------

    def steps(self, run: SamplingRun) -> Iterator[Step]:
        if run.mask is not None:  # padded prompts carry their own masks: decode them alone
            yield from run.steps(self.model)
            return
        request = _Request(run)
        with self._changed:
            if self._closed:
                raise RuntimeError("This model was just unloaded; send the request again.")
            self._incoming.append(request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="biogpt-decode-batcher", daemon=True)
                self._thread.start()
            self._changed.notify_all()
        try:
            while True:
                item = request.outbox.get()
                with self._changed:
                    request.ahead -= 1
                    self._changed.notify_all()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if item.last:
                    return
        finally:
            with self._changed:
                request.cancelled = True
                self._changed.notify_all()

    def close(self, wait: bool = False) -> None:
        """Refuse new requests; the thread ends once those in flight are done (`wait`: block until then)."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
            thread = self._thread
        if wait and thread is not None:
            thread.join()

    # ----- the thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        active: list[_Request] = []
        prefilling: list[_Request] = []  # arrived, prompt not all in the cache yet
        # Choosing tokens is per request and mostly single-threaded work over the vocabulary (the
        # sampling draw alone takes about 1 ms for 42,384 tokens), so requests choose in parallel.
        with torch.inference_mode(), ThreadPoolExecutor(CHOOSE_THREADS, thread_name_prefix="biogpt-choose") as choosers:
            while True:
                with self._changed:
                    while not self._incoming and not prefilling and not self._ready(active):
                        active = [r for r in active if not r.cancelled]
                        if self._closed and not active:
                            self._thread = None
                            return
                        self._changed.wait(timeout=1.0)
                    prefilling += self._incoming
                    self._incoming = []
                    active = [r for r in active if not r.cancelled]
                    prefilling = [r for r in prefilling if not r.cancelled]
                # A request whose reader has gone (run.should_stop) ends here, before the next
                # forward: at most the forward that was running when it left is spent on it.
                active, prefilling = self._stopped_out(active), self._stopped_out(prefilling)
                try:
                    self._prefill_some(prefilling, active)
                    ready = self._ready(active)
                    if ready:
                        self._decode(ready, choosers)
                        # Round robin: whoever just ran goes to the back, so a full batch starves no one.
                        waiting = [r for r in active if r not in ready]
                        active = waiting + [r for r in ready if not r.run.done]
                except Exception as error:  # noqa: BLE001 - a bug here must not leave readers waiting forever
                    for request in active + prefilling:
                        if not request.run.done:
                            self._fail(request, error)
                    active, prefilling = [], []

    def _stopped_out(self, requests: list[_Request]) -> list[_Request]:
        kept = []
        for request in requests:
            stop = request.run.should_stop
            try:
                stopped = stop is not None and bool(stop())
            except Exception as error:  # noqa: BLE001 - a broken check ends its own request only
                self._fail(request, error)
                continue
            if stopped:
                self._fail(request, DecodingStopped())
            else:
                kept.append(request)
        return kept

    def _ready(self, active: list[_Request]) -> list[_Request]:
        """Requests whose readers keep up, as many as fit in max_rows (at least one)."""
        ready, rows = [], 0
        for request in active:
            if request.cancelled or request.ahead >= MAX_AHEAD:
                continue
            if ready and rows + request.run.rows > self.max_rows:
                break
            ready.append(request)
            rows += request.run.rows
        return ready

    def _deliver(self, request: _Request, item: Step | BaseException) -> None:
        with self._changed:
            request.ahead += 1
        request.outbox.put(item)

    def _prefill_some(self, prefilling: list[_Request], active: list[_Request]) -> None:
        """Feed prompts to their caches a chunk at a time, the least left to feed first, until
        this step has fed `prefill_chunk` tokens: short prompts never wait behind a long one, and
        several arriving together go in one step. A request whose prompt is all in chooses its
        first token and joins `active`, unless that ended it."""
        prefilling.sort(key=lambda r: r.run.prompt_length - r.run.cache.length)  # stable: first come first among equals
        fed = 0
        while prefilling and (self.prefill_chunk is None or fed < self.prefill_chunk):
            request = prefilling[0]
            before = request.run.cache.length
            try:
                self.calibrate()
                logits = request.run.prefill(self.model, self.prefill_chunk)
                step = None if logits is None else request.run.choose(logits)
            except Exception as error:  # noqa: BLE001 - the reader re-raises it
                prefilling.pop(0)
                self._fail(request, error)
                continue
            fed += request.run.cache.length - before
            if step is not None:
                prefilling.pop(0)
                self._deliver(request, step)
                if not step.last:
                    active.append(request)

    def _decode(self, requests: list[_Request], choosers: ThreadPoolExecutor) -> None:
        groups = [requests] if self.row_block else [[r] for r in requests]
        for group in groups:
            try:
                logits = decode_together(self.model, [r.run for r in group], self.row_block or 1)
            except Exception as error:  # noqa: BLE001 - e.g. out of memory: every reader in it hears why
                for request in group:
                    self._fail(request, error)
                continue
            self.forwards += 1
            self.most_requests_merged = max(self.most_requests_merged, len(group))
            starts = [0]
            for request in group[:-1]:
                starts.append(starts[-1] + request.run.rows)
            chosen = [choosers.submit(_choose, request.run, logits[start:start + request.run.rows])
                      for request, start in zip(group, starts)]
            for request, future in zip(group, chosen):
                try:
                    step = future.result()
                except Exception as error:  # noqa: BLE001 - only this request fails
                    self._fail(request, error)
                else:
                    self._deliver(request, step)

    def _fail(self, request: _Request, error: BaseException) -> None:
        request.run.done = True
        self._deliver(request, error)


def _choose(run: SamplingRun, logits: torch.Tensor) -> Step:
    with torch.inference_mode():  # on a pool thread: the run's tensors are inference tensors
        return run.choose(logits)


def decode_together(model, runs: list[SamplingRun], row_block: int) -> torch.Tensor:
    """One forward over the last token of every run: logits [padded rows, vocab], the runs' rows
    first, in order. Rows are padded to a multiple of `row_block`; each run attends to its own cache."""
    rows = sum(run.rows for run in runs)
    padded = math.ceil(rows / row_block) * row_block
    device = runs[0].sequences.device
    tokens = torch.full((padded, 1), model.config.pad_token_id, dtype=torch.long, device=device)
    positions = torch.zeros((padded, 1), dtype=torch.long, device=device)
    start = 0
    for run in runs:
        end = start + run.rows
        tokens[start:end, 0] = run.last_tokens()
        positions[start:end] = run.cache.length  # nothing is padded inside a run: its next position is its length
        start = end
    cache = GroupedKVCache([(run.cache, run.rows) for run in runs], padded)
    with row_invariant_linears():
        return model(tokens, position_ids=positions, past_key_values=cache, use_cache=True).logits[:, -1]


def find_row_block(model, max_rows: int) -> tuple[int, int]:
    """(row block, largest safe number of rows) for this model on this machine, or (0, 0).

    One greedy request of one row is prefilled and makes its first choice. For a block b, its
    next logits alone (padded to b rows) are the reference. Then for every padded size m = b,
    2b, ... up to max_rows, m copies of that request decoded in one forward must each give the
    reference, bit for bit: a row's result then depends neither on its place nor on the rows
    beside it (kernels choose their method by shape, never by value). The first size that fails
    caps batches below it. Distrusting "batch-rows" (biogpt.kernels) forces the fallback.
    """
    if "batch-rows" in kernels.distrusted():
        return 0, 0
    prompt = torch.randint(4, model.config.vocab_size, (1, 3), generator=torch.Generator().manual_seed(0))
    settings = resolve_settings(model.config, prompt.shape[1], max_new_tokens=2, do_sample=False, eos_token_id=None)
    with torch.inference_mode():
        base = SamplingRun(model, prompt.to(model.device), None, settings)
        base.choose(base.prefill(model))

        def next_logits(rows: int, block: int) -> torch.Tensor:
            return decode_together(model, [_copies(model, base, rows)], block)[:rows]

        for block in ROW_BLOCKS:
            if block > max_rows:
                break
            reference = next_logits(1, block)
            safe = 0
            for rows in range(block, max_rows + 1, block):
                if not torch.equal(next_logits(rows, block), reference.expand(rows, -1)):
                    break
                safe = rows
            if safe:
                return block, safe
    return 0, 0


def _copies(model, run: SamplingRun, rows: int) -> SamplingRun:
    """A run of `rows` copies of one-row `run`: same ids, same cache contents, same next step.

    The cache is copied rather than prefilled again, since a prefill of several rows is itself
    a different matrix shape and could differ in the last bits.
    """
    copy = SamplingRun(model, run.prompt.expand(rows, -1), None, run.settings)
    copy.sequences = run.sequences.expand(rows, -1).clone()
    copy.steps_done = run.steps_done
    copy.cache.keys = [k.repeat(rows, 1, 1, 1) for k in run.cache.keys]
    copy.cache.values = [v.repeat(rows, 1, 1, 1) for v in run.cache.values]
    copy.cache.capacity, copy.cache.length = run.cache.capacity, run.cache.length
    return copy


__all__ = ["DecodeBatcher", "decode_together", "find_row_block"]
