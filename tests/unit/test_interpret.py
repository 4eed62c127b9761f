"""biogpt.interpret against hand computation on tiny models: statistics, rollout, PCA, the logit
lens, head ablation, the generation trace, and the cache that keeps view changes model-free."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from biogpt import BioGptConfig, BioGptForCausalLM, interpret
from biogpt.tokenizer import BioGptTokenizer
from testkit import REPO
from testkit.checkpoints import perturb_
from tests.helpers import TINY

TEXT = "Naloxone reverses the antihypertensive effect of clonidine."


@pytest.fixture(scope="module")
def tokenizer():
    return BioGptTokenizer.from_pretrained(REPO / "assets" / "tokenizers" / "biogpt")


@pytest.fixture(scope="module")
def model():
    """TINY's shape with BioGPT's real vocabulary, so the real tokenizer feeds it."""
    torch.manual_seed(0)
    model = BioGptForCausalLM(BioGptConfig(**{**TINY, "vocab_size": 42384, "num_hidden_layers": 3}))
    model.init_weights()
    perturb_(model, seed=1, scale=6.0)
    return model.eval()


class CountingModel:
    """Wraps a model's forward to count calls: views must not call it."""

    def __init__(self, model):
        self.model, self.calls = model, 0
        self._forward = model.forward

    def __enter__(self):
        def counted(*args, **kwargs):
            self.calls += 1
            return self._forward(*args, **kwargs)

        self.model.forward = counted
        return self

    def __exit__(self, *exc):
        del self.model.forward


@pytest.fixture(scope="module")
def analysis(model, tokenizer):
    return interpret.analyze(model, tokenizer, TEXT, model_id="tiny")


def test_analysis_holds_the_forward_pass_as_float16_numpy(model, tokenizer, analysis):
    ids = tokenizer(TEXT)["input_ids"]
    with torch.inference_mode():
        out = model(torch.tensor([ids]), output_attentions=True, output_hidden_states=True)
    length = len(ids)
    assert analysis.attentions.shape == (3, TINY["num_attention_heads"], length, length)
    assert analysis.attentions.dtype == np.float16 and analysis.hidden_states.dtype == np.float16
    expected = torch.stack([a[0] for a in out.attentions]).numpy()
    np.testing.assert_allclose(analysis.attentions.astype(np.float32), expected, atol=1e-3)
    hidden = torch.stack([h[0] for h in out.hidden_states]).numpy()
    np.testing.assert_allclose(analysis.hidden_states.astype(np.float32), hidden, rtol=2e-3, atol=2e-3)
    # Next-token top-k at every position, from the model's own logits.
    probs = torch.softmax(out.logits[0], -1)
    top = probs.topk(analysis.top_ids.shape[1])
    np.testing.assert_array_equal(analysis.top_ids, top.indices.numpy())
    np.testing.assert_allclose(analysis.top_probs, top.values.numpy(), rtol=1e-5)
    np.testing.assert_allclose(np.exp(analysis.next_logprobs), probs[-1].numpy(), rtol=1e-4, atol=1e-9)
    # Tokens read as in the text, with their character offsets; </s> first.
    assert analysis.tokens[0] == "</s>" and analysis.offsets[0] == (0, 0)
    assert analysis.tokens[1:4] == ["Nal", "oxone", "reverses"]  # a word split in two BPE pieces
    for label, (start, end) in zip(analysis.tokens[1:], analysis.offsets[1:]):
        assert TEXT[start:end] == label


def test_head_statistics_match_hand_computation():
    # One layer, one head, three tokens, weights chosen by hand (rows sum to 1, causal).
    a = np.array([[[[1.0, 0.0, 0.0], [0.25, 0.75, 0.0], [0.5, 0.25, 0.25]]]], np.float16)
    stats = interpret.head_statistics(a)
    rows = [[0.25, 0.75], [0.5, 0.25, 0.25]]  # rows 1..T-1
    entropy = np.mean([-sum(p * math.log(p) for p in row) for row in rows])
    assert stats["entropy"][0, 0] == pytest.approx(entropy, rel=1e-5)
    assert stats["first"][0, 0] == pytest.approx((0.25 + 0.5) / 2)
    assert stats["previous"][0, 0] == pytest.approx((0.25 + 0.25) / 2)  # a[1,0], a[2,1]
    assert stats["distance"][0, 0] == pytest.approx((0.25 * 1 + (0.5 * 2 + 0.25 * 1)) / 2)


def test_head_statistics_on_a_model_against_plain_loops(analysis):
    a = analysis.attentions.astype(np.float64)
    stats = analysis.head_statistics()
    layer, head = 2, 1
    rows = range(1, analysis.length)
    m = a[layer, head]
    entropy = np.mean([-(m[i, : i + 1] * np.log(np.maximum(m[i, : i + 1], 1e-30))).sum() for i in rows])
    assert stats["entropy"][layer, head] == pytest.approx(entropy, rel=1e-4)
    assert stats["first"][layer, head] == pytest.approx(np.mean([m[i, 0] for i in rows]), rel=1e-4)
    assert stats["previous"][layer, head] == pytest.approx(np.mean([m[i, i - 1] for i in rows]), rel=1e-4)
    distance = np.mean([sum(m[i, j] * (i - j) for j in range(i + 1)) for i in rows])
    assert stats["distance"][layer, head] == pytest.approx(distance, rel=1e-4)
    assert analysis.memoised(("stats",))


def test_rollout_is_the_product_of_residual_mixed_layers():
    rng = np.random.default_rng(0)
    layers, heads, length = 3, 2, 5
    raw = np.tril(rng.random((layers, heads, length, length)))
    attentions = (raw / raw.sum(-1, keepdims=True)).astype(np.float16)
    expected = np.eye(length)
    for layer in range(layers):
        mixed = 0.5 * attentions[layer].astype(np.float64).mean(0) + 0.5 * np.eye(length)
        mixed /= mixed.sum(-1, keepdims=True)
        expected = mixed @ expected
        np.testing.assert_allclose(interpret.rollout(attentions)[layer], expected, rtol=1e-5, atol=1e-6)
    rolled = interpret.rollout(attentions)
    np.testing.assert_allclose(rolled.sum(-1), 1.0, atol=1e-5)  # each row is still a distribution
    assert np.allclose(np.triu(rolled[-1], 1), 0)  # still causal


def test_maps_aggregates_and_toggles(analysis):
    a = analysis.attentions.astype(np.float32)
    np.testing.assert_allclose(analysis.attention_map(1, 2, "head"), a[1, 2])
    np.testing.assert_allclose(analysis.attention_map(1, 0, "heads"), a[1].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(analysis.attention_map(0, 3, "layers"), a[:, 3].mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(analysis.attention_map(0, 0, "all"), a.mean((0, 1)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(analysis.attention_map(1, 0, "rollout"), interpret.rollout(analysis.attentions)[1])
    with pytest.raises(ValueError):
        analysis.attention_map(0, 0, "median")

    m = analysis.attention_map(2, 0)
    hidden = interpret.hide_first_token(m)
    assert hidden.shape == (m.shape[0] - 1, m.shape[1] - 1)
    np.testing.assert_allclose(hidden[3], m[4, 1:] / m[4, 1:].sum(), rtol=1e-5)
    np.testing.assert_allclose(np.nansum(hidden, -1), 1.0, atol=1e-5)
    cut = interpret.threshold(m, 0.2)
    assert np.all(np.isnan(cut[m < 0.2])) and np.array_equal(cut[m >= 0.2], m[m >= 0.2])
    masked = interpret.causal_mask(m)
    assert np.isnan(masked[0, 1]) and masked[1, 0] == m[1, 0]

    pooled, block = interpret.block_max(np.arange(100, dtype=np.float32).reshape(10, 10), 4)
    assert block == 3 and pooled.shape == (4, 4) and pooled[0, 0] == 22 and pooled[3, 3] == 99


def test_token_links_are_the_strongest_weights_of_a_row_or_column(analysis):
    layer, position = 1, analysis.length - 1
    heads, positions, weights = analysis.token_links(layer, position, head=2, direction="to", top=3)
    row = analysis.attentions[layer, 2, position].astype(np.float32)
    assert heads.tolist() == [2, 2, 2]
    np.testing.assert_array_equal(positions, np.argsort(-row, kind="stable")[:3])
    np.testing.assert_allclose(weights, np.sort(row)[::-1][:3])
    heads, positions, weights = analysis.token_links(layer, 1, head=None, direction="from", top=2)
    assert sorted(set(heads.tolist())) == list(range(analysis.num_heads))
    column = analysis.attentions[layer, 0, :, 1].astype(np.float32)
    assert positions[0] == int(np.argmax(column)) and weights[0] == pytest.approx(column.max())


def test_hidden_norms_and_pca_shapes(analysis):
    norms = analysis.hidden_norms()
    assert norms.shape == (analysis.num_layers + 1, analysis.length)
    np.testing.assert_allclose(norms[2, 3], np.linalg.norm(analysis.hidden_states[2, 3].astype(np.float32)), rtol=1e-5)
    coords, explained = analysis.pca([1, 3, 5])
    assert coords.shape == (3, analysis.num_layers + 1, 2) and explained.shape == (2,)
    assert 0 < explained[1] <= explained[0] <= 1
    # PCA by hand: standardise each vector, centre, project on the top right-singular vectors.
    x = analysis.hidden_states[:, [1, 3, 5]].astype(np.float64).transpose(1, 0, 2)
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(((x - x.mean(-1, keepdims=True)) ** 2).mean(-1, keepdims=True) + 1e-6)
    flat = x.reshape(-1, x.shape[-1])
    flat -= flat.mean(0)
    _, s, vt = np.linalg.svd(flat, full_matrices=False)
    expected = flat @ vt[:2].T
    got = coords.reshape(-1, 2)
    for k in range(2):  # equal up to the sign of each axis
        assert np.allclose(got[:, k], expected[:, k], atol=1e-3) or np.allclose(got[:, k], -expected[:, k], atol=1e-3)
    assert explained[0] == pytest.approx(s[0] ** 2 / (s**2).sum(), rel=1e-4)
    single, _ = analysis.pca([2])
    assert single.shape == (1, analysis.num_layers + 1, 2)


def test_logit_lens_last_layer_is_the_models_own_prediction(model, tokenizer, analysis):
    lens = interpret.logit_lens(model, tokenizer, analysis, k=5)
    steps = analysis.num_layers + 1
    assert lens.ids.shape == lens.probs.shape == (steps, analysis.length, 5)
    with torch.inference_mode():
        out = model(torch.from_numpy(analysis.token_ids)[None], output_hidden_states=True)
        top = torch.softmax(out.logits[0], -1).topk(5)
        np.testing.assert_array_equal(lens.ids[-1], top.indices.numpy())
        np.testing.assert_allclose(lens.probs[-1], top.values.numpy(), rtol=1e-5)
        # The final hidden state is already normed: projecting it directly gives the logits exactly.
        direct = interpret.lens_project(model, out.hidden_states[-1][0], is_last=True)
        torch.testing.assert_close(direct, torch.log_softmax(out.logits[0], -1))
        # Earlier layers: final layer norm + output projection of the (float32) residual stream.
        for layer in range(steps - 1):
            logits = model.output_projection(model.biogpt.layer_norm(out.hidden_states[layer][0]))
            probs = torch.softmax(logits, -1)
            expected = probs.topk(5)
            agree = (lens.ids[layer, :, 0] == expected.indices[:, 0].numpy()).mean()
            assert agree >= 0.9  # float16 storage may swap near-ties
            np.testing.assert_allclose(lens.probs[layer, :, 0], expected.values[:, 0].numpy(), rtol=0.05, atol=1e-3)
    assert lens.labels[0, 1, 0] == interpret.vocab_labels(tokenizer)[lens.ids[0, 1, 0]]


def test_watch_list_ranks_agree_with_the_lens(model, tokenizer, analysis):
    lens = interpret.logit_lens(model, tokenizer, analysis, k=5)
    position = analysis.length - 1
    top_word = str(interpret.vocab_labels(tokenizer)[analysis.top_ids[position, 0]])
    watch = interpret.watch_ranks(model, tokenizer, analysis, position, ["clonidine", "the"])
    assert watch.ranks.shape == (analysis.num_layers + 1, 2)
    assert watch.ids[0] == tokenizer.encode("clonidine", add_special_tokens=False)[0]
    # The lens's top token has rank 1 at every layer.
    top_ids = lens.ids[:, position, 0]
    column = interpret.lens_column(model, analysis, position)
    np.testing.assert_array_equal(column.argmax(-1)[:-1], top_ids[:-1])
    rank_of_top = (column > column[np.arange(len(top_ids)), top_ids][:, None]).sum(-1) + 1
    assert (rank_of_top == 1).all()
    np.testing.assert_allclose(np.exp(column[-1]), np.exp(analysis.next_logprobs), rtol=1e-6)
    assert top_word


def test_parse_heads():
    assert interpret.parse_heads("3.5", 4, 8) == ((2, 4),)
    assert interpret.parse_heads("L2H1, 1.2-3", 4, 8) == ((0, 1), (0, 2), (1, 0))
    assert interpret.parse_heads("4.*", 4, 8) == tuple((3, h) for h in range(8))
    assert interpret.parse_heads("2", 4, 2) == ((1, 0), (1, 1))
    assert interpret.parse_heads("  ", 4, 8) == ()
    for bad in ("5.1", "1.9", "x.1", "1.0"):
        with pytest.raises(ValueError):
            interpret.parse_heads(bad, 4, 8)


def test_ablating_every_head_of_a_layer_equals_a_head_mask_forward_and_removing_the_layers_attention(
    model, tokenizer, analysis
):
    layer = 1
    heads = [(layer, h) for h in range(analysis.num_heads)]
    result = interpret.ablate(model, tokenizer, analysis, heads, k=5)
    ids = torch.from_numpy(analysis.token_ids)[None]
    mask = torch.ones(analysis.num_layers, analysis.num_heads)
    mask[layer] = 0
    # An independent path: zero the input of that layer's out_proj (every head's output).
    hook = model.biogpt.layers[layer].self_attn.out_proj.register_forward_pre_hook(lambda m, args: (torch.zeros_like(args[0]),))
    try:
        with torch.inference_mode():
            zeroed = torch.softmax(model(ids).logits[0, -1], -1)
    finally:
        hook.remove()
    with torch.inference_mode():
        masked = torch.softmax(model(ids, head_mask=mask).logits[0, -1], -1)
        plain = torch.softmax(model(ids).logits[0, -1], -1)
    torch.testing.assert_close(masked, zeroed, rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(result.after, masked[result.ids].numpy(), rtol=1e-4, atol=1e-8)
    np.testing.assert_allclose(result.before, plain[result.ids].numpy(), rtol=1e-4, atol=1e-8)
    kl = float((plain * (plain.log() - masked.log())).sum())
    assert result.kl == pytest.approx(kl, rel=1e-3, abs=1e-6) and result.kl > 0
    # The union of both top-5 lists, the unablated favourite first.
    assert result.ids[0] == int(plain.argmax()) and int(masked.argmax()) in result.ids.tolist()


def test_ablation_continuation_is_greedy_with_and_without_the_mask(model, tokenizer, analysis):
    result = interpret.ablate(model, tokenizer, analysis, [(0, 0), (2, 3)], k=3, continue_tokens=4)
    prompt = analysis.token_ids.tolist()
    ids = torch.tensor([prompt])
    mask = interpret.head_mask_for([(0, 0), (2, 3)], analysis.num_layers, analysis.num_heads)
    labels = interpret.vocab_labels(tokenizer)
    for continuation, head_mask in ((result.continuation_before, None), (result.continuation_after, mask)):
        expected, current = [], ids
        with torch.inference_mode():
            for _ in range(4):  # no cache: a full forward per token
                token = int(model(current, head_mask=head_mask).logits[0, -1].argmax())
                expected.append(str(labels[token]))
                current = torch.cat([current, torch.tensor([[token]])], 1)
        assert continuation == expected


def test_generation_trace_reads_attention_from_the_decoding(model, tokenizer, analysis):
    trace = interpret.trace_generation(model, tokenizer, analysis, max_new_tokens=5)
    prompt = analysis.length
    assert trace.prompt_length == prompt and trace.steps == 5
    assert trace.attentions.shape == (5, analysis.num_layers, analysis.num_heads, prompt + 4)
    labels = interpret.vocab_labels(tokenizer)
    new = trace.token_ids[prompt:].tolist()
    assert new == interpret.greedy_continuation(model, analysis.token_ids.tolist(), 5)
    assert trace.tokens[prompt:] == [str(labels[t]) for t in new]
    # Step s is the attention of position prompt+s-1 in a full forward over the whole sequence.
    with torch.inference_mode():
        full = model(torch.from_numpy(trace.token_ids)[None], output_attentions=True)
    for step in range(5):
        query = prompt + step - 1
        expected = torch.stack([a[0, :, query, : query + 1] for a in full.attentions]).numpy()
        np.testing.assert_allclose(trace.attentions[step, :, :, : query + 1].astype(np.float32), expected, atol=2e-3)
        assert not trace.attentions[step, :, :, query + 1 :].any()
    np.testing.assert_allclose(trace.attentions[0, :, :, :prompt].astype(np.float32),
                               analysis.attentions[:, :, -1].astype(np.float32), atol=2e-3)


def test_views_answer_from_the_cache_without_a_forward(model, tokenizer):
    engine = interpret.Interpreter(lambda name: (model, tokenizer), default_model="tiny")
    with CountingModel(model) as counter:
        analysis = engine.analyze(TEXT)
        assert counter.calls == 1
        assert engine.analyze(TEXT) is analysis and counter.calls == 1
        for layer in range(analysis.num_layers):
            for head in range(analysis.num_heads):
                for aggregate in interpret.AGGREGATES:
                    analysis.attention_map(layer, head, aggregate)
                analysis.token_links(layer, 3, head)
        analysis.head_statistics()
        analysis.hidden_norms()
        analysis.pca([1, 2])
        engine.logit_lens(analysis)  # final norm + projection of stored states, no forward
        engine.watch_tokens(analysis, 2, ["naloxone"])
        assert counter.calls == 1
        engine.ablate(analysis, [(0, 1)])
        assert counter.calls == 2  # ablation is a new forward by nature...
        engine.ablate(analysis, [(0, 1)])
        assert counter.calls == 2  # ...once per head set
        engine.trace_generation(analysis, 3)
        calls = counter.calls
        engine.trace_generation(analysis, 3)
        assert counter.calls == calls


def test_the_cache_is_bounded_by_bytes_and_computes_each_key_once(model, tokenizer):
    one = interpret.analyze(model, tokenizer, TEXT, "tiny").nbytes
    engine = interpret.Interpreter(lambda name: (model, tokenizer), default_model="tiny", max_bytes=int(2.5 * one))
    texts = [TEXT, TEXT.replace("Naloxone", "Morphine"), TEXT.replace("clonidine", "caffeine")]
    for text in texts:
        engine.analyze(text)
    assert len(engine.cache) == 2 and engine.cache.nbytes <= 2.5 * one
    assert engine.cached_analysis(texts[0]) is None and engine.cached_analysis(texts[2]) is not None

    with CountingModel(model) as counter:
        barrier = threading.Barrier(4)

        def ask():
            barrier.wait()
            engine.analyze("Caffeine is a stimulant.")

        threads = [threading.Thread(target=ask) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert counter.calls == 1


def test_too_long_a_text_is_refused_with_a_reason(model, tokenizer):
    with pytest.raises(ValueError, match="reads at most 128"):
        interpret.analyze(model, tokenizer, "word " * 200)


def test_find_token(analysis):
    assert analysis.find_token("") == analysis.length - 1
    assert analysis.find_token("3") == 3 and analysis.find_token(-1) == analysis.length - 1
    assert analysis.find_token("clonidine") == analysis.tokens.index("clonidine")
    assert analysis.find_token("Anti") == [t.lower().startswith("anti") for t in analysis.tokens].index(True)
    with pytest.raises(ValueError):
        analysis.find_token("aspirin")
    with pytest.raises(ValueError):
        analysis.find_token("99")
