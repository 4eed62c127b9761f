"""The Engine's issue-16 methods on the bundled model: head roles, side by side, the attention formula
on one real row; each refusal one InputError sentence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biogpt.serving import Engine, InputError

TEXT = "Aspirin reduces the risk of stroke in older patients."
OTHER = "Ibuprofen reduces the risk of stroke in older patients."


@pytest.fixture(scope="module")
def engine(bundled_models) -> Engine:
    return Engine(device="cpu", dtype="float32")


def test_head_roles_cover_every_head_once_per_model(engine):
    roles = engine.head_roles()
    loaded = engine.load(engine.default_choice("generate"), "generate")
    config = loaded.model.config
    assert roles.forwards == 1 and roles.probe.shape == (4, 101)
    for scores in roles.scores.values():
        assert scores.shape == (config.num_hidden_layers, config.num_attention_heads) and np.isfinite(scores).all()
    assert engine.head_roles() is roles
    assert ((roles.scores["sink"] >= 0) & (roles.scores["sink"] <= 1)).all()
    with pytest.raises(InputError):
        engine.head_roles("no/such-model")


def test_compare_asks_for_exactly_one_second_thing(engine):
    with pytest.raises(InputError, match="Give a second text, a second model or heads"):
        engine.compare(TEXT)
    with pytest.raises(InputError, match="one thing at a time: a second text and heads to switch off"):
        engine.compare(TEXT, other_text=OTHER, heads_off="1.1")
    with pytest.raises(InputError, match="Layer 9 is out of range"):
        engine.compare(TEXT, heads_off="9.1")
    with pytest.raises(InputError, match="empty"):
        engine.compare("   ", other_text=OTHER)
    with pytest.raises(InputError):
        engine.compare(TEXT, other_model="no/such-model")


def test_compare_two_texts_says_which_tokens_are_compared(engine):
    comparison = engine.compare(TEXT, other_text=OTHER)
    assert comparison.kind == "texts" and comparison.no_difference is None
    sentence = comparison.alignment_sentence()
    assert "left out of the difference from A: 1 'Aspirin'" in sentence and "from B: 1 'I', 2 'bu', 3 'profen'" in sentence
    assert engine.cached_analysis(TEXT) is comparison.a and engine.cached_analysis(OTHER) is comparison.b


def test_compare_with_an_ablation_and_with_the_same_model(engine):
    ablation = engine.compare(TEXT, heads_off="2.3")
    assert ablation.kind == "ablation" and ablation.names[1] == "Heads 2.3 off"
    assert not ablation.b.attentions[1, 2].any() and ablation.a.attentions[1, 2].any()
    models = engine.compare(TEXT, other_model=engine.default_choice("generate"))
    assert models.kind == "models" and models.a is models.b and models.alignment.identical


def test_the_formula_row_is_the_models_own_attention(engine):
    analysis = engine.analyze(TEXT)
    layer, head, position = 2, 5, 6
    row = engine.attention_row(analysis, layer, head, position)
    loaded = engine.load(engine.default_choice("generate"), "generate")
    captured = {}
    out_proj = loaded.model.biogpt.layers[layer].self_attn.out_proj
    hook = out_proj.register_forward_hook(lambda module, args, output: captured.setdefault("input", args[0]))
    try:
        with torch.inference_mode():
            out = loaded.model(torch.from_numpy(analysis.token_ids)[None], output_attentions=True)
    finally:
        hook.remove()
    # The same weights as the model's own attention (eager path), to float32 precision.
    np.testing.assert_allclose(row.weights, out.attentions[layer][0, head, position].numpy(), atol=1e-6)
    d = row.head_dim
    np.testing.assert_allclose(row.output, captured["input"][0, position, head * d:(head + 1) * d].numpy(), atol=1e-5)
    # Each step as the formula says: scaled dot products, the mask, softmax, the weighted sum.
    np.testing.assert_allclose(row.scores, row.keys @ row.query / np.sqrt(d), rtol=1e-5, atol=1e-5)
    visible = row.scores[: position + 1]
    softmax = np.exp(visible - visible.max()) / np.exp(visible - visible.max()).sum()
    np.testing.assert_allclose(row.weights[: position + 1], softmax, rtol=1e-5)
    assert (row.weights[position + 1:] == 0).all() and row.masked == analysis.length - position - 1
    np.testing.assert_allclose(row.output, row.weights @ row.values, rtol=1e-5, atol=1e-6)
    assert engine.attention_row(analysis, layer, head, position) is row  # memoised on the analysis
    with pytest.raises(InputError, match="not a position of this text"):
        engine.attention_row(analysis, 0, 0, analysis.length)
    with pytest.raises(InputError, match="4 layers and 8 heads"):
        engine.attention_row(analysis, 4, 0, 1)
