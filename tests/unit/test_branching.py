"""Branching: forced-prefix decoding (forced_token_ids) alone, through the batcher and the engine."""

from __future__ import annotations

import functools

import pytest
import torch

from biogpt import BioGptForCausalLM, BioGptTokenizer
from biogpt.batching import DecodeBatcher
from biogpt.generation import SAMPLER_RULE, generate, generate_detailed, stream
from biogpt.serving import Engine, GenerationRequest, InputError
from biogpt.serving.requests import ForcedPrefix
from tests.helpers import ODD, hf_checkpoint

PROMPT = [2, 17, 33, 41, 8]


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory, one_thread):
    folder = hf_checkpoint(tmp_path_factory.mktemp("branching"), ODD, seed=5)
    return BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


@functools.lru_cache(maxsize=1)
def _tokenizer():
    return BioGptTokenizer.from_pretrained("bundled-tokenizer")


@pytest.fixture(scope="module")
def tokenizer():
    return _tokenizer()


def _detailed(model, batcher=None, **kwargs):
    settings = {"max_new_tokens": 12, "eos_token_id": None, **kwargs}
    return generate_detailed(model, _tokenizer(), torch.tensor([PROMPT]), batcher=batcher, **settings)


def _same(a, b) -> bool:
    """Bit for bit: tokens, log-probabilities and every alternative's probability."""
    return a.token_ids == b.token_ids and a.token_logprobs == b.token_logprobs and a.alternatives == b.alternatives


@pytest.mark.parametrize("through_batcher", [False, True], ids=["alone", "batcher"])
def test_forcing_a_sampled_runs_tokens_reproduces_it_and_a_branch_reproduces_alone(odd_model, through_batcher):
    batcher = DecodeBatcher(odd_model) if through_batcher else None
    sampling = dict(do_sample=True, seed=11, temperature=1.5, top_k=0, repetition_penalty=1.3)
    original = _detailed(odd_model, batcher, **sampling)[0]
    assert original.forced_tokens == 0
    for count in (1, 5, 12):  # a prefix of the run, and the whole run
        forced = _detailed(odd_model, batcher, forced_token_ids=original.token_ids[:count], **sampling)[0]
        assert _same(forced, original) and forced.forced_tokens == count
    # A branch: the run's first 4 tokens, then a candidate it did not choose.
    other = next(c.token_id for c in original.alternatives[4] if c.token_id != original.token_ids[4])
    branch_ids = original.token_ids[:4] + [other]
    branch = _detailed(odd_model, batcher, forced_token_ids=branch_ids, **sampling)[0]
    assert branch.token_ids[:5] == branch_ids and branch.forced_tokens == 5
    assert branch.token_logprobs[:5] == original.token_logprobs[:4] + [branch.token_logprobs[4]]
    again = _detailed(odd_model, batcher, forced_token_ids=branch_ids, **sampling)[0]
    assert _same(again, branch)
    if batcher is not None:  # the same branch decoded alone: same tokens (logits may differ in last bits)
        assert _detailed(odd_model, None, forced_token_ids=branch_ids, **sampling)[0].token_ids == branch.token_ids
        batcher.close()


def test_a_branch_from_a_greedy_run_equals_greedy_decoding_after_those_tokens(odd_model):
    original = _detailed(odd_model)[0]
    other = original.alternatives[2][1].token_id
    forced = original.token_ids[:2] + [other]
    branch = _detailed(odd_model, forced_token_ids=forced)[0]
    assert branch.token_logprobs[:2] == original.token_logprobs[:2]
    # Greedy from the prompt extended by the forced tokens: the same continuation.
    extended = generate(odd_model, torch.tensor([PROMPT + forced]), max_new_tokens=9, eos_token_id=None)
    assert branch.token_ids == forced + extended[0, len(PROMPT) + 3:].tolist()
    # generate() (with its int8 screen where it applies) forces the same way.
    ids = generate(odd_model, torch.tensor([PROMPT]), max_new_tokens=12, eos_token_id=None, forced_token_ids=forced)
    assert ids[0, len(PROMPT):].tolist() == branch.token_ids


def test_a_stream_marks_its_forced_tokens_and_equals_the_detailed_result(odd_model, tokenizer):
    sampling = dict(do_sample=True, seed=3, max_new_tokens=10, eos_token_id=None)
    detailed = _detailed(odd_model, forced_token_ids=[40, 41], **sampling)[0]
    events = list(stream(odd_model, tokenizer, torch.tensor([PROMPT]), forced_token_ids=[40, 41], **sampling))
    assert [e.forced for e in events] == [True, True] + [False] * 8
    assert [e.token_id for e in events] == detailed.token_ids
    assert [e.logprob for e in events] == detailed.token_logprobs


@pytest.mark.parametrize("forced, words", [
    ([5, 900], "outside this model's vocabulary"),
    (list(range(10, 23)), "do not fit in max_new_tokens=12"),
    (["a"], "list of whole token ids"),
])
def test_bad_forced_tokens_are_refused_with_a_sentence(odd_model, forced, words):
    with pytest.raises(ValueError, match=words):
        _detailed(odd_model, forced_token_ids=forced)


def test_beam_search_and_an_early_eos_refuse_forced_tokens(odd_model):
    with pytest.raises(ValueError, match="Beam search cannot continue from forced tokens"):
        _detailed(odd_model, num_beams=2, forced_token_ids=[7])
    with pytest.raises(ValueError, match="can only be the last forced token"):
        _detailed(odd_model, eos_token_id=2, forced_token_ids=[7, 2, 9])


def test_engine_branch_equals_forced_decoding_through_the_batcher_and_reproduces(bundled_models):
    engine = Engine(device="cpu", dtype="float32")
    request = GenerationRequest(prompt="Aspirin is used to", mode="sampling", seed=7, max_new_tokens=16)
    original = list(engine.generate(request))[-1]
    assert "forced_token_ids" not in original.settings
    own = original.samples[0].token_ids.tolist()
    replay = list(engine.generate(request, forced=ForcedPrefix(token_ids=own)))[-1]
    assert replay.samples[0].token_ids.tolist() == own
    assert (replay.samples[0].probabilities == original.samples[0].probabilities).all()
    assert replay.settings["forced_token_ids"] == own and replay.settings["sampler_rule"] == SAMPLER_RULE

    loaded = engine.load("bundled", "generate")
    branch_ids = own[:3] + loaded.tokenizer.encode("kidney", add_special_tokens=False)
    branch = list(engine.generate(request, forced=ForcedPrefix(token_ids=own[:3], text="kidney")))[-1]
    assert branch.settings["forced_token_ids"] == branch_ids
    direct = generate_detailed(loaded.model, loaded.tokenizer, [loaded.tokenizer.encode(request.prompt)],
                               batcher=loaded.batcher, **request.decoding_kwargs(engine.limits), seed=7,
                               forced_token_ids=branch_ids)[0]
    assert branch.samples[0].token_ids.tolist() == direct.token_ids
    assert branch.samples[0].probabilities.tolist() == pytest.approx([float(torch.tensor(v).exp()) for v in
                                                                      direct.token_logprobs], rel=1e-6)
    again = list(engine.generate(request, forced=ForcedPrefix(token_ids=own[:3], text="kidney")))[-1]
    assert (again.samples[0].probabilities == branch.samples[0].probabilities).all()

    for forced, words in [(ForcedPrefix([10**7]), "in this model's vocabulary"),
                          (ForcedPrefix(list(range(20, 40))), "Max new tokens is 16"),
                          (ForcedPrefix([True]), "whole numbers")]:
        with pytest.raises(InputError, match=words):
            list(engine.generate(request, forced=forced))
    with pytest.raises(InputError, match="Beam search cannot continue"):
        list(engine.generate(GenerationRequest(prompt="Aspirin", mode="beam search"), forced=ForcedPrefix([20])))
