"""What every test shares: an offline, quiet environment; a marker per kind of test, from the
folder it is in; the bundled models check; the one-thread setting; the Attention tab's app."""

import os
from pathlib import Path

import pytest

# Offline and quiet, for every test and every subprocess it starts.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")

TESTS = Path(__file__).resolve().parent
# tests/<kind>/test_*.py gets the marker <kind> (registered in pytest.ini): `pytest -m parity`.
KINDS = ("unit", "parity", "api", "browser", "load", "cli")


def pytest_collection_modifyitems(config, items):
    for item in items:
        try:
            kind = item.path.resolve().relative_to(TESTS).parts[0]
        except ValueError:  # not under tests/
            continue
        if kind in KINDS:
            item.add_marker(kind)


@pytest.fixture(scope="session")
def bundled_models() -> list[Path]:
    """The three bundled model folders (LM, NER, HoC), asserted present."""
    from testkit.app_server import BUNDLED_MODELS, require_bundled_models

    require_bundled_models()
    return BUNDLED_MODELS


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models are thousands of tiny ops; on cores shared with other jobs two threads wait on
    each other at every op (21 s against 2 s for tests/unit/test_graphed.py, a 20x slowdown for
    test_quantize.py's bundled LM), one never does."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def attention_server() -> tuple[str, object]:
    """(url, engine) of one real app (as app.py builds it, models loaded on first use) for the
    Attention tab's API and browser tests: sharing it keeps them from loading the model and
    starting a server twice on two cores."""
    from testkit.app_server import running_app

    with running_app(preload=False) as server:
        yield server
