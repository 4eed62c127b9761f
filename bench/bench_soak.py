"""Soak: many visitors on the real app for minutes, mixed endpoints, some streams abandoned.

Starts `python app.py` as a subprocess on a free loopback port and runs N client threads, each
from its own loopback address (127.0.0.10, 127.0.0.11, ...: one visitor each, as the per-visitor
limits see them), for the given time. Each client loops: pick an endpoint (Generate most often,
a third of its streams closed after the first token, as a visitor pressing Stop or leaving
would), call it over Gradio's REST protocol (POST /gradio_api/call/NAME, then read the event
stream), record latency and outcome. Reported: requests and errors by kind per endpoint,
latency p50/p95 per endpoint, the server's RSS at start, its peak, and after a settling time.

    python bench/bench_soak.py [--clients 32] [--minutes 10] [--settle 120] [--warmup 20] [-- APP FLAGS ...]

Loopback only; the loop is bounded in time and stops by itself.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import random
import statistics
import subprocess
import sys
import threading
import time

import httpx

from common import REPO, machine  # common also puts the repository on sys.path

from testkit.app_server import free_port, wait_for
from testkit.memory import rss_mb

EXAMPLES = json.loads((REPO / "assets" / "examples.json").read_text(encoding="utf-8"))
# endpoint -> share of requests; Generate dominates as on the public demo.
MIX = {"generate": 0.35, "ner": 0.2, "classify": 0.2, "zero_shot": 0.1, "pubmedqa": 0.05, "attention": 0.1}
CANCEL_SHARE = 1 / 3  # of Generate streams, closed after the first update


def first_inputs(rng: random.Random, endpoint: str) -> list:
    """The leading arguments of a request (text first, as every endpoint takes it)."""
    if endpoint == "generate":
        return [rng.choice(EXAMPLES["generate"])["prompt"]]
    if endpoint == "pubmedqa":
        example = rng.choice(EXAMPLES["pubmedqa"])
        return [example["question"], example["context"]]
    if endpoint == "zero_shot":
        example = rng.choice(EXAMPLES["zero_shot"])
        return [example["text"], ", ".join(example["labels"])]
    return [rng.choice(EXAMPLES["ner" if endpoint in ("ner", "attention") else "classify"])["text"]]


def defaults(url: str) -> dict[str, list]:
    """Every named endpoint's default arguments, from the server's own API description."""
    info = httpx.get(url + "gradio_api/info", timeout=30).json()["named_endpoints"]
    return {name.lstrip("/"): [p.get("parameter_default") for p in spec["parameters"]] for name, spec in info.items()}


def call(client: httpx.Client, url: str, endpoint: str, data: list, cancel: bool) -> str:
    """One request; returns its outcome: 'ok', 'cancelled' or 'error: <first words>'."""
    response = client.post(f"{url}gradio_api/call/{endpoint}", json={"data": data}, timeout=60)
    if response.status_code != 200:
        return f"error: HTTP {response.status_code}"
    event_id = response.json()["event_id"]
    with client.stream("GET", f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=600) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                if event == "error":
                    payload = line[5:].strip()
                    return f"error: {payload[:60]}"
                if event == "complete":
                    return "ok"
                if event == "generating" and cancel:
                    return "cancelled"  # leaving the with-block closes the stream, as a tab closed mid-answer
    return "error: stream ended without a result"


def client_loop(index: int, url: str, deadline: float, argument_defaults: dict, results: list, lock: threading.Lock) -> None:
    rng = random.Random(index)
    transport = httpx.HTTPTransport(local_address=f"127.0.0.{10 + index}")
    endpoints, weights = zip(*[(e, w) for e, w in MIX.items() if e in argument_defaults])
    with httpx.Client(transport=transport) as client:
        while time.monotonic() < deadline:
            endpoint = rng.choices(endpoints, weights)[0]
            leading = first_inputs(rng, endpoint)
            data = leading + argument_defaults[endpoint][len(leading):]
            cancel = endpoint == "generate" and rng.random() < CANCEL_SHARE
            started = time.monotonic()
            try:
                outcome = call(client, url, endpoint, data, cancel)
            except httpx.HTTPError as error:
                outcome = f"error: {type(error).__name__}"
            with lock:
                results.append((endpoint, outcome, time.monotonic() - started))


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=120.0, help="seconds to wait after the load before the last RSS")
    parser.add_argument("--warmup", type=float, default=20.0, help="seconds for the app to preload before the load starts")
    parser.add_argument("app_flags", nargs="*", help="extra flags for app.py (after --)")
    args = parser.parse_args()
    print(machine())
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    environment = dict(os.environ, no_proxy="127.0.0.1,localhost", GRADIO_ANALYTICS_ENABLED="False", HF_HUB_OFFLINE="1")
    server = subprocess.Popen([sys.executable, "app.py", "--port", str(port), *args.app_flags], cwd=REPO, env=environment,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(url, timeout=120)
        argument_defaults = defaults(url)
        time.sleep(args.warmup)  # the background preload of the bundled models
        start_rss = rss_mb(server.pid)
        peak = [start_rss]
        by_minute: list[float] = []  # RSS at the end of each minute of load: a plateau or a climb
        stop_sampling = threading.Event()
        load_started = time.monotonic()

        def sample() -> None:
            while not stop_sampling.wait(1.0):
                rss = rss_mb(server.pid)
                peak[0] = max(peak[0], rss)
                if time.monotonic() - load_started >= 60 * (len(by_minute) + 1) and len(by_minute) < args.minutes:
                    by_minute.append(rss)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        results: list = []
        lock = threading.Lock()
        deadline = time.monotonic() + 60 * args.minutes
        threads = [threading.Thread(target=client_loop, args=(i, url, deadline, argument_defaults, results, lock), daemon=True)
                   for i in range(args.clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60 * args.minutes + 660)
        end_rss = rss_mb(server.pid)
        time.sleep(args.settle)
        settled_rss = rss_mb(server.pid)
        stop_sampling.set()
        sampler.join()

        print(f"\n{args.clients} clients for {args.minutes:g} min, {len(results)} requests "
              f"({CANCEL_SHARE:.0%} of Generate streams closed after the first update)")
        print(f"{'endpoint':10s} {'requests':>8s} {'ok':>6s} {'cancel':>6s} {'errors':>6s} {'p50 s':>7s} {'p95 s':>7s}")
        errors: collections.Counter = collections.Counter()
        for endpoint in MIX:
            rows = [r for r in results if r[0] == endpoint]
            if not rows:
                continue
            done = [seconds for _, outcome, seconds in rows if outcome == "ok"]
            failed = [outcome for _, outcome, _ in rows if outcome.startswith("error")]
            errors.update(f"{endpoint}: {outcome}" for outcome in failed)
            cancelled = sum(outcome == "cancelled" for _, outcome, _ in rows)
            print(f"{endpoint:10s} {len(rows):8d} {len(done):6d} {cancelled:6d} {len(failed):6d} "
                  f"{percentile(done, 0.5):7.2f} {percentile(done, 0.95):7.2f}")
        print("errors by kind:" + ("".join(f"\n  {n:5d}  {kind}" for kind, n in errors.most_common()) or " none"))
        print(f"server RSS: start {start_rss:.0f} MB, peak {peak[0]:.0f} MB, end of load {end_rss:.0f} MB, "
              f"{args.settle:.0f} s later {settled_rss:.0f} MB")
        print("RSS at the end of each minute of load, MB: " + " ".join(f"{rss:.0f}" for rss in by_minute))
        if results:
            print(f"mean latency of completed requests: {statistics.mean(r[2] for r in results if r[1] == 'ok'):.2f} s")
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    main()
