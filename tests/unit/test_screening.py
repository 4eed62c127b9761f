"""biogpt.screening: plain greedy picks the fp32 argmax from an int8 screen, provably the same token."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from biogpt import BioGptForCausalLM, kernels
from biogpt.generation import greedy_screen
from biogpt.screening import ScreenedArgmax, ScreenStats, screen_applicable
from tests.helpers import TINY, hf_checkpoint

transformers = pytest.importorskip("transformers")
pytestmark = [
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.skipif(not screen_applicable(), reason="PyTorch's fbgemm int8 linear is missing or not exact here"),
]

# A small body under the real vocabulary: the output projection is most of the work, so the screen is used.
SMALL_BODY = dict(vocab_size=42384, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128)


def reference(weight: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    return torch.argmax(F.linear(h, weight), dim=-1)


@pytest.mark.parametrize("activations", ["8-bit", "7-bit"])
def test_screen_matches_the_full_projection_on_random_and_adversarial_rows(monkeypatch, activations):
    if activations == "7-bit":  # what an AVX2 CPU without VNNI uses (its 8-bit check fails), forced here
        monkeypatch.setenv(kernels.DISTRUST_ENV, "fbgemm-u8")
    elif not kernels.is_exact("fbgemm-u8"):
        pytest.skip("fbgemm's 8-bit activations are not exact on this CPU")
    generator = torch.Generator().manual_seed(0)
    weight = torch.randn(5000, 256, generator=generator) * 0.05
    # Near-ties the int8 screen cannot separate: copies of row 10 moved by a few ulps, and an exact duplicate.
    weight[20] = weight[10]
    weight[30] = weight[10] * (1 + 2**-22)
    weight[40] = torch.nextafter(weight[10], torch.full_like(weight[10], 1.0))
    screen = ScreenedArgmax(weight)
    assert screen.reduce_range == (activations == "7-bit")
    screen.stats = ScreenStats()
    hidden = [torch.randn(1, 256, generator=generator) * scale for scale in (0.1, 1.0, 10.0) for _ in range(100)]
    aligned = weight[10][None] * 20  # makes rows 10, 20, 30 and 40 the top four, nearly tied
    hidden += [aligned, aligned.clone().neg(), torch.zeros(1, 256)]  # all-zero: every logit ties at 0
    for h in hidden:
        assert int(screen(h)[0]) == int(reference(weight, h)[0])
    batch = torch.cat(hidden[:8])
    assert torch.equal(screen(batch), reference(weight, batch))
    assert screen.stats.fallbacks >= 1  # the exact tie was left to the full projection, lowest index first
    assert screen.stats.exact_rows > 0  # and near-ties were settled on gathered fp32 rows


def test_screen_leaves_nan_and_inf_to_the_full_projection():
    weight = torch.randn(300, 64, generator=torch.Generator().manual_seed(1))
    screen = ScreenedArgmax(weight)
    for value in (float("nan"), float("inf")):
        h = torch.ones(1, 64)
        h[0, 3] = value
        assert int(screen(h)[0]) == int(reference(weight, h)[0])


@pytest.fixture(scope="module")
def small_body(tmp_path_factory):
    folder = hf_checkpoint(tmp_path_factory.mktemp("screen"), SMALL_BODY, seed=4, scale=5.0)
    return transformers.BioGptForCausalLM.from_pretrained(folder).eval(), BioGptForCausalLM.from_pretrained(folder), folder


def test_generate_uses_the_screen_for_plain_greedy_and_gives_transformers_tokens(small_body):
    hf, ours, _ = small_body
    screen = greedy_screen(ours)
    assert screen is not None
    screen.stats = ScreenStats()
    generator = torch.Generator().manual_seed(0)
    for length in (1, 7, 30):
        ids = torch.randint(4, 42384, (2, length), generator=generator)
        ids[:, 0] = 2
        with torch.no_grad():
            expected = hf.generate(ids, max_new_tokens=40, do_sample=False)
        assert torch.equal(ours.generate(ids, max_new_tokens=40, do_sample=False), expected)
    assert screen.stats.steps >= 3 * 40  # every step went through the screen


def test_the_screen_is_skipped_where_it_does_not_apply_or_pay(small_body, tmp_path):
    _, ours, folder = small_body
    screen = greedy_screen(ours)
    screen.stats = ScreenStats()
    ids = torch.tensor([[2, 100, 200, 300]])
    ours.generate(ids, max_new_tokens=5, do_sample=True, seed=1)
    ours.generate(ids, max_new_tokens=5, repetition_penalty=1.3)  # scores change before the choice
    ours.generate(ids, max_new_tokens=5, num_beams=2)
    assert screen.stats.steps == 0
    assert greedy_screen(BioGptForCausalLM.from_pretrained(folder, dtype=torch.bfloat16)) is None
    assert greedy_screen(BioGptForCausalLM.from_pretrained(folder, quantize="int8")) is None
    # A deep, narrow-vocabulary model reads most of its weights in the layers: no screen.
    tiny = BioGptForCausalLM.from_pretrained(hf_checkpoint(tmp_path, TINY, seed=1))
    assert greedy_screen(tiny) is None


def test_changing_the_weights_rebuilds_the_screen(small_body):
    hf, ours, folder = small_body
    model = BioGptForCausalLM.from_pretrained(folder)
    first = greedy_screen(model)
    assert greedy_screen(model) is first
    with torch.no_grad():
        model.output_projection.weight[123].mul_(3.0)  # tied: the token embedding changes too
    assert greedy_screen(model) is not first
    hf_model = transformers.BioGptForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        hf_model.output_projection.weight[123].mul_(3.0)
        ids = torch.tensor([[2, 123, 5, 123]])
        assert torch.equal(model.generate(ids, max_new_tokens=20), hf_model.generate(ids, max_new_tokens=20, do_sample=False))
