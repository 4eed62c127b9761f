"""biogpt.serving on the bundled models: loading once, streaming, NER, classification, limits;
and the pure views and plots built from its results."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest
import torch

from testkit.app_server import BUNDLED_MODELS, KNOWN_NER_TEXT
from biogpt.serving import (
    Engine,
    Entity,
    GenerationRequest,
    InputError,
    Limits,
    NerResult,
    UntrainedHeadError,
    align_tokens,
    clean_text,
    parse_stop_strings,
)
from biogpt.loading import ModelNotAvailableError
from biogpt.serving.scoring import score_continuations


@pytest.fixture(scope="module")
def engine(bundled_models) -> Engine:
    # The bundled LM folder is allowed under the NER and Classify pickers: a base model with an untrained head.
    return Engine(allowed_models=[str(BUNDLED_MODELS[0])], device="cpu", dtype="float32")


# ----- input checks (no model) -------------------------------------------------------------------


def test_clean_text_replaces_lone_surrogates_one_for_one_and_refuses_empty_and_long_text():
    assert clean_text("a\ud800b\udfffc", "text", 100) == "a\ufffdb\ufffdc"
    with pytest.raises(InputError, match="empty"):
        clean_text(" \n\t", "text", 100)
    with pytest.raises(InputError, match="1,000,000 characters; the limit here is 100"):
        clean_text("x" * 1_000_000, "text", 100)
    with pytest.raises(InputError, match="must be text"):
        clean_text(42, "text", 100)


def test_align_tokens_cuts_the_decoded_text_into_one_slice_per_token():
    text = "COVID-19 is a disease (caused by SARS-CoV-2)."
    surfaces = ["COVID", "-", "19", "is", "a", "disease", "(", "caused", "by", "SARS", "-", "CoV", "-", "2", ")", "."]
    slices = align_tokens(text, surfaces)
    assert "".join(slices) == text and len(slices) == len(surfaces)
    assert slices[3] == " is" and slices[6] == " ("
    # A token missing from the text (an end-of-text token, or one cut by a stop string) gets "".
    assert align_tokens("cells die", ["cells", "", "die", "zzz"]) == ["cells", "", " die", ""]


def test_stop_strings_are_comma_separated_with_escapes():
    assert parse_stop_strings(r"., \n,a\,b") == [".", "\n", "a,b"]
    assert parse_stop_strings("") == []


@pytest.mark.parametrize("changes, message", [
    (dict(max_new_tokens=10_000), "Max new tokens must be between 1 and 512"),
    (dict(max_new_tokens=2.5), "whole number"),
    (dict(temperature=float("nan")), "finite"),
    (dict(temperature=0), "Temperature must be between"),
    (dict(top_p=3), "Top-p"),
    (dict(mode="telepathy"), "decoding mode"),
    (dict(mode="greedy", num_return_sequences=2), "Greedy decoding"),
    (dict(mode="beam search", num_beams=2, num_return_sequences=3), "at most 2 sequences"),
    (dict(stop=["a", "b", "c", "d", "e"]), "At most 4 stop strings"),
])
def test_absurd_generation_settings_are_refused_with_a_sentence(changes, message):
    with pytest.raises(InputError, match=message):
        GenerationRequest(prompt="x", **changes).decoding_kwargs(Limits())


# ----- models ------------------------------------------------------------------------------------


def test_a_model_loads_once_even_when_many_requests_ask_at_the_same_time(bundled_models):
    engine = Engine(device="cpu")
    results, calls = [], []
    original = engine._load
    engine._load = lambda *args: calls.append(args) or original(*args)
    threads = [threading.Thread(target=lambda: results.append(engine.load("bundled-hoc", "classify"))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len({id(r) for r in results}) == 1
    assert engine.load("bundled-hoc", "classify") is results[0]


def test_first_use_reports_loading_progress_and_later_uses_do_not(bundled_models):
    engine, steps = Engine(device="cpu"), []
    loaded = engine.load("bundled-ner", "ner", progress=lambda fraction, message: steps.append((fraction, message)))
    assert [f for f, _ in steps] == sorted(f for f, _ in steps) and len(steps) >= 3
    assert any("Loading bundled-ner onto cpu in float32" in m for _, m in steps)
    assert loaded.describe() == "bundled-ner · cpu · float32" and not loaded.head_is_untrained
    reported = len(steps)
    engine.load("bundled-ner", "ner", progress=lambda *a: steps.append(a))
    assert len(steps) == reported


def test_least_recently_used_models_are_dropped_and_tokenizers_shared(bundled_models):
    engine = Engine(device="cpu", max_loaded_models=2)
    first = engine.load("bundled-hoc", "classify")
    engine.load("bundled-ner", "ner")
    engine.load("bundled-hoc", "classify")  # now the most recent
    engine.load("bundled", "generate")
    assert engine.loaded_models() == ["bundled-hoc (classify)", "bundled (generate)"]
    assert engine.load("bundled-hoc", "classify") is first
    assert engine.load("bundled", "generate").tokenizer is first.tokenizer  # identical files, one object


def test_visitors_cannot_name_other_models_and_missing_hub_models_say_why(engine):
    with pytest.raises(InputError, match="not one of the models this server offers"):
        engine.load("/etc", "generate")
    with pytest.raises(InputError, match="not one of the models"):
        engine.load("bundled-ner", "generate")  # offered for NER only
    with pytest.raises(ModelNotAvailableError, match="microsoft/BioGPT-Large") as error:
        engine.load("microsoft/BioGPT-Large", "generate")  # HF_HUB_OFFLINE=1 in tests: never cached here
    assert str(error.value).count(". ") == 0  # one sentence


# ----- generate ----------------------------------------------------------------------------------


def test_streamed_deltas_build_the_same_text_as_decoding_everything_at_once(engine):
    from biogpt.generation import generate_detailed

    request = GenerationRequest(prompt="Naloxone reverses the", mode="sampling", max_new_tokens=24, seed=7)
    updates = list(engine.generate(request))
    final = updates[-1]
    assert final.finished and not any(u.finished for u in updates[:-1])
    assert final.settings["seed"] == 7 and final.settings["temperature"] == 0.8
    texts = [u.samples[0].text for u in updates]
    assert all(final.samples[0].text.startswith(t) for t in texts)
    sample = final.samples[0]
    assert "".join(sample.token_texts) == sample.text
    assert len(sample.token_ids) == len(sample.probabilities) == len(sample.alternatives) == final.new_tokens
    assert np.all((sample.probabilities > 0) & (sample.probabilities <= 1))
    assert all(len(a) == 5 for a in sample.alternatives)

    loaded = engine.load("bundled", "generate")
    kwargs = request.decoding_kwargs(engine.limits)
    reference = generate_detailed(loaded.model, loaded.tokenizer, "Naloxone reverses the", seed=7, **kwargs)[0]
    assert reference.text == sample.text and reference.token_ids == sample.token_ids.tolist()


def test_several_samples_and_beam_search_come_back_together(engine):
    sampled = list(engine.generate(GenerationRequest(prompt="Aspirin is", max_new_tokens=8, num_return_sequences=3, seed=1)))
    assert len(sampled) == 1 and len(sampled[0].samples) == 3
    beams = list(engine.generate(GenerationRequest(prompt="Aspirin is", mode="beam search", num_beams=3,
                                                   num_return_sequences=2, max_new_tokens=8)))[0]
    assert [s.beam_score is not None for s in beams.samples] == [True, True]
    assert beams.settings["seed"] is None  # nothing random to reproduce


def test_prompts_that_leave_no_room_are_refused_not_cut(engine):
    with pytest.raises(InputError, match="at most"):
        engine.generate(GenerationRequest(prompt="cell " * 1000, max_new_tokens=64))


def test_continuation_scores_equal_a_plain_forward_pass(engine):
    loaded = engine.load("bundled", "generate")
    prefix, endings = "Aspirin reduces fever. This text is about", [" a drug.", " a disease of the heart."]
    totals, counts = score_continuations(loaded, prefix, endings)
    for ending, total, count in zip(endings, totals, counts):
        ids = loaded.tokenizer.encode(prefix + ending)
        with torch.no_grad():
            logprobs = torch.log_softmax(loaded.model(torch.tensor([ids])).logits[0].float(), -1)
        expected = sum(float(logprobs[i - 1, ids[i]]) for i in range(len(ids) - count, len(ids)))
        assert math.isclose(total, expected, abs_tol=1e-3)


def test_pubmedqa_scores_yes_no_maybe_after_biogpts_own_prompt(engine):
    result = engine.answer_pubmedqa("Does aspirin reduce fever?", "Aspirin reduced fever in 90% of patients")
    assert result.prompt == ("question: Does aspirin reduce fever? context: Aspirin reduced fever in 90% of patients. "
                             "the answer to the question given the context is")
    assert result.answers == ["yes", "no", "maybe"]
    assert math.isclose(float(result.probabilities.sum()), 1.0, abs_tol=1e-5)


# ----- NER ---------------------------------------------------------------------------------------


def test_ner_finds_the_chemicals_of_a_known_bc5cdr_training_sentence(engine):
    result = engine.ner(KNOWN_NER_TEXT)
    found = {(e.text, e.type) for e in result.entities}
    assert {("Naloxone", "Chemical"), ("clonidine", "Chemical")} <= found, found
    assert result.entity_types == ["Chemical", "Disease"]
    for entity in result.entities:
        assert KNOWN_NER_TEXT[entity.start:entity.end] == entity.text and 0 < entity.score <= 1
    for strategy in ("first", "last", "average", "max"):
        assert engine.ner(KNOWN_NER_TEXT, aggregation=strategy).aggregation == strategy


def test_ner_offsets_survive_odd_unicode(engine):
    text = "Na\u00efve \ud800 rats\u200b given cocaine \U0001F600 developed seizures."
    result = engine.ner(text)
    for entity in result.entities:
        assert entity.text == clean_text(text, "text", 10_000)[entity.start:entity.end]


def test_an_untrained_head_is_named_instead_of_showing_noise(engine):
    base = str(BUNDLED_MODELS[0])
    with pytest.raises(UntrainedHeadError, match="no trained NER head"):
        engine.ner(KNOWN_NER_TEXT, model=base)
    with pytest.raises(UntrainedHeadError, match="no trained classification head"):
        engine.classify(KNOWN_NER_TEXT, model=base)


def test_ner_refuses_texts_over_the_token_cap(bundled_models):
    small = Engine(device="cpu", limits=Limits(max_document_tokens=5))
    with pytest.raises(InputError, match="tokens; the limit here is 5"):
        small.ner(KNOWN_NER_TEXT)


# ----- classify ----------------------------------------------------------------------------------


def test_hoc_is_multi_label_with_the_threshold_from_its_config(engine):
    result = engine.classify("Cyclin D1 levels and BrdU incorporation were reduced with AGR2 knockdown .")
    loaded = engine.load("bundled-hoc", "classify")
    assert result.multi_label and result.threshold == pytest.approx(loaded.studio.get("threshold", 0.5))
    assert len(result.labels) == len(result.probabilities) == 10
    assert np.all((result.probabilities >= 0) & (result.probabilities <= 1))
    assert result.predicted == [label for label, p in zip(result.labels, result.probabilities) if p >= result.threshold]


def test_zero_shot_ranks_candidates_and_keeps_braces_in_text(engine):
    result = engine.zero_shot("Lidocaine-induced cardiac asystole {label} {0}.", "a drug side effect, an infection, a gene")
    assert result.labels == ["a drug side effect", "an infection", "a gene"]
    assert math.isclose(float(result.probabilities.sum()), 1.0, abs_tol=1e-5)
    assert result.predicted == [result.labels[int(np.argmax(result.scores))]]
    with pytest.raises(InputError, match="at least two"):
        engine.zero_shot("text", "only one")
    with pytest.raises(InputError, match="must contain both"):
        engine.zero_shot("text", "a, b", template="{text} is")


# ----- views and plots ---------------------------------------------------------------------------


def test_views_escape_text_and_plots_show_the_threshold(engine):
    from ui import plots, views

    text = "<script>alert(1)</script> took <b>cocaine</b>"
    ner = NerResult(text, [Entity(34, 41, "Chemical", "cocaine", 0.91)], ["Chemical", "Disease"], "last", "m", {}, 9, 0.1)
    page = views.entities_html(ner)
    assert "<script" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; took &lt;b&gt;<mark" in page
    assert 'title="Chemical · confidence 91.0% · characters 34–41"' in page and "Chemical 91%" in page
    assert views.entities_csv(ner).splitlines() == ["entity,type,start,end,confidence", "cocaine,Chemical,34,41,0.91"]

    result = engine.classify("Cyclin D1 levels were reduced .")
    figure = plots.label_chart(result)
    assert list(figure.data[0].y) == sorted(result.labels, key=lambda label: result.probabilities[result.labels.index(label)])
    assert any(shape.x0 == result.threshold for shape in figure.layout.shapes)

    generated = list(engine.generate(GenerationRequest(prompt="a <b>", max_new_tokens=5, seed=3)))[-1]
    page = views.generation_html(generated)
    assert "a &lt;b&gt;" in page and page.count('class="tok"') >= 3 + sum(bool(t) for t in generated.samples[0].token_texts)


def test_int8_weights_answer_every_tab_and_say_so():
    """`python app.py --quantize int8`: the engine loads int8 weights and every task still answers."""
    import app

    args = app.parse_args(["--quantize", "int8"])
    quantized = Engine(device="cpu", dtype="float32", quantize=None if args.quantize == "none" else args.quantize)
    result = list(quantized.generate(GenerationRequest(prompt="Naloxone reverses the", mode="greedy", max_new_tokens=12)))[-1]
    loaded = quantized.load("bundled", "generate")
    assert loaded.model.quantization == "int8" and "int8 weights" in loaded.describe()
    assert result.finished and result.new_tokens == 12 and result.samples[0].text
    # Greedy int8 text starts like fp32's (see tests/unit/test_quantize.py for the agreement bounds).
    full = list(Engine(device="cpu", dtype="float32").generate(
        GenerationRequest(prompt="Naloxone reverses the", mode="greedy", max_new_tokens=12)))[-1]
    assert result.samples[0].token_ids[:3].tolist() == full.samples[0].token_ids[:3].tolist()
    entities = quantized.ner(KNOWN_NER_TEXT).entities
    assert {"Naloxone", "clonidine"} <= {e.text for e in entities}
    with pytest.raises(ValueError, match="Unknown quantize mode"):
        Engine(quantize="int3")
