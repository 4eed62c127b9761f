"""The Tasks tab over the API (gradio_client): a fine-tuned DDI model's answer comes back as a
table with the malformed piece listed, the entities marked in the (escaped) text, JSON and CSV
files; a wrong task or a model without a prompt record is refused in one sentence."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from biogpt.hub import BUNDLED_NAMES
from testkit.app_server import running_app
from tests.api.paper_task_model import build_scripted_ddi_model

TEXT = "Aspirin <b>may</b> increase the effect of warfarin; WARFARIN levels rise."


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = build_scripted_ddi_model(tmp_path_factory.mktemp("paper") / "scripted-ddi")
    plain_lm = str(BUNDLED_NAMES["bundled"])  # a language model without a prompt record
    with running_app("--allow-model", str(folder), "--allow-model", plain_lm, preload=False) as (url, engine):
        yield url, str(folder), plain_lm


def test_ddi_triples_table_highlight_and_exports(client, server):
    html, summary, table, generated, data, json_path, csv_path = client.predict(
        "ddi", server[1], TEXT, "", api_name="/paper_task")
    assert generated == "the interaction between aspirin and warfarin is effect; ketoconazole."
    assert table["headers"] == ["drug", "target", "interaction", "status"]
    assert table["data"][0] == ["aspirin", "warfarin", "effect", "ok"]
    assert table["data"][1][0] == "ketoconazole" and table["data"][1][-1].startswith("malformed")
    assert data["items"] == [{"drug": "aspirin", "target": "warfarin", "interaction": "effect"}]
    assert [m["reason"] for m in data["malformed"]] == ["not a relation sentence (partial or other wording)"]
    # Three marks (Aspirin, warfarin, WARFARIN); the visitor's markup is shown as text.
    assert html.count("<mark") == 3 and 'data-role="drug"' in html and "&lt;b&gt;may&lt;/b&gt;" in html
    assert "<b>may</b>" not in html
    assert "1 malformed piece" in summary and "greedy" in summary
    assert json.loads(Path(json_path).read_text())["items"] == data["items"]
    rows = list(csv.reader(Path(csv_path).read_text().splitlines()))
    assert rows[0] == ["drug", "target", "interaction", "status"] and rows[1] == ["aspirin", "warfarin", "effect", "ok"]


def test_refusals_are_sentences(client, server):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="fine-tuned for DDI drug-drug interaction, not PubMedQA"):
        client.predict("pubmedqa", server[1], "context", "Is it?", api_name="/paper_task")
    with pytest.raises(AppError, match="needs a question"):
        client.predict("pubmedqa", server[1], "context", "", api_name="/paper_task")
    with pytest.raises(AppError, match="no prompt record: it is not a fine-tuned paper-task model"):
        client.predict("ddi", server[2], TEXT, "", api_name="/paper_task")
    with pytest.raises(AppError, match="not in the list of choices"):
        client.predict("ddi", "/etc", TEXT, "", api_name="/paper_task")
