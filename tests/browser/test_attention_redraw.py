"""The Attention tab's heatmap redrawn in the page (issue 15): a head, Show (one head or the layer's mean),
the sink toggle and the threshold change the plot without asking the server, and the figure the page
draws equals, number for number, the one the server draws for the same controls (`render_view`). A layer
change asks the server for that layer alone and the page draws it; what the page cannot redraw (hiding
the sink of a pooled map, a layer the server no longer holds) goes to the server and comes back right."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

import ui.attention_tab as attention_tab
from biogpt.hub import ASSETS_DIR
from tests.helpers import artifacts_dir, chromium_page

PLOT = "#attention-plot .js-plotly-plot"
SERVER_VIEW = attention_tab.render_view  # the server's drawing, called here without being counted
SHORT = "Naloxone reverses the antihypertensive effect of clonidine in rats given a high dose of it."
FIGURE = """(selector) => {
    const el = document.querySelector(selector);
    if (!el || !el._fullData) return null;
    const z = el._fullData[0].z;
    return {title: el.layout.title.text, height: el._fullLayout.height, x: Array.from(el.data[0].x),
            y: Array.from(el.data[0].y), zmax: el.data[0].zmax, z: Array.from(z, (row) => Array.from(row))};
}"""


@pytest.fixture(scope="module")
def server(attention_server):
    return attention_server


@pytest.fixture(scope="module")
def page(server):
    url, _ = server
    with chromium_page(url) as page:
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.get_by_role("tab", name="Attention", exact=True).click()
        page.wait_for_selector(PLOT, timeout=60_000)
        yield page


class ServerSpy(list):
    """The views the server drew (every page event of the tab goes through render_view), the layers it sent the
    page after them (each heatmap drawn by the server is followed by one), and the layers the page fetched."""

    sent = 0  # layers sent after a view the server drew
    last_sent = None  # the id of the last of them, as the page will hold it
    fetched = 0  # layers the page fetched to draw them itself (the layer route; draw=True)
    held = None  # a threading.Event: the page's fetches wait for it
    forgotten = False  # answer the page's fetches as if the analysis had left the cache

    def wait_for_layer(self, page, timeout: float = 30) -> None:
        """Until the page holds the layer the server sent after the last view it drew."""
        deadline = time.monotonic() + timeout
        while self.sent < len(self) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.sent >= len(self) and self.last_sent, "the server never sent the layer after its heatmap"
        # Its way into the page: up to 2.9 MiB of JSON to send and parse on two busy cores.
        page.wait_for_function("(id) => window.__studioHeatmap?.payload?.id === id", arg=self.last_sent,
                               timeout=timeout * 1000)


@pytest.fixture
def server_views(monkeypatch):
    spy = ServerSpy()
    draw, send = attention_tab.render_view, attention_tab.redraw_data

    def counting(engine, text, controls):
        spy.append(controls)
        return draw(engine, text, controls)

    def sending(engine, text, controls, draw=False):
        if not draw:
            payload = send(engine, text, controls)
            spy.last_sent = payload["id"] if payload else None
            spy.sent += 1
            return payload
        if spy.held is not None:
            spy.held.wait(30)
        spy.fetched += 1
        return None if spy.forgotten else send(engine, text, controls, draw)

    monkeypatch.setattr(attention_tab, "render_view", counting)
    monkeypatch.setattr(attention_tab, "redraw_data", sending)
    return spy


def long_text(engine, tokens: int) -> str:
    """Training-split texts from the app's examples cut to `tokens` tokens."""
    examples = json.loads((ASSETS_DIR / "examples.json").read_text(encoding="utf-8"))
    text = " ".join(e["text"] for key in ("ner", "classify") for e in examples[key])
    tokenizer = engine.load("bundled", "generate").tokenizer
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    assert len(offsets) >= tokens
    return text[: offsets[tokens - 1][1]]


def analyse(page, text: str, spy: ServerSpy) -> None:
    drawn = len(spy)
    page.fill("#attention-text textarea", text)
    page.click("#attention-analyse")
    deadline = time.monotonic() + 60
    while len(spy) == drawn and time.monotonic() < deadline:  # the summary may still be an earlier view's
        page.wait_for_timeout(50)
    page.wait_for_function("(t) => document.querySelector('#attention-summary').innerText.includes('this view took')"
                           " && document.querySelector('#attention-text textarea').value === t", arg=text, timeout=60_000)
    spy.wait_for_layer(page)


def set_control(page, name: str, value) -> None:
    if name in ("head", "layer", "min_weight", "start"):
        elem = {"min_weight": "attention-threshold"}.get(name, f"attention-{name}")
        box = f"#{elem} input[type=number]"
        page.fill(box, str(value))
        page.press(box, "Enter")
    elif name == "hide_sink":
        box = page.locator("#attention-hide-sink input")
        if box.is_checked() != value:
            box.click()
    elif name == "aggregate":
        label = dict((key, label) for label, key in attention_tab.AGGREGATE_CHOICES)[value]
        page.locator("#attention-aggregate").get_by_label(label, exact=True).check()


def page_figure(page, before: str | None) -> dict:
    page.wait_for_function("([s, b]) => { const el = document.querySelector(s); return el && el.layout &&"
                           " JSON.stringify([el.layout.title.text, el.data[0].zmax, el.data[0].z.bdata]) !== b; }",
                           arg=[PLOT, before], timeout=30_000)
    time.sleep(0.2)
    return page.evaluate(FIGURE, PLOT)


def fingerprint(page) -> str:
    return page.evaluate("(s) => { const el = document.querySelector(s);"
                         " return JSON.stringify([el.layout.title.text, el.data[0].zmax, el.data[0].z.bdata]); }", PLOT)


def assert_same_as_server(engine, text: str, controls: attention_tab.Controls, shown: dict) -> None:
    figure = SERVER_VIEW(engine, text, controls).figure
    trace = figure.data[0]
    expected = np.asarray(trace.z, np.float32)
    got = np.array([[np.nan if v is None else v for v in row] for row in shown["z"]], np.float32)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected, equal_nan=True), np.nanmax(np.abs(got - expected))
    assert shown["title"] == figure.layout.title.text
    assert shown["x"] == list(trace.x) and shown["y"] == list(trace.y)
    assert shown["zmax"] == trace.zmax
    assert shown["height"] == figure.layout.height
    # The rest of the figure (colour bar, hover text, axes) is the payload's frame: see the test below.


def change_and_compare(page, engine, text: str, controls: attention_tab.Controls, name: str, value) -> None:
    """Change one control in the page, then compare the plot it shows with the server's figure for the same controls."""
    before = fingerprint(page)
    set_control(page, name, value)
    setattr(controls, name, value)
    assert_same_as_server(engine, text, controls, page_figure(page, before))


def summary(page) -> str:
    return page.inner_text("#attention-summary")


def test_heads_toggles_and_threshold_redraw_in_the_page_exactly_as_the_server_would(server, page, server_views):
    url, engine = server
    analyse(page, SHORT, server_views)
    controls = attention_tab.Controls(view="Heatmap", layer=1, head=1)
    drawn_by_server = len(server_views)
    steps = [("head", 3), ("aggregate", "heads"), ("hide_sink", True), ("min_weight", 0.05), ("aggregate", "head"),
             ("head", 6), ("hide_sink", False), ("min_weight", 0.125), ("min_weight", 0)]
    for name, value in steps:
        change_and_compare(page, engine, SHORT, controls, name, value)
        assert "redrawn in your browser" in summary(page)
    assert len(server_views) == drawn_by_server, "the page asked the server for a view it can redraw itself"
    page.screenshot(path=str(artifacts_dir() / "attention-redraw-short.png"))

    # Another layer: the page fetches that layer alone (no figure) from the layer route and draws it; heads stay local.
    fetched = []
    page.on("response", lambda r: r.url.endswith("/studio/attention-layer") and fetched.append(r.status))
    sent, fetched_before = server_views.sent, server_views.fetched
    for name, value in (("layer", 3), ("head", 2), ("layer", 2), ("aggregate", "heads")):
        change_and_compare(page, engine, SHORT, controls, name, value)
        assert "redrawn in your browser" in summary(page)
    assert len(server_views) == drawn_by_server, "the server drew a layer the page can draw"
    assert server_views.sent == sent and server_views.fetched == fetched_before + 2 and fetched == [200, 200]
    # A layer the server no longer holds the analysis of: the route has nothing (204), so the page asks the tab's
    # Gradio event, which draws the view on the server and then sends the layer.
    server_views.forgotten = True
    change_and_compare(page, engine, SHORT, controls, "layer", 4)
    assert len(server_views) == drawn_by_server + 1 and "this view took" in summary(page)
    assert fetched == [200, 200, 204]
    server_views.forgotten = False
    server_views.wait_for_layer(page)
    change_and_compare(page, engine, SHORT, controls, "head", 4)
    assert len(server_views) == drawn_by_server + 1
    assert not page.console_errors


def test_long_texts_redraw_windows_and_pooled_maps_and_hand_the_rest_to_the_server(server, page, server_views):
    url, engine = server
    text = long_text(engine, 290)
    for name, value in (("layer", 2), ("head", 1), ("aggregate", "head"), ("hide_sink", False), ("min_weight", 0),
                        ("start", 0)):
        set_control(page, name, value)
    analyse(page, text, server_views)
    controls = attention_tab.Controls(view="Heatmap", layer=2, head=1)
    drawn_by_server = len(server_views)

    # Pooled (290 tokens in blocks of 2): heads, the layer mean and another layer in the page, as the server pools them.
    for name, value in (("head", 4), ("aggregate", "heads"), ("layer", 3), ("aggregate", "head")):
        change_and_compare(page, engine, text, controls, name, value)
    assert len(server_views) == drawn_by_server
    # The sink is hidden before pooling, which the page cannot redo: the server draws it, then heads are local again.
    change_and_compare(page, engine, text, controls, "hide_sink", True)
    assert len(server_views) == drawn_by_server + 1
    server_views.wait_for_layer(page)
    change_and_compare(page, engine, text, controls, "head", 5)
    assert len(server_views) == drawn_by_server + 1

    # A zoom window (tokens 40-295 one a cell): the sink toggle is local too, renormalised by the whole row.
    before = fingerprint(page)
    set_control(page, "start", 40)
    controls.start = 40
    page_figure(page, before)
    server_views.wait_for_layer(page)
    for name, value in (("hide_sink", False), ("head", 7), ("hide_sink", True), ("layer", 1), ("min_weight", 0.1)):
        change_and_compare(page, engine, text, controls, name, value)
    assert len(server_views) == drawn_by_server + 2
    page.screenshot(path=str(artifacts_dir() / "attention-redraw-window.png"))
    assert not page.console_errors


def test_a_layer_that_arrives_after_a_new_text_was_drawn_is_not_drawn_over_it(server, page, server_views):
    """A layer change's fetch still on its way when the server draws a new analysis: the fetched layer, of the
    old text, is not drawn over the new one; the server draws what the controls show now."""
    url, engine = server
    for name, value in (("layer", 1), ("head", 1), ("aggregate", "head"), ("hide_sink", False), ("min_weight", 0),
                        ("start", 0)):
        set_control(page, name, value)
    analyse(page, SHORT, server_views)
    fetched = []
    page.on("response", lambda r: r.url.endswith("/studio/attention-layer") and fetched.append(r.status))
    server_views.held = threading.Event()
    try:
        set_control(page, "layer", 2)  # its layer is fetched, and held
        other = long_text(engine, 30)
        analyse(page, other, server_views)
        drawn_by_server = len(server_views)
    finally:
        server_views.held.set()
        server_views.held = None
    deadline = time.monotonic() + 30
    while (len(server_views) == drawn_by_server or not fetched) and time.monotonic() < deadline:
        page.wait_for_timeout(50)  # Playwright delivers the page's responses while it waits
    assert fetched == [200] and len(server_views) == drawn_by_server + 1, "the page did not hand the stale layer back"
    page.wait_for_function("document.querySelectorAll('#attention-plot [data-testid=status-tracker]:not(.hide)')"
                           ".length === 0 && document.querySelector('#attention-summary').innerText.includes('this view took')",
                           timeout=30_000)
    time.sleep(0.5)  # a stale layer drawn over the plot would be drawn by now
    shown = page.evaluate(FIGURE, PLOT)
    assert_same_as_server(engine, other, attention_tab.Controls(view="Heatmap", layer=2, head=1), shown)
    assert not page.console_errors


@pytest.mark.parametrize("tokens, start, hide", [(20, 0, False), (20, 0, True), (290, 0, True), (290, 40, True)])
def test_the_payloads_frame_is_the_servers_figure_less_what_a_redraw_replaces(server, tokens, start, hide):
    _, engine = server
    text = long_text(engine, tokens)
    controls = attention_tab.Controls(view="Heatmap", layer=2, head=3, hide_sink=hide, start=start)
    figure = json.loads(SERVER_VIEW(engine, text, controls).figure.to_json())
    payload = attention_tab.redraw_data(engine, text, controls)
    del figure["data"][0]["z"], figure["data"][0]["zmax"]
    figure["layout"]["title"]["text"] = ""
    assert payload["frame"] == figure  # one frame for both toggles: a hidden sink is a blank row and column
    assert payload["pooled"] == (tokens > attention_tab.HEATMAP_SIDE and start == 0)
    # float16 where exact: the heads (the analysis keeps them in float16), float32 for the layer's mean
    assert [m["dtype"] for m in payload["maps"][:-1]] == ["f2"] * (len(payload["maps"]) - 1) or payload["pooled"]
    assert payload["maps"][-1]["dtype"] == "f4"
