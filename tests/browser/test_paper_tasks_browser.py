"""The Tasks tab in Chromium: pick the task and the fine-tuned model, run, and see the extracted
triple in the table, its entities marked in the text, the malformed piece flagged, and the
downloads offered."""

from __future__ import annotations

import pytest

from testkit.app_server import running_app
from tests.api.paper_task_model import build_scripted_ddi_model
from tests.helpers import chromium_page


@pytest.fixture(scope="module")
def page(tmp_path_factory):
    folder = build_scripted_ddi_model(tmp_path_factory.mktemp("paper") / "scripted-ddi")
    with running_app("--allow-model", str(folder), preload=False) as (url, engine):
        with chromium_page(url) as page:
            page.wait_for_selector("#gen-prompt textarea")
            yield page


def test_tasks_tab_extracts_and_marks(page):
    page.get_by_role("tab", name="Tasks", exact=True).click()
    page.click("#tasks-task input")
    page.get_by_role("option", name="DDI drug-drug interaction").click()
    page.fill("#tasks-text textarea", "Aspirin may increase the effect of <i>warfarin</i>.")
    page.click("#tasks-run")
    page.wait_for_selector("#tasks-highlighted mark.paper-entity", timeout=60_000)
    marks = page.locator("#tasks-highlighted mark.paper-entity").all_inner_texts()
    assert marks == ["Aspirin", "warfarin"]
    assert "<i>warfarin</i>" in page.inner_text("#tasks-highlighted")  # markup shown as text
    table = page.inner_text("#tasks-table")
    assert "aspirin" in table and "effect" in table and "malformed" in table
    assert "1 malformed piece" in page.inner_text("#tasks-summary")
    assert page.locator("#tasks-json-file a, #tasks-json-file [download]").count() >= 1
    assert not page.console_errors
