"""The attribution view (ui/attribution_view.py) on the engine's real results: coloured text is
escaped and carries each piece's score, the bars are the scores beside rollout, words sum their
tokens, and the summary states the completeness check of integrated gradients."""

from __future__ import annotations

import numpy as np
import pytest

from biogpt.serving import Engine
from ui import attribution_view as view

TEXT = "Aspirin <b>inhibits</b> platelet aggregation in"


@pytest.fixture(scope="module")
def engine(bundled_models, one_thread):
    return Engine(device="cpu", dtype="float32")


def test_word_and_token_levels_colour_and_bars_with_rollout_beside(engine):
    analysis = engine.analyze(TEXT)
    result = engine.attribute(TEXT, analysis.length - 1, method="gradient_x_input", contrast="heart")
    labels, scores, rollout = view.pieces(result, "word")
    assert labels == result.words
    for (start, end), score, share in zip(result.word_tokens, scores, rollout):
        assert score == pytest.approx(float(result.token_scores[start:end].sum()))
        assert share == pytest.approx(float(result.rollout[start:end].sum()))
    page = view.coloured_html(result, "token")
    assert "<b" not in page and "&lt;" in page  # what a visitor typed shows as text
    assert page.count('class="attr-piece"') == len(result.tokens)
    shown = [float(s) for s in page.split('data-score="')[1:] for s in [s.split('"')[0]]]
    assert shown == pytest.approx(result.token_scores.tolist(), rel=1e-5, abs=1e-9)
    assert "rather than “heart”" in page
    figure = view.attribution_figure(result, "word")
    bars, beside = figure.data
    assert np.allclose(bars.x, scores, rtol=1e-6, atol=1e-7) and np.allclose(beside.x, rollout, atol=1e-7)
    assert len(bars.y) == len(result.words)
    with pytest.raises(ValueError, match="level must be one of"):
        view.pieces(result, "sentence")


def test_integrated_gradients_summary_states_the_completeness_gap_and_steps(engine):
    analysis = engine.analyze(TEXT)
    result = engine.attribute(TEXT, analysis.length - 1, method="integrated_gradients", steps=16)
    summary = view.attribution_summary(result)
    assert f"{result.steps} steps" in summary and f"{result.completeness_gap:+.2e}" in summary
    assert ("within" if abs(result.completeness_gap) <= result.completeness_tolerance else "OUTSIDE") in summary
    exported = view.attribution_json(result)
    assert sum(t["score"] for t in exported["tokens"]) == pytest.approx(
        result.value - result.baseline_value + result.completeness_gap, abs=1e-6)
    assert exported["completeness_tolerance"] == result.completeness_tolerance
