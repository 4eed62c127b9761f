"""The Attention tab in a real browser (Debian's Chromium through Playwright): analyse a sentence,
switch layer and head and see the plot change, then open the overview, the logit lens and the
ablation view. Screenshots go to tests/artifacts/attention-*.png; the console must stay clean."""

from __future__ import annotations

import time

import pytest

from tests.helpers import artifacts_dir, chromium_page, offline_page

TEXT = "Naloxone reverses the antihypertensive effect of clonidine."
PLOT = "#attention-plot .js-plotly-plot"


@pytest.fixture(scope="module")
def page(attention_server):
    url, _ = attention_server
    with chromium_page(url) as page:
        page.get_by_role("tab", name="Attention", exact=True).click()
        page.wait_for_selector("#attention-text textarea")
        yield page


def plot_state(page) -> dict:
    """The figure the browser draws: its title, first trace's type and a fingerprint of its data."""
    return page.evaluate(
        """(selector) => {
            const el = document.querySelector(selector);
            if (!el || !el.data) return null;
            const trace = el._fullData[0];  // decoded: el.data keeps plotly's base64 typed arrays
            const values = trace.z || trace.x || [];
            const flat = Array.from(values, row => (row && row.length !== undefined) ? Array.from(row) : [row]).flat();
            // Rows of attention all sum to 1, so fingerprint the data by position too.
            const print = flat.reduce((a, v, i) => (typeof v === 'number' && isFinite(v)) ? a + v * (i % 97) : a, 0);
            return {title: el.layout.title.text, type: trace.type, traces: el.data.length,
                    count: flat.length, print: print};
        }""",
        PLOT,
    )


def wait_for_title(page, fragment: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        state = plot_state(page)
        if state and fragment in state["title"]:
            time.sleep(0.3)  # let plotly finish drawing before a screenshot
            return state
        time.sleep(0.1)
    raise AssertionError(f"the plot title never showed {fragment!r}; last state: {state}")


def set_slider(page, elem_id: str, value: int) -> None:
    box = f"#{elem_id} input[type=number]"
    page.fill(box, str(value))
    page.press(box, "Enter")


def choose_view(page, name: str) -> None:
    page.locator("#attention-view").get_by_label(name, exact=True).check()


def shot(page, name: str) -> None:
    page.screenshot(path=str(artifacts_dir() / f"attention-{name}.png"), full_page=True)


def test_the_attention_tab_in_chromium(page):
    page.fill("#attention-text textarea", TEXT)
    page.click("#attention-analyse")
    first = wait_for_title(page, "Layer 1, head 1")
    summary = page.inner_text("#attention-summary")
    assert "tokens" in summary and "layers" in summary
    tokens = int(summary.split(" tokens")[0].replace(",", ""))
    assert first["type"] == "heatmap" and first["count"] == tokens * tokens
    shot(page, "heatmap-layer1-head1")

    set_slider(page, "attention-layer", 2)
    second = wait_for_title(page, "Layer 2, head 1")
    set_slider(page, "attention-head", 3)
    third = wait_for_title(page, "Layer 2, head 3")
    assert len({round(s["print"], 4) for s in (first, second, third)}) == 3, "each head should draw its own weights"
    assert "from the cache" in page.inner_text("#attention-summary")
    shot(page, "heatmap-layer2-head3")

    page.locator("#attention-aggregate").get_by_label("Rollout up to this layer").check()
    wait_for_title(page, "rollout through layer 2")
    page.locator("#attention-aggregate").get_by_label("One head").check()
    wait_for_title(page, "Layer 2, head 3")

    choose_view(page, "Overview")
    overview = wait_for_title(page, "of every head")
    assert overview["type"] == "heatmap"
    assert "Every cell is one attention head" in page.inner_text("#attention-explanation")
    shot(page, "overview")

    choose_view(page, "Token links")
    wait_for_title(page, "attends to: strongest links in layer 2, head 3")
    shot(page, "token-links")

    choose_view(page, "Hidden states")
    hidden = wait_for_title(page, "Hidden states")
    assert hidden["traces"] == 6  # the norm map and five traced tokens
    shot(page, "hidden-states")

    choose_view(page, "Generation replay")
    wait_for_title(page, "Step 1 of")
    set_slider(page, "attention-step", 4)
    wait_for_title(page, "Step 4 of")
    shot(page, "generation-replay")

    choose_view(page, "Logit lens")
    lens = wait_for_title(page, "Logit lens")
    assert lens["traces"] == 1
    page.fill("#attention-watch textarea", "blood, the")
    page.press("#attention-watch textarea", "Enter")
    deadline = time.monotonic() + 30
    while plot_state(page)["traces"] != 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert plot_state(page)["traces"] == 3, "the watch list adds one line per word"
    time.sleep(0.3)
    shot(page, "logit-lens")

    choose_view(page, "Ablation")
    ablation = wait_for_title(page, "without L2H3")
    assert ablation["type"] == "bar"
    page.fill("#attention-heads-off textarea", "1.*")
    page.press("#attention-heads-off textarea", "Enter")
    wait_for_title(page, "without L1 (all heads)")
    shot(page, "ablation")

    page.click("#attention-download")
    page.wait_for_selector("#attention-files a", timeout=30_000)
    names = page.locator("#attention-files").inner_text().replace("\n", "")
    assert "attention-ablation.csv" in names and "attention-ablation.json" in names

    assert page.locator("[data-testid=toast-body]").count() == 0
    assert page.console_errors == [], page.console_errors


def test_the_attention_report_holds_the_view_on_screen_and_renders_offline(page, tmp_path):
    """Download report: one HTML file with the view on screen (the ablation left by the test above), the chosen
    head's heatmap and the overview, their explanations and settings; it draws with the network blocked."""
    page.click("#attention-report")
    link = page.locator("#attention-files a[download='attention-report.html']")
    link.wait_for(timeout=60_000)
    with page.expect_download() as download:
        link.click()
    report = tmp_path / "report.html"
    download.value.save_as(report)
    html = report.read_text(encoding="utf-8")
    assert html.index("<h2>Ablation") < html.index("<h2>Heatmap") < html.index("<h2>Overview")
    assert "heads_off" in html and TEXT in html
    with offline_page(page.context, report) as (offline, blocked, errors):
        offline.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 3", timeout=60_000)
        assert offline.locator(".js-plotly-plot").count() == 3
        offline.screenshot(path=str(artifacts_dir() / "attention-report-offline.png"))
    assert not blocked and not errors, (blocked, errors)
    assert page.console_errors == [], page.console_errors
