"""Every plot is an image a screen reader can name and describe (issue 15): in each tab, once run, every visible
plotly chart has the role img, an accessible name (as Chromium computes it) that holds the figure's title, and
`aria-describedby` ids of elements on the page holding the text beside it (the summary, the table). The Attention
heatmap redrawn in the page (a head change, Plotly.update without a new Gradio value) is renamed after its new
title. An axe-core scan of the plots finds no serious violation. One page, run through every plot once."""

from __future__ import annotations

import html
import re
import time

import pytest

from testkit.app_server import EXAMPLES
from tests.helpers import artifacts_dir, chromium_page

PLOTS_BY_TAB = {
    "PubMedQA": ["qa-plot"],
    "Supervised": ["cls-chart"],
    "Zero-shot": ["zs-chart"],
    "Attention": ["attention-plot", "attribution-plot"],
    "Teach": ["teach-lesson-plot", "teach-roles-plot", "teach-head-plot", "teach-plot-a", "teach-plot-b",
              "teach-plot-difference"],
}
DRAWN = "(s) => { const el = document.querySelector(s); return !!el && !!el._fullLayout && !!el.querySelector('.gtitle'); }"


@pytest.fixture(scope="module")
def page(attention_server):
    with chromium_page(attention_server[0]) as page:
        page.set_viewport_size({"width": 1400, "height": 1000})
        page.wait_for_selector("#gen-prompt textarea")
        yield page


def figure_title(page, elem_id: str) -> str:
    """The figure's own title as words: plotly's line breaks and tags out, entities read."""
    raw = page.evaluate("(s) => document.querySelector(s).layout.title.text", f"#{elem_id} .js-plotly-plot")
    return " ".join(html.unescape(re.sub(r"<[^>]*>", " ", raw)).split())


def accessible(page, selector: str) -> dict:
    """Chromium's own accessibility node of `selector`: its role, computed name and computed description."""
    cdp = page.context.new_cdp_session(page)
    try:
        root = cdp.send("DOM.getDocument", {"depth": 0})["root"]["nodeId"]
        node = cdp.send("DOM.querySelector", {"nodeId": root, "selector": selector})["nodeId"]
        ax = cdp.send("Accessibility.getPartialAXTree", {"nodeId": node, "fetchRelatives": False})["nodes"][0]
    finally:
        cdp.detach()
    return {key: ax.get(key, {}).get("value", "") for key in ("role", "name", "description")}


def check_named_and_described(page, elem_id: str) -> str:
    """Assert the plot in `elem_id` is an image named by its title and described by text that is there; return the name."""
    page.wait_for_function(DRAWN, arg=f"#{elem_id} .js-plotly-plot", timeout=60_000)
    selector = f"#{elem_id} svg.main-svg"  # the drawing; the modebar's buttons beside it stay buttons
    title = figure_title(page, elem_id)
    node = accessible(page, selector)
    assert node["role"] in ("img", "image"), (elem_id, node)  # Chromium calls the img role "image"
    assert title and title in " ".join(node["name"].split()), (elem_id, title, node)
    ids = (page.get_attribute(selector, "aria-describedby") or "").split()
    assert ids, f"#{elem_id} has no aria-describedby"
    for described_by in ids:
        text = page.evaluate("""(id) => { const e = document.getElementById(id);
                                          if (!e) return null;
                                          const box = e.querySelector('textarea');  // a textbox holds its text as a value
                                          return (e.innerText + ' ' + (box ? box.value : '')).trim(); }""", described_by)
        assert text, f"#{elem_id} is described by #{described_by}, which is {'empty' if text == '' else 'missing'}"
    assert node["description"].strip(), (elem_id, node)
    return node["name"]


def check_tab(page, tab: str) -> None:
    """Every plot visible in the open tab is named and described, the expected ones among them (a new plot needs its
    entry here and in studio.js), and an axe-core scan of them finds no serious violation."""
    for elem_id in PLOTS_BY_TAB[tab]:
        page.wait_for_function(DRAWN, arg=f"#{elem_id} .js-plotly-plot", timeout=60_000)
    visible = page.locator(".js-plotly-plot:visible").evaluate_all(
        "plots => plots.map(p => p.closest('.block[id]').id)")
    assert set(PLOTS_BY_TAB[tab]) <= set(visible), (tab, visible)
    for elem_id in visible:
        check_named_and_described(page, elem_id)
    no_serious_violation_in_the_plots(page, visible)


def no_serious_violation_in_the_plots(page, elem_ids: list[str]) -> None:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(page, context={"include": [[f"#{i}"] for i in elem_ids]}, options={"resultTypes": ["violations"]})
    serious = [f"{v['id']}: {[n['target'] for n in v['nodes'][:3]]}" for v in results.response["violations"]
               if v["impact"] in ("serious", "critical")]
    assert not serious, serious


def open_tab(page, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def test_every_plot_is_named_by_its_title_and_described_by_the_text_beside_it(page):
    # Generate → PubMedQA: one example answered.
    open_tab(page, "PubMedQA")
    page.get_by_text(EXAMPLES["pubmedqa"][0]["question"][:40]).first.click()
    page.wait_for_function("document.querySelector('#qa-gold textarea, #qa-gold input')?.value === 'yes'")
    page.click("#qa-run")
    page.wait_for_function("document.querySelector('#qa-info').innerText.includes('gold answer')", timeout=60_000)
    check_tab(page, "PubMedQA")

    # Classify, supervised and zero-shot: one text each, every label in the table (10 and 3, a header row each).
    open_tab(page, "Classify")
    for tab, prefix, text, rows in (("Supervised", "cls", EXAMPLES["classify"][3]["text"], 11),
                                    ("Zero-shot", "zs", EXAMPLES["zero_shot"][0]["text"], 4)):
        open_tab(page, tab)
        page.fill(f"#{prefix}-text textarea", text)
        page.click(f"#{prefix}-run")
        page.wait_for_function("([s, n]) => document.querySelector(s)?.getAttribute('aria-rowcount') === n",
                               arg=[f"#{prefix}-table [role=grid]", str(rows)], timeout=60_000)
        check_tab(page, tab)

    # Attention: drawn on open; then an attribution of the default text's token 5.
    open_tab(page, "Attention")
    page.wait_for_function("document.querySelector('#attention-summary').innerText.includes('this view took')",
                           timeout=60_000)
    page.fill("#attribution-position input", "5")
    page.click("#attribution-run")
    page.wait_for_function("document.querySelector('#attribution-summary').innerText.includes('Why')", timeout=60_000)
    check_tab(page, "Attention")

    # Teach: a lesson, the head roles and one head opened from their table, two texts side by side.
    open_tab(page, "Teach")
    page.get_by_label("1. The attention formula on one real row").check()
    page.wait_for_function(DRAWN, arg="#teach-lesson-plot .js-plotly-plot", timeout=60_000)
    page.get_by_text("Head roles", exact=True).click()
    page.click("#teach-roles-run")
    page.wait_for_function(DRAWN, arg="#teach-roles-plot .js-plotly-plot", timeout=60_000)
    page.locator("#teach-roles-table [data-testid=cell-0-2]").click()
    page.get_by_text("Side by side", exact=True).click()
    page.get_by_text("Aspirin inhibits platelet").first.click()  # the example fills both texts
    page.wait_for_function("document.querySelector('#teach-other-text textarea').value.startsWith('Ibuprofen')")
    page.click("#teach-compare-run")
    page.wait_for_function("document.querySelector('#teach-alignment textarea').value.includes('compared')",
                           timeout=60_000)
    check_tab(page, "Teach")
    page.screenshot(path=str(artifacts_dir() / "plot-names-teach.png"), full_page=True)
    assert not page.console_errors, page.console_errors


def test_the_attention_plot_is_renamed_when_a_head_is_redrawn_in_the_page(page):
    open_tab(page, "Attention")
    plot = "#attention-plot .js-plotly-plot"
    page.wait_for_function(DRAWN, arg=plot, timeout=60_000)
    page.wait_for_function("document.querySelector('#attention-summary').innerText.includes('this view took')",
                           timeout=60_000)
    before = check_named_and_described(page, "attention-plot")
    old_title = figure_title(page, "attention-plot")
    head = page.evaluate("Number(document.querySelector('#attention-head input[type=number]').value)")
    raw_title = page.evaluate("(s) => document.querySelector(s).layout.title.text", plot)
    page.fill("#attention-head input[type=number]", str(head % 4 + 1))
    page.press("#attention-head input[type=number]", "Enter")
    page.wait_for_function("([s, t]) => document.querySelector(s).layout.title.text !== t", arg=[plot, raw_title],
                           timeout=30_000)
    page.wait_for_function("document.querySelector('#attention-summary').innerText.includes('redrawn in your browser')",
                           timeout=30_000)
    new_title = figure_title(page, "attention-plot")
    assert new_title != old_title
    deadline = time.monotonic() + 3  # the name follows within the redraw's own events, not a later server value
    while new_title not in " ".join(accessible(page, f"{plot} svg.main-svg")["name"].split()) and time.monotonic() < deadline:
        time.sleep(0.1)
    after = check_named_and_described(page, "attention-plot")
    assert after != before and new_title in " ".join(after.split()), (before, after)
    page.screenshot(path=str(artifacts_dir() / "plot-names-attention.png"))
