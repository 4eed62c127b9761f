"""Our BioGPT against transformers' (eager attention) on perturbed random checkpoints.

Every comparison is on the same saved weights; tolerance 1e-5 in fp32.
"""

from __future__ import annotations

import pytest
import torch

import biogpt
from biogpt.model import positions_from_mask
from tests.helpers import FULL, ODD, TINY, hf_checkpoint, load_hf, max_diff

TOL = 1e-5
HEADS = ["BioGptForCausalLM", "BioGptForTokenClassification", "BioGptForSequenceClassification"]


def padded_batch(vocab: int, lengths: list[int], seed: int = 0, left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Random ids (no special tokens) with pad id 1 after (or before) each row's real tokens."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), 1, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        real = torch.randint(4, vocab, (n,), generator=generator)
        span = slice(width - n, width) if left else slice(0, n)
        ids[row, span] = real
        mask[row, span] = 1
    return ids, mask


def compare_outputs(ours, theirs, mask: torch.Tensor) -> None:
    assert max_diff(ours.logits, theirs.logits) <= TOL
    assert len(ours.hidden_states) == len(theirs.hidden_states)
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        assert max_diff(a, b) <= TOL
    assert len(ours.attentions) == len(theirs.attentions)
    for a, b in zip(ours.attentions, theirs.attentions):
        assert a.shape == b.shape
        assert max_diff(a, b) <= TOL


@pytest.mark.parametrize("shape", [TINY, ODD], ids=["tiny", "odd"])
@pytest.mark.parametrize("head", HEADS)
def test_forward_matches_transformers_with_padding(tmp_path, shape, head):
    folder = hf_checkpoint(tmp_path, shape, head)
    theirs_model = load_hf(folder, head)
    ours_model = getattr(biogpt, head).from_pretrained(folder)
    ids, mask = padded_batch(shape["vocab_size"], [11, 7, 3])
    # transformers' plain forward counts positions 0..T-1 even over padding; give both the
    # mask-derived positions so that padded rows are compared too.
    positions = positions_from_mask(mask, 0, ids.shape[1], ids.device)
    kwargs = dict(attention_mask=mask, position_ids=positions, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        compare_outputs(ours_model(ids, **kwargs), theirs_model(ids, **kwargs), mask)


def test_full_size_shape_matches_transformers(tmp_path):
    """The microsoft/biogpt shape (24 layers, 1024 wide, 42,384 tokens) once, on a short batch.

    Matrices are scaled x2 only: at x20, 24 layers amplify rounding differences between
    attention kernels chaotically, which would say nothing about correctness.
    """
    folder = hf_checkpoint(tmp_path, FULL, scale=2.0)
    theirs_model = load_hf(folder)
    ours_model = biogpt.BioGptForCausalLM.from_pretrained(folder)
    ids, mask = padded_batch(42384, [9, 6])
    positions = positions_from_mask(mask, 0, ids.shape[1], ids.device)
    kwargs = dict(attention_mask=mask, position_ids=positions, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        compare_outputs(ours_model(ids, **kwargs), theirs_model(ids, **kwargs), mask)
        # The fast path (SDPA, no weights) gives the same logits as the eager path.
        assert max_diff(ours_model(ids, attention_mask=mask).logits, theirs_model(ids, **kwargs).logits) <= 1e-4


def test_fast_path_equals_eager_path(tmp_path):
    model = biogpt.BioGptForCausalLM.from_pretrained(hf_checkpoint(tmp_path, ODD))
    ids, mask = padded_batch(ODD["vocab_size"], [12, 5])
    with torch.no_grad():
        eager = model(ids, attention_mask=mask, output_attentions=True).logits
        fast = model(ids, attention_mask=mask).logits
        unmasked_fast = model(ids[:1]).logits
    real = mask.bool()
    assert max_diff(eager[real], fast[real]) <= TOL
    assert max_diff(unmasked_fast[0], eager[0]) <= TOL


def test_left_padding_gives_the_unpadded_logits(tmp_path):
    model = biogpt.BioGptForCausalLM.from_pretrained(hf_checkpoint(tmp_path, TINY))
    ids, mask = padded_batch(TINY["vocab_size"], [10, 4], left=True)
    with torch.no_grad():
        batched = model(ids, attention_mask=mask).logits
        alone = model(ids[1:, -4:]).logits
    assert max_diff(batched[1, -4:], alone[0]) <= TOL


def test_losses_match_transformers(tmp_path):
    ids, mask = padded_batch(TINY["vocab_size"], [9, 6], seed=3)
    positions = positions_from_mask(mask, 0, ids.shape[1], ids.device)
    common = dict(attention_mask=mask, position_ids=positions)
    cases = [
        ("BioGptForCausalLM", {}, ids.masked_fill(mask == 0, -100)),
        ("BioGptForTokenClassification", {"num_labels": 5}, torch.randint(0, 5, ids.shape)),
        ("BioGptForSequenceClassification", {"num_labels": 3}, torch.tensor([2, 0])),
        ("BioGptForSequenceClassification", {"num_labels": 4, "problem_type": "multi_label_classification"},
         torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 1]])),
        ("BioGptForSequenceClassification", {"num_labels": 1}, torch.tensor([0.5, -1.5])),
    ]
    for head, config_kwargs, labels in cases:
        folder = hf_checkpoint(tmp_path, TINY, head, **config_kwargs)
        theirs_model = load_hf(folder, head)
        ours_model = getattr(biogpt, head).from_pretrained(folder)
        with torch.no_grad():
            ours = ours_model(ids, labels=labels, **common).loss
            theirs = theirs_model(ids, labels=labels, **common).loss
        assert abs(ours.item() - theirs.item()) <= TOL, (head, config_kwargs)


def test_cached_decoding_equals_full_forward_and_transformers_cache(tmp_path):
    folder = hf_checkpoint(tmp_path, ODD)
    ours_model = biogpt.BioGptForCausalLM.from_pretrained(folder)
    theirs_model = load_hf(folder)
    ids, _ = padded_batch(ODD["vocab_size"], [14, 14], seed=5)
    with torch.no_grad():
        full = ours_model(ids).logits
        out = ours_model(ids[:, :8], use_cache=True)
        theirs = theirs_model(ids[:, :8], use_cache=True)
        steps, their_steps = [out.logits], [theirs.logits]
        cache, their_cache = out.past_key_values, theirs.past_key_values
        for t in range(8, 14):
            out = ours_model(ids[:, t : t + 1], past_key_values=cache, use_cache=True)
            theirs = theirs_model(ids[:, t : t + 1], past_key_values=their_cache, use_cache=True)
            steps.append(out.logits)
            their_steps.append(theirs.logits)
        assert cache.length == 14
    assert max_diff(torch.cat(steps, 1), full) <= TOL
    assert max_diff(torch.cat(steps, 1), torch.cat(their_steps, 1)) <= TOL


def test_cached_decoding_with_left_padding_and_chunks(tmp_path):
    """A padded batch decoded in uneven chunks equals its one-shot forward on real tokens."""
    model = biogpt.BioGptForCausalLM.from_pretrained(hf_checkpoint(tmp_path, TINY))
    ids, mask = padded_batch(TINY["vocab_size"], [12, 7], left=True, seed=2)
    with torch.no_grad():
        full = model(ids, attention_mask=mask).logits
        cache = biogpt.KVCache(len(model.biogpt.layers), capacity=4)  # forces the buffers to grow
        pieces = []
        for start, end in [(0, 5), (5, 6), (6, 10), (10, 12)]:
            out = model(ids[:, start:end], attention_mask=mask[:, :end], past_key_values=cache)
            pieces.append(out.logits)
    real = mask.bool()
    assert max_diff(torch.cat(pieces, 1)[real], full[real]) <= TOL


def test_legacy_cache_tuples_round_trip(tmp_path):
    model = biogpt.BioGptForCausalLM.from_pretrained(hf_checkpoint(tmp_path, TINY))
    ids, _ = padded_batch(TINY["vocab_size"], [9], seed=4)
    with torch.no_grad():
        first = model(ids[:, :6], use_cache=True)
        legacy = first.past_key_values.to_legacy()
        assert len(legacy) == 2 and legacy[0][0].shape[2] == 6
        rest = model(ids[:, 6:], past_key_values=legacy).logits
        full = model(ids).logits
    assert max_diff(rest, full[:, 6:]) <= TOL


def head_mask_hooks(model, head_mask: torch.Tensor, num_heads: int):
    """transformers 5 dropped head_mask; its equivalent is scaling each head's slice of out_proj's input."""
    handles = []
    for layer, block in enumerate(model.biogpt.layers):
        def scale(module, args, layer=layer):
            x = args[0]
            shaped = x.view(*x.shape[:-1], num_heads, -1) * head_mask[layer].view(-1, 1)
            return (shaped.view_as(x),)
        handles.append(block.self_attn.out_proj.register_forward_pre_hook(scale))
    return handles


@pytest.mark.parametrize("output_attentions", [False, True], ids=["sdpa", "eager"])
def test_head_mask_matches_transformers_equivalent(tmp_path, output_attentions):
    folder = hf_checkpoint(tmp_path, ODD)
    ours_model = biogpt.BioGptForCausalLM.from_pretrained(folder)
    theirs_model = load_hf(folder)
    head_mask = torch.ones(ODD["num_hidden_layers"], ODD["num_attention_heads"])
    head_mask[0, 1] = 0
    head_mask[3, :] = 0
    head_mask[4, 2] = 0.5
    ids, mask = padded_batch(ODD["vocab_size"], [10, 8], seed=6)
    positions = positions_from_mask(mask, 0, ids.shape[1], ids.device)
    handles = head_mask_hooks(theirs_model, head_mask, ODD["num_attention_heads"])
    with torch.no_grad():
        theirs = theirs_model(ids, attention_mask=mask, position_ids=positions).logits
        ours = ours_model(ids, attention_mask=mask, head_mask=head_mask, output_attentions=output_attentions)
        plain = ours_model(ids, attention_mask=mask).logits
    for handle in handles:
        handle.remove()
    real = mask.bool()
    assert max_diff(ours.logits[real], theirs[real]) <= TOL
    assert max_diff(plain[real], theirs[real]) > 1e-3  # the mask really changed something
    if output_attentions:
        assert ours.attentions[3].abs().max() == 0  # 4.x semantics: masked probabilities are returned
        assert torch.all(ours.attentions[0][:, 1] == 0)


def test_head_mask_per_head_vector_applies_to_every_layer(tmp_path):
    model = biogpt.BioGptForCausalLM.from_pretrained(hf_checkpoint(tmp_path, TINY))
    ids, _ = padded_batch(TINY["vocab_size"], [7])
    vector = torch.tensor([1.0, 0.0, 1.0, 0.0])
    with torch.no_grad():
        a = model(ids, head_mask=vector).logits
        b = model(ids, head_mask=vector.expand(2, -1)).logits
    assert max_diff(a, b) == 0
    with pytest.raises(ValueError, match="head_mask must have shape"):
        model(ids, head_mask=torch.ones(3))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_runs_close_to_fp32(tmp_path, dtype):
    folder = hf_checkpoint(tmp_path, TINY)
    full = biogpt.BioGptForCausalLM.from_pretrained(folder)
    half = biogpt.BioGptForCausalLM.from_pretrained(folder, dtype=dtype)
    assert half.dtype == dtype
    ids, mask = padded_batch(TINY["vocab_size"], [8, 5])
    with torch.no_grad():
        reference = torch.log_softmax(full(ids, attention_mask=mask).logits, -1)
        low = torch.log_softmax(half(ids, attention_mask=mask).logits.float(), -1)
        with_weights = half(ids, attention_mask=mask, output_attentions=True)
    real = mask.bool()
    assert torch.isfinite(low[real]).all()
    assert torch.isfinite(with_weights.logits[real]).all()
    # Perturbed weights give large logits; compare the top choice rather than absolute values.
    agree = (reference[real].argmax(-1) == low[real].argmax(-1)).float().mean()
    assert agree >= 0.9


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(tmp_path):
    folder = hf_checkpoint(tmp_path, TINY)
    cpu = biogpt.BioGptForCausalLM.from_pretrained(folder)
    gpu = biogpt.BioGptForCausalLM.from_pretrained(folder, device="cuda")
    ids, mask = padded_batch(TINY["vocab_size"], [8, 5])
    with torch.no_grad():
        a = cpu(ids, attention_mask=mask).logits
        b = gpu(ids.cuda(), attention_mask=mask.cuda()).logits.cpu()
    assert max_diff(a[mask.bool()], b[mask.bool()]) <= 1e-3
