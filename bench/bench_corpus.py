"""Corpus NER throughput: batched (Engine.ner_many, the CLI's path) vs the engine one document at a
time, over the 500 BC5CDR test abstracts with the bundled NER model; then Ray with 1 vs 2 workers.

    .venv/bin/python bench/bench_corpus.py [--docs 500] [--batch 32] [--rows 8] [--ray-docs 200] [--no-ray]

Measured in one process, alternating (batched, one-at-a-time) rounds so machine noise hits both:
  - one at a time: `engine.ner(text)` for each abstract (windows of a long text already batched);
  - batched:       `engine.ner_many(texts)`: documents grouped by length, right-padded batches,
                   the next batch tokenized in a thread while this one computes.
Results are checked equal (spans exact, scores within 1e-5) before timing. A cProfile of one
batched pass says where the time goes (tokenizing, the model's forward, span decoding).
Ray: `biogpt ner --ray` subprocesses against a local Ray instance (2 CPUs) with 1 and 2 replicas,
documents/s from the whole command (actors' start included) and per-document cost, from which
the README's PubMed estimate is made. Aim (issue 18): batched >= 1.5x one at a time.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from common import REPO, machine

BC5CDR_TEST = REPO.parent / "shared" / "data" / "BC5CDR" / "ner_spans_test.jsonl"
PUBMED_ABSTRACTS = 36_000_000


def abstracts(count: int) -> list[dict]:
    with open(BC5CDR_TEST, encoding="utf-8") as stream:
        return [json.loads(line) for _, line in zip(range(count), stream)]


def check_equal(alone, together) -> None:
    for a, b in zip(alone, together, strict=True):
        assert [(e.start, e.end, e.type) for e in a.entities] == [(e.start, e.end, e.type) for e in b.entities]
        assert all(abs(x.score - y.score) <= 1e-5 for x, y in zip(a.entities, b.entities))


def profile_batched(engine, texts: list[str], batch: int, rows: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    list(engine.ner_many(texts, batch_docs=batch, batch_rows=rows))
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out).sort_stats("cumulative")
    stats.print_stats(r"ner_prepare|ner_compute|ner_piece_probabilities|decode_entities|tokenize_with_offsets|"
                      r"model\.py.*forward|split_words|result", 14)
    return "\n".join(line for line in out.getvalue().splitlines() if "/" in line or "ncalls" in line)


def ray_throughput(docs: list[dict], workers: int, address: str) -> tuple[float, float]:
    """(documents/s of the whole command, seconds) for `biogpt ner --ray` with `workers` replicas."""
    with tempfile.TemporaryDirectory() as folder:
        corpus = Path(folder) / "in.jsonl"
        corpus.write_text("".join(json.dumps({"id": d["pmid"], "text": d["text"]}) + "\n" for d in docs))
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "biogpt.cli", "ner", str(corpus), "-o", str(Path(folder) / "out.jsonl"),
                        "--ray", address, "--ray-workers", str(workers)], check=True, capture_output=True,
                       env={**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"})
        seconds = time.perf_counter() - started
    return len(docs) / seconds, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=500)
    parser.add_argument("--batch", type=int, default=32, help="documents per batch")
    parser.add_argument("--rows", type=int, default=8, help="windows per forward")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--ray-docs", type=int, default=200)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()

    from biogpt.serving import Engine, Limits

    engine = Engine(limits=Limits.local(), batching=False)
    texts = [d["text"] for d in abstracts(args.docs)]
    print(f"machine: {machine()}")
    print(f"NER over {len(texts)} BC5CDR test abstracts, bundled-ner, fp32, {torch.get_num_threads()} threads")
    engine.ner(texts[0])  # load
    alone = [engine.ner(t) for t in texts[:40]]
    check_equal(alone, list(engine.ner_many(texts[:40], batch_docs=args.batch, batch_rows=args.rows)))
    timings: dict[str, list[float]] = {"one at a time": [], "batched": []}
    for _ in range(args.rounds):
        started = time.perf_counter()
        for text in texts:
            engine.ner(text)
        timings["one at a time"].append(time.perf_counter() - started)
        started = time.perf_counter()
        list(engine.ner_many(texts, batch_docs=args.batch, batch_rows=args.rows))
        timings["batched"].append(time.perf_counter() - started)
    best = {name: min(values) for name, values in timings.items()}
    for name, seconds in best.items():
        print(f"  {name:14s} {len(texts) / seconds:7.1f} docs/s  ({seconds:.1f} s, best of {args.rounds})")
    print(f"  batched / one at a time: {best['one at a time'] / best['batched']:.2f}x")
    started = time.perf_counter()
    for text in texts:
        from biogpt.serving import tagging

        tagging.ner_prepare(engine.load("bundled-ner", "ner"), text, engine.limits)
    tokenizing = time.perf_counter() - started
    print(f"  tokenizing alone: {tokenizing:.1f} s ({tokenizing / best['batched']:.0%} of the batched time; "
          "overlapped with the model in ner_many)")
    print("profile of one batched pass (cumulative):")
    print(profile_batched(engine, texts, args.batch, args.rows))
    per_document = best["batched"] / len(texts) * torch.get_num_threads()
    print(f"per-document cost, batched: {per_document * 1000:.1f} core-ms")
    if args.no_ray:
        return
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    try:
        address = ray.get_runtime_context().gcs_address
        docs = abstracts(args.ray_docs)
        for workers in (1, 2):
            rate, seconds = ray_throughput(docs, workers, address)
            print(f"  ray, {workers} worker(s): {rate:.1f} docs/s over {len(docs)} docs ({seconds:.1f} s, start included)")
            if workers == 1:  # one replica, one core, one thread: the cost a core pays per abstract
                per_document = seconds / len(docs)
    finally:
        ray.shutdown()
    print(f"per-document cost, one Ray replica: {per_document * 1000:.1f} core-ms (start included)")
    for nodes, cores in ((1, 2), (10, 16), (100, 16)):
        hours = PUBMED_ABSTRACTS * per_document / (nodes * cores) / 3600
        print(f"  PubMed ({PUBMED_ABSTRACTS:,} abstracts) on {nodes} node(s) x {cores} cores: {hours:,.1f} h")


if __name__ == "__main__":
    main()
