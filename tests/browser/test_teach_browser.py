"""The Teach tab in a real browser (Debian's Chromium through Playwright, issue 16): follow a lesson in one
click, score the heads and open one from the table, compare aspirin with ibuprofen (two heatmaps, their
difference and the alignment sentence), and open the downloaded report with the network blocked: its plots
render from the inlined plotly.js, with a PNG and an SVG camera. The console must stay clean."""

from __future__ import annotations

import time

import pytest

from tests.browser.test_every_user import axe_serious
from tests.helpers import CHROMIUM, CHROMIUM_FLAGS, artifacts_dir, copied_link, offline_page



@pytest.fixture(scope="module")
def browser():
    """One Chromium for the module; each test context of it starts empty (no storage, no cookies)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield chromium
        chromium.close()


def open_page(browser, url: str):
    page = browser.new_context(viewport={"width": 1360, "height": 1000}).new_page()
    page.console_errors = []
    page.on("console", lambda message: message.type == "error" and page.console_errors.append(message.text))
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    page.goto(url)
    return page


@pytest.fixture(scope="module")
def page(attention_server, browser):
    page = open_page(browser, attention_server[0])
    page.get_by_role("tab", name="Teach", exact=True).click()
    page.wait_for_selector("#teach-text textarea")
    yield page
    page.context.close()


def plot_title(page, elem_id: str) -> str | None:
    return page.evaluate(
        """(selector) => { const el = document.querySelector(selector);
                           return el && el.layout && el.layout.title ? el.layout.title.text : null; }""",
        f"#{elem_id} .js-plotly-plot",
    )


def wait_for_title(page, elem_id: str, fragment: str, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    title = None
    while time.monotonic() < deadline:
        title = plot_title(page, elem_id)
        if title and fragment in title:
            return title
        time.sleep(0.1)
    raise AssertionError(f"#{elem_id} never showed {fragment!r}; last title: {title!r}")


def test_a_lesson_opens_its_view_in_one_click(page):
    page.get_by_label("1. The attention formula on one real row").check()
    wait_for_title(page, "teach-lesson-plot", "Layer 1, head 1")
    page.wait_for_function("document.querySelector('#teach-lesson-text').innerText.includes('d = 32')")
    explanation = page.inner_text("#teach-lesson-text")
    assert "Question for students" in explanation and "clonidine" in explanation
    table = page.inner_text("#teach-lesson-table")
    assert "weight" in table and "clonidine" in table
    assert page.input_value("#teach-text textarea").startswith("Naloxone reverses")
    page.screenshot(path=str(artifacts_dir() / "teach-lesson.png"), full_page=True)


def test_head_roles_table_opens_a_head_in_the_heatmap(page):
    page.get_by_text("Head roles", exact=True).click()
    page.click("#teach-roles-run")
    wait_for_title(page, "teach-roles-plot", "Previous-token score")
    cell = "#teach-roles-table [data-testid=cell-0-{}]"  # gradio's grid cells, row 0 = the strongest head
    page.locator(cell.format(2)).wait_for()
    layer, head = (page.inner_text(cell.format(column)).strip() for column in (0, 1))
    page.click(cell.format(2))
    wait_for_title(page, "teach-head-plot", f"Layer {layer}, head {head}")


def test_compare_two_texts_side_by_side(page):
    page.get_by_text("Side by side", exact=True).click()
    page.get_by_text("Aspirin inhibits platelet").first.click()  # the example fills both texts
    page.wait_for_function("document.querySelector('#teach-other-text textarea').value.startsWith('Ibuprofen')")
    page.click("#teach-compare-run")
    wait_for_title(page, "teach-plot-a", "Text A")
    wait_for_title(page, "teach-plot-b", "Text B")
    wait_for_title(page, "teach-plot-difference", "attention A − B")
    page.wait_for_function("document.querySelector('#teach-alignment textarea').value.includes('compared')")
    alignment = page.input_value("#teach-alignment textarea")
    assert "Aspirin" in alignment or "Ibuprofen" in alignment or "Ibu" in alignment, alignment
    page.screenshot(path=str(artifacts_dir() / "teach-compare.png"), full_page=True)
    page.get_by_text("Glossary", exact=True).click()
    page.get_by_text("q · k / sqrt(d)").first.wait_for()
    assert not axe_serious(page)  # every panel open, filled: no serious accessibility violation


def test_a_shared_link_reopens_the_lesson_and_the_comparison_in_a_fresh_browser(page, browser):
    page.wait_for_function("window.location.search.includes('lesson=formula') && "
                           "window.location.search.includes('other_text=Ibuprofen')")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    link = copied_link(page, "#teach-copy-link")
    assert "tab=teach" in link and "Aspirin" not in link.split("other_text")[1]  # only what was typed or chosen
    fresh = open_page(browser, link)  # a fresh browser context: nothing but the link
    try:
        wait_for_title(fresh, "teach-lesson-plot", "Layer 1, head 1")
        wait_for_title(fresh, "teach-plot-difference", "attention A − B")
        assert fresh.input_value("#teach-alignment textarea") == page.input_value("#teach-alignment textarea")
        assert fresh.input_value("#teach-text textarea") == page.input_value("#teach-text textarea")
        fresh.screenshot(path=str(artifacts_dir() / "teach-shared-link.png"), full_page=True)
        assert not fresh.console_errors, fresh.console_errors
        fresh.goto(link.split("?")[0] + "?tab=teach&layer=two")
        fresh.get_by_text("The link's layer must be a whole number, not 'two'.").wait_for()
    finally:
        fresh.context.close()


def test_the_downloaded_report_renders_offline(page, tmp_path):
    page.click("#teach-report")
    link = page.locator("#teach-report-file a").first
    link.wait_for(timeout=60_000)
    with page.expect_download() as download:
        link.click()
    report = tmp_path / "report.html"
    download.value.save_as(report)
    assert report.stat().st_size > 3_000_000  # plotly.js is inside

    with offline_page(page.context, report) as (offline, blocked, errors):  # every other request is aborted
        offline.wait_for_function("document.querySelectorAll('.js-plotly-plot .main-svg').length >= 4", timeout=60_000)
        plots = offline.locator(".js-plotly-plot")
        assert plots.count() >= 4  # the lesson, the head roles, and compare's A, B and A − B
        plots.first.hover()
        assert offline.locator(".modebar-btn[data-title='Download plot as a PNG']").count() >= 1
        assert offline.locator(".modebar-btn[data-title='Download plot as SVG']").count() >= 1
        offline.screenshot(path=str(artifacts_dir() / "teach-report-offline.png"))
    assert not blocked and not errors, (blocked, errors)
    assert not page.console_errors, page.console_errors


def test_the_glossary_is_reachable_from_every_attention_view(page):
    page.get_by_role("tab", name="Attention", exact=True).click()
    for view in ("Heatmap", "Logit lens", "Ablation"):
        page.locator("#attention-view").get_by_label(view, exact=True).check()
        glossary = page.locator("#attention-glossary")
        assert glossary.is_visible()
    glossary.get_by_text("Glossary: query, key, value").click()
    glossary.get_by_text("q · k / sqrt(d)").first.wait_for()
    assert not page.console_errors, page.console_errors
