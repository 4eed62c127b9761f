"""`/attention` through gradio_client on the real app: the decoded figures against the engine's
own numbers, view changes that never run the model, payloads of one view, errors, long texts."""

from __future__ import annotations

import base64
import csv
import html
import json

import numpy as np
import pytest
from gradio_client.exceptions import AppError

from ui.attention_plots import shorten

TEXT = "Naloxone reverses the antihypertensive effect of clonidine."


@pytest.fixture(scope="module")
def server(attention_server):
    return attention_server


@pytest.fixture(scope="module")
def analysis(server, client):
    client.predict(TEXT, api_name="/attention")  # analysed by the server...
    analysis = server[1].cached_analysis(TEXT)  # ...and the same object is in the engine's cache
    assert analysis is not None
    return analysis


def decode_plot(plot: dict) -> tuple[list[dict], dict]:
    """gr.Plot over the API: plotly JSON whose arrays are base64 typed arrays -> numpy."""
    assert plot["type"] == "plotly"
    figure = json.loads(plot["plot"])

    def decode(value):
        if isinstance(value, dict) and "bdata" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            shape = value.get("shape")
            if isinstance(shape, str):  # plotly writes "rows, cols"
                shape = [int(x) for x in shape.split(",")]
            return array.reshape(shape) if shape else array
        return value

    return [{key: decode(value) for key, value in trace.items()} for trace in figure["data"]], figure["layout"]


def plain(label: str) -> str:
    """An axis label as the token it names: no zero-width de-duplication, no HTML escapes."""
    return html.unescape(str(label).replace("\u200b", ""))


class ForwardCounter:
    def __init__(self, model):
        self.model, self.calls, self.original = model, 0, model.forward

    def __enter__(self):
        def counted(*args, **kwargs):
            self.calls += 1
            return self.original(*args, **kwargs)

        self.model.forward = counted
        return self

    def __exit__(self, *exc):
        del self.model.forward


def test_attention_takes_the_text_first_and_defaults_everything_else(client):
    endpoint = client.view_api(return_format="dict", print_info=False)["named_endpoints"]["/attention"]
    parameters = endpoint["parameters"]
    assert parameters[0]["parameter_name"] == "text"
    assert all(p["parameter_has_default"] for p in parameters[1:])
    assert [p["parameter_name"] for p in parameters[1:5]] == ["view", "model", "layer", "head"]


def test_default_view_is_the_heatmap_of_layer_1_head_1(client, analysis):
    plot, explanation, summary = client.predict(TEXT, api_name="/attention")
    (trace,), layout = decode_plot(plot)
    expected = analysis.attentions[0, 0].astype(np.float32)
    expected[np.triu_indices_from(expected, 1)] = np.nan  # the future is left blank
    assert trace["type"] == "heatmap" and trace["z"].shape == (analysis.length, analysis.length)
    np.testing.assert_array_equal(trace["z"], expected)
    assert [plain(x) for x in trace["x"]] == analysis.tokens == [plain(y) for y in trace["y"]]
    assert "Layer 1, head 1" in layout["title"]["text"]
    assert "row is a token" in explanation and f"{analysis.length} tokens" in summary


def test_every_view_over_the_api_shows_the_engines_numbers(server, client, analysis):
    engine = server[1]
    layers, heads = analysis.num_layers, analysis.num_heads

    plot, _, _ = client.predict(TEXT, view="Heatmap", layer=layers, head=heads, aggregate="rollout", api_name="/attention")
    (trace,), layout = decode_plot(plot)
    expected = analysis.attention_map(layers - 1, 0, "rollout").copy()
    expected[np.triu_indices_from(expected, 1)] = np.nan
    np.testing.assert_allclose(trace["z"], expected, rtol=1e-6)
    assert f"rollout through layer {layers}" in layout["title"]["text"]

    plot, _, _ = client.predict(TEXT, view="Heatmap", layer=2, head=3, hide_sink=True, api_name="/attention")
    (trace,), _ = decode_plot(plot)
    m = analysis.attentions[1, 2].astype(np.float32)
    assert trace["z"].shape == m.shape  # the sink stays in place, blank: both toggles draw the same cells
    assert np.isnan(trace["z"][0]).all() and np.isnan(trace["z"][:, 0]).all()
    np.testing.assert_allclose(trace["z"][-1, 1:], m[-1, 1:] / m[-1, 1:].sum(), rtol=1e-5)

    plot, _, summary = client.predict(TEXT, view="Overview", layer=2, head=3, statistic="previous", api_name="/attention")
    (trace,), layout = decode_plot(plot)
    np.testing.assert_allclose(trace["z"], analysis.head_statistics()["previous"])
    assert trace["z"].shape == (layers, heads) and "layer 2, head 3" in summary

    plot, _, _ = client.predict(TEXT, view="Logit lens", api_name="/attention")
    (trace,), layout = decode_plot(plot)
    lens = engine.logit_lens(analysis)
    width = min(16, analysis.length)
    np.testing.assert_allclose(trace["z"], lens.probs[:, :width, 0])
    assert trace["z"].shape == (layers + 1, width)
    np.testing.assert_allclose(trace["z"][-1], analysis.top_probs[:width, 0])  # last row = the model's output
    assert [plain(t) for t in trace["text"][-1]] == [shorten(str(x)) for x in analysis.top_labels[:width, 0]]

    plot, _, _ = client.predict(TEXT, view="Hidden states", trace="Nal, clonidine", api_name="/attention")
    traces, _ = decode_plot(plot)
    np.testing.assert_allclose(traces[0]["z"], analysis.hidden_norms(), rtol=1e-6)
    assert len(traces) == 3 and len(traces[1]["x"]) == layers + 1

    plot, _, summary = client.predict(TEXT, view="Ablation", heads_off="1.*", api_name="/attention")
    before, after = decode_plot(plot)[0]
    result = engine.ablate(analysis, [(0, h) for h in range(heads)], 8, 0)
    np.testing.assert_allclose(before["x"], result.before, rtol=1e-6)
    np.testing.assert_allclose(after["x"], result.after, rtol=1e-6)
    assert [plain(y) for y in before["y"]] == result.labels

    plot, _, summary = client.predict(TEXT, view="Generation replay", new_tokens=6, step=2, layer=1, head=2,
                                      api_name="/attention")
    bars, grid = decode_plot(plot)[0]
    trace_ = engine.trace_generation(analysis, 6)
    np.testing.assert_allclose(bars["y"], trace_.attentions[1, 0, 1, : analysis.length + 1].astype(np.float32))
    assert grid["z"].shape == (trace_.steps, len(trace_.token_ids) - 1)
    assert "Greedy continuation" in summary


def test_view_changes_answer_from_the_cache_without_running_the_model(server, client, analysis):
    model = server[1].load(server[1].default_choice("generate"), "generate").model
    with ForwardCounter(model) as counter:
        for layer in (1, analysis.num_layers):
            for head in (1, analysis.num_heads):
                client.predict(TEXT, layer=layer, head=head, api_name="/attention")
        for aggregate in ("heads", "layers", "all", "rollout"):
            client.predict(TEXT, aggregate=aggregate, hide_sink=True, min_weight=0.05, api_name="/attention")
        for view in ("Overview", "Token links", "Hidden states", "Logit lens"):
            client.predict(TEXT, view=view, token="clonidine", watch="the, blood", api_name="/attention")
        assert counter.calls == 0


def test_the_browser_gets_one_view_never_the_attention_tensor(client, analysis):
    plot, _, _ = client.predict(TEXT, api_name="/attention")
    tensor_values = analysis.attentions.size
    (trace,), _ = decode_plot(plot)
    assert trace["z"].size == analysis.length**2 < tensor_values
    assert len(plot["plot"]) < 4 * analysis.length**2 * 2 + 20_000


def test_errors_reach_the_client_as_readable_messages(client):
    with pytest.raises(AppError, match="Type or paste"):
        client.predict("   ", api_name="/attention")
    with pytest.raises(AppError, match="out of range"):
        client.predict(TEXT, view="Ablation", heads_off="99.1", api_name="/attention")
    with pytest.raises(AppError, match="not a token of this text"):
        client.predict(TEXT, view="Token links", token="aspirin", api_name="/attention")
    with pytest.raises(AppError, match="not in the list of choices|not one of the models"):
        client.predict(TEXT, model="../../etc", api_name="/attention")


def test_a_1024_token_text_is_pooled_into_readable_blocks(server, client):
    tokenizer = server[1].load(server[1].default_choice("generate"), "generate").tokenizer
    sentence = "Clonidine lowers blood pressure in spontaneously hypertensive rats. "
    text = sentence * 200
    offsets = tokenizer(text, return_offsets_mapping=True)["offset_mapping"]
    text = text[: offsets[1023][1]]
    plot, _, summary = client.predict(text, api_name="/attention")
    (trace,), layout = decode_plot(plot)
    assert "1,024 tokens" in summary and "blocks of 4" in layout["title"]["text"]
    assert trace["z"].shape == (256, 256)
    plot, _, _ = client.predict(text, start=300, api_name="/attention")
    (trace,), layout = decode_plot(plot)
    assert trace["z"].shape == (256, 256) and "tokens 300–555" in layout["title"]["text"]
    assert plain(trace["x"][0]) == server[1].cached_analysis(text).tokens[300]


def test_downloads_hold_the_views_numbers(server, analysis, tmp_path):
    from ui.attention_tab import Controls, render_view, write_downloads

    result = render_view(server[1], TEXT, Controls(view="Overview"))
    csv_path, json_path = write_downloads(result, "Overview", str(tmp_path))
    rows = list(csv.reader(open(csv_path, encoding="utf-8")))
    assert rows[0][:3] == ["layer", "head", "Entropy (nats)"]
    assert len(rows) == 1 + analysis.num_layers * analysis.num_heads
    assert float(rows[1][2]) == pytest.approx(float(analysis.head_statistics()["entropy"][0, 0]), rel=1e-5)
    data = json.loads(open(json_path, encoding="utf-8").read())
    assert data["meta"]["view"] == "overview" and len(data["rows"]) == len(rows) - 1
