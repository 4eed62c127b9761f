"""biogpt.batching: concurrent requests decoded together, each identical to what it gets alone."""

from __future__ import annotations

import copy
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from biogpt import BioGptForCausalLM
from biogpt import batching, kernels
from biogpt.batching import DecodeBatcher, decode_together, find_row_block
from biogpt.serving import Engine, GenerationRequest
from biogpt.generation import SamplingRun, generate_detailed, resolve_settings, stream
from tests.helpers import ODD, hf_checkpoint


@pytest.fixture(scope="module")
def odd_model(tmp_path_factory):
    folder = hf_checkpoint(tmp_path_factory.mktemp("batching"), ODD, seed=3)
    return BioGptForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def _run(model, prompt: list[int], rows: int = 1, **settings) -> SamplingRun:
    ids = torch.tensor([prompt]).expand(rows, -1)
    resolved = resolve_settings(model.config, len(prompt), **{"max_new_tokens": 8, "eos_token_id": None, **settings})
    run = SamplingRun(model, ids, None, resolved)
    with torch.inference_mode():
        run.choose(run.prefill(model))
    return run


def test_one_forward_over_requests_of_different_lengths_matches_decoding_each_alone(odd_model):
    prompts = [[2, 5, 9], [2, 17, 33, 41, 8, 60, 70], [2, 300]]
    together = [_run(odd_model, p, rows) for p, rows in zip(prompts, (1, 2, 3))]
    alone = [_run(odd_model, p, rows) for p, rows in zip(prompts, (1, 2, 3))]
    for _ in range(3):  # several steps, so the grouped caches are read after being written by it
        with torch.inference_mode():
            logits = decode_together(odd_model, together, row_block=4)
            assert logits.shape[0] == 8  # 6 rows padded to a multiple of 4
            start = 0
            for merged, single in zip(together, alone):
                expected = single.decode(odd_model)
                # Positions and caches are right: the same numbers as the plain decode step, up to
                # the matrix kernel's rounding (a 1-row product is another kernel).
                torch.testing.assert_close(logits[start:start + merged.rows], expected, rtol=0, atol=1e-4)
                merged.choose(logits[start:start + merged.rows])
                single.choose(expected)
                start += merged.rows


def test_the_probe_finds_a_row_block_on_this_machine_and_rows_are_then_independent(odd_model):
    block, safe_rows = find_row_block(odd_model, 32)
    assert block in (2, 4, 8, 16) and safe_rows >= 8, "merging would be off: every request decoded alone"
    # Independent of the probe: a request's rows do not change when other requests join it.
    prompts = [[2, 5, 9], [2, 17, 33, 41], [2, 300, 12, 4, 4]]
    alone = []
    for p in prompts:
        with torch.inference_mode():
            alone.append(decode_together(odd_model, [_run(odd_model, p)], block)[:1])
    with torch.inference_mode():
        together = decode_together(odd_model, [_run(odd_model, p) for p in prompts], block)
    for index, single in enumerate(alone):
        assert torch.equal(together[index:index + 1], single)


def _sequences(model, tokenizer, batcher, index: int):
    """One request of a varied mix: greedy, sampling with a seed, two samples, a stop string."""
    prompts = ["Aspirin is used to", "The patient developed", "Cisplatin-induced nephrotoxicity", "We report a case of",
               "In conclusion ,", "Tumor necrosis factor", "The results suggest that", "Hepatitis B virus"]
    settings = dict(max_new_tokens=24 + 3 * index, do_sample=index % 4 != 0, seed=index, top_k=50, top_p=0.9,
                    temperature=0.8, repetition_penalty=1.2, no_repeat_ngram_size=3)
    if index == 3:
        settings["num_return_sequences"] = 2
    if index == 5:
        settings["stop"] = ["tumor"]
    out = generate_detailed(model, tokenizer, prompts[index], batcher=batcher, **settings)
    return [(o.token_ids, o.token_logprobs, o.text, o.finish_reason, [[c.probability for c in a] for a in o.alternatives])
            for o in out]


def test_eight_concurrent_requests_are_merged_and_each_is_identical_to_alone(bundled_models):
    engine = Engine(device="cpu", dtype="float32")
    loaded = engine.load("bundled", "generate")
    batcher = loaded.batcher
    alone = [_sequences(loaded.model, loaded.tokenizer, batcher, i) for i in range(8)]
    assert batcher.most_requests_merged == 1
    start = threading.Barrier(8)

    def together(index):
        start.wait()
        return _sequences(loaded.model, loaded.tokenizer, batcher, index)

    with ThreadPoolExecutor(8) as pool:
        merged = list(pool.map(together, range(8)))
    assert batcher.most_requests_merged >= 4
    assert merged == alone
    assert alone[5][0][3] == "stop" and alone[3][0][0] != alone[3][1][0]


def test_engine_stream_through_the_batcher_is_identical_to_alone_and_stopping_it_stops_its_work(bundled_models):
    engine = Engine(device="cpu", dtype="float32")
    request = GenerationRequest(prompt="Aspirin is used to", mode="sampling", seed=7, max_new_tokens=40)
    final = list(engine.generate(request))[-1].samples[0]
    batcher = engine.load("bundled", "generate").batcher

    other = GenerationRequest(prompt="The patient developed", mode="greedy", max_new_tokens=60)
    background = threading.Thread(target=lambda: list(engine.generate(other)))
    stream = engine.generate(request)
    first = next(stream)
    background.start()
    results = [first, *stream]
    background.join()
    assert results[-1].samples[0].text == final.text
    assert (results[-1].samples[0].probabilities == final.probabilities).all()

    stream = engine.generate(GenerationRequest(prompt="We report", mode="greedy", max_new_tokens=200))
    next(stream)
    stream.close()
    before = batcher.forwards
    threading.Event().wait(0.3)
    assert batcher.forwards - before <= 2  # at most the steps already computed ahead of the reader


@pytest.mark.parametrize("device", ["cpu", "cpu, rows distrusted", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device"))])
def test_concurrent_requests_equal_their_lone_runs_on_each_device(odd_model, device, monkeypatch):
    """The engine's Generate path on whatever device the app runs on: the probe decides whether
    the kernels keep rows independent (if not, requests are served one forward each; forced on
    this CPU by distrusting "batch-rows"), and either way each request gets exactly its lone result."""
    from biogpt.tokenizer import BioGptTokenizer

    forced = device == "cpu, rows distrusted"
    if forced:
        monkeypatch.setenv(kernels.DISTRUST_ENV, "batch-rows")
        device = "cpu"
    tokenizer = BioGptTokenizer.from_pretrained("bundled-tokenizer")
    model = copy.deepcopy(odd_model).to(device)
    batcher = DecodeBatcher(model)
    batcher.calibrate()
    assert not (forced and batcher.row_block)
    print(f"{device}: row block {batcher.row_block}, at most {batcher.max_rows} rows per forward")

    def request(index: int):
        settings = dict(max_new_tokens=12 + 2 * index, do_sample=index % 4 != 0, seed=index, top_k=50, top_p=0.9,
                        temperature=0.8, repetition_penalty=1.2, no_repeat_ngram_size=3, eos_token_id=None,
                        num_return_sequences=2 if index == 3 else 1)
        out = generate_detailed(model, tokenizer, [[2, 5 + index, 9 + 7 * index, 40]], batcher=batcher, **settings)
        return [(o.token_ids, o.token_logprobs) for o in out]

    alone = [request(i) for i in range(8)]
    start = threading.Barrier(8)

    def together(index: int):
        start.wait()
        return request(index)

    with ThreadPoolExecutor(8) as pool:
        merged = list(pool.map(together, range(8)))
    assert merged == alone
    if batcher.row_block:  # merging is on here: check that it happened
        assert batcher.most_requests_merged >= 2
    batcher.close()


def test_a_long_prompt_goes_in_by_chunks_between_the_running_requests_steps_and_changes_no_result(odd_model, monkeypatch):
    from biogpt.tokenizer import BioGptTokenizer

    tokenizer = BioGptTokenizer.from_pretrained("bundled-tokenizer")
    long_prompt = [[2] + torch.randint(4, ODD["vocab_size"], (80,), generator=torch.Generator().manual_seed(1)).tolist()]
    short_prompt = [[2, 5, 9]]
    long_settings = dict(max_new_tokens=10, eos_token_id=None, do_sample=True, seed=3)
    short_settings = dict(max_new_tokens=90, eos_token_id=None, do_sample=False)

    def ask(batcher, prompt, settings):
        return [(o.token_ids, o.token_logprobs)
                for o in generate_detailed(odd_model, tokenizer, prompt, batcher=batcher, **settings)]

    alone_batcher = DecodeBatcher(odd_model, prefill_chunk=16)
    alone_long = ask(alone_batcher, long_prompt, long_settings)
    alone_short = "".join(e.text for e in stream(odd_model, tokenizer, short_prompt, batcher=alone_batcher, **short_settings))
    # In one piece the prompt's cache gets other matrix shapes, so only the last bits may differ.
    whole = ask(DecodeBatcher(odd_model, prefill_chunk=None), long_prompt, long_settings)
    assert whole[0][0] == alone_long[0][0]
    torch.testing.assert_close(whole[0][1], alone_long[0][1], rtol=0, atol=1e-4)

    log = []
    prefill, forward = SamplingRun.prefill, batching.decode_together

    def logged_prefill(run, model, chunk=None):
        log.append(("prefill", run.prompt_length))
        return prefill(run, model, chunk)

    def logged_forward(model, runs, row_block):
        log.append(("decode", len(runs)))
        return forward(model, runs, row_block)

    monkeypatch.setattr(SamplingRun, "prefill", logged_prefill)
    monkeypatch.setattr(batching, "decode_together", logged_forward)
    batcher = DecodeBatcher(odd_model, prefill_chunk=16)
    short = stream(odd_model, tokenizer, short_prompt, batcher=batcher, **short_settings)
    short_texts = [next(short).text]  # the short request is decoding; its reader keeps reading below
    reader = threading.Thread(target=lambda: short_texts.extend(e.text for e in short))
    reader.start()
    busy_long = ask(batcher, long_prompt, long_settings)
    reader.join()
    assert busy_long == alone_long and "".join(short_texts) == alone_short

    chunks = [i for i, entry in enumerate(log) if entry == ("prefill", 81)]
    assert len(chunks) == 6  # 81 tokens: 5 chunks of 16 and the last one
    between = [entry for entry in log[chunks[0]:chunks[-1]] if entry[0] == "decode"]
    # One step of the short request after each chunk, while its reader keeps up (it may run 2 ahead).
    assert len(between) >= 2


def test_padded_batches_decode_alone_and_a_failing_request_does_not_stop_the_others(odd_model, monkeypatch):
    from biogpt.tokenizer import BioGptTokenizer

    tokenizer = BioGptTokenizer.from_pretrained("bundled-tokenizer")
    batcher = DecodeBatcher(odd_model)
    ids = torch.tensor([[1, 2, 5, 9], [2, 17, 33, 41]])
    mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1]])
    expected = generate_detailed(odd_model, tokenizer, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None)
    got = generate_detailed(odd_model, tokenizer, ids, attention_mask=mask, max_new_tokens=6, eos_token_id=None,
                            batcher=batcher)
    assert [s.token_ids for s in got] == [s.token_ids for s in expected]
    assert batcher.forwards == 0  # masks are the plain path's business

    choose = SamplingRun.choose

    def choose_or_fail(self, logits):
        if self.prompt[0, 1] == 666 and self.steps_done == 2:
            raise RuntimeError("injected failure")
        return choose(self, logits)

    monkeypatch.setattr(SamplingRun, "choose", choose_or_fail)
    plain = generate_detailed(odd_model, tokenizer, [[2, 5, 9]], max_new_tokens=12, eos_token_id=None, batcher=batcher)
    barrier, errors = threading.Barrier(2), []

    def failing():
        barrier.wait()
        try:
            generate_detailed(odd_model, tokenizer, [[2, 666, 9]], max_new_tokens=12, eos_token_id=None, batcher=batcher)
        except RuntimeError as error:
            errors.append(str(error))

    thread = threading.Thread(target=failing)
    thread.start()
    barrier.wait()
    survivor = generate_detailed(odd_model, tokenizer, [[2, 5, 9]], max_new_tokens=12, eos_token_id=None, batcher=batcher)
    thread.join()
    assert errors == ["injected failure"]
    assert survivor[0].token_ids == plain[0].token_ids

    batcher.close()
    with pytest.raises(RuntimeError, match="unloaded"):
        generate_detailed(odd_model, tokenizer, [[2, 5, 9]], max_new_tokens=4, batcher=batcher)


def test_a_slow_reader_of_a_stream_gets_the_same_text_cut_at_the_stop_string(bundled_models):
    """The batcher runs up to two steps ahead of a slow reader, then waits; the streamed text
    (each event's from its own step's snapshot) is the same as for a fast reader."""
    import time

    from biogpt.generation import stream

    loaded = Engine(device="cpu", dtype="float32").load("bundled", "generate")
    settings = dict(max_new_tokens=39, do_sample=True, seed=5, top_k=50, top_p=0.9, temperature=0.8,
                    repetition_penalty=1.2, no_repeat_ngram_size=3, stop=["tumor"])
    fast = stream(loaded.model, loaded.tokenizer, "Tumor necrosis factor", batcher=loaded.batcher, **settings)
    alone = [e.text for e in fast]
    slow = []
    for event in stream(loaded.model, loaded.tokenizer, "Tumor necrosis factor", batcher=loaded.batcher, **settings):
        time.sleep(0.02)  # the batcher decodes the next steps meanwhile
        slow.append(event.text)
    assert "".join(slow) == "".join(alone) and "tumor" not in "".join(alone) and len(alone) > 5
