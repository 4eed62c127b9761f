"""Issue 15 in a real browser: the app is honest about its model, shows what happened, and works by
keyboard, with a screen reader's names and on a phone. Desktop 1400x1000 and phone 390x844, light
and dark; an axe-core scan (axe-playwright-python bundles it) must find no serious violation.
Screenshots go to tests/artifacts/every-user-*.png.

One app and one desktop page for the module; the phone and dark-theme checks reload that page.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from pathlib import Path

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from testkit.app_server import EXAMPLES
from tests.browser.test_browser import open_tab
from tests.helpers import artifacts_dir, chromium_page

DESKTOP = {"width": 1400, "height": 1000}
PHONE = {"width": 390, "height": 844}
TOKENS = "#gen-tokens .sample-text span.tok"  # the legend's examples are .tok too
HOSTILE = '<img src=x onerror="window.__pwned=1"><b>bold</b> ' + "long " * 400


@pytest.fixture(scope="module")
def page(app_url):
    with chromium_page(app_url + "?__theme=light") as page:
        page.set_viewport_size(DESKTOP)
        page.wait_for_selector("#gen-prompt textarea")
        yield page


def shot(page, name: str) -> None:
    page.screenshot(path=str(artifacts_dir() / f"every-user-{name}.png"), full_page=True)


def generate(page, prompt: str, max_new_tokens: int, seed: int | None = None) -> None:
    page.fill("#gen-prompt textarea", prompt)
    page.fill("#gen-max-new-tokens input[type=number]", str(max_new_tokens))
    page.press("#gen-max-new-tokens input[type=number]", "Enter")
    if seed is not None:
        page.fill("#gen-seed input", str(seed))
        page.press("#gen-seed input", "Tab")
    page.click("#gen-run")


def wait_done(page, selector: str, fragment: str, timeout: float = 60_000) -> str:
    page.wait_for_function(
        "([s, f]) => { const e = document.querySelector(s); return e && e.innerText.includes(f); }",
        arg=[selector, fragment], timeout=timeout)
    return page.inner_text(selector)


def wait_generated(page) -> str:
    """The Generate summary once the run has ended (while streaming it says "generating…")."""
    page.wait_for_function("(() => { const t = document.querySelector('#gen-info').innerText; "
                           "return t.includes('tokens/s') && !t.includes('generating'); })()", timeout=60_000)
    return page.inner_text("#gen-info")


def table_rows(page, selector: str) -> int:
    """Rows of a Gradio table (it renders only the visible ones; the grid counts them all, header included)."""
    return int(page.get_attribute(f"{selector} [role=grid]", "aria-rowcount")) - 1


def no_error_badges(page) -> bool:
    """Gradio's red "Error" badge over an output pane (its status tracker in the error state)."""
    return page.locator("[data-testid=status-tracker] .error:visible").count() == 0


def axe_serious(page) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, options={"resultTypes": ["violations"]})
    return [f"{v['id']}: {[n['target'] for n in v['nodes'][:3]]} {v['nodes'][0].get('failureSummary', '')[:160]}"
            for v in results.response["violations"] if v["impact"] in ("serious", "critical")]


# ----- honest about the model --------------------------------------------------------------------


def test_the_bundled_model_is_named_a_demo_beside_every_result_and_alternatives_read_cleanly(page):
    assert "demo 4-layer BioGPT" in page.inner_text("#studio-header")
    assert "demo 4-layer" in page.input_value("#gen-model input")
    generate(page, "Naloxone reverses the antihypertensive effect of", 40, seed=7)
    info = wait_generated(page)
    assert "Demo model" in info and "not factual" in info and "microsoft/biogpt" in info
    tips = page.locator(TOKENS).evaluate_all("spans => spans.map(s => s.dataset.tip)")
    assert len(tips) >= 10
    for tip in tips:
        listed = re.findall(r"'([^']*)' (\d+\.\d)%", tip.split("top-5: ")[1])
        surfaces = [token for token, _ in listed]
        assert len(surfaces) == len(set(surfaces)), f"a surface listed twice: {tip}"
        assert not [t for t, p in listed if t in ("<pad>", "<unk>", "<s>") and float(p) == 0.0], tip
    # One number format: the table shows the tooltip's percentage.
    page.get_by_text("Every token: probability and top-5 alternatives").click()
    page.wait_for_function("document.querySelector('#gen-table')?.innerText.includes('top-5 alternatives\\n')")
    first_row = re.search(r"\n1\n1\n(.+)\n([\d.]+)\n", page.inner_text("#gen-table"))
    assert first_row, page.inner_text("#gen-table")[:300]
    assert tips[0].startswith(f"token 1: p={first_row.group(2)}%\n"), (first_row.groups(), tips[0])
    # PubMedQA: the example's gold answer beside the model's, on a chart of log-likelihoods.
    page.get_by_role("tab", name="PubMedQA", exact=True).click()
    page.get_by_text(EXAMPLES["pubmedqa"][0]["question"][:40]).first.click()
    # Gradio loads an example through the server: wait for the gold answer to arrive.
    page.wait_for_function("document.querySelector('#qa-gold textarea, #qa-gold input')?.value === 'yes'")
    page.click("#qa-run")
    qa_info = wait_done(page, "#qa-info", "gold answer")
    assert "gold answer: yes" in qa_info and "Demo model" in qa_info
    page.wait_for_selector("#qa-plot .js-plotly-plot")
    layout_title = page.evaluate("document.querySelector('#qa-plot .js-plotly-plot').layout.title.text")
    assert "not a probability" in layout_title and "not trained for PubMedQA" in layout_title
    bar_texts = page.locator("#qa-plot .bartext").evaluate_all("texts => texts.map(t => t.textContent)")
    assert bar_texts and not any(text.endswith("%") for text in bar_texts), bar_texts
    assert "yes (gold)" in page.locator("#qa-plot .ytick").evaluate_all("ticks => ticks.map(t => t.textContent)")
    no_softmax_on_the_page(page)
    shot(page, "pubmedqa-gold-desktop")
    page.get_by_role("tab", name="Free text", exact=True).click()
    # On a desktop the settings stay beside the prompt (the phone's order is CSS for narrow screens only).
    prompt, preset = page.locator("#gen-prompt").bounding_box(), page.locator("#gen-preset").bounding_box()
    assert preset["x"] >= prompt["x"] + prompt["width"] and preset["y"] < prompt["y"] + prompt["height"], (prompt, preset)


def no_softmax_on_the_page(page) -> None:
    """PubMedQA's softmax read "100%" for an uninformed choice: it is the API's only (tests/api checks it)."""
    assert not page.locator("#qa-answer").is_visible()
    panel = page.locator("#qa-plot").locator("xpath=ancestor::div[contains(@class, 'tabitem')][1]").inner_text()
    assert "%" not in panel, panel


# ----- consistent on screen ----------------------------------------------------------------------


def test_the_preset_shows_custom_once_a_control_is_edited_and_can_be_chosen_again(page):
    page.locator("#gen-preset label", has_text="beam search").click()
    # The preset sets the controls through the server: wait for it, as for every other change here.
    page.wait_for_function("document.querySelector(\"#gen-mode input[value='beam search']\").checked")
    page.locator("#gen-mode label", has_text="greedy").click()
    page.wait_for_function("document.querySelector('#gen-preset input[value=custom]').checked")
    page.locator("#gen-preset label", has_text="balanced").click()
    page.wait_for_function("document.querySelector('#gen-mode input[value=sampling]').checked")
    assert page.locator("#gen-preset input[value=balanced]").is_checked()


def test_after_stop_every_pane_describes_what_was_generated_with_its_seed(page):
    generate(page, "Aspirin is used to", 500, seed=123)
    # This run's own tokens (the pane shows the previous result until the first repaint).
    page.wait_for_function("document.querySelector('#gen-info').innerText.includes('generating') && "
                           "document.querySelectorAll('#gen-tokens .sample-text span.tok').length >= 5", timeout=30_000)
    page.click("#gen-stop")
    info = wait_done(page, "#gen-info", "Stopped by you", timeout=15_000)
    assert "seed=123" in info and "generating" not in info
    card = page.inner_text("#gen-tokens .sample-head")
    assert "stopped by you" in card and "generating" not in card
    shown = page.inner_text("#gen-tokens .sample-text")
    page.get_by_text("Plain text, to copy").click()
    page.wait_for_function("document.querySelector('#gen-output textarea')?.value.trim().length > 0")
    copied = page.input_value("#gen-output textarea")
    assert shown.endswith(copied.strip()[-20:])
    rows = table_rows(page, "#gen-table")
    assert rows == page.locator(TOKENS).count() or rows >= 5
    shot(page, "generate-stopped-desktop")

    # Beam search shows its text only at the end: Stop before then says nothing was generated and
    # shows no old text under that sentence.
    page.locator("#gen-preset label", has_text="beam search").click()
    page.fill("#gen-max-new-tokens input[type=number]", "512")
    page.press("#gen-max-new-tokens input[type=number]", "Enter")
    page.click("#gen-run")
    time.sleep(1.0)
    page.click("#gen-stop")
    info = wait_done(page, "#gen-info", "Stopped before any text was generated", timeout=15_000)
    assert page.locator(TOKENS).count() == 0
    page.locator("#gen-preset label", has_text="balanced").click()


def test_ner_rereads_on_a_new_aggregation_and_exports_say_what_produced_them(page):
    open_tab(page, "NER")
    page.fill("#ner-text textarea", EXAMPLES["ner"][0]["text"])
    page.click("#ner-run")
    wait_done(page, "#ner-info", "tokens read")
    page.locator("#ner-aggregation label", has_text="first").click()
    wait_done(page, "#ner-info", "by their first")
    link = page.locator("#ner-json-file a[download]").first
    link.wait_for()
    name = link.get_attribute("download")
    assert re.fullmatch(r"\s*ner-bundled-ner-\d{4}-\d\d-\d\dT\d{6}\.json\s*", name), name
    with page.expect_download() as download:
        link.click()
    exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert exported["settings"]["aggregation"] == "first"
    page.locator("#ner-aggregation label", has_text="auto").click()
    wait_done(page, "#ner-info", "by their last")
    shot(page, "ner-desktop")


def settled(page, selector: str) -> None:
    """Wait until gradio's progress timer ("0.1s", or "processing | 0.2/0.2s" while queued) has left the pane,
    so its text is the result's."""
    page.wait_for_function(
        "(s) => !document.querySelector(`${s} .progress-text, ${s} .eta-bar`)"
        " && !/^(processing \\| )?\\d+(\\.\\d+)?(\\/\\d+(\\.\\d+)?)?s/.test(document.querySelector(s).innerText)",
        arg=selector)


def test_an_error_is_shown_once_and_the_previous_result_stays_marked_as_previous(page, app_url, capfd, caplog):
    open_tab(page, "NER")
    page.fill("#ner-text textarea", EXAMPLES["ner"][0]["text"])
    page.click("#ner-run")
    page.wait_for_function("document.querySelector('#ner-highlighted').innerText.includes('Naloxone')")
    settled(page, "#ner-highlighted")
    before = page.inner_text("#ner-highlighted")
    page.fill("#ner-text textarea", "   ")
    page.click("#ner-run")
    toast = page.wait_for_selector("[data-testid=toast-body]", timeout=10_000)
    assert "empty" in toast.inner_text()
    note = wait_done(page, "#ner-status", "previous run")
    assert "Not updated" in note
    settled(page, "#ner-highlighted")
    assert page.inner_text("#ner-highlighted") == before and no_error_badges(page)
    shot(page, "ner-error-desktop")
    page.click("[data-testid=toast-close]")
    # The API still answers the same sentence as an AppError; the server logs one line, no traceback.
    client = Client(app_url, verbose=False)
    capfd.readouterr()
    caplog.clear()
    with pytest.raises(AppError, match="empty"):
        client.predict("   ", api_name="/ner")
    printed = "".join(capfd.readouterr())
    refused = [r for r in caplog.records if "Refused a request" in r.getMessage()]
    assert len(refused) == 1 and refused[0].exc_info is None and "empty" in refused[0].getMessage()
    assert "Traceback" not in printed + caplog.text, (printed + caplog.text)[-2000:]
    # The next good run clears the note.
    page.fill("#ner-text textarea", EXAMPLES["ner"][1]["text"])
    page.click("#ner-run")
    page.wait_for_function("!document.querySelector('#ner-status').innerText.includes('Not updated')")


def test_classify_has_exports_named_for_task_model_and_time_and_a_table_of_every_label(page):
    open_tab(page, "Classify")
    page.fill("#cls-text textarea", EXAMPLES["classify"][3]["text"])
    page.click("#cls-run")
    page.wait_for_function("(s) => document.querySelector(s).getAttribute('aria-rowcount') === '11'",
                           arg="#cls-table [role=grid]", timeout=30_000)
    name = page.locator("#cls-csv-file a[download]").get_attribute("download")
    assert re.fullmatch(r"classify-bundled-hoc-\d{4}-\d\d-\d\dT\d{6}\.csv", name), name
    assert "Demo model" in page.inner_text("#cls-info")
    shot(page, "classify-desktop")
    page.get_by_role("tab", name="Zero-shot", exact=True).click()
    example = EXAMPLES["zero_shot"][0]
    page.fill("#zs-text textarea", example["text"])
    page.click("#zs-run")
    page.wait_for_function("(s) => document.querySelector(s).getAttribute('aria-rowcount') === '4'",
                           arg="#zs-table [role=grid]", timeout=30_000)
    assert "Demo model" in page.inner_text("#zs-info")
    assert page.locator("#zs-json-file a[download]").get_attribute("download").startswith("zero-shot-bundled-")


def test_hostile_input_shows_as_text(page):
    open_tab(page, "Generate")
    generate(page, HOSTILE, 8, seed=1)
    wait_generated(page)
    assert "<img src=x" in page.inner_text("#gen-tokens .sample-text .prompt")
    assert page.locator("#gen-tokens .sample-text img, #gen-tokens .sample-text b").count() == 0
    assert page.evaluate("window.__pwned") is None


# ----- keyboard, screen reader ------------------------------------------------------------------


@contextlib.contextmanager
def fresh(page, app_url: str, theme: str):
    """The module's page reloaded in `theme` (one Playwright per module), back to desktop light after."""
    page.goto(f"{app_url}?__theme={theme}")
    page.wait_for_selector("#gen-prompt textarea")
    try:
        yield page
    finally:
        page.set_viewport_size(DESKTOP)
        page.goto(f"{app_url}?__theme=light")
        page.wait_for_selector("#gen-prompt textarea")


def outline(page, selector: str) -> tuple[str, float]:
    return page.evaluate("""(s) => { const st = getComputedStyle(document.querySelector(s));
                           return [st.outlineStyle, parseFloat(st.outlineWidth)]; }""", selector)


def test_keyboard_focus_is_visible_radio_groups_are_one_stop_and_tokens_open_their_details(page):
    open_tab(page, "Generate")
    page.click("#gen-run")  # a token row to focus later (the hostile prompt's run)
    wait_generated(page)
    # Focus visible: prompt, a radio option, a slider.
    for selector in ("#gen-prompt textarea", "#gen-max-new-tokens input[type=range]"):
        page.focus(selector)
        page.keyboard.press("Shift+Tab")
        page.keyboard.press("Tab")
        style, width = outline(page, selector)
        assert style != "none" and width >= 2, (selector, style, width)
    # Radio: the group is one Tab stop; arrow keys move the choice (and apply the preset).
    page.focus("#gen-preset input[value=balanced]")
    page.keyboard.press("Shift+Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.value") == "balanced"
    style, width = page.evaluate("""() => { const st = getComputedStyle(document.activeElement.closest('label'));
                                          return [st.outlineStyle, parseFloat(st.outlineWidth)]; }""")
    assert style != "none" and width >= 2
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.querySelector('#gen-preset input[value=creative]').checked")
    page.wait_for_function("document.querySelector('#gen-mode input[value=sampling]').checked")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.closest('#gen-preset') === null"), "Tab should leave the group"
    page.locator("#gen-preset label", has_text="balanced").click()
    # Tokens: focusable, named for screen readers, their details shown on focus.
    token = page.locator(TOKENS).first
    token.focus()
    assert token.get_attribute("tabindex") == "0" and "top-5" in token.get_attribute("aria-label")
    details = page.evaluate("getComputedStyle(document.activeElement, '::after').content")
    assert "top-5" in details
    # The model dropdown closes when focus leaves it.
    page.click("#gen-model input")
    page.wait_for_selector("#gen-model [role=listbox]", state="visible")
    page.keyboard.press("Tab")
    page.wait_for_selector("#gen-model [role=listbox]", state="detached", timeout=3_000)


def test_a_keyboard_only_walk_reaches_and_runs_every_tab(page):
    """Tab list by arrow keys and Enter; in each panel, Tab to the text box, type, Tab to the main
    action, Enter (Space on a radio option), and the result arrives."""
    walk = {
        "Generate": ("#gen-prompt textarea", "Aspirin is used to", "#gen-run", "#gen-info", "seed="),
        "NER": ("#ner-text textarea", EXAMPLES["ner"][1]["text"], "#ner-run", "#ner-info", "tokens read"),
        "Classify": ("#cls-text textarea", EXAMPLES["classify"][0]["text"], "#cls-run", "#cls-info", "Settings"),
        "Attention": (None, None, "#attention-analyse", "#attention-summary", "token"),
        # The default app offers no paper-task model: the run is refused, and the page says so.
        "Tasks": ("#tasks-text textarea", EXAMPLES["ner"][0]["text"], "#tasks-run", "#tasks-status", "Not updated"),
        "Teach": (None, None, "#teach-lesson input", "#teach-lesson-text", "Question for students"),
    }
    keys = {"Teach": "Space"}  # a lesson opens when its radio option is chosen
    inner_tabs = {"Generate": "Free text", "Classify": "Supervised"}  # opened with Enter on the way
    page.evaluate("document.querySelectorAll('#gen-prompt textarea, #ner-text textarea, #cls-text textarea, "
                  "#tasks-text textarea')"
                  ".forEach(t => { t.value = ''; t.dispatchEvent(new Event('input')); })")
    page.focus("#tab-generate-button")
    for index, (tab, (box, text, button, result, fragment)) in enumerate(walk.items()):
        if index:
            page.keyboard.press("ArrowRight")  # arrow keys move along the tab list (studio.js)
        page.wait_for_function("(t) => document.activeElement.innerText.trim() === t", arg=tab, timeout=5_000)
        page.keyboard.press("Enter")
        assert page.get_by_role("tab", name=tab, exact=True).get_attribute("aria-selected") == "true"
        for target, typed in ((box, text), (button, None)):
            if target is None:
                continue
            for _ in range(60):  # Tab along the panel to the target
                page.keyboard.press("Tab")
                if page.evaluate("(b) => document.activeElement === document.querySelector(b)", target):
                    break
                if page.evaluate("document.activeElement.innerText.trim()") == inner_tabs.get(tab):
                    page.keyboard.press("Enter")
            else:
                raise AssertionError(f"Tab never reached {target} on {tab}")
            if typed:
                page.keyboard.insert_text(typed)
        page.keyboard.press(keys.get(tab, "Enter"))
        wait_done(page, result, fragment)
        page.focus(f"#tab-{tab.lower()}-button")


# ----- accessibility scan, phone -----------------------------------------------------------------


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_axe_finds_no_serious_violation_at_either_size_in_either_theme(page, app_url, theme):
    found = {}
    with fresh(page, app_url, theme):
        for size_name, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            names = page.locator("#studio-tabs > .tab-wrapper [role=tablist] > button[role=tab]").all_inner_texts()
            for tab in [name.strip() for name in names]:  # every tab the app has, new ones included
                open_tab(page, tab)
                time.sleep(0.3)
                # A tab may draw on opening (Attention): scan once the page is idle, not mid-update (faded).
                page.wait_for_function("document.querySelectorAll('[data-testid=status-tracker]:not(.hide)')"
                                       ".length === 0", timeout=60_000)
                if tab == "Generate" and size_name == "desktop":
                    generate(page, "Naloxone reverses the", 12, seed=3)
                    wait_generated(page)
                found[f"{size_name} {tab}"] = axe_serious(page)
                shot(page, f"{tab.lower()}-{size_name}-{theme}")
    assert not any(found.values()), {k: v for k, v in found.items() if v}


def test_on_a_phone_every_tab_is_one_tap_away_and_results_fit_the_width(page, app_url):
    with fresh(page, app_url, "light"):
        page.set_viewport_size(PHONE)
        tabs = page.locator("#studio-tabs > .tab-wrapper [role=tablist] > button[role=tab]")
        assert tabs.all_inner_texts()[:4] == ["Generate", "NER", "Classify", "Attention"]
        assert page.locator("#studio-tabs > .tab-wrapper .overflow-menu button:visible").count() == 0
        for tab in tabs.all():  # each in the viewport: one tap away
            box = tab.bounding_box()
            assert box and box["width"] > 20 and 0 <= box["x"] and box["x"] + box["width"] <= PHONE["width"], box
        # The main action is on the first screen; then the main settings, the result, the other settings,
        # and the long examples list last.
        box = page.locator("#gen-run").bounding_box()
        assert box["y"] + box["height"] <= PHONE["height"], box
        generate(page, "Aspirin is used to", 6, seed=2)
        wait_generated(page)
        order = ["#gen-prompt", "#gen-run", "#gen-preset", "#gen-max-new-tokens", "#gen-tokens", "#gen-info",
                 "#gen-seed", "#gen-examples"]
        tops = [page.locator(selector).bounding_box()["y"] for selector in order]
        assert tops == sorted(tops), dict(zip(order, tops))
        shot(page, "generate-order-phone")
        page.get_by_role("tab", name="PubMedQA", exact=True).click()
        page.get_by_text(EXAMPLES["pubmedqa"][1]["question"][:40]).first.click()
        page.wait_for_function("document.querySelector('#qa-gold textarea, #qa-gold input')?.value !== ''")
        page.click("#qa-run")
        wait_done(page, "#qa-info", "gold answer")
        page.wait_for_selector("#qa-plot .js-plotly-plot .bars .point")
        no_softmax_on_the_page(page)
        chart = page.locator("#qa-plot .js-plotly-plot").bounding_box()
        assert chart["x"] >= 0 and chart["x"] + chart["width"] <= PHONE["width"], chart
        title = page.locator("#qa-plot .gtitle").bounding_box()
        assert title["x"] >= 0 and title["x"] + title["width"] <= PHONE["width"], title
        order = ["#qa-question", "#qa-run", "#qa-plot", "#qa-info", "#qa-examples"]
        tops = [page.locator(selector).bounding_box()["y"] for selector in order]
        assert tops == sorted(tops), dict(zip(order, tops))
        shot(page, "pubmedqa-phone")
        page.get_by_role("tab", name="Free text", exact=True).click()
        open_tab(page, "NER")
        page.fill("#ner-text textarea", EXAMPLES["ner"][0]["text"])
        page.click("#ner-run")
        wait_done(page, "#ner-info", "tokens read")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= PHONE["width"], f"the page scrolls sideways: {width} px"
        table = page.evaluate("(() => { const t = document.querySelector('#ner-table .table-wrap, #ner-table table'); "
                              "return [t.scrollWidth, t.clientWidth]; })()")
        assert table[0] <= table[1] + 1, f"the NER table scrolls sideways: {table}"
        shot(page, "ner-phone")
        open_tab(page, "Classify")
        page.fill("#cls-text textarea", EXAMPLES["classify"][3]["text"])
        page.click("#cls-run")
        page.wait_for_selector("#cls-chart .js-plotly-plot .bars .point")
        chart = page.locator("#cls-chart .js-plotly-plot").bounding_box()
        assert chart["x"] >= 0 and chart["x"] + chart["width"] <= PHONE["width"], chart
        bar_area = page.evaluate("document.querySelector('#cls-chart .js-plotly-plot')._fullLayout._size.w")
        assert bar_area >= 150, f"the bars get {bar_area} px"
        shot(page, "classify-phone")


def test_attention_draws_on_open_with_fixed_overview_scales_and_its_notes_under_the_plot(page):
    page.goto(page.url)  # a fresh visit: nothing analysed in this page yet
    page.wait_for_selector("#gen-prompt textarea")
    open_tab(page, "Attention")
    page.wait_for_selector("#attention-plot .js-plotly-plot", timeout=30_000)  # no click on Analyse
    plot_box = page.locator("#attention-plot").bounding_box()
    summary_box = page.locator("#attention-summary").bounding_box()
    assert summary_box["y"] >= plot_box["y"] + plot_box["height"] - 1, (plot_box, summary_box)
    assert page.locator("#attention-view").bounding_box()["y"] < plot_box["y"]
    page.locator("#attention-view label", has_text="Overview").click()
    page.wait_for_function("document.querySelector('#attention-plot .js-plotly-plot')?.layout.title.text"
                           ".includes('of every head')", timeout=30_000)
    trace = page.evaluate("(() => { const d = document.querySelector('#attention-plot .js-plotly-plot').data[0]; "
                          "return [d.zmin, d.zmax, d.colorbar.title.text]; })()")
    assert trace[0] == 0 and trace[1] > 0 and "–" in trace[2], trace
    shot(page, "attention-overview-desktop")


def long_text(tokens: int) -> str:
    """The examples' abstracts cut to `tokens` tokens (with the leading </s>): the finding's 238."""
    from biogpt.tokenizer import BioGptTokenizer
    from testkit import REPO

    tokenizer = BioGptTokenizer.from_pretrained(REPO / "assets" / "models" / "biogpt-pubmed-small")
    text = " ".join(example["text"] for example in EXAMPLES["ner"] + EXAMPLES["classify"])
    return text[: tokenizer(text, return_offsets_mapping=True)["offset_mapping"][tokens - 1][1]]


PLOT = "#attention-plot .js-plotly-plot"


def drawn(page, title_part: str) -> None:
    page.wait_for_function("(t) => document.querySelector('#attention-plot .js-plotly-plot')?.layout.title.text"
                           ".includes(t)", arg=title_part, timeout=60_000)
    time.sleep(0.3)  # plotly draws the ticks just after the layout


def test_at_238_tokens_heatmap_labels_sit_on_their_cells_and_the_logit_lens_fits_a_phone(page, app_url):
    with fresh(page, app_url, "light"):
        open_tab(page, "Attention")
        page.wait_for_selector(PLOT, timeout=30_000)
        page.fill("#attention-text textarea", long_text(238))
        page.click("#attention-analyse")
        wait_done(page, "#attention-summary", "238 tokens")
        for size_name, size in (("desktop", DESKTOP), ("phone", PHONE)):
            page.set_viewport_size(size)
            page.locator("#attention-view label", has_text="Heatmap").click()
            drawn(page, "head")
            # One heatmap trace; square cells; the same tokens labelled on both axes, each label naming the
            # cell its tick mark points at.
            axes = page.evaluate("""(s) => { const g = document.querySelector(s), fl = g._fullLayout;
                const axis = (ax, labels) => ({length: ax._length, ticks: ax.ticks,
                    vals: ax._vals.map(v => v.x), wrong: ax._vals.filter(v => v.text !== labels[v.x]).length});
                return {traces: g.data.map(d => d.type), x: axis(fl.xaxis, g.data[0].x), y: axis(fl.yaxis, g.data[0].y),
                        cells: g.data[0].x.length}; }""", PLOT)
            assert axes["traces"] == ["heatmap"] and axes["cells"] == 238, axes
            assert abs(axes["x"]["length"] - axes["y"]["length"]) < 1, axes
            assert sorted(axes["x"]["vals"]) == sorted(axes["y"]["vals"]) and len(axes["x"]["vals"]) >= 4, axes
            assert axes["x"]["wrong"] == axes["y"]["wrong"] == 0 and axes["x"]["ticks"] == "outside", axes
            if size_name == "phone":  # the square fills the plot's height: no white space under it
                page.wait_for_function("(s) => { const fl = document.querySelector(s)._fullLayout;"
                                       " return fl._size.h - fl.yaxis._length < 12; }", arg=PLOT, timeout=10_000)
            shot(page, f"attention-heatmap-238-{size_name}")
            # Logit lens: the title inside the figure, the row names left of the cells, and every cell's
            # text within its cell (on a phone the cells are too narrow and show colour only).
            page.locator("#attention-view label", has_text="Logit lens").click()
            drawn(page, "Logit lens")
            fit = page.evaluate("""(s) => { const g = document.querySelector(s), fl = g._fullLayout;
                const box = e => e.getBoundingClientRect(), plot = box(g.querySelector('.nsewdrag'));
                const cell = plot.width / g.data[0].x.length;
                const shown = [...g.querySelectorAll('.heatmap-label text')].filter(t => t.getClientRects().length);
                const title = box(g.querySelector('.gtitle')), left = box(g).left;
                return {title: [title.left - left, title.right - left],
                        width: fl.width, rowsRight: Math.max(...[...g.querySelectorAll('.ytick text')].map(t => box(t).right)),
                        plotLeft: plot.left, shown: shown.length,
                        spill: shown.filter(t => t.getComputedTextLength() > cell).map(t => t.textContent)}; }""", PLOT)
            assert 0 <= fit["title"][0] and fit["title"][1] <= fit["width"], fit
            assert fit["rowsRight"] <= fit["plotLeft"], fit
            assert not fit["spill"], fit
            assert (fit["shown"] > 0) == (size_name == "desktop"), fit
            shot(page, f"attention-logit-lens-{size_name}")
