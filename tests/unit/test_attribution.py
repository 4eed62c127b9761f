"""biogpt.interpret.attribution against hand computations: central differences of the model's
own forwards in float64 (gradient x input, integrated gradients), direct forwards (occlusion),
completeness on the bundled model, and contrast as the difference of two attributions."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from biogpt import BioGptForCausalLM, BioGptTokenizer
from biogpt.interpret import attribution as attr
from tests.helpers import TINY, hf_checkpoint

TEXT = "Aspirin inhibits platelet aggregation in patients with"


@functools.lru_cache(maxsize=1)
def _tokenizer():
    return BioGptTokenizer.from_pretrained("bundled-tokenizer")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, one_thread):
    folder = hf_checkpoint(tmp_path_factory.mktemp("attribution"), TINY, seed=2, scale=3.0)
    return BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32).eval().double()


def _ids(vocab: int) -> list[int]:
    return [t % vocab for t in _tokenizer().encode(TEXT)][:8]  # the tiny model's vocabulary is smaller


def _f(model, embeds: torch.Tensor, target: int) -> torch.Tensor:
    """The explained value written out: log-softmax of the last position's logits, at target."""
    with torch.no_grad():
        hidden = model.biogpt(inputs_embeds=embeds, use_cache=False).last_hidden_state[:, -1]
        return F.log_softmax(hidden @ model.output_projection.weight.T, dim=-1)[:, target]


def _directional(model, point: torch.Tensor, direction: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """[T] central differences of f at `point` [T, H] along each token's own row of `direction`."""
    rows = []
    for i in range(point.shape[0]):
        for sign in (1, -1):
            moved = point.clone()
            moved[i] += sign * eps * direction[i]
            rows.append(moved)
    values = _f(model, torch.stack(rows), TARGET)
    return (values[0::2] - values[1::2]) / (2 * eps)


TARGET = 77


def test_gradient_x_input_equals_central_differences(tiny):
    ids = _ids(tiny.config.vocab_size)
    result = attr.attribute(tiny, _tokenizer(), ids, position=len(ids), method="gradient_x_input", target=TARGET)
    x = attr._embed(tiny, torch.tensor(ids))
    expected = _directional(tiny, x, x).numpy()  # d/de f(x_i (1 + e)) = grad_i . x_i
    np.testing.assert_allclose(result.token_scores, expected, rtol=1e-6, atol=1e-9)
    assert result.value == pytest.approx(float(_f(tiny, x[None], TARGET)[0]), abs=1e-12)
    assert result.word_scores.sum() == pytest.approx(result.token_scores.sum())


def test_integrated_gradients_equals_the_path_integral_of_central_differences(tiny):
    ids = _ids(tiny.config.vocab_size)
    steps = 16
    result = attr.attribute(tiny, _tokenizer(), ids, position=len(ids), target=TARGET, steps=steps, max_steps=steps)
    x = attr._embed(tiny, torch.tensor(ids))
    pad = tiny.config.pad_token_id
    b = attr._embed(tiny, torch.tensor([ids[0]] + [pad] * (len(ids) - 1)))
    alphas, weights = np.polynomial.legendre.leggauss(8)  # two pieces, [0, 1/2] and [1/2, 1], of 8 points
    expected = sum(w / 4 * _directional(tiny, b + (lo + (a + 1) / 4) * (x - b), x - b)
                   for lo in (0, 0.5) for a, w in zip(alphas, weights))
    np.testing.assert_allclose(result.token_scores, expected.numpy(), rtol=1e-5, atol=1e-8)
    assert result.token_scores[0] == 0 and result.steps == steps  # the leading </s> is the baseline's too
    assert abs(result.completeness_gap) <= result.completeness_tolerance


def test_occlusion_equals_the_difference_of_two_forwards(tiny):
    ids = _ids(tiny.config.vocab_size)
    tokenizer, pad = _tokenizer(), tiny.config.pad_token_id

    def direct(variant):
        with torch.no_grad():
            return float(F.log_softmax(tiny(torch.tensor([variant])).logits[0, -1], -1)[TARGET])

    for mode in attr.OCCLUSIONS:
        result = attr.attribute(tiny, tokenizer, ids, len(ids), method="occlusion", target=TARGET, occlusion=mode)
        for (start, end), score in zip(result.word_tokens[1:], result.word_scores[1:]):
            variant = attr.occluded(ids, (start, end), mode, pad)
            assert score == pytest.approx(direct(ids) - direct(variant), abs=1e-9)
        assert result.token_scores[3] == pytest.approx(direct(ids) - direct(attr.occluded(ids, (3, 4), mode, pad)), abs=1e-9)
        assert result.word_scores[0] == 0 and result.token_scores[0] == 0


@pytest.mark.parametrize("method", attr.METHODS)
def test_contrastive_attribution_is_the_difference_of_the_two_single_ones(tiny, method):
    ids = _ids(tiny.config.vocab_size)
    run = functools.partial(attr.attribute, tiny, _tokenizer(), ids, 6, method, steps=8)
    both = run(target=TARGET, contrast=300)
    single, other = run(target=TARGET), run(target=300)
    np.testing.assert_allclose(both.token_scores, single.token_scores - other.token_scores, atol=1e-9)
    np.testing.assert_allclose(both.word_scores, single.word_scores - other.word_scores, atol=1e-9)
    assert both.value == pytest.approx(single.value - other.value)


def test_completeness_at_the_default_steps_on_the_bundled_model(bundled_models):
    model = BioGptForCausalLM.from_pretrained(bundled_models[0], dtype=torch.float32).eval()
    tokenizer = _tokenizer()
    ids = tokenizer.encode(TEXT + " coronary artery disease , the")
    counter = tokenizer.encode(TEXT.replace("Aspirin", "Heparin") + " coronary artery disease , the")
    assert len(counter) == len(ids)
    used = []
    for baseline in (None, counter):
        result = attr.attribute(model, tokenizer, ids, len(ids) - 1, baseline_ids=baseline)
        used.append(result.steps)
        assert attr.DEFAULT_STEPS <= result.steps <= attr.DEFAULT_MAX_STEPS
        assert abs(result.completeness_gap) <= result.completeness_tolerance, result
        assert abs(result.token_scores.sum() - (result.value - result.baseline_value)) == pytest.approx(
            abs(result.completeness_gap))
    assert result.token_scores.nonzero()[0].tolist() == [1]  # only the changed word differs from the baseline
    # From padding this path bends sharply: 32 points miss completeness by 0.084 nats (tolerance 0.045),
    # so the worst pieces were halved until it held.
    assert used[0] > attr.DEFAULT_STEPS


def test_requests_that_cannot_be_attributed_get_one_sentence(tiny):
    ids = _ids(tiny.config.vocab_size)
    tokenizer = _tokenizer()
    cases = [
        (dict(position=0), "position must be a token index from 1"),
        (dict(position=len(ids), method="saliency"), "method must be one of"),
        (dict(position=3, steps=1), "2 to 256 steps"),
        (dict(position=3, baseline_ids=ids[:-1]), "has 7 tokens and the text 8"),
        (dict(position=3, target=5, contrast=5), "contrast token is the target itself"),
        (dict(position=3, target=10**6), "vocabulary"),
        (dict(position=3, method="occlusion", occlusion="blur"), "Occlusion must be one of"),
    ]
    for kwargs, words in cases:
        with pytest.raises(ValueError, match=words):
            attr.attribute(tiny, tokenizer, ids, **kwargs)
    tiny.quantization = "int8"
    try:
        with pytest.raises(ValueError, match="int8 weights"):
            attr.attribute(tiny, tokenizer, ids, 3)
    finally:
        tiny.quantization = None


def test_engine_attribute_with_rollout_beside_it_and_its_refusals(bundled_models):
    from biogpt.serving import Engine, InputError

    engine = Engine(device="cpu", dtype="float32")
    text = "Aspirin inhibits platelet aggregation in patients with"
    analysis = engine.analyze(text)
    position = analysis.length - 1  # the last word, explained by the ones before it
    result = engine.attribute(text, position, method="gradient_x_input", contrast="heart")
    assert result.tokens == analysis.tokens[:position] and result.target_id == int(analysis.token_ids[position])
    assert result.rollout.shape == (position,) and result.rollout.sum() == pytest.approx(1, abs=1e-3)
    assert result.contrast_id == engine.load("bundled", "generate").tokenizer.encode("heart", add_special_tokens=False)[0]
    assert engine.attribute(text, position, method="gradient_x_input", contrast="heart") is result  # memoised
    after = engine.attribute(text, analysis.length, method="occlusion", target="cells")
    assert len(after.word_scores) == len(after.words) and after.words[1] == "Aspirin"
    for kwargs, words in [
        (dict(position=analysis.length + 1), "position must be a token index from 1"),
        (dict(position=3, steps=10_000), "2 to 256 steps"),
        (dict(position=3, baseline_text="Heparin"), "tokens and the text"),
        (dict(position=3, method="lime"), "method must be one of"),
    ]:
        with pytest.raises(InputError, match=words):
            engine.attribute(text, **kwargs)
