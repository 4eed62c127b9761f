"""Serving: 8 simultaneous Generate requests on one model vs one alone, on the engine's path.

    .venv/bin/python bench/bench_batching.py [--repeats 5] [--model bundled|full] [--requests 8] [--long-prompt]

Each request is the app's default (sampling, temperature 0.8, top-k 50, top-p 0.9, repetition
penalty 1.2, no-repeat 3-grams) with its own prompt and fixed seed, 64 new tokens, eos off so
every request makes all 64. Measured, as medians of alternating rounds after a warm-up:
  - one:      one request alone (the engine's batcher with nothing else in flight);
  - together: all requests sent at once from their own threads, until the last one finishes;
  - previous: the same with batching off (`Engine(batching=False)`, `python app.py
              --no-batching`): each request decodes on its own thread, as before the batcher.
Target (issue 7): together <= 3x one on the bundled model. Every request's tokens and
probabilities are checked identical together and alone before timing.

`--long-prompt` measures instead what a long prompt does to requests already streaming: 7
requests decode (the app's default sampling), then one with a 1,000-token prompt joins. Printed
for the batcher's chunked prefill (`PREFILL_CHUNK`) and for prompts fed in one piece, in
alternating rounds: the longest wait between two tokens of a running stream while the long
prompt goes in, and the long request's time to its first token.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from common import alternate, full_size_checkpoint, machine

PROMPTS = ["Aspirin is used to", "The patient developed", "Cisplatin-induced nephrotoxicity", "We report a case of",
           "In conclusion ,", "Tumor necrosis factor", "The results suggest that", "Hepatitis B virus",
           "Metformin is", "The incidence of", "Mice lacking", "A 45-year-old woman"]
NEW_TOKENS = 64


def make_engine(model: str, batching: bool):
    from biogpt.serving import Engine

    folder = str(full_size_checkpoint()) if model == "full" else "bundled"
    return Engine(default_model=folder, device="cpu", dtype="float32", batching=batching), folder


def one_request(engine, folder: str, index: int) -> list[tuple[int, float]]:
    """The engine's decoding of one Generate request (a stream through the model's batcher, as in
    Engine._stream_one), with eos off so that every request makes all its tokens."""
    from biogpt.serving import GenerationRequest
    from biogpt.generation import stream

    request = GenerationRequest(prompt=PROMPTS[index % len(PROMPTS)], model=folder, max_new_tokens=NEW_TOKENS)
    kwargs = request.decoding_kwargs(engine.limits) | {"seed": index, "eos_token_id": None}
    loaded = engine.load(folder, "generate")
    ids = loaded.tokenizer.encode(request.prompt)
    events = stream(loaded.model, loaded.tokenizer, [ids], batcher=loaded.batcher, **kwargs)
    return [(event.token_id, event.logprob) for event in events]


def simultaneous(engine, folder: str, count: int):
    barrier = threading.Barrier(count)

    def send(index):
        barrier.wait()
        return one_request(engine, folder, index)

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(send, range(count)))


LONG_PROMPT_TOKENS = 1000


def long_prompt_joins(loaded, batcher, settings: dict, running: int = 7) -> tuple[float, float]:
    """(longest gap between tokens of the running streams while the long prompt goes in, the long
    request's time to first token), in seconds."""
    from biogpt.generation import stream

    started, stop = threading.Barrier(running + 1), threading.Event()
    arrivals: list[list[float]] = [[] for _ in range(running)]

    def run(index: int) -> None:
        ids = loaded.tokenizer.encode(PROMPTS[index % len(PROMPTS)])
        events = stream(loaded.model, loaded.tokenizer, [ids], batcher=batcher, **(settings | {"seed": index}))
        for count, _ in enumerate(events):
            arrivals[index].append(time.perf_counter())
            if count == 2:
                started.wait()  # every stream is under way
            if stop.is_set():
                break
        events.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(running)]
    for thread in threads:
        thread.start()
    started.wait()
    long_ids = [2] + torch.randint(4, loaded.model.config.vocab_size, (LONG_PROMPT_TOKENS - 1,),
                                   generator=torch.Generator().manual_seed(0)).tolist()
    joined = time.perf_counter()
    long_events = stream(loaded.model, loaded.tokenizer, [long_ids], batcher=batcher, **(settings | {"max_new_tokens": 4}))
    next(long_events)
    first_token = time.perf_counter()
    long_events.close()
    stop.set()
    for thread in threads:
        thread.join()
    gaps = [later - earlier for times in arrivals for earlier, later in zip(times, times[1:])
            if later > joined and earlier < first_token]
    return max(gaps), first_token - joined


def long_prompt_main(model: str, repeats: int) -> None:
    from biogpt.batching import PREFILL_CHUNK, DecodeBatcher
    from biogpt.serving import GenerationRequest

    engine, folder = make_engine(model, batching=True)
    loaded = engine.load(folder, "generate")
    # The app's default sampling, long enough to outlast the long prompt, eos off.
    settings = GenerationRequest(prompt="x", max_new_tokens=400).decoding_kwargs(engine.limits) | {"eos_token_id": None}
    batchers = {f"chunks of {PREFILL_CHUNK}": DecodeBatcher(loaded.model, prefill_chunk=PREFILL_CHUNK),
                "one piece": DecodeBatcher(loaded.model, prefill_chunk=None)}
    print(f"# bench_batching --long-prompt: 7 streams decoding, then a {LONG_PROMPT_TOKENS}-token prompt joins; "
          f"model {model}, fp32, medians of {repeats} alternating rounds")
    print(f"# {machine()}")
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in batchers}
    for name, batcher in batchers.items():  # warm-up (and the probe)
        batcher.calibrate()
        long_prompt_joins(loaded, batcher, settings)
    for _ in range(repeats):
        for name, batcher in batchers.items():
            results[name].append(long_prompt_joins(loaded, batcher, settings))
    print(f"{'prompt fed':16s} {'longest wait of a running stream':>34s} {'long request: first token':>27s}")
    for name, values in results.items():
        gap = statistics.median(v[0] for v in values)
        first = statistics.median(v[1] for v in values)
        print(f"{name:16s} {gap:32.2f} s {first:25.2f} s")
    for batcher in batchers.values():
        batcher.close(wait=True)  # a thread still in a forward at exit would abort the interpreter


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--model", choices=("bundled", "full"), default="bundled")
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--long-prompt", action="store_true", help="a long prompt joining running streams")
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.long_prompt:
        long_prompt_main(args.model, args.repeats)
        return
    count = args.requests
    batched, folder = make_engine(args.model, batching=True)
    previous, _ = make_engine(args.model, batching=False)
    batched.load(folder, "generate").batcher.calibrate()
    print(f"# bench_batching: {count} simultaneous sampling requests x {NEW_TOKENS} new tokens, model {args.model}, "
          f"fp32, medians of {args.repeats} alternating rounds")
    print(f"# {machine()}")

    alone = [one_request(batched, folder, i) for i in range(count)]
    together = simultaneous(batched, folder, count)
    if together != alone:
        raise SystemExit("a request's result changed when decoded together with the others")
    batcher = batched.load(folder, "generate").batcher
    print(f"# identical together and alone: yes; row block {batcher.row_block}, up to {batcher.max_rows} rows, "
          f"most requests in one forward {batcher.most_requests_merged}")

    times = alternate({
        "one": lambda: one_request(batched, folder, 0),
        "together": lambda: simultaneous(batched, folder, count),
        "previous": lambda: simultaneous(previous, folder, count),
    }, args.repeats)
    tokens = count * NEW_TOKENS
    print(f"{'what':44s} {'seconds':>8s} {'tokens/s':>9s}")
    print(f"{'one request alone':44s} {times['one']:8.2f} {NEW_TOKENS / times['one']:9.1f}")
    print(f"{f'{count} together, batching on':44s} {times['together']:8.2f} {tokens / times['together']:9.1f}")
    print(f"{f'{count} together, batching off (previous)':44s} {times['previous']:8.2f} {tokens / times['previous']:9.1f}")
    print(f"together / one: {times['together'] / times['one']:.2f}x (target <= 3x); "
          f"batching on / off: {times['together'] / times['previous']:.2f} of the time "
          f"({times['previous'] / times['together']:.2f}x the throughput)")


if __name__ == "__main__":
    main()
