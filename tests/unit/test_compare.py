"""Side by side (biogpt.interpret.compare) and the Interpreter's head roles and comparisons, on tiny
models with BioGPT's real tokenizer: explicit token alignment, differences only where defined,
and every analysis (ablated ones and head roles included) in the one byte-bounded cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from biogpt import BioGptConfig, BioGptForCausalLM, interpret
from biogpt.interpret import token_alignment
from biogpt.tokenizer import BioGptTokenizer
from testkit import REPO
from testkit.checkpoints import perturb_
from tests.helpers import TINY

TEXT = "Aspirin reduces the risk of stroke in older patients."
OTHER = "Ibuprofen reduces the risk of stroke in older patients."


def tiny(layers: int, seed: int) -> BioGptForCausalLM:
    torch.manual_seed(seed)
    model = BioGptForCausalLM(BioGptConfig(**{**TINY, "vocab_size": 42384, "num_hidden_layers": layers}))
    model.init_weights()
    perturb_(model, seed=seed + 1, scale=6.0)
    return model.eval()


@pytest.fixture(scope="module")
def tokenizer():
    return BioGptTokenizer.from_pretrained(REPO / "assets" / "tokenizers" / "biogpt")


@pytest.fixture(scope="module")
def models():
    return {"a": tiny(3, 0), "b": tiny(3, 5), "deep": tiny(4, 9)}


@pytest.fixture()
def interpreter(models, tokenizer):
    loads = []

    def load(name):
        loads.append(name)
        return models[name], tokenizer

    interpreter = interpret.Interpreter(load, default_model="a")
    interpreter.loads = loads
    return interpreter


def test_identical_sequences_align_one_to_one_and_others_on_runs_of_identical_tokens():
    same = token_alignment(np.array([2, 5, 6, 7]), np.array([2, 5, 6, 7]))
    assert same.identical and same.pairs.tolist() == [[0, 0], [1, 1], [2, 2], [3, 3]]
    # "aspirin" is one token, "ibuprofen" two: the rest of the sentence still aligns, shifted by one.
    shifted = token_alignment(np.array([2, 10, 20, 21, 22]), np.array([2, 11, 12, 20, 21, 22]))
    assert not shifted.identical
    assert shifted.pairs.tolist() == [[0, 0], [2, 3], [3, 4], [4, 5]]
    assert shifted.only_a == [1] and shifted.only_b == [1, 2]
    sentence = shifted.describe(["</s>", "aspirin", "reduces", "the", "risk"],
                                ["</s>", "ibu", "profen", "reduces", "the", "risk"])
    assert sentence.startswith("4 tokens are the same on both sides")
    assert "from A: 1 'aspirin'" in sentence and "from B: 1 'ibu', 2 'profen'" in sentence


def test_two_texts_differ_only_on_aligned_tokens(interpreter):
    comparison = interpreter.compare_texts(TEXT, OTHER)
    a, b = comparison.a, comparison.b
    assert comparison.kind == "texts" and comparison.no_difference is None
    assert comparison.alignment.only_a and comparison.alignment.only_b  # the two drug names
    difference = comparison.heatmap_difference(layer=1, head=2)
    rows_a, rows_b = difference.pairs[:, 0], difference.pairs[:, 1]
    expected = a.attentions[1, 2].astype(np.float32)[np.ix_(rows_a, rows_a)] - b.attentions[1, 2].astype(np.float32)[
        np.ix_(rows_b, rows_b)]
    lower = np.tril(np.ones_like(expected, bool))
    np.testing.assert_allclose(difference.matrix[lower], expected[lower], atol=1e-6)
    assert np.isnan(difference.matrix[~lower]).all()  # the future stays blank
    # The first token sees only itself on both sides: no difference there.
    assert difference.matrix[0, 0] == 0.0
    stats = comparison.statistics_difference("entropy")
    np.testing.assert_allclose(stats, a.head_statistics()["entropy"] - b.head_statistics()["entropy"])
    window = comparison.heatmap_difference(layer=0, start=3, max_side=4)
    assert window.windowed and window.matrix.shape == (4, 4) and window.pairs.tolist() == comparison.alignment.pairs[3:7].tolist()
    with pytest.raises(ValueError, match="statistic is one of"):
        comparison.statistics_difference("beauty")


def test_two_models_of_one_shape_get_a_lens_difference_and_of_two_shapes_none(interpreter):
    same = interpreter.compare_models(TEXT, "a", "b")
    assert same.alignment.identical and same.names == ("a", "b")
    lens_a, lens_b = interpreter.logit_lens(same.a), interpreter.logit_lens(same.b)
    lens = same.lens_difference(lens_a, lens_b)
    assert lens.agree.shape == (4, same.a.length)
    np.testing.assert_array_equal(lens.agree, lens_a.ids[:, :, 0] == lens_b.ids[:, :, 0])
    np.testing.assert_allclose(lens.top_prob_difference, lens_a.probs[:, :, 0] - lens_b.probs[:, :, 0])
    assert same.statistics_difference("first") is not None

    other = interpreter.compare_models(TEXT, "a", "deep")
    assert other.no_difference.startswith("The models differ in shape (3 layers x 4 heads against 4 x 4)")
    assert other.heatmap_difference(0) is None and other.statistics_difference("first") is None
    assert other.lens_difference(lens_a, interpreter.logit_lens(other.b)) is None
    # Side by side still works: each side is its own analysis with its own views.
    assert other.a.num_layers == 3 and other.b.num_layers == 4


def test_ablation_side_by_side_switches_the_heads_off_in_a_second_cached_analysis(interpreter, models, tokenizer):
    comparison = interpreter.compare_ablation(TEXT, [(1, 2), (0, 0)])
    whole, ablated = comparison.a, comparison.b
    assert comparison.names == ("Every head", "Heads 1.1, 2.3 off")
    assert comparison.alignment.identical and comparison.no_difference is None
    assert not ablated.attentions[1, 2].any() and not ablated.attentions[0, 0].any()  # switched off: zero weight
    np.testing.assert_array_equal(ablated.attentions[0, 1], whole.attentions[0, 1])  # layer 0's other heads unchanged
    # The ablated forward is the model's own head_mask forward.
    mask = interpret.head_mask_for([(1, 2), (0, 0)], 3, 4)
    with torch.inference_mode():
        logits = models["a"](torch.from_numpy(whole.token_ids)[None], head_mask=mask).logits[0, -1]
    np.testing.assert_allclose(ablated.next_logprobs, torch.log_softmax(logits, -1).numpy(), atol=1e-4)
    difference = comparison.heatmap_difference(1, 2)
    np.testing.assert_allclose(np.nan_to_num(difference.matrix), np.nan_to_num(comparison.a.heatmap(1, 2).matrix), atol=1e-6)
    # Both analyses live in the one cache, under different keys; asking again runs nothing.
    keys = interpreter.cache.keys()
    assert ("a", TEXT) in keys and ("a", TEXT, ("heads off", ((0, 0), (1, 2)))) in keys
    loads = len(interpreter.loads)
    assert interpreter.compare_ablation(TEXT, [(0, 0), (1, 2)]).b is ablated
    assert len(interpreter.loads) == loads
    with pytest.raises(ValueError, match="3 layers x 4 heads"):
        interpreter.analyze_ablated(TEXT, [(3, 0)])


def test_head_roles_are_computed_once_per_model_in_the_analysis_cache(interpreter, models):
    calls = []
    original = models["a"].forward
    models["a"].forward = lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    try:
        roles = interpreter.head_roles()
        assert interpreter.head_roles("a") is roles and len(calls) == 1  # cached: no second forward
    finally:
        del models["a"].forward
    assert roles.scores["induction"].shape == (3, 4) and set(roles.scores) == set(interpret.ROLES)
    assert ("a", "head roles") in interpreter.cache.keys()
    assert interpreter.cache.nbytes >= roles.nbytes > 0


def test_the_cache_bound_counts_head_roles_and_comparisons_together(models, tokenizer):
    interpreter = interpret.Interpreter(lambda name: (models[name], tokenizer), default_model="a", max_bytes=1)
    interpreter.head_roles()
    interpreter.compare_texts(TEXT, OTHER)
    # A 1-byte bound keeps only the newest entry: the one cache trims roles and analyses alike.
    assert interpreter.cache.keys() == [("a", OTHER)]
