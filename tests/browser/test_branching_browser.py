"""Issue 17 in a real browser: branch twice from generated tokens (a click, then the keyboard),
switch between the branches, export them, and "Explain this token" into the Attention tab.
Shares the session's Attention app server; screenshots go to tests/artifacts/branching-*.png."""

from __future__ import annotations

import json
import time

import pytest

from tests.helpers import artifacts_dir, chromium_page

PROMPT = "Naloxone reverses the antihypertensive effect of"
TOKENS = "#gen-tokens .sample-text span.tok[data-tip]"


@pytest.fixture(scope="module")
def page(attention_server):
    with chromium_page(attention_server[0]) as page:  # the session's shared server
        yield page


def wait_until(page, condition, timeout: float = 60, what: str = ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def shown_text(page) -> str:
    return page.locator("#gen-tokens .sample-text").inner_text()


def branch_labels(page) -> list[str]:
    page.click("#gen-branch-select input")
    labels = [text.split("\n")[-1].strip() for text in page.locator("[role=listbox] [role=option]").all_inner_texts()]
    page.keyboard.press("Escape")
    return labels


def show_branch(page, label: str) -> None:
    page.click("#gen-branch-select input")
    page.fill("#gen-branch-select input", "")  # the list shows only the options matching what the box holds
    page.locator("[role=option]", has_text=label).click()


def continue_and_wait(page, count: int) -> None:
    page.click("#gen-branch-continue")
    wait_until(page, lambda: page.input_value("#gen-branch-select input").startswith(f"{count} ·"), what=f"branch {count}")


def test_branch_twice_switch_export_and_explain(page):
    page.wait_for_selector("#gen-prompt textarea")
    page.fill("#gen-prompt textarea", PROMPT)
    page.fill("#gen-seed input", "1234")
    page.press("#gen-seed input", "Enter")
    page.fill("#gen-max-new-tokens input[type=number]", "14")
    page.press("#gen-max-new-tokens input[type=number]", "Enter")
    page.click("#gen-run")
    wait_until(page, lambda: "tokens/s" in page.inner_text("#gen-info") and "generating" not in page.inner_text("#gen-info"),
               what="the first run")
    first = shown_text(page)

    # 1. A click on token 3 opens it; continue with its first alternative.
    page.locator(TOKENS).nth(2).click()
    wait_until(page, lambda: "Token 3 of branch 1" in page.inner_text("#gen-branch-opened"), what="token 3 opened")
    continue_and_wait(page, 2)
    second = shown_text(page)
    info = page.inner_text("#gen-info")
    assert second != first and "forced_token_ids=" in info and "sampler_rule=" in info and "seed=1234" in info

    # 2. The keyboard: focus token 6 of the branch, Enter opens it; continue again.
    token = page.locator(TOKENS).nth(5)
    token.focus()
    page.keyboard.press("Enter")
    wait_until(page, lambda: "of branch 2" in page.inner_text("#gen-branch-opened"), what="a token of branch 2 opened")
    continue_and_wait(page, 3)
    third = shown_text(page)
    labels = branch_labels(page)
    assert [label.split(" ·")[0] for label in labels] == ["1", "2", "3"] and labels[2].endswith("(from 2)")
    page.screenshot(path=str(artifacts_dir() / "branching-tree.png"), full_page=True)

    # 3. Switch back to the first run, then to branch 2: each shows its own text.
    show_branch(page, labels[0])
    wait_until(page, lambda: shown_text(page) == first, what="the first run shown again")
    show_branch(page, labels[1])
    wait_until(page, lambda: shown_text(page) == second, what="branch 2 shown again")
    assert third != second

    # 4. The export names every branch's seed and forced tokens.
    link = page.locator("#gen-branch-export a").first
    wait_until(page, lambda: link.count(), what="the export link")
    with page.expect_download() as download:
        link.click()
    exported = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert [b["branch"] for b in exported["branches"]] == [1, 2, 3]
    assert all(b["seed"] == 1234 for b in exported["branches"]) and exported["branches"][2]["parent"] == 2
    assert len(exported["branches"][2]["forced_token_ids"]) == 6

    # 5. Explain token 4 of branch 2: the Attention tab opens on the text with its attribution.
    page.fill("#gen-branch-token input", "4")
    page.press("#gen-branch-token input", "Enter")
    wait_until(page, lambda: "Token 4 of branch 2" in page.inner_text("#gen-branch-opened"), what="token 4 opened")
    opened = page.inner_text("#gen-branch-opened").split(": ", 1)[1].split(" (")[0].strip()
    page.click("#gen-explain")
    wait_until(page, lambda: page.locator("#attribution-summary").is_visible()
               and "Why" in page.inner_text("#attribution-summary"), what="the attribution")
    text = page.input_value("#attention-text textarea")
    assert text.startswith(PROMPT) and text.endswith(second.replace(PROMPT, "", 1).strip())
    summary = page.inner_text("#attribution-summary")
    assert "integrated gradients" in summary and "within the tolerance" in summary
    explained = summary.split("“", 1)[1].split("”", 1)[0]
    assert explained and (explained in opened or opened in explained), (explained, opened)  # the generated token
    assert page.locator("#attribution-text .attr-piece").count() >= 8
    assert page.locator("#attribution-plot .js-plotly-plot").count() == 1
    # The attention view is drawn for the same text: its token axis carries the explained token.
    wait_until(page, lambda: page.evaluate(
        """(word) => { const el = document.querySelector('#attention-plot .js-plotly-plot');
                       return !!el && !!el._fullData && JSON.stringify(el._fullData[0].x || []).includes(word); }""",
        explained), what="the attention view of the generated text")
    page.screenshot(path=str(artifacts_dir() / "branching-explain.png"), full_page=True)
    assert not page.console_errors, page.console_errors
