"""biogpt.pipeline answers in transformers' shapes and keys (transformers' own pipeline on the same
bundled checkpoints is the oracle for the shape), with the engine's values."""

from __future__ import annotations

import numpy as np
import pytest

from biogpt.hub import BUNDLED_NAMES
from biogpt.pipeline import pipeline

TEXTS = ["Famotidine-associated delirium in a patient given cisplatin.", "Aspirin-induced asthma."]


def shape(value):
    """The structure of an answer: containers, keys and leaf types (np.float32 scores included)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(item) for item in value[:1]]
    return type(value).__name__ if not isinstance(value, (int, np.integer)) or isinstance(value, bool) else "int"


@pytest.fixture(scope="module")
def hf(one_thread):
    transformers = pytest.importorskip("transformers")
    return transformers.pipeline


def test_token_classification_has_transformers_keys_and_the_engines_spans(hf):
    ours = pipeline("token-classification")
    theirs = hf("token-classification", model=str(BUNDLED_NAMES["bundled-ner"]), aggregation_strategy="simple")
    one, many = ours(TEXTS[0]), ours(TEXTS)
    reference = theirs(TEXTS[0])
    assert one and reference
    assert set(one[0]) == set(reference[0]) == {"entity_group", "score", "word", "start", "end"}
    assert isinstance(one[0]["score"], np.float32) and isinstance(reference[0]["score"], np.float32)
    assert isinstance(one[0]["start"], int) and TEXTS[0][one[0]["start"]:one[0]["end"]] == one[0]["word"]
    assert len(many) == len(theirs(TEXTS)) == 2 and many[0] == one  # a list gives a list per text
    found = ours.engine.ner(TEXTS[1])
    assert [(e["entity_group"], e["start"], e["end"]) for e in many[1]] == [(e.type, e.start, e.end) for e in found.entities]
    with pytest.raises(ValueError, match="aggregation_strategy"):
        ours(TEXTS[0], aggregation_strategy="none")


def test_text_classification_shapes_follow_transformers(hf):
    ours = pipeline("text-classification")
    theirs = hf("text-classification", model=str(BUNDLED_NAMES["bundled-hoc"]))
    for call in ((TEXTS[0],), (TEXTS,)):
        assert shape(ours(*call)) == shape(theirs(*call))
        assert len(ours(*call)) == len(theirs(*call))
    for call in ((TEXTS[0],), (TEXTS,)):
        assert shape(ours(*call, top_k=None)) == shape(theirs(*call, top_k=None))
    every = ours(TEXTS[0], top_k=None)
    result = ours.engine.classify(TEXTS[0])
    assert {d["label"]: d["score"] for d in every} == pytest.approx(dict(zip(result.labels, map(float, result.probabilities))))
    assert [d["score"] for d in every] == sorted((d["score"] for d in every), reverse=True)


def test_text_generation_shapes_follow_transformers(hf):
    ours = pipeline("text-generation")
    theirs = hf("text-generation", model=str(BUNDLED_NAMES["bundled"]))
    for call in (("COVID-19 is",), (["COVID-19 is", "Aspirin"],)):
        assert shape(ours(*call, max_new_tokens=4)) == shape(theirs(*call, max_new_tokens=4, do_sample=False))
    [answer] = ours("COVID-19 is", max_new_tokens=6)
    assert answer["generated_text"].startswith("COVID-19 is")
    assert ours("COVID-19 is", max_new_tokens=6, return_full_text=False)[0]["generated_text"] == \
        answer["generated_text"][len("COVID-19 is"):]


def test_zero_shot_classification_keys():
    ours = pipeline("zero-shot-classification")
    answer = ours(TEXTS[0], candidate_labels=["disease", "weather"])
    assert set(answer) == {"sequence", "labels", "scores"} and answer["sequence"] == TEXTS[0]
    assert sorted(answer["labels"]) == ["disease", "weather"] and answer["scores"] == sorted(answer["scores"], reverse=True)
    assert sum(answer["scores"]) == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="Unknown task"):
        pipeline("summarization")
