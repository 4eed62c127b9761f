"""The HTTP layer and what a visitor's input can render (issue 13): bodies and uploads are capped
before Gradio reads them, every bad API value is answered with a sentence (and never echoed into
the log), sessions and exports are bounded, a busy port is named with --port, and markup a
visitor types shows as text in plots and error toasts (checked in Chromium too).

Loopback only; one server for the module, about a minute in all on two cores.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from unittest import mock

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

import app
from testkit.app_server import free_port, running_app
from tests.helpers import chromium_page, raw_response
from testkit import REPO
from ui import http_guard, views

SESSIONS = 24  # the module's server keeps this many sessions, so that going past the bound is quick
LINK_LABEL = '<a href="https://example.org">x</a><b>bold</b>'
IMG_TOKEN = "<img src=x onerror=\"window.__pwned=1\">"


@pytest.fixture(scope="module")
def server():
    """(url, demo) of the real app; the bound on sessions lowered for this module only."""
    built = {}
    real_build = app.build

    def build(args):
        engine, demo = real_build(args)
        built["demo"] = demo
        return engine, demo

    with mock.patch.object(http_guard, "MAX_SESSIONS", SESSIONS), mock.patch.object(app, "build", build), \
            running_app(preload=False) as (url, engine):
        yield url, built["demo"]


def post(url: str, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def call(url: str, endpoint: str, data: list) -> tuple[str, dict | None]:
    """A REST call the way curl makes one: (last SSE event, its payload)."""
    status, answer = post(f"{url}gradio_api/call/{endpoint}", json.dumps({"data": data}).encode())
    assert status == 200, answer
    with urllib.request.urlopen(f"{url}gradio_api/call/{endpoint}/{answer['event_id']}", timeout=60) as response:
        lines = response.read().decode("utf-8").splitlines()
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    payloads = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    return events[-1], json.loads(payloads[-1])


def defaults(client: Client, endpoint: str) -> list:
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"][f"/{endpoint}"]["parameters"]
    return [p["parameter_default"] for p in parameters]


# ----- bodies, uploads, endpoints ---------------------------------------------------------------


def test_a_400_mb_body_is_refused_with_413_and_a_sentence_before_it_is_read(server):
    head = (b"POST /gradio_api/call/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: 400000000\r\n\r\n")
    answer, seconds = raw_response(server[0], head, [b"{" * 65536])
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request body is larger than this server accepts" in answer
    assert seconds < 2, f"refused after {seconds:.1f} s"


def test_a_chunked_body_is_counted_and_refused_once_it_passes_the_cap_while_small_ones_still_work(server):
    url = server[0]
    head = (b"POST /gradio_api/call/classify HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    piece = b" " * 65536
    chunks = [b"%x\r\n" % len(piece) + piece + b"\r\n"] * (http_guard.MAX_BODY_BYTES // len(piece) + 2)
    answer, seconds = raw_response(url, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert seconds < 5, f"refused after {seconds:.1f} s"
    body = json.dumps({"data": ["Aspirin", "bundled-hoc"]}).encode()
    answer, _ = raw_response(url, head, [b"%x\r\n" % len(body) + body + b"\r\n", b"0\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 200") and b"event_id" in answer, answer[:300]


def test_uploads_are_refused_because_the_app_has_no_file_inputs(server):
    body = (b"--x\r\nContent-Disposition: form-data; name=\"files\"; filename=\"a.txt\"\r\n\r\nhello\r\n--x--\r\n")
    status, answer = post(f"{server[0]}gradio_api/upload", body, "multipart/form-data; boundary=x")
    assert status == 403 and answer == {"error": "This app takes no file uploads."}


def test_an_unknown_endpoint_event_number_or_private_ui_event_is_404_with_a_sentence(server):
    for name in ("nosuch", "export", "show_groups"):
        status, answer = post(f"{server[0]}gradio_api/call/{name}", b'{"data": []}')
        assert status == 404, (name, status, answer)
        assert answer["error"].startswith("This app has no API endpoint of that name"), answer
    unknown_event = json.dumps({"fn_index": 99_999, "data": [], "session_hash": "s" * 10}).encode()
    status, answer = post(f"{server[0]}gradio_api/queue/join", unknown_event)
    assert status == 404 and answer["error"].startswith("This app has no event of that number"), (status, answer)


# ----- bad values --------------------------------------------------------------------------------


def test_every_bad_value_gets_a_sentence_naming_its_parameter(server, client):
    url = server[0]
    generate = defaults(client, "generate")
    generate[0] = "Aspirin"

    def with_value(index, value):
        data = list(generate)
        data[index] = value
        return data

    cases = [
        ("generate", with_value(4, float("nan")), "The parameter 'temperature' must be a finite number."),
        ("generate", with_value(4, float("inf")), "The parameter 'temperature' must be a finite number."),
        ("generate", with_value(2, "8"), "The parameter 'max_new_tokens' must be a number."),
        ("generate", with_value(2, [8]), "The parameter 'max_new_tokens' must be a number."),
        ("zero_shot", ["text", ["a", "b"], "{text} is {label}", "bundled", True],
         "The parameter 'candidates' must be text (a string)."),
        ("classify", [], "/classify takes 2 values (text, model) and 0 were sent"),
    ]
    for endpoint, data, sentence in cases:
        status, answer = post(f"{url}gradio_api/call/{endpoint}", json.dumps({"data": data}, allow_nan=True).encode())
        assert status == 200, answer
        with urllib.request.urlopen(f"{url}gradio_api/call/{endpoint}/{answer['event_id']}", timeout=60) as response:
            text = response.read().decode("utf-8")
        assert "event: error" in text and sentence in text, (endpoint, data, text)


def test_a_body_with_a_missing_argument_is_not_echoed_into_the_log(server, capfd):
    marker = "ECHO" * 250_000  # a 1 MB argument
    capfd.readouterr()
    event, payload = call(server[0], "generate", [marker])
    assert event == "error" and "/generate takes 16 values" in payload["error"]
    assert marker not in payload["error"]
    out, err = capfd.readouterr()
    assert "ECHOECHO" not in out + err and len(out + err) < 20_000, f"{len(out + err):,} characters logged"


def test_an_error_quoting_a_long_input_is_shortened_and_not_logged(client, capfd):
    token = "QUOTE" * 40_000  # 200,000 characters, under the body cap
    capfd.readouterr()
    with pytest.raises(AppError) as error:
        client.predict("Naloxone reverses the effect of clonidine.", "Token links", token=token, api_name="/attention")
    message = error.value.message
    assert len(message) <= 450 and "is not a token of this text" in message, message[:600]
    out, err = capfd.readouterr()
    assert "QUOTEQUOTE" * 50 not in out + err and len(out + err) < 20_000, f"{len(out + err):,} characters logged"


# ----- sessions, exports -------------------------------------------------------------------------


def test_sessions_are_bounded_however_many_rest_calls_come(server):
    url, demo = server
    assert http_guard.MAX_SESSIONS <= 1000  # about 0.3 MB each: the default keeps at most ~150 MB
    for _ in range(SESSIONS + 16):  # each REST call is a new session, even when its input is refused
        event, _ = call(url, "classify", ["   ", "bundled-hoc"])
        assert event == "error"
    assert len(demo.server_app.state_holder.session_data) <= SESSIONS


def test_attention_exports_live_in_one_bounded_folder(tmp_path, monkeypatch):
    from ui.attention_tab import ViewResult, write_downloads

    monkeypatch.setattr(views, "ATTENTION_EXPORT_DIR", tmp_path / "exports")
    before = set(Path(tempfile.gettempdir()).glob("biogpt-attention-*"))
    result = ViewResult(None, "", "", lambda: {"columns": ["a", "b"], "rows": [[1, 2]], "meta": {}})
    paths = [write_downloads(result, "Heatmap") for _ in range(views.MAX_ATTENTION_EXPORTS + 8)]
    assert set(Path(tempfile.gettempdir()).glob("biogpt-attention-*")) == before
    folders = list((tmp_path / "exports").iterdir())
    assert len(folders) == views.MAX_ATTENTION_EXPORTS
    assert all(Path(p).is_file() for p in paths[-1])  # the newest export is intact
    assert not Path(paths[0][0]).exists()  # the oldest is gone


# ----- a busy port -------------------------------------------------------------------------------


def test_a_second_app_on_a_busy_port_says_to_choose_another_with_port_and_shows_no_traceback():
    port = free_port()
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", port))
        holder.listen()
        done = subprocess.run([sys.executable, "app.py", "--port", str(port), "--no-preload"], cwd=REPO,
                              capture_output=True, text=True, timeout=180)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr and "GRADIO_SERVER_PORT" not in done.stderr, done.stderr
    assert f"Port {port} on 127.0.0.1 is already in use" in done.stderr and "--port" in done.stderr, done.stderr


# ----- visitor markup ----------------------------------------------------------------------------


def test_markup_in_labels_and_errors_comes_back_escaped_over_the_api(client):
    labels, plot, info = client.predict("Aspirin relieves headache.", f"{LINK_LABEL}, an infection",
                                        api_name="/zero_shot")
    figure = json.loads(plot["plot"])
    y = figure["data"][0]["y"]
    assert "&lt;a href=\"https://example.org\"&gt;x&lt;/a&gt;&lt;b&gt;bold&lt;/b&gt;" in y, y
    assert not any("<" in label for label in y)
    with pytest.raises(AppError) as error:
        client.predict("Naloxone reverses the effect of clonidine.", "Token links", token=IMG_TOKEN,
                       api_name="/attention")
    assert "&lt;img src=x" in error.value.message and "<img" not in error.value.message


@pytest.mark.browser  # Chromium too
def test_a_visitors_markup_shows_as_text_in_the_plot_and_in_error_toasts_in_chromium(server):
    with chromium_page(server[0]) as page:
        page.get_by_role("tab", name="Classify", exact=True).click()
        page.get_by_role("tab", name="Zero-shot", exact=True).click()
        page.fill("#zs-text textarea", "Aspirin relieves headache.")
        page.fill("#zs-labels textarea, #zs-labels input", f"{LINK_LABEL}, an infection")
        page.click("#zs-run")
        page.wait_for_selector("#zs-chart .js-plotly-plot .bars .point", timeout=60_000)
        plot = page.locator("#zs-chart .js-plotly-plot")
        # (the modebar's buttons are <a> elements too: look inside the drawing and for the link itself)
        assert plot.locator("svg a, [href*='example.org']").count() == 0
        assert plot.locator("tspan[style*=bold]").count() == 0
        ticks = plot.locator(".ytick text").all_text_contents()
        assert LINK_LABEL in ticks, ticks

        page.get_by_role("tab", name="Attention", exact=True).click()
        page.locator("#attention-view").get_by_label("Token links", exact=True).check()
        page.wait_for_selector("#attention-token input, #attention-token textarea", timeout=60_000)
        page.wait_for_selector("#attention-plot .js-plotly-plot", timeout=60_000)
        box = "#attention-token input, #attention-token textarea"
        page.fill(box, IMG_TOKEN)
        page.press(box, "Enter")
        toast = page.wait_for_selector("[data-testid=toast-body]", timeout=30_000)
        assert IMG_TOKEN in toast.inner_text(), toast.inner_text()
        assert page.locator("[data-testid=toast-body] img").count() == 0
        assert page.evaluate("window.__pwned") is None


def test_seeds_over_the_api_are_used_exactly_or_refused_with_their_range(client):
    """The seed box sends what was typed (no rounding of 1.5 to 2); the engine takes exactly the
    32-bit seeds its generator uses and names that range when it refuses one."""
    for seed in (1.5, 2**32, float(2**53 + 2)):
        with pytest.raises(AppError, match="seed .*0 to 4,294,967,295"):
            client.predict("Aspirin is", api_name="/generate", mode="sampling", seed=seed, max_new_tokens=2)
    for seed in (0, 2**32 - 1):
        info = client.predict("Aspirin is", api_name="/generate", mode="sampling", seed=seed, max_new_tokens=2)[2]
        assert f"{seed}" in info.replace(",", "")
