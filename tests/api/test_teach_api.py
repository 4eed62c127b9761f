"""The Teach tab's endpoints through gradio_client on the real app (issue 16): `/lesson`, `/head_roles` and
`/compare` take their first argument first and default the rest; their figures carry the engine's own numbers;
bad input is one AppError sentence."""

from __future__ import annotations

import numpy as np
import pytest
from gradio_client.exceptions import AppError

from tests.api.test_attention_api import decode_plot, plain
from ui import lessons
from ui.teach_tab import COMPARE_OTHER, COMPARE_TEXT


@pytest.fixture(scope="module")
def server(attention_server):
    return attention_server


def endpoint_parameters(client, name: str) -> list[dict]:
    return client.view_api(return_format="dict", print_info=False)["named_endpoints"][name]["parameters"]


def test_every_endpoint_takes_its_first_argument_first_and_defaults_the_rest(client):
    for name, first in (("/lesson", "key"), ("/head_roles", "model"), ("/compare", "text")):
        parameters = endpoint_parameters(client, name)
        assert parameters[0]["parameter_name"] == first
        assert all(p["parameter_has_default"] for p in parameters[1:]), name
        assert "kept" not in [p["parameter_name"] for p in parameters]  # the visitor's report state is not API


def test_a_lesson_opens_its_view_with_the_measured_numbers(client, server):
    text, model, plot, explanation, table = client.predict("formula", api_name="/lesson")
    assert text == lessons.FORMULA_TEXT and model == "bundled"
    traces, layout = decode_plot(plot)
    assert layout["title"]["text"].startswith("Layer 1, head 1")
    engine = server[1]
    analysis = engine.cached_analysis(lessons.FORMULA_TEXT, "bundled")
    assert np.allclose(traces[0]["z"], analysis.heatmap(0, 0, "head").matrix, equal_nan=True)
    position = analysis.find_token("clonidine")
    row = engine.attention_row(analysis, 0, 0, position)
    assert f"d = {row.head_dim}" in explanation and "Question for students" in explanation
    weights = [r[table["headers"].index("weight")] for r in table["data"]]
    assert np.allclose(weights, np.round(row.weights[: position + 1], 4))


def test_a_lesson_that_does_not_exist_is_one_sentence(client):
    with pytest.raises(AppError, match="The value of 'key' is not in the list of choices: formula, sink"):
        client.predict("nope", api_name="/lesson")


def test_head_roles_grid_and_table_are_the_engines_scores(client, server):
    plot, table = client.predict(api_name="/head_roles")
    roles = server[1].head_roles()
    traces, _ = decode_plot(plot)
    assert np.allclose(traces[0]["z"], roles.scores["previous"], atol=1e-6)
    assert table["headers"][:3] == ["layer", "head", "Previous-token score"]
    first = roles.ranking("previous")[0]
    assert table["data"][0][:2] == [first[0] + 1, first[1] + 1]
    assert len(table["data"]) == roles.num_layers * roles.num_heads
    with pytest.raises(AppError, match="The value of 'role' is not in the list of choices: previous, induction"):
        client.predict(None, "bogus", api_name="/head_roles")


def test_compare_needs_a_second_thing(client):
    with pytest.raises(AppError, match="Give a second text, a second model or heads to switch off to compare with."):
        client.predict(COMPARE_TEXT, api_name="/compare")


def test_compare_two_texts_draws_both_sides_their_difference_and_the_alignment(client, server):
    plot_a, plot_b, difference, alignment = client.predict(COMPARE_TEXT, COMPARE_OTHER, api_name="/compare")
    engine = server[1]
    comparison = engine.compare(COMPARE_TEXT, COMPARE_OTHER)
    (a,), layout_a = decode_plot(plot_a)
    (b,), layout_b = decode_plot(plot_b)
    assert "Text A" in layout_a["title"]["text"] and "Text B" in layout_b["title"]["text"]
    assert np.allclose(a["z"], comparison.a.heatmap(0, 0, "head").matrix, equal_nan=True)
    assert np.allclose(b["z"], comparison.b.heatmap(0, 0, "head").matrix, equal_nan=True)
    (d,), layout_d = decode_plot(difference)
    expected = comparison.heatmap_difference(0, 0)
    assert np.allclose(d["z"], expected.matrix, equal_nan=True)
    assert d["zmid"] == 0
    labels = [plain(x) for x in d["y"]]
    assert any(" / " in label for label in labels) or len(labels) < max(len(comparison.a.tokens), len(comparison.b.tokens))
    assert comparison.alignment_sentence() in alignment


def test_compare_with_an_ablation_and_refusals(client):
    *_, alignment = client.predict(COMPARE_TEXT, heads_off="1.1", view="Overview", api_name="/compare")
    assert "Heads 1.1 off" in alignment
    with pytest.raises(AppError, match="one thing at a time"):
        client.predict(COMPARE_TEXT, COMPARE_OTHER, heads_off="1.1", api_name="/compare")
