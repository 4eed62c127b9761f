"""Generation: token-for-token parity with transformers' generate, streaming, stop strings,
validation, seeds and the KV-cache discipline.

Checkpoints are random but perturbed (matrices x20) so greedy paths vary; transformers saves
them and both sides load the same folder. The oracle runs with its default (sdpa) attention,
the way users run it.
"""

from __future__ import annotations

import math
import random
import threading

import pytest
import torch

from tests.helpers import TINY, hf_checkpoint

from biogpt import BioGptForCausalLM, KVCache
from biogpt.generation import ContinuationText, generate_detailed, stream

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()
# transformers warns about its own defaults (max_length=20) that these tests compare against on purpose.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

# The real vocabulary on a tiny body: for text (streaming, stop strings) and the full-width softmax.
REAL_VOCAB = dict(vocab_size=42384, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = hf_checkpoint(tmp_path_factory.mktemp("tiny"), TINY, seed=1)
    hf = transformers.BioGptForCausalLM.from_pretrained(folder).eval()
    return hf, BioGptForCausalLM.from_pretrained(folder)


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    folder = hf_checkpoint(tmp_path_factory.mktemp("real"), REAL_VOCAB, seed=2)
    hf = transformers.BioGptForCausalLM.from_pretrained(folder).eval()
    return hf, BioGptForCausalLM.from_pretrained(folder)


@pytest.fixture(scope="module")
def tokenizer():
    from biogpt.tokenizer import BioGptTokenizer

    return BioGptTokenizer.from_pretrained("bundled-tokenizer")


def prompt(length: int, seed: int = 0, vocab: int = 1000) -> torch.Tensor:
    ids = torch.randint(3, vocab, (1, length), generator=torch.Generator().manual_seed(seed))
    ids[0, 0] = 2  # BioGPT prompts start with </s>
    return ids


def hf_generate(hf, ids, seed=None, **kwargs):
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        return hf.generate(ids, **kwargs)


def frequent_token(hf, ids, **kwargs) -> int:
    """A token the model does produce on this prompt: used as eos so that sequences really end."""
    out = hf_generate(hf, ids, max_new_tokens=12, **kwargs)[0, ids.shape[1]:].tolist()
    return out[4]


def assert_same(hf_ids: torch.Tensor, our_ids: torch.Tensor) -> None:
    assert hf_ids.shape == our_ids.shape, (hf_ids.tolist(), our_ids.tolist())
    assert torch.equal(hf_ids, our_ids), (hf_ids.tolist(), our_ids.tolist())


# ----------------------------------------------------------------------------------------------
# Parity with transformers


def test_checkpoint_gives_varied_greedy_paths(tiny):
    hf, _ = tiny
    new = hf_generate(hf, prompt(6), max_new_tokens=24)[0, 6:].tolist()
    assert len(set(new)) >= 8, new


@pytest.mark.parametrize("length,seed", [(1, 0), (5, 1), (17, 2)])
def test_greedy_matches_transformers(tiny, length, seed):
    hf, ours = tiny
    ids = prompt(length, seed)
    assert_same(hf_generate(hf, ids, max_new_tokens=40), ours.generate(ids, max_new_tokens=40))


def test_default_length_is_twenty_new_tokens_capped_by_positions(tiny):
    hf, ours = tiny
    assert_same(hf_generate(hf, prompt(4)), ours.generate(prompt(4)))
    assert ours.generate(prompt(4)).shape[1] == 24
    near_end = prompt(TINY["max_position_embeddings"] - 5, seed=3)
    assert_same(hf_generate(hf, near_end), ours.generate(near_end))  # 5 new tokens, as transformers


def test_eos_stops_and_pads_like_transformers(tiny):
    hf, ours = tiny
    ids = torch.cat([prompt(5, 4), prompt(5, 5)])
    eos = frequent_token(hf, ids[:1])
    kwargs = dict(max_new_tokens=30, eos_token_id=eos, pad_token_id=7)
    expected = hf_generate(hf, ids, **kwargs)
    assert_same(expected, ours.generate(ids, **kwargs))
    assert (expected[:, 5:] == eos).any()
    several = dict(max_length=25, eos_token_id=[expected[1, 7].item(), eos])  # transformers' other spellings
    assert_same(hf_generate(hf, ids, **several), ours.generate(ids, **several))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(num_beams=4),
        dict(num_beams=4, num_return_sequences=2, length_penalty=0.5),
        dict(num_beams=4, no_repeat_ngram_size=2, num_return_sequences=2, length_penalty=2.0),
        dict(num_beams=4, early_stopping=True, length_penalty=-1.0),
        dict(num_beams=3, early_stopping="never", num_return_sequences=3),
        dict(num_beams=4, early_stopping=False, repetition_penalty=1.3, min_new_tokens=6),
    ],
)
def test_beam_search_matches_transformers(tiny, kwargs):
    hf, ours = tiny
    ids = prompt(6, 6)
    eos = frequent_token(hf, ids)  # beams that end early exercise the finished-beam bookkeeping
    kwargs = dict(max_new_tokens=20, eos_token_id=eos, **kwargs)
    with torch.no_grad():
        expected = hf.generate(ids, output_scores=True, return_dict_in_generate=True, **kwargs)
    assert_same(expected.sequences, ours.generate(ids, **kwargs))
    detailed = generate_detailed(ours, _IdsTokenizer(), ids, **kwargs)
    beam_scores = torch.tensor([d.beam_score for d in detailed])
    torch.testing.assert_close(beam_scores, expected.sequences_scores, rtol=0, atol=0)


def test_beam_search_without_eos_runs_to_the_length_limit(tiny):
    hf, ours = tiny
    ids = prompt(6, 7)
    kwargs = dict(max_new_tokens=12, num_beams=4, num_return_sequences=2)
    assert_same(hf_generate(hf, ids, **kwargs), ours.generate(ids, **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),  # transformers' default top_k=50
        dict(temperature=0.7, top_k=0),
        dict(top_k=20),
        dict(top_p=0.8, top_k=0),
        dict(typical_p=0.6),
        dict(temperature=1.3, top_k=40, top_p=0.9, repetition_penalty=1.5),
        dict(num_return_sequences=3, no_repeat_ngram_size=2, temperature=2.0),
    ],
)
def test_sampling_matches_transformers_under_the_same_seed(tiny, kwargs):
    hf, ours = tiny
    ids = prompt(5, 8)
    kwargs = dict(max_new_tokens=25, do_sample=True, **kwargs)
    assert_same(hf_generate(hf, ids, seed=123, **kwargs), ours.generate(ids, seed=123, **kwargs))


def test_beam_sampling_matches_transformers(tiny):
    hf, ours = tiny
    ids = prompt(5, 9)
    kwargs = dict(max_new_tokens=15, do_sample=True, num_beams=3, num_return_sequences=2, temperature=1.5)
    assert_same(hf_generate(hf, ids, seed=7, **kwargs), ours.generate(ids, seed=7, **kwargs))


def test_min_new_tokens_and_bad_words_match_transformers(tiny):
    hf, ours = tiny
    ids = prompt(5, 10)
    path = hf_generate(hf, ids, max_new_tokens=12)[0, 5:].tolist()
    eos = path[2]
    kwargs = dict(
        max_new_tokens=20, eos_token_id=eos, min_new_tokens=8,
        bad_words_ids=[[path[0]], [path[3], path[4]], [eos], [path[1], path[5], path[6]]],
    )
    expected = hf_generate(hf, ids, **kwargs)
    assert_same(expected, ours.generate(ids, **kwargs))
    assert expected[0, 5] != path[0]
    assert eos not in expected[0, 5:13].tolist()
    kwargs["do_sample"] = True
    assert_same(hf_generate(hf, ids, seed=3, **kwargs), ours.generate(ids, seed=3, **kwargs))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(do_sample=True, top_p=0.9, repetition_penalty=1.4),
        dict(num_beams=3, num_return_sequences=2, no_repeat_ngram_size=3),
        dict(repetition_penalty=2.0, no_repeat_ngram_size=2),
    ],
)
def test_batched_prompts_with_left_padding_match_transformers(tiny, kwargs):
    hf, ours = tiny
    rows = [prompt(3, 11)[0], prompt(9, 12)[0], prompt(6, 13)[0]]
    width = max(len(r) for r in rows)
    ids = torch.stack([torch.cat([torch.full((width - len(r),), 1), r]) for r in rows])
    mask = torch.stack([torch.cat([torch.zeros(width - len(r)), torch.ones(len(r))]) for r in rows]).long()
    kwargs = dict(max_new_tokens=15, eos_token_id=frequent_token(hf, ids[1:2]), **kwargs)
    expected = hf_generate(hf, ids, seed=5, attention_mask=mask, **kwargs)
    assert_same(expected, ours.generate(ids, attention_mask=mask, seed=5, **kwargs))
    # Without a mask the pad tokens are found the way transformers finds them.
    assert_same(hf_generate(hf, ids, seed=5, **kwargs), ours.generate(ids, seed=5, **kwargs))


def test_real_vocabulary_greedy_and_sampling_match(real):
    hf, ours = real
    ids = prompt(8, 14, vocab=42384)
    assert_same(hf_generate(hf, ids, max_new_tokens=30), ours.generate(ids, max_new_tokens=30))
    kwargs = dict(max_new_tokens=12, do_sample=True, top_p=0.95, top_k=0)
    assert_same(hf_generate(hf, ids, seed=9, **kwargs), ours.generate(ids, seed=9, **kwargs))


def test_bundled_demo_model_matches_transformers(tokenizer):
    from biogpt.loading import BUNDLED_NAMES

    folder = BUNDLED_NAMES["bundled"]
    if not (folder / "config.json").is_file():
        pytest.skip("the bundled demo model is not in assets/ yet")
    # fp32 on both sides: the checkpoint is stored in fp16, which transformers 5 would otherwise keep.
    hf = transformers.BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    ours = BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert hf.dtype == ours.dtype == torch.float32
    ids = torch.tensor([tokenizer.encode("Aspirin is used to treat")])
    for kwargs in (dict(), dict(num_beams=4, num_return_sequences=2, no_repeat_ngram_size=3),
                   dict(do_sample=True, top_p=0.9, temperature=0.8, repetition_penalty=1.2)):
        kwargs = dict(max_new_tokens=12, **kwargs)
        assert_same(hf_generate(hf, ids, seed=0, **kwargs), ours.generate(ids, seed=0, **kwargs))


# ----------------------------------------------------------------------------------------------
# Detailed results


class _IdsTokenizer:
    """Stands in for a tokenizer where only ids matter."""

    def decode(self, ids, skip_special_tokens=False):
        return " ".join(str(i) for i in ids)

    def encode(self, text):
        return [int(t) for t in text.split()]


def test_detailed_logprobs_are_the_processed_distribution(real, tokenizer):
    hf, ours = real
    ids = prompt(6, 15, vocab=42384)
    kwargs = dict(max_new_tokens=12, repetition_penalty=1.2)
    with torch.no_grad():
        expected = hf.generate(ids, output_scores=True, return_dict_in_generate=True, **kwargs)
    [result] = generate_detailed(ours, tokenizer, ids, alternatives=3, **kwargs)
    new = expected.sequences[0, 6:]
    assert result.token_ids == new.tolist()
    hf_logprobs = torch.stack([torch.log_softmax(s[0], -1)[t] for s, t in zip(expected.scores, new)])
    torch.testing.assert_close(torch.tensor(result.token_logprobs), hf_logprobs)
    assert result.text == tokenizer.decode(new.tolist(), skip_special_tokens=True)
    assert result.finish_reason == "length"
    for step, choices in enumerate(result.alternatives):
        assert len(choices) == 3
        assert choices[0].token_id == result.token_ids[step]  # greedy picks the best
        assert choices[0].probability >= choices[1].probability >= choices[2].probability
        assert choices[0].token == tokenizer.decode([choices[0].token_id])


def test_detailed_batch_reports_eos_and_prompt_index(tiny):
    hf, ours = tiny
    ids = torch.cat([prompt(5, 4), prompt(5, 5)])
    sampled = dict(max_new_tokens=30, do_sample=True, num_return_sequences=2, seed=1)
    eos = ours.generate(ids, eos_token_id=None, **sampled)[0, 5 + 3].item()  # row 0 surely ends
    results = generate_detailed(ours, _IdsTokenizer(), ids, max_new_tokens=30, eos_token_id=eos,
                                do_sample=True, num_return_sequences=2, seed=1)
    assert [r.prompt_index for r in results] == [0, 0, 1, 1]
    expected = ours.generate(ids, max_new_tokens=30, eos_token_id=eos, do_sample=True, num_return_sequences=2, seed=1)
    for row, result in zip(expected.tolist(), results):
        assert result.token_ids == row[5: 5 + len(result.token_ids)]
        assert len(result.token_logprobs) == len(result.alternatives) == len(result.token_ids)
        if result.finish_reason == "eos":
            assert result.token_ids[-1] == eos and eos not in result.token_ids[:-1]
        else:
            assert result.finish_reason == "length" and len(result.token_ids) == 30
    assert any(r.finish_reason == "eos" for r in results)


# ----------------------------------------------------------------------------------------------
# Streaming and stop strings


SAMPLED = dict(max_new_tokens=30, do_sample=True, seed=4, temperature=1.5, eos_token_id=None)
STREAM_PROMPTS = [
    "COVID-19 (SARS-CoV-2) infection",
    "The IC50 was 3.5 μM (95% CI, 2.1-4.8); however,",
    'Patients with type-2 diabetes ("T2D") and',
]


@pytest.mark.parametrize("text", STREAM_PROMPTS)
def test_stream_deltas_concatenate_to_the_final_text(real, tokenizer, text):
    _, ours = real
    # eos off: 40 tokens every time; a sampled "</s>" mid-way is skipped in the text like any special token
    events = list(stream(ours, tokenizer, text, **SAMPLED))
    assert len(events) == 30 and events[-1].finish_reason == "length"
    assert all(e.finish_reason is None for e in events[:-1])
    new_ids = [e.token_id for e in events]
    final = tokenizer.decode(new_ids, skip_special_tokens=True)  # the continuation only, not the prompt
    assert "".join(e.text for e in events) == final
    assert sum(1 for e in events if e.text) > 5  # it really streams, not one flush at the end
    ids = torch.tensor([tokenizer.encode(text)])
    expected = ours.generate(ids, **SAMPLED)
    assert new_ids == expected[0, ids.shape[1]:].tolist()
    [detailed] = generate_detailed(ours, tokenizer, text, **SAMPLED)
    assert detailed.text == final
    assert [e.logprob for e in events] == pytest.approx(detailed.token_logprobs, abs=1e-6)


def test_settled_text_never_changes_on_adversarial_token_mixes(tokenizer):
    """Fuzz the rule the stream relies on: every emitted prefix stays a prefix of the final text."""
    vocab = tokenizer.get_vocab()
    tricky = [vocab[w] for w in ("(</w>", ")</w>", "@-@</w>", "&quot;</w>", "&apos;</w>", "&apos;s</w>", ",</w>",
                                 ".</w>", "%</w>", ";</w>", "&amp;</w>", "/</w>", "-</w>", "</s>") if w in vocab]
    pieces = [i for w, i in vocab.items() if not w.endswith("</w>")][:2000]
    words = [i for w, i in vocab.items() if w.endswith("</w>")][:2000]
    rng = random.Random(0)
    for trial in range(120):
        stops = [] if trial % 2 else ["-", "of the", ")"][trial % 3: trial % 3 + 1]
        text = ContinuationText(tokenizer, stops)
        out = ""
        for _ in range(30):
            r = rng.random()
            token = rng.choice(tricky) if r < 0.45 else rng.choice(pieces) if r < 0.65 else rng.choice(words)
            stopped = text.append(token)
            out += text.delta(final=stopped)
            assert text.text.startswith(out)
            if stopped:
                break
        out += text.delta(final=True)
        full = tokenizer.decode(text.ids, skip_special_tokens=True)
        cut = min([i for i in (full.find(s) for s in stops) if i >= 0], default=len(full))
        assert out == full[:cut]


def test_closing_the_stream_stops_the_model_at_once(real, tokenizer):
    _, ours = real
    calls = []
    handle = ours.register_forward_hook(lambda module, args, kwargs_out: calls.append(1))
    try:
        events = stream(ours, tokenizer, "Aspirin reduces", max_new_tokens=50)
        assert calls == []  # nothing runs before the first event is asked for
        taken = [next(events) for _ in range(3)]
        assert len(calls) == 3  # prefill + two decode steps
        events.close()
        assert len(calls) == 3
        for event in stream(ours, tokenizer, "Aspirin reduces", max_new_tokens=50):
            if len(calls) == 8:
                break
        assert len(calls) == 8
    finally:
        handle.remove()
    assert all(isinstance(e.logprob, float) and e.logprob <= 0 for e in taken)
    assert all(len(e.alternatives) == 5 for e in taken)


def test_stop_strings_end_generation_and_are_cut(real, tokenizer):
    _, ours = real
    text = "Aspirin reduces"
    ids = torch.tensor([tokenizer.encode(text)])
    [free] = generate_detailed(ours, tokenizer, text, max_new_tokens=30)
    words = free.text.split()
    stop = words[len(words) // 2]
    cut = free.text.find(stop)
    [stopped] = generate_detailed(ours, tokenizer, text, max_new_tokens=30, stop=[stop, "never-there"])
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[:cut]
    assert stopped.token_ids == free.token_ids[: len(stopped.token_ids)]
    assert stop in tokenizer.decode(stopped.token_ids, skip_special_tokens=True)
    assert stop not in tokenizer.decode(stopped.token_ids[:-1], skip_special_tokens=True)
    events = list(stream(ours, tokenizer, text, max_new_tokens=30, stop=stop))
    assert "".join(e.text for e in events) == stopped.text
    assert events[-1].finish_reason == "stop" and len(events) == len(stopped.token_ids)
    out = ours.generate(ids, max_new_tokens=30, stop=stop, tokenizer=tokenizer)
    assert out[0, ids.shape[1]:].tolist() == stopped.token_ids
    with pytest.raises(ValueError, match="tokenizer"):
        ours.generate(ids, max_new_tokens=5, stop=stop)


def test_beam_search_with_stop_strings(real, tokenizer):
    _, ours = real
    kwargs = dict(max_new_tokens=16, num_beams=3, num_return_sequences=3)
    free = generate_detailed(ours, tokenizer, "Aspirin reduces", **kwargs)
    stop = free[0].text.split()[2]
    stopped = generate_detailed(ours, tokenizer, "Aspirin reduces", stop=stop, **kwargs)
    assert any(r.finish_reason == "stop" for r in stopped)
    for result in stopped:
        assert stop not in result.text
        decoded = tokenizer.decode(result.token_ids, skip_special_tokens=True)
        assert (stop in decoded) == (result.finish_reason == "stop")
        if result.finish_reason == "stop":
            assert decoded.startswith(result.text)
            assert stop not in tokenizer.decode(result.token_ids[:-1], skip_special_tokens=True)


def test_stream_ending_on_eos(real, tokenizer):
    hf, ours = real
    ids = torch.tensor([tokenizer.encode("Aspirin reduces")])
    eos = frequent_token(hf, ids)
    events = list(stream(ours, tokenizer, ids, max_new_tokens=30, eos_token_id=eos))
    assert events[-1].finish_reason == "eos" and events[-1].token_id == eos
    assert "".join(e.text for e in events) == tokenizer.decode([e.token_id for e in events], skip_special_tokens=True)


# ----------------------------------------------------------------------------------------------
# Validation


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(do_sample=True, temperature=0.0), "temperature must be greater than 0"),
        (dict(do_sample=True, temperature=-1.0), "temperature"),
        (dict(do_sample=True, top_p=0.0), "top_p"),
        (dict(do_sample=True, top_p=1.5), "top_p"),
        (dict(do_sample=True, top_k=-1), "top_k"),
        (dict(do_sample=True, typical_p=0.0), "typical_p"),
        (dict(repetition_penalty=0.0), "repetition_penalty"),
        (dict(num_beams=2, num_return_sequences=3), "at most 2 sequences"),
        (dict(num_return_sequences=2), "Greedy decoding"),
        (dict(max_new_tokens=0), "max_new_tokens"),
        (dict(max_new_tokens=200), "at most 124 new tokens"),
        (dict(early_stopping="sometimes"), "early_stopping"),
        (dict(bad_words_ids=[[5000]]), "outside this model's vocabulary"),
        (dict(min_new_tokens=-1), "min_new_tokens"),
    ],
)
def test_invalid_settings_are_refused_with_a_clear_message(tiny, kwargs, message):
    _, ours = tiny
    with pytest.raises(ValueError, match=message):
        ours.generate(prompt(4), **kwargs)


def test_prompts_without_room_or_tokens_are_refused(tiny):
    _, ours = tiny
    full = prompt(TINY["max_position_embeddings"])
    with pytest.raises(ValueError, match="no room for new tokens"):
        ours.generate(full)
    with pytest.raises(ValueError, match="no room for new tokens"):
        ours.generate(full, max_new_tokens=1)
    with pytest.raises(ValueError, match="empty"):
        ours.generate(torch.zeros((1, 0), dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        ours.generate(torch.tensor([[5, 6], [7, 8]]), attention_mask=torch.tensor([[1, 1], [0, 0]]))
    with pytest.raises(TypeError, match="unexpected"):
        ours.generate(prompt(3), max_new_token=5)


# ----------------------------------------------------------------------------------------------
# Seeds, threads, the global RNG


def test_seeds_are_private_and_reproducible(tiny):
    _, ours = tiny
    ids = prompt(4, 16)
    kwargs = dict(max_new_tokens=20, do_sample=True, temperature=1.5, top_k=0, eos_token_id=None)
    state = torch.get_rng_state()
    first = ours.generate(ids, seed=1, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    assert torch.equal(first, ours.generate(ids, seed=1, **kwargs))
    assert not torch.equal(first, ours.generate(ids, seed=2, **kwargs))
    unseeded = ours.generate(ids, **kwargs)
    assert torch.equal(torch.get_rng_state(), state)
    assert unseeded.shape == first.shape

    expected = {seed: ours.generate(ids, seed=seed, **kwargs) for seed in range(4)}
    results: dict[int, list[torch.Tensor]] = {seed: [] for seed in range(4)}

    def worker(seed):
        for _ in range(3):
            results[seed].append(ours.generate(ids, seed=seed, **kwargs))
            torch.manual_seed(999 + seed)  # other users touching the global RNG change nothing

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for seed in range(4):
        assert all(torch.equal(r, expected[seed]) for r in results[seed])


# ----------------------------------------------------------------------------------------------
# KV cache discipline


def test_prefill_once_then_one_token_per_step_into_a_preallocated_cache(tiny):
    _, ours = tiny
    seen = []

    def record(module, args, kwargs):
        cache = kwargs["past_key_values"]
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        seen.append((ids.shape, cache, kwargs.get("logits_to_keep", 0)))

    handle = ours.register_forward_pre_hook(record, with_kwargs=True)
    try:
        ours.generate(prompt(7, 17), max_new_tokens=10)
        ours.generate(prompt(7, 17), max_new_tokens=6, num_beams=3)
    finally:
        handle.remove()
    greedy, beams = seen[:10], seen[10:]
    assert greedy[0][0] == (1, 7) and greedy[0][2] == 1  # prefill projects only the last position
    assert all(shape == (1, 1) for shape, _, _ in greedy[1:])  # the prompt is never re-run
    cache = greedy[0][1]
    assert isinstance(cache, KVCache) and all(c is cache for _, c, _ in greedy)
    assert cache.capacity == 7 + 10 - 1 and cache.keys[0].shape[2] == 16  # allocated once, never grown
    assert beams[0][0] == (3, 7) and all(shape == (3, 1) for shape, _, _ in beams[1:])
    assert beams[0][1].keys[0].shape[2] == 7 + 6 - 1


def test_top_p_after_top_k_skips_the_full_sort_and_gives_the_same_bits():
    from biogpt.generation import _top_p_among_few, top_k_filter, top_k_top_p_filter

    generator = torch.Generator().manual_seed(0)
    used_fast_path = 0
    for trial in range(300):
        rows, vocab = 1 + trial % 3, 42384 if trial % 10 == 0 else 1000
        scores = torch.randn(rows, vocab, generator=generator) * (0.5 + trial % 7)
        if trial % 4 == 0:  # ties, some of them around the cut
            scores = (scores * 2).round() / 2
        if trial % 5 == 0:  # a row with a few banned tokens (no-repeat n-grams): -inf before top-k
            scores[0, torch.randperm(vocab, generator=generator)[:3]] = -math.inf
        unfiltered, k = scores, 1 + trial % 60
        scores = top_k_filter(scores, k)
        top_p = (0.3, 0.8, 0.9, 0.95, 0.99)[trial % 5]
        sorted_scores, sorted_indices = torch.sort(scores)
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove_sorted = cumulative <= (1 - top_p)
        remove_sorted[..., -1:] = 0
        full_sort = scores.masked_fill(remove_sorted.scatter(1, sorted_indices, remove_sorted), -math.inf)
        fast = _top_p_among_few(scores, top_p, 1)
        if fast is not None:
            used_fast_path += 1
            assert torch.equal(fast, full_sort), trial
        # Both filters from one topk, on the scores before top-k.
        assert torch.equal(top_k_top_p_filter(unfiltered, k, top_p, 1), full_sort), trial
    assert used_fast_path > 200  # the rest had equal scores across the cut, left to the full sort
