"""The public API through gradio_client: every endpoint's content and its error path."""

from __future__ import annotations

import base64
import csv
import json
import math
import urllib.request

import numpy as np
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from testkit.app_server import BUNDLED_MODELS, EXAMPLES, KNOWN_NER_TEXT, running_app
from biogpt.serving import GenerationRequest


@pytest.fixture(scope="module")
def server():
    # The bundled base LM is allowed under every picker, to show how an untrained head is reported.
    with running_app("--allow-model", str(BUNDLED_MODELS[0])) as (url, engine):
        yield url, engine


def plot_data(plot: dict) -> list[dict]:
    """gr.Plot over the API: plotly JSON whose arrays may be base64 typed arrays."""
    assert plot["type"] == "plotly"
    figure = json.loads(plot["plot"])

    def decode(value):
        if isinstance(value, dict) and "bdata" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            return array.reshape(value["shape"]) if "shape" in value else array
        return value

    return [{key: decode(value) for key, value in trace.items()} for trace in figure["data"]], figure["layout"]


def test_every_endpoint_takes_the_text_first_and_defaults_the_rest(client):
    endpoints = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    assert {"/generate", "/ner", "/classify", "/zero_shot", "/pubmedqa"} <= set(endpoints)
    for name in ("/generate", "/ner", "/classify", "/zero_shot"):
        parameters = endpoints[name]["parameters"]
        assert parameters[0]["parameter_name"] in ("prompt", "text")
        assert all(p["parameter_has_default"] for p in parameters[1:]), name


def test_ner_marks_the_chemicals_of_a_known_training_sentence_and_exports_them(client):
    page, summary, table, entities, json_path, csv_path = client.predict(KNOWN_NER_TEXT, api_name="/ner")
    rows = {(row[0], row[1]) for row in table["data"]}
    assert {("Naloxone", "Chemical"), ("clonidine", "Chemical")} <= rows
    assert table["headers"] == ["entity", "type", "start", "end", "confidence"]
    assert page.count('<mark class="entity"') == len(table["data"])
    assert "bundled-ner · cpu · float32" in summary
    with open(json_path, encoding="utf-8") as f:
        assert json.load(f) == entities
    for entity in entities["entities"]:
        assert KNOWN_NER_TEXT[entity["start"]:entity["end"]] == entity["text"]
    with open(csv_path, encoding="utf-8", newline="") as f:
        assert [row[:2] for row in csv.reader(f)][1:] == [[r[0], r[1]] for r in table["data"]]


def test_classify_gives_every_hoc_label_a_probability_and_draws_the_threshold(client):
    sentence = EXAMPLES["classify"][3]["text"]
    top, plot, summary = client.predict(sentence, api_name="/classify")
    assert len(top["confidences"]) == 3 and all(0 <= c["confidence"] <= 1 for c in top["confidences"])
    traces, layout = plot_data(plot)
    values = np.asarray(traces[0]["x"], dtype=float)
    assert len(values) == 10 and np.all((values >= 0) & (values <= 1))
    assert max(values) == pytest.approx(top["confidences"][0]["confidence"], abs=1e-6)
    assert "multi-label, threshold" in summary and any(s.get("type") == "line" for s in layout["shapes"])


def test_zero_shot_probabilities_sum_to_one(client):
    example = EXAMPLES["zero_shot"][0]
    top, plot, summary = client.predict(example["text"], ", ".join(example["labels"]), api_name="/zero_shot")
    assert math.isclose(sum(c["confidence"] for c in top["confidences"]), 1.0, abs_tol=1e-4)
    assert {c["label"] for c in top["confidences"]} == set(example["labels"])


def test_pubmedqa_scores_three_answers(client):
    example = EXAMPLES["pubmedqa"][0]
    answer, plot, summary, prompt = client.predict(example["question"], example["context"], api_name="/pubmedqa")
    assert {c["label"] for c in answer["confidences"]} == {"yes", "no", "maybe"}
    assert math.isclose(sum(c["confidence"] for c in answer["confidences"]), 1.0, abs_tol=1e-4)
    assert prompt.startswith("question: " + example["question"]) and prompt.endswith("given the context is")


def test_generate_streams_text_that_ends_as_the_reproducible_final_text(server, client):
    url, engine = server
    job = client.submit("Naloxone reverses the", api_name="/generate", max_new_tokens=128, seed=11)
    final_text, page, summary, table, details = job.result()
    partial_texts = [output[0] for output in job.outputs()]
    assert len(partial_texts) >= 2, "the text should arrive in several updates"
    assert all(final_text.startswith(text) for text in partial_texts) and partial_texts[-1] == final_text
    assert details["settings"]["seed"] == 11 and "tokens/s" in summary and "seed=11" in summary
    alone = list(engine.generate(GenerationRequest(prompt="Naloxone reverses the", max_new_tokens=128, seed=11)))[-1]
    assert alone.samples[0].text == final_text == details["samples"][0]["text"]
    tokens = details["samples"][0]["tokens"]
    assert "".join(t["text"] for t in tokens) == final_text
    assert len(table["data"]) == len(tokens) and all(len(t["top5"]) == 5 for t in tokens)


def test_several_samples_come_back_side_by_side(client):
    text, page, summary, table, details = client.predict(
        "Aspirin is", api_name="/generate", num_return_sequences=3, max_new_tokens=12, seed=5)
    assert len(details["samples"]) == 3 and page.count('class="sample-card"') == 3
    assert {row[0] for row in table["data"]} == {1, 2, 3}


@pytest.mark.parametrize("endpoint, args, kwargs, message", [
    ("/ner", [""], {}, "empty"),
    ("/ner", ["x" * 1_000_000], {}, "1,000,000 characters; the limit here is 20,000"),
    ("/classify", ["   "], {}, "empty"),
    ("/generate", ["Aspirin"], {"max_new_tokens": 10**9}, "greater than maximum value 512"),
    ("/generate", ["Aspirin"], {"mode": "greedy", "num_return_sequences": 2}, "Greedy decoding"),
    ("/generate", ["Aspirin"], {"model": "/etc"}, "not in the list of choices"),
    ("/generate", ["Aspirin"], {"model": "microsoft/biogpt"}, "not in the local Hugging Face cache"),
    ("/generate", ["Aspirin"], {"stop": "a,b,c,d,e"}, "At most 4 stop strings"),
    ("/zero_shot", ["Aspirin"], {"candidates": "one"}, "at least two candidate labels"),
    ("/ner", [KNOWN_NER_TEXT], {"model": str(BUNDLED_MODELS[0])}, "no trained NER head"),
])
def test_bad_requests_get_one_readable_sentence_and_the_app_keeps_working(client, endpoint, args, kwargs, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name=endpoint, **kwargs)
    assert client.predict("Aspirin", api_name="/classify")[0]["confidences"]


def call_raw(client: Client, url: str, endpoint: str, text: str) -> tuple[str, str]:
    """Gradio's HTTP API without gradio_client, which cannot encode lone surrogates; a browser can."""
    parameters = client.view_api(return_format="dict", print_info=False)["named_endpoints"][f"/{endpoint}"]["parameters"]
    data = [text] + [p["parameter_default"] for p in parameters[1:]]  # the raw API fills in no defaults
    body = json.dumps({"data": data}).encode("ascii")  # "\ud800" travels as a JSON escape
    request = urllib.request.Request(f"{url}gradio_api/call/{endpoint}", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        event_id = json.load(response)["event_id"]
    with urllib.request.urlopen(f"{url}gradio_api/call/{endpoint}/{event_id}", timeout=60) as response:
        lines = response.read().decode("utf-8").splitlines()
    events = [line.removeprefix("event: ") for line in lines if line.startswith("event: ")]
    payloads = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    return events[-1], payloads[-1]


@pytest.mark.parametrize("endpoint, text", [
    ("ner", "Cocaine \ud800 and \udfff seizures"),
    ("generate", "\ud800"),
    ("classify", "\ud83d alone, then \u202e\u200b\u0000 controls and \U0001F9EC"),
])
def test_lone_surrogates_and_odd_unicode_are_answered(server, client, endpoint, text):
    event, payload = call_raw(client, server[0], endpoint, text)
    assert event == "complete", payload
    if endpoint == "ner":  # each lone surrogate became one U+FFFD, so offsets still fit the text
        assert json.loads(payload)[3]["text"] == text.replace("\ud800", "\ufffd").replace("\udfff", "\ufffd")
