"""16 simultaneous gradio_client users across the endpoints: each gets the same answer it would
get alone, or Gradio's queue-full refusal (then retries, as a client would); memory stays bounded;
concurrent Generate requests (greedy, and sampling with a seed) are decoded together.

Each tab computes one request at a time with one more waiting, on purpose, so that the refusal
path is exercised too: three users of NER, Classify or zero-shot arrive together in each round.
(Generate keeps its own slots for batched decoding whatever --concurrency says.)
The numbers are printed and written to tests/artifacts/load.json.
"""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from gradio_client import Client
from gradio_client.utils import QueueError

from testkit.app_server import EXAMPLES, KNOWN_NER_TEXT, running_app
from tests.helpers import artifacts_dir
from biogpt.serving import GenerationRequest
from testkit.memory import rss_mb

USERS = 16
ROUNDS = 2
QUEUE_SIZE = 1
CONCURRENCY = 1
MAX_RSS_GROWTH_MB = 400  # the bundled models are loaded before the baseline; this bounds everything else


class PeakMemory(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = rss_mb()
        self.running = True

    def run(self) -> None:
        while self.running:
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.05)


def test_sixteen_concurrent_users_get_correct_answers_or_a_clear_queue_full_message():
    prompt, classify_text = "Naloxone reverses the", EXAMPLES["classify"][3]["text"]
    zero_shot = EXAMPLES["zero_shot"][0]
    # All 16 clients come from 127.0.0.1, as a classroom behind one NAT address would: the
    # per-visitor limits are raised so that only the per-tab waiting room (QUEUE_SIZE) refuses.
    flags = ("--concurrency", str(CONCURRENCY), "--queue-size", str(QUEUE_SIZE),
             "--visitor-requests", "64", "--visitor-requests-per-tab", "64")
    with running_app(*flags) as (url, engine):
        # What each endpoint answers to a lone user: the reference every concurrent answer must equal.
        expected_text = list(engine.generate(GenerationRequest(prompt, mode="greedy", max_new_tokens=24)))[-1].samples[0].text
        sampled = GenerationRequest(prompt, mode="sampling", seed=5, max_new_tokens=24)
        expected_sample = list(engine.generate(sampled))[-1].samples[0].text
        expected_entities = [(e.text, e.type) for e in engine.ner(KNOWN_NER_TEXT).entities]
        classified = engine.classify(classify_text)
        expected_top = [classified.labels[i] for i in classified.probabilities.argsort()[::-1][:3]]
        expected_best = engine.zero_shot(zero_shot["text"], zero_shot["labels"]).predicted[0]

        calls = [
            lambda c: c.predict(prompt, api_name="/generate", mode="greedy", max_new_tokens=24)[0] == expected_text,
            lambda c: c.predict(prompt, api_name="/generate", mode="sampling", seed=5, max_new_tokens=24)[0]
            == expected_sample,
            lambda c: [(r[0], r[1]) for r in c.predict(KNOWN_NER_TEXT, api_name="/ner")[2]["data"]] == expected_entities,
            lambda c: [x["label"] for x in c.predict(classify_text, api_name="/classify")[0]["confidences"]] == expected_top,
            lambda c: c.predict(zero_shot["text"], ", ".join(zero_shot["labels"]), api_name="/zero_shot")[0]["label"]
            == expected_best,
        ]
        clients = [Client(url, verbose=False) for _ in range(USERS)]
        baseline = rss_mb()
        monitor = PeakMemory()
        monitor.start()
        refusals, other_errors, answers = [], [], []
        start_line = threading.Barrier(USERS)

        def user(index: int) -> None:
            start_line.wait()  # everyone at once
            for round_ in range(ROUNDS):
                call = calls[(index + round_) % len(calls)]
                for attempt in range(30):
                    try:
                        answers.append(call(clients[index]))
                        break
                    except QueueError as error:
                        refusals.append(str(error))
                        time.sleep(0.3 + 0.1 * attempt)
                    except Exception as error:  # noqa: BLE001 - collected and reported below
                        other_errors.append(f"{type(error).__name__}: {error}")
                        break

        started = time.perf_counter()
        with ThreadPoolExecutor(USERS) as pool:
            list(pool.map(user, range(USERS)))
        elapsed = time.perf_counter() - started
        merged = engine.load("bundled", "generate").batcher.most_requests_merged
        monitor.running = False
        monitor.join()
        after = rss_mb()

    numbers = {
        "users": USERS, "requests_answered": len(answers), "correct": sum(answers), "queue_full_refusals": len(refusals),
        "other_errors": other_errors[:5], "seconds": round(elapsed, 1), "most_generations_merged": merged,
        "rss_baseline_mb": round(baseline), "rss_peak_mb": round(monitor.peak), "rss_after_mb": round(after),
    }
    (artifacts_dir() / "load.json").write_text(json.dumps(numbers, indent=1))
    print("\nload test:", numbers)
    assert not other_errors, other_errors
    assert len(answers) == USERS * ROUNDS and all(answers), numbers
    assert refusals and set(refusals) == {"Queue is full! Please try again."}, numbers
    assert monitor.peak - baseline < MAX_RSS_GROWTH_MB, numbers
    assert merged >= 2, numbers  # concurrent Generate requests shared decoding forwards
