"""Attention view switching as a visitor feels it: Chromium, the real app, from the key press to
the redrawn plot.

    .venv/bin/python bench/bench_view_switch.py [--repeats 5] [--tokens 10 256] [--load 8] [--full]

For each text length: the text is analysed once, then the head, a toggle (hide the first-token
sink) and the layer are changed `--repeats` times each by typing into the control and pressing
Enter, and the time until the plot's figure has changed (polled every animation frame) is taken;
medians are reported. Then the same while `--load` other clients run Generate (128 tokens,
sampling) against the same server without pause. `--full` adds microsoft/biogpt's shape (random
weights, 24 layers x 16 heads) at 256 tokens.

Issue 15's targets (quiet machine): a head or toggle change within 150 ms, a layer change within
300 ms; under load within twice that. Results go to bench/results/view_switch.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import threading
import time

from common import REPO, full_size_checkpoint, machine

sys.path.insert(0, str(REPO))

CHANGED = """([selector, before]) => {
    const el = document.querySelector(selector);
    return !!(el && el.data && JSON.stringify([el.layout.title.text, el.data[0].z && el.data[0].z.length,
        el.data[0].zmax]) !== before && el._fullLayout);
}"""
FINGERPRINT = """(selector) => { const el = document.querySelector(selector);
    return JSON.stringify([el.layout.title.text, el.data[0].z && el.data[0].z.length, el.data[0].zmax]); }"""
PLOT = "#attention-plot .js-plotly-plot"
REDRAWN_IN_PAGE = "redrawn in your browser"  # the summary's words when the page drew a view itself
PAUSE = 0.5  # seconds between two changes, a brisk visitor's pace (a redraw's layer data arrives after its plot)


def text_of(tokenizer, tokens: int) -> str:
    """Training-split texts from assets/examples.json cut to `tokens` tokens (with the leading </s>)."""
    examples = json.loads((REPO / "assets" / "examples.json").read_text(encoding="utf-8"))
    text = " ".join(e["text"] for key in ("ner", "classify") for e in examples[key])
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    if len(offsets) < tokens:
        raise SystemExit(f"the examples hold {len(offsets)} tokens, fewer than the {tokens} asked for")
    return text[: offsets[tokens - 1][1]]


def set_number(page, elem_id: str, value) -> None:
    box = f"#{elem_id} input[type=number]"
    page.fill(box, str(value))
    page.press(box, "Enter")


def timed_change(page, act) -> float:
    time.sleep(PAUSE)
    before = page.evaluate(FINGERPRINT, PLOT)
    started = time.perf_counter()
    act()
    page.wait_for_function(CHANGED, arg=[PLOT, before], polling="raf", timeout=60_000)
    return (time.perf_counter() - started) * 1000


def measure(page, repeats: int, layers: int, heads: int) -> dict[str, float]:
    times: dict[str, list[float]] = {"head": [], "toggle": [], "layer": []}
    in_page = 0  # head and toggle changes the page redrew by itself (the rest went to the server)
    for i in range(repeats):
        times["head"].append(timed_change(page, lambda: set_number(page, "attention-head", 2 + i % (heads - 1))))
        in_page += REDRAWN_IN_PAGE in page.inner_text("#attention-summary")
        times["toggle"].append(timed_change(page, lambda: page.click("#attention-hide-sink input")))
        in_page += REDRAWN_IN_PAGE in page.inner_text("#attention-summary")
        times["layer"].append(timed_change(page, lambda: set_number(page, "attention-layer", 2 + i % (layers - 1))))
    result: dict = {name: round(statistics.median(values), 1) for name, values in times.items()}
    result["head_and_toggle_changes_redrawn_in_the_page"] = f"{in_page} of {2 * repeats}"
    return result


def generate_load(url: str, clients: int, stop: threading.Event) -> list[threading.Thread]:
    from gradio_client import Client

    def run():
        client = Client(url, verbose=False)
        while not stop.is_set():
            client.predict("Naloxone reverses the", api_name="/generate", max_new_tokens=128, seed=1)

    threads = [threading.Thread(target=run, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    return threads


def bench_model(flags: list[str], model: str | None, token_counts: list[int], repeats: int, load: int) -> list[dict]:
    from testkit.app_server import running_app
    from tests.helpers import chromium_page

    rows = []
    # Every client here is 127.0.0.1: the per-visitor limits are raised so the load is really `load` clients.
    flags = [*flags, "--visitor-requests", str(load + 8), "--visitor-requests-per-tab", str(load + 4)]
    with running_app(*flags) as (url, engine):
        loaded = engine.load(model or "bundled", "generate")
        config = loaded.model.config
        with chromium_page(url) as page:
            page.set_viewport_size({"width": 1400, "height": 1000})
            page.get_by_role("tab", name="Attention", exact=True).click()
            page.wait_for_selector(PLOT, timeout=60_000)
            if model:
                page.click("#attention-model input")
                page.get_by_role("option", name=model).first.click()
            for tokens in token_counts:
                text = text_of(loaded.tokenizer, tokens)
                page.fill("#attention-text textarea", text)
                page.click("#attention-analyse")
                # Settled: the page holds this text's layer (the summary alone may still be the last analysis').
                page.wait_for_function("(text) => window.__studioHeatmap?.payload?.text === text", arg=text,
                                       timeout=120_000)
                time.sleep(1.0)
                quiet = measure(page, repeats, config.num_hidden_layers, config.num_attention_heads)
                stop = threading.Event()
                threads = generate_load(url, load, stop)
                time.sleep(3.0)  # let the Generate clients get going
                loaded_times = measure(page, repeats, config.num_hidden_layers, config.num_attention_heads)
                stop.set()
                for thread in threads:
                    thread.join(timeout=120)
                row = {"model": model or "bundled", "layers": config.num_hidden_layers,
                       "heads": config.num_attention_heads, "tokens": tokens, "quiet_ms": quiet,
                       f"with_{load}_generate_clients_ms": loaded_times}
                print(json.dumps(row))
                rows.append(row)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--tokens", type=int, nargs="+", default=[10, 256])
    parser.add_argument("--load", type=int, default=8)
    parser.add_argument("--full", action="store_true", help="also microsoft/biogpt's shape at 256 tokens")
    args = parser.parse_args()
    rows = bench_model([], None, args.tokens, args.repeats, args.load)
    if args.full:
        folder = str(full_size_checkpoint())
        rows += bench_model(["--allow-model", folder], folder, [256], args.repeats, args.load)
    result = {"machine": machine(), "rows": rows,
              "targets_ms": {"head or toggle": 150, "layer": 300, "under load": "2x"}}
    out = REPO / "bench" / "results" / "view_switch.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
