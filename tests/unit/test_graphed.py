"""GraphedDecoder: static-cache decoding gives model.generate's tokens; a replayed CUDA graph
gives the eager step's logits.

On the CPU the decoder runs its step eagerly, which exercises everything but the capture:
the fixed-capacity cache, writes at a device-side position, the slot mask, left padding,
eos handling and sampling. The CUDA tests run only where a GPU is.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys

import pytest
import torch

from testkit import REPO
from testkit.checkpoints import incremental, perturb_, teacher_forced
from tests.helpers import TINY, max_diff

from biogpt import BioGptConfig, BioGptForCausalLM
from biogpt.graphed import CAPACITY_MULTIPLE, GraphedDecoder

GREEDY = dict(do_sample=False, eos_token_id=None)
NEW_TOKENS = 24
# One torch thread for the module (tests/conftest.py: 21 s against 2 s measured here).
pytestmark = pytest.mark.usefixtures("one_thread")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a CUDA GPU; this machine has none")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    model = BioGptForCausalLM(BioGptConfig(**TINY))
    model.init_weights()
    perturb_(model, seed=0, scale=20.0)  # varied greedy paths (a fresh random BioGPT repeats one token)
    return model.eval()


def prompts(batch: int, length: int = 7, seed: int = 1) -> torch.Tensor:
    """Random prompts starting with </s>, free of the pad (1) and eos (2) ids elsewhere."""
    ids = torch.randint(4, TINY["vocab_size"], (batch, length), generator=torch.Generator().manual_seed(seed))
    ids[:, 0] = 2
    return ids


@pytest.mark.parametrize("batch", [1, 3])
def test_greedy_tokens_and_logits_match_the_model(model, batch):
    ids = prompts(batch)
    want = model.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY)
    decoder = GraphedDecoder(model, batch_size=batch, capacity=ids.shape[1] + NEW_TOKENS)
    assert not decoder.uses_graph  # the CPU runs the step eagerly
    got = decoder.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY)
    assert torch.equal(got, want)
    assert len(set(want[0, ids.shape[1]:].tolist())) > 5  # the path really varies

    with torch.inference_mode():
        reference = model(want).logits[:, ids.shape[1] - 1: -1]
        logits = teacher_forced(decoder, want, ids.shape[1])
    assert logits.shape == reference.shape
    assert max_diff(logits, reference) < 1e-5


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="torch.compile's CPU backend needs a C++ compiler")
def test_the_compiled_step_gives_the_eager_steps_logits_and_tokens(model):
    ids = prompts(2)
    want = model.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY)
    compiled = GraphedDecoder(model, batch_size=2, capacity=64, compile=True)
    assert torch.equal(compiled.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY), want)
    with torch.inference_mode():
        fused = teacher_forced(compiled, want, ids.shape[1])
        plain = teacher_forced(GraphedDecoder(model, batch_size=2, capacity=64), want, ids.shape[1])
    # Inductor fuses and reorders fp32 sums: rounding-level differences, never a wrong slot.
    assert max_diff(fused, plain) / plain.abs().max().item() < 1e-5


def test_left_padding_matches_generate(model):
    ids = prompts(3, length=9)
    mask = torch.ones_like(ids)
    for row, pads in enumerate([0, 2, 5]):
        mask[row, :pads] = 0
        ids[row, :pads] = 1
        ids[row, pads] = 2
    want = model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, **GREEDY)
    decoder = GraphedDecoder(model, batch_size=3, capacity=64)
    assert torch.equal(decoder.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, **GREEDY), want)


def test_eos_ends_rows_and_pads_them_like_generate(model):
    ids = prompts(3)
    free_run = model.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY)
    eos = int(free_run[1, ids.shape[1] + 4])  # row 1 meets it at its fifth new token
    want = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos)
    decoder = GraphedDecoder(model, batch_size=3, capacity=64)
    got = decoder.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, eos_token_id=eos)
    assert torch.equal(got, want)
    assert (want[1, ids.shape[1] + 5:] == model.config.pad_token_id).all()


def test_sampling_draws_what_generate_draws_with_the_same_seed(model):
    ids = prompts(3)
    settings = dict(max_new_tokens=NEW_TOKENS, do_sample=True, temperature=0.7, top_k=20, top_p=0.9, seed=3, eos_token_id=None)
    want = model.generate(ids, **settings)
    decoder = GraphedDecoder(model, batch_size=3, capacity=64)
    assert torch.equal(decoder.generate(ids, **settings), want)
    assert not torch.equal(want, model.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY))


@pytest.mark.parametrize("settings", [
    dict(do_sample=False, repetition_penalty=1.3, no_repeat_ngram_size=2),  # the app's greedy mode
    dict(do_sample=True, seed=5, temperature=0.8, top_k=50, top_p=0.9, repetition_penalty=1.2,
         no_repeat_ngram_size=3),  # the app's default sampling
    dict(do_sample=True, seed=9, typical_p=0.8, bad_words_ids=[[7], [11, 12]], min_new_tokens=6),
], ids=["greedy-penalties", "app-sampling", "typical-bans-min"])
def test_penalties_and_bans_run_outside_the_graph_as_generate_runs_them(model, settings):
    ids = prompts(3, length=9)
    mask = torch.ones_like(ids)
    mask[1, :3] = 0
    ids[1, 3] = 2
    # The padding holds the row's first greedy choice: attention never sees it, and the
    # repetition penalty must skip it as generate does, or that choice would be penalised.
    ids[1, :3] = model.generate(ids, attention_mask=mask, max_new_tokens=1, **GREEDY)[1, -1]
    eos = int(model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, **GREEDY)[0, 9 + 7])
    settings = dict(settings, max_new_tokens=NEW_TOKENS, eos_token_id=eos)
    want = model.generate(ids, attention_mask=mask, **settings)
    decoder = GraphedDecoder(model, batch_size=3, capacity=64)
    assert torch.equal(decoder.generate(ids, attention_mask=mask, **settings), want)
    assert not torch.equal(want, model.generate(ids, attention_mask=mask, max_new_tokens=NEW_TOKENS, **GREEDY))


def test_one_decoder_serves_request_after_request(model):
    """Slots left by a longer earlier request must not leak into a shorter later one."""
    decoder = GraphedDecoder(model, batch_size=2, capacity=64)
    for length, new in [(12, 30), (5, 10), (8, NEW_TOKENS)]:
        ids = prompts(2, length=length, seed=length)
        assert torch.equal(decoder.generate(ids, max_new_tokens=new, **GREEDY),
                           model.generate(ids, max_new_tokens=new, **GREEDY))


def test_bf16_logits_close_to_the_models_own(model):
    half = copy.deepcopy(model).to(torch.bfloat16)
    ids = prompts(2)
    with torch.inference_mode():
        sequence = half.generate(ids, max_new_tokens=12, **GREEDY)
        reference = half(sequence).logits[:, ids.shape[1] - 1: -1].float()
        logits = teacher_forced(GraphedDecoder(half, batch_size=2, capacity=32), sequence, ids.shape[1]).float()
    assert logits.dtype == torch.float32 and half.biogpt.embed_tokens.weight.dtype == torch.bfloat16
    # Same weights and inputs, different kernels (masked attention over the whole capacity): bf16 rounding only.
    assert ((logits - reference).norm() / reference.norm()).item() < 2e-2


def test_capacity_is_rounded_up_and_capped(model):
    assert GraphedDecoder(model, batch_size=1, capacity=20).capacity == 2 * CAPACITY_MULTIPLE
    assert GraphedDecoder(model, batch_size=1).capacity == TINY["max_position_embeddings"]
    assert GraphedDecoder(model, batch_size=1, capacity=10_000).capacity == TINY["max_position_embeddings"]


def test_refusals_say_what_to_change(model):
    decoder = GraphedDecoder(model, batch_size=2, capacity=32)
    with pytest.raises(ValueError, match=r"must be \[2, length >= 1\]"):
        decoder.generate(prompts(3), max_new_tokens=4)
    with pytest.raises(ValueError, match="cache positions; this decoder has 32"):
        decoder.generate(prompts(2, length=20), max_new_tokens=20)
    with pytest.raises(ValueError, match="use model.generate for num_beams, stop"):
        decoder.generate(prompts(2), max_new_tokens=4, num_beams=2, stop=["x"])
    with pytest.raises(ValueError, match="left padding only"):
        decoder.generate(prompts(2), attention_mask=torch.tensor([[1] * 6 + [0], [1] * 7]), max_new_tokens=4)
    with pytest.raises(ValueError, match="prefill"):
        GraphedDecoder(model, batch_size=1, capacity=16).decode(torch.tensor([5]))
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedDecoder(model, batch_size=1, use_graph=True)
    model.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            GraphedDecoder(model, batch_size=1)
    finally:
        model.eval()


def test_bitsandbytes_4bit_layers_run_in_the_step_and_8bit_models_are_refused(model):
    """bitsandbytes 0.50 also runs on the CPU, which is enough to check that the step calls its
    layers as plain modules, and that 8-bit models get a message instead of a decoder."""
    pytest.importorskip("bitsandbytes")
    from biogpt.quantize import _bnb_factory, replace_linears

    quantized = copy.deepcopy(model).half()
    replace_linears(quantized, _bnb_factory("4bit", torch.device("cpu"), torch.float16))
    ids = prompts(2)
    want = quantized.generate(ids, max_new_tokens=8, **GREEDY)
    decoder = GraphedDecoder(quantized, batch_size=2, capacity=32)
    assert torch.equal(decoder.generate(ids, max_new_tokens=8, **GREEDY), want)

    eight_bit = copy.deepcopy(model).half()
    replace_linears(eight_bit, _bnb_factory("8bit", torch.device("cpu"), torch.float16))
    with pytest.raises(ValueError, match="8-bit models: biogpt.layers.0.self_attn.k_proj .*model.generate"):
        GraphedDecoder(eight_bit, batch_size=2, capacity=32)


@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None,
                    reason="its compiled variant needs torch.compile's C++ compiler on the CPU")
def test_the_prepared_gpu_bench_runs_end_to_end_in_smoke_mode(tmp_path):
    """bench/gpu.sh spends scarce GPU time, so its script must not break unnoticed: the smoke
    mode runs every section on a tiny model on the CPU."""
    results = tmp_path / "gpu-bench.json"
    done = subprocess.run([sys.executable, "bench/bench_gpu.py", "--smoke", "--budget", "240", "--json", str(results)],
                          cwd=REPO, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    data = json.loads(results.read_text())
    assert [c["verdict"] for c in data["checks"]].count("PASS") >= 5
    assert not [c for c in data["checks"] if c["verdict"] == "FAIL"] and not data["skipped"]
    methods = {row["method"] for row in data["speed"]}
    assert methods == {"ours static, eager", "ours static, eager, compiled", "ours generate", "transformers generate"}
    assert len(data["profiles"]) == 2 and all(p["kernels_per_step"] > 0 for p in data["profiles"])


# --------------------------------------------------------------------------------------------
# CUDA: capture and replay


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_cuda_graph_replay_equals_the_eager_step(model, dtype):
    cuda_model = copy.deepcopy(model).to("cuda", dtype)
    ids = prompts(3).cuda()
    with torch.inference_mode():
        sequence = cuda_model.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY)
        graphed = GraphedDecoder(cuda_model, batch_size=3, capacity=64)
        eager = GraphedDecoder(cuda_model, batch_size=3, capacity=64, use_graph=False)
        replayed = teacher_forced(graphed, sequence, ids.shape[1])
        stepped = teacher_forced(eager, sequence, ids.shape[1])
        reference = cuda_model(sequence).logits[:, ids.shape[1] - 1: -1]
    assert graphed.uses_graph and graphed.graph_error is None
    scale = reference.float().abs().max().item()
    # The graph replays the eager step's kernels; half precision leaves room for cuBLAS picking
    # another algorithm under capture. A wrong slot or position would be off by order 1.
    assert max_diff(replayed, stepped) / scale < (1e-5 if dtype == torch.float32 else 1e-2)
    # Against the model's forward: other kernels (masked attention over the whole capacity).
    assert max_diff(replayed, reference) / scale < (1e-4 if dtype == torch.float32 else 3e-2)


@needs_cuda
def test_cuda_graphed_greedy_matches_generate(model):
    cuda_model = copy.deepcopy(model).to("cuda")
    for batch in (1, 3):
        ids = prompts(batch).cuda()
        decoder = GraphedDecoder(cuda_model, batch_size=batch, capacity=64)
        want = cuda_model.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY)
        assert torch.equal(decoder.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY), want)
        assert torch.equal(decoder.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY), want)  # graph reused
        assert decoder.uses_graph


@needs_cuda
def test_cuda_compiled_graph_replays_the_compiled_step_and_matches_generate(model):
    cuda_model = copy.deepcopy(model).to("cuda")
    ids = prompts(2).cuda()
    with torch.inference_mode():
        want = cuda_model.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY)
        decoder = GraphedDecoder(cuda_model, batch_size=2, capacity=64, compile=True)
        assert torch.equal(decoder.generate(ids, max_new_tokens=NEW_TOKENS, **GREEDY), want)
        assert decoder.uses_graph and decoder.graph_error is None
        replayed = teacher_forced(decoder, want, ids.shape[1])
        plain = teacher_forced(GraphedDecoder(cuda_model, 2, 64, use_graph=False), want, ids.shape[1])
    assert max_diff(replayed, plain) / plain.float().abs().max().item() < 1e-4


@needs_cuda
def test_cuda_decoder_runs_bitsandbytes_4bit_layers_in_its_graph(model):
    pytest.importorskip("bitsandbytes")
    from biogpt.quantize import quantize_model

    quantized = quantize_model(copy.deepcopy(model).half(), "4bit", device="cuda")
    ids = prompts(2).cuda()
    with torch.inference_mode():
        sequence = quantized.generate(ids, max_new_tokens=12, **GREEDY)
        reference = incremental(quantized, sequence, ids.shape[1]).float()
        decoder = GraphedDecoder(quantized, batch_size=2, capacity=32)
        logits = teacher_forced(decoder, sequence, ids.shape[1]).float()
    assert decoder.uses_graph
    # Against the model decoding the same tokens with its own cache (bench/gpu.sh measured 1.3e-4
    # on the microsoft/biogpt shape on an H200): only the attention kernels differ.
    assert ((logits - reference).norm() / reference.norm()).item() < 1e-2
