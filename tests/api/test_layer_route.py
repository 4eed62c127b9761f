"""The route the Attention page fetches a heatmap's layer from (ui/layer_route.py), over HTTP as the page
calls it: the payload for an analysed text, nothing for a text the server does not hold, one sentence for
a request the page would never send, 429 when its workers are busy, 413 for a body over the cap."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

import ui.attention_tab as attention_tab
from tests.helpers import raw_response
from ui import layer_route
from ui.http_guard import MAX_BODY_BYTES

TEXT = "Naloxone reverses the antihypertensive effect of clonidine."
CONTROLS = {"view": "Heatmap", "model": "", "layer": 3, "aggregate": "head", "hide_sink": True, "start": 0}


def post(url: str, body: bytes | dict) -> tuple[int, bytes]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url + "studio/attention-layer", data=data, method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


@pytest.fixture(scope="module")
def server(attention_server):
    url, engine = attention_server
    engine.analyze(TEXT)
    return url, engine


def test_an_analysed_text_gets_the_layers_payload_and_an_unknown_one_nothing(server):
    url, engine = server
    status, body = post(url, {"text": TEXT, "controls": CONTROLS})
    assert status == 200
    payload = json.loads(body)
    expected = attention_tab.redraw_data(engine, TEXT, attention_tab.Controls(**CONTROLS), draw=True)
    assert payload.pop("id") != expected.pop("id")  # a fresh id each time: the page's cache keys on it
    assert payload == expected and payload["draw"] and payload["layer_value"] == 3

    assert post(url, {"text": TEXT + " Never analysed.", "controls": CONTROLS}) == (204, b"")  # the model never runs
    assert post(url, {"text": TEXT, "controls": {**CONTROLS, "view": "Overview"}}) == (204, b"")


@pytest.mark.parametrize("body", [
    b"not json", b"[1, 2]", {"text": 5, "controls": CONTROLS}, {"text": TEXT}, {"text": TEXT, "controls": {"nope": 1}},
    {"text": TEXT, "controls": {**CONTROLS, "layer": [3]}}, b'{"text": "x", "controls": ' + b"[" * 5000 + b"]" * 5000 + b"}",
])
def test_a_request_the_page_never_sends_gets_one_sentence(server, body):
    url, _ = server
    status, answer = post(url, body)
    assert status == 400
    assert json.loads(answer) == {"error": layer_route.BAD_REQUEST}


def test_busy_workers_answer_429_at_once_and_a_body_over_the_cap_413(server, monkeypatch):
    url, _ = server
    built = attention_tab.redraw_data
    building, release = threading.Semaphore(0), threading.Event()

    def held(*args):
        building.release()
        return release.wait(30) and built(*args)

    monkeypatch.setattr(attention_tab, "redraw_data", held)
    answers = []
    threads = [threading.Thread(target=lambda: answers.append(post(url, {"text": TEXT, "controls": CONTROLS})))
               for _ in range(layer_route.WORKERS)]
    for thread in threads:
        thread.start()
    for _ in range(layer_route.WORKERS):
        assert building.acquire(timeout=30), "a worker never started building"
    started = time.monotonic()
    status, answer = post(url, {"text": TEXT, "controls": CONTROLS})
    assert status == 429 and time.monotonic() - started < 5
    assert "busy" in json.loads(answer)["error"]
    release.set()
    for thread in threads:
        thread.join(30)
    assert [status for status, _ in answers] == [200] * layer_route.WORKERS

    # On a bare socket: the server answers 413 by Content-Length and may close before the body is sent,
    # which urllib reports as a broken pipe instead of the answer.
    head = (b"POST /studio/attention-layer HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % (MAX_BODY_BYTES + 1))
    answer, _ = raw_response(url, head, [b"x" * (MAX_BODY_BYTES + 1)])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
