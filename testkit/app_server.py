"""Start the real app (engine + Gradio) inside this process, the way app.py does, and wait for
a server to answer: for the API, browser and load tests and bench/bench_soak.py.

One server per test module (module-scoped fixtures) keeps the suite fast on two cores.
"""

from __future__ import annotations

import contextlib
import json
import socket
import time
import urllib.request
from typing import Iterator

from testkit import REPO

EXAMPLES = json.loads((REPO / "assets" / "examples.json").read_text(encoding="utf-8"))
# A BC5CDR training sentence with its gold Chemical mentions (assets/examples.json, PMID 227508).
KNOWN_NER_TEXT = "Naloxone reverses the antihypertensive effect of clonidine."
BUNDLED_MODELS = [REPO / "assets" / "models" / name for name in
                  ("biogpt-pubmed-small", "biogpt-pubmed-small-ner", "biogpt-pubmed-small-hoc")]


def require_bundled_models() -> None:
    missing = [str(p.relative_to(REPO)) for p in BUNDLED_MODELS if not (p / "config.json").is_file()]
    assert not missing, f"the bundled models are missing: {', '.join(missing)}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert time.monotonic() < deadline, f"{url} did not answer within {timeout} s"
        time.sleep(0.2)


@contextlib.contextmanager
def running_app(*flags: str, preload: bool = True) -> Iterator[tuple[str, object]]:
    """Yield (url, engine) for an app built exactly as `python app.py *flags` builds it."""
    import app
    from ui import launch_options

    require_bundled_models()
    args = app.parse_args(list(flags))
    engine, demo = app.build(args)
    if preload:  # as app.main does; joined here so that timings in tests exclude loading
        engine.preload([("bundled", "generate"), ("bundled-ner", "ner"), ("bundled-hoc", "classify")]).join()
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url)
        yield url, engine
    finally:
        demo.close()

