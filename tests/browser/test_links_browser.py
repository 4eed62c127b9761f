"""Shareable links of the Generate (free text and PubMedQA), NER, Classify, Tasks and Attention tabs in Chromium
(issue 16): changing a tab's settings changes the URL; that URL opened in a fresh browser context selects the tab, fills the same
controls and shows the same result, and the server ran the tab exactly once for it (the engine's calls
are counted); a tampered, garbled or too-long link is one toast and runs nothing.

One app server for the module (with a scripted DDI model for the Tasks tab) and one Chromium."""

from __future__ import annotations

import time
from collections import Counter
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest

from testkit.app_server import KNOWN_NER_TEXT, running_app
from tests.api.paper_task_model import build_scripted_ddi_model
from tests.browser import test_teach_browser
from tests.helpers import copied_link

COUNTED = ("generate", "answer_pubmedqa", "ner", "classify", "zero_shot", "paper_task")
browser = test_teach_browser.browser  # the fixture: one Chromium for the module


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """(url, calls): the real app; `calls` counts the engine's runs of each tab's work."""
    folder = build_scripted_ddi_model(tmp_path_factory.mktemp("paper") / "scripted-ddi")
    with running_app("--allow-model", str(folder)) as (url, engine):
        calls = Counter()
        for name in COUNTED:
            def counted(*args, _name=name, _original=getattr(engine, name), **kwargs):
                calls[_name] += 1
                return _original(*args, **kwargs)
            setattr(engine, name, counted)  # the tabs call engine.<name> at request time
        yield url, calls


def open_page(browser, url: str):
    """A page in a fresh context (no storage, no cookies): nothing but the URL."""
    context = browser.new_context(viewport={"width": 1360, "height": 1000})
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    page.console_errors = []
    page.on("pageerror", lambda error: page.console_errors.append(str(error)))
    page.goto(url)
    page.wait_for_selector("#gen-prompt textarea", state="attached")  # the app is up (a link may hide Generate's prompt)
    return page


@pytest.fixture
def visit(browser):
    """Opens a URL in a fresh browser context; each is closed after the test."""
    opened = []

    def visit_url(url: str):
        opened.append(open_page(browser, url))
        return opened[-1]

    yield visit_url
    for page in opened:
        page.context.close()

def query_of(page) -> dict[str, list[str]]:
    # The address bar as the page sees it: Playwright's page.url can lag behind history.replaceState.
    return parse_qs(urlsplit(page.evaluate("window.location.href")).query)


def wait_for_query(page, **expected: str) -> None:
    """Until the address bar holds each expected key=value (the page writes it as the visitor changes things)."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        query = query_of(page)
        if all(query.get(key) == [value] for key, value in expected.items()):
            return
        time.sleep(0.1)
    raise AssertionError(f"the URL never held {expected}; it holds {query_of(page)}")


def text_when_filled(page, selector: str, timeout: float = 60) -> str:
    """The element's text once the run is done: non-empty, no progress timer or "generating", unchanged for 0.6 s."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        element = page.query_selector(selector)
        text = element.inner_text().strip() if element else ""
        busy = not text or "generating" in text or page.locator(f"{selector} .progress-text, {selector} .eta-bar").count()
        if text != last or busy:
            last, since = text, time.monotonic()
        elif time.monotonic() - since > 0.6:
            return text
        time.sleep(0.1)
    raise AssertionError(f"{selector} never settled; last text: {last!r}")


def open_link_once(visit, link: str, calls: Counter, tab: str, result_selector: str, counted: str):
    """Open `link` fresh, wait for its result; assert the tab is selected and ran exactly once."""
    before = calls.copy()
    fresh = visit(link)
    shown = text_when_filled(fresh, result_selector)
    assert fresh.get_attribute(f"button[role=tab]:text-is('{tab}')", "aria-selected") == "true"
    time.sleep(1.0)  # a second or third run would have started by now
    runs = calls - before
    assert runs == Counter({counted: 1}), runs
    assert fresh.locator("[data-testid=toast-body]").count() == 0, fresh.locator("[data-testid=toast-body]").all_inner_texts()
    return fresh, shown


def run_share_and_reopen(page, visit, calls: Counter, tab: str, prefix: str, result_selector: str, counted: str):
    """Run the tab in `page`, copy its link, open it fresh: the same result after exactly one run there."""
    page.click(f"#{prefix}-run")
    result = text_when_filled(page, result_selector)
    link = copied_link(page, f"#{prefix}-copy-link")
    assert parse_qs(urlsplit(link).query)["tab"] == [tab.lower()]
    fresh, shown = open_link_once(visit, link, calls, tab, result_selector, counted)
    assert shown == result
    return fresh, shown


def test_generate_link_reruns_the_same_seeded_sampling(server, visit):
    url, calls = server
    page = visit(url)
    page.fill("#gen-prompt textarea", "Aspirin is used to")
    page.get_by_label("creative").check()
    page.fill("#gen-max-new-tokens input[type=number]", "12")
    page.press("#gen-max-new-tokens input[type=number]", "Enter")
    page.fill("#gen-seed input", "1234")
    page.press("#gen-seed input", "Enter")
    wait_for_query(page, tab="generate", text="Aspirin is used to", preset="creative", max_new_tokens="12", seed="1234")
    assert "temperature" in query_of(page) and "mode" not in query_of(page)  # creative: 1.1; still sampling
    fresh, _ = run_share_and_reopen(page, visit, calls, "Generate", "gen", "#gen-tokens", "generate")
    assert fresh.input_value("#gen-prompt textarea") == "Aspirin is used to"
    assert fresh.input_value("#gen-seed input") == "1234"
    assert fresh.get_by_label("creative").is_checked()
    assert not fresh.console_errors, fresh.console_errors


def test_ner_link_shows_the_same_entities(server, visit):
    url, calls = server
    page = visit(url)
    page.get_by_role("tab", name="NER", exact=True).click()
    page.fill("#ner-text textarea", KNOWN_NER_TEXT)
    page.get_by_label("first").check()
    wait_for_query(page, tab="ner", text=KNOWN_NER_TEXT, aggregation="first")
    assert set(query_of(page)) == {"tab", "text", "aggregation"}  # nothing the visitor did not type or choose
    # Copy link copies this tab's state even when another tab was changed last.
    page.get_by_role("tab", name="Generate", exact=True).click()
    page.fill("#gen-prompt textarea", "Clonidine")
    wait_for_query(page, tab="generate", text="Clonidine")
    page.get_by_role("tab", name="NER", exact=True).click()
    fresh, shown = run_share_and_reopen(page, visit, calls, "NER", "ner", "#ner-highlighted", "ner")
    assert "Naloxone" in shown
    assert fresh.get_by_label("first").is_checked()


def test_classify_links_open_the_zero_shot_ranking_and_the_supervised_labels(server, visit):
    url, calls = server
    page = visit(url)
    page.get_by_role("tab", name="Classify", exact=True).click()
    page.get_by_role("tab", name="Zero-shot", exact=True).click()
    page.fill("#zs-text textarea", "Cisplatin caused hearing loss in children.")
    page.fill("#zs-labels textarea", "a drug side effect, an infection")
    wait_for_query(page, tab="classify", mode="zero-shot", zs_text="Cisplatin caused hearing loss in children.",
                   labels="a drug side effect, an infection")
    fresh, shown = run_share_and_reopen(page, visit, calls, "Classify", "zs", "#zs-label", "zero_shot")
    assert "side effect" in shown
    assert fresh.get_attribute("button[role=tab]:text-is('Zero-shot')", "aria-selected") == "true"
    # Supervised, by a link typed by hand: the HoC labels, one run.
    fresh, shown = open_link_once(visit, url + "?tab=classify&text=Tumour+cells+evade+apoptosis.", calls, "Classify",
                                  "#cls-label", "classify")
    assert fresh.input_value("#cls-text textarea") == "Tumour cells evade apoptosis."


def test_generate_link_opens_the_pubmedqa_sub_tab_and_answers_once(server, visit):
    """PubMedQA's question, context and long answer go into the Generate link with sub_tab=pubmedqa; the link
    opened fresh selects Generate and its PubMedQA sub-tab, fills them and scores the answers once (no free text)."""
    url, calls = server
    question = "Does aspirin reduce the risk of colorectal cancer?"
    context = "In a cohort of 2,000 adults, daily aspirin was followed by fewer colorectal adenomas (p < 0.01)."
    page = visit(url)
    page.get_by_role("tab", name="PubMedQA", exact=True).click()
    page.fill("#qa-question textarea", question)
    page.fill("#qa-context textarea", context)
    page.get_by_text("Long answer (optional").click()
    page.fill("#qa-long-answer textarea", "Yes, in this cohort.")
    wait_for_query(page, tab="generate", sub_tab="pubmedqa", question=question, context=context,
                   long_answer="Yes, in this cohort.")
    assert set(query_of(page)) == {"tab", "sub_tab", "question", "context", "long_answer"}
    fresh, shown = run_share_and_reopen(page, visit, calls, "Generate", "qa", "#qa-info", "answer_pubmedqa")
    assert "model's answer" in shown
    assert fresh.get_attribute("button[role=tab]:text-is('PubMedQA')", "aria-selected") == "true"
    assert fresh.input_value("#qa-question textarea") == question
    assert fresh.input_value("#qa-context textarea") == context
    fresh.get_by_text("Long answer (optional").click()  # accordions render their contents once opened
    fresh.get_by_text("Prompt sent to the model").click()
    assert fresh.input_value("#qa-long-answer textarea") == "Yes, in this cohort."
    assert "Yes, in this cohort." in fresh.input_value("#qa-prompt textarea")  # the long answer reached the engine
    assert not fresh.console_errors, fresh.console_errors


def test_tasks_link_extracts_the_same_table(server, visit):
    url, calls = server
    page = visit(url)
    page.get_by_role("tab", name="Tasks", exact=True).click()
    page.click("#tasks-task input")
    page.get_by_role("option", name="DDI drug-drug interaction").click()
    page.fill("#tasks-text textarea", "Aspirin may increase the effect of warfarin.")
    wait_for_query(page, tab="tasks", task="ddi", text="Aspirin may increase the effect of warfarin.")
    fresh, shown = run_share_and_reopen(page, visit, calls, "Tasks", "tasks", "#tasks-table", "paper_task")
    assert "aspirin" in shown


def test_attention_link_opens_the_same_view_after_one_analysis(server, visit, monkeypatch):
    """The Attention tab: text, view, layer, head (redrawn in the page) and the sink toggle go into the URL;
    the link opened fresh shows the same heatmap after one forward, with no refusal from the visitor's limits."""
    import biogpt.interpret.cache as analysis_cache

    forwards = []
    original = analysis_cache.analyze
    monkeypatch.setattr(analysis_cache, "analyze", lambda *a, **k: forwards.append(a[2]) or original(*a, **k))
    url, _ = server
    text = "Aspirin inhibits platelet aggregation in patients with coronary disease."
    page = visit(url)
    page.get_by_role("tab", name="Attention", exact=True).click()
    page.fill("#attention-text textarea", text)
    page.click("#attention-analyse")
    page.wait_for_function("(t) => document.querySelector('#attention-summary').innerText.includes('this view took')"
                           " && document.querySelector('.js-plotly-plot')", arg=text, timeout=60_000)
    for elem, value in (("#attention-layer", "3"), ("#attention-head", "2")):
        page.fill(f"{elem} input[type=number]", value)
        page.press(f"{elem} input[type=number]", "Enter")
        time.sleep(1.0)
    page.locator("#attention-hide-sink input").click()
    wait_for_query(page, tab="attention", text=text, layer="3", head="2", hide_sink="1")
    title = "Layer 3, head 2<br><span style='font-size:12px'>(first token hidden, rows renormalised)</span>"
    page.wait_for_function("(t) => document.querySelector('#attention-plot .js-plotly-plot').layout.title.text === t",
                           arg=title, timeout=30_000)
    link = copied_link(page, "#attention-copy-link")
    assert set(parse_qs(urlsplit(link).query)) == {"tab", "text", "layer", "head", "hide_sink"}

    # Opened fresh with a text the server has not analysed (a visitor's own edit of the link): one forward.
    query = parse_qs(urlsplit(link).query)
    assert query["text"] == [text]
    text = text.replace("Aspirin", "Ibuprofen")
    link = link.split("?")[0] + "?" + urlencode({**{key: values[0] for key, values in query.items()}, "text": text})
    forwards.clear()
    fresh = visit(link)
    fresh.wait_for_function("(t) => { const el = document.querySelector('#attention-plot .js-plotly-plot');"
                            " return el && el.layout.title.text === t; }", arg=title, timeout=60_000)
    assert fresh.get_attribute("button[role=tab]:text-is('Attention')", "aria-selected") == "true"
    assert fresh.input_value("#attention-text textarea") == text
    assert fresh.input_value("#attention-layer input[type=number]") == "3"
    assert fresh.locator("#attention-hide-sink input").is_checked()
    time.sleep(1.5)  # any further request of the link would have run or been refused by now
    assert forwards == [text], forwards
    assert fresh.locator("[data-testid=toast-body]").count() == 0, fresh.locator("[data-testid=toast-body]").all_inner_texts()
    assert not fresh.console_errors, fresh.console_errors


@pytest.mark.parametrize("query, sentence", [
    ("tab=ner&text=x&aggregation=%3Cb%3Ebogus%3C/b%3E", "The link's aggregation must be one of auto"),
    ("tab=classify&mode=nonsense", "The link's mode must be one of supervised, zero-shot"),
    ("tab=ner&z=%25%25notbase64", "The link's compressed text is damaged"),
    ("tab=ner&text=" + "a" * 7000, "a link holds at most 6,000"),
    ("tab=generate&text=x&seed=many", "The link's seed must be a whole number"),
    ("tab=generate&sub_tab=answers&question=x", "The link's sub_tab must be one of free-text, pubmedqa"),
])
def test_a_bad_link_is_one_toast_and_runs_nothing(server, visit, query, sentence):
    url, calls = server
    before = calls.copy()
    page = visit(f"{url}?{query}")
    toast = page.wait_for_selector("[data-testid=toast-body]", timeout=15_000)
    assert sentence in toast.inner_text()
    if "%3Cb%3E" in query:
        assert "<b>bogus</b>" in toast.inner_text()  # markup from the link shown as text
    time.sleep(0.5)
    assert page.locator("[data-testid=toast-body]").count() == 1
    assert calls == before
    assert not page.console_errors, page.console_errors
