"""The bundled models keep their model cards' quality, and match transformers on trained weights.

Each check runs on a fixed sample of the TEST split (never trained on). The floors below were
measured on these samples when the models were bundled (2026-11-26), minus a margin for
platform noise; a regression in the tokenizer, the model code or the loader shows up here.
"""

from __future__ import annotations

import json

import pytest
import torch

import biogpt
from biogpt.loading import BUNDLED_NAMES
from biogpt.ner import predict_entities, span_scores
from biogpt.train import perplexity
from testkit import DATA
from tests.helpers import load_hf, max_diff

LM, NER, HOC = (BUNDLED_NAMES[name] for name in ("bundled", "bundled-ner", "bundled-hoc"))


def bc5cdr_test_sample(n: int) -> list[dict]:
    with open(DATA / "BC5CDR" / "ner_spans_test.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


@pytest.fixture(scope="module")
def tokenizer():
    return biogpt.BioGptTokenizer.from_pretrained(LM)


def test_bundled_models_fit_the_size_budget():
    total = sum(p.stat().st_size for folder in (LM, NER, HOC) for p in folder.iterdir())
    assert total < 100 * 2**20


def test_lm_perplexity_stays_at_the_card_value(tokenizer):
    """Card: test perplexity 129.6 on all 500 BC5CDR test abstracts; 130.4 on these 30."""
    model = biogpt.BioGptForCausalLM.from_pretrained(LM)
    texts = [doc["text"] for doc in bc5cdr_test_sample(30)]
    assert perplexity(model, tokenizer, texts)["perplexity"] < 130.4 * 1.02


def test_lm_matches_transformers_on_trained_weights(tokenizer):
    ours = biogpt.BioGptForCausalLM.from_pretrained(LM)
    theirs = load_hf(LM)
    texts = [doc["text"][:400] for doc in bc5cdr_test_sample(3)]
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    real = batch["attention_mask"].bool()
    with torch.no_grad():
        a = ours(**batch, output_attentions=True, output_hidden_states=True)
        b = theirs(**batch, output_attentions=True, output_hidden_states=True)
    assert max_diff(a.logits[real], b.logits[real]) <= 1e-4
    for x, y in zip(a.hidden_states, b.hidden_states):
        assert max_diff(x[real], y[real]) <= 1e-4
    for x, y in zip(a.attentions, b.attentions):  # [batch, heads, query, key]: compare real queries
        assert max_diff(x.transpose(1, 2)[real], y.transpose(1, 2)[real]) <= 1e-5


def test_ner_f1_stays_at_the_card_value(tokenizer):
    """Card: strict micro-F1 0.705 on the whole test split; 0.720 on these 40 abstracts."""
    model = biogpt.BioGptForTokenClassification.from_pretrained(NER)
    assert not model.head_is_untrained
    docs = bc5cdr_test_sample(40)
    predicted = predict_entities(model, tokenizer, [d["text"] for d in docs])
    gold = [[(e["start"], e["end"], e["type"]) for e in d["entities"]] for d in docs]
    found = [[(e["start"], e["end"], e["type"]) for e in entities] for entities in predicted]
    scores = span_scores(gold, found)
    assert scores["micro"]["f1"] >= 0.720 - 0.02, scores["micro"]
    for entities, doc in zip(predicted, docs):
        for e in entities:
            assert doc["text"][e["start"]:e["end"]] == e["text"] and 0 < e["score"] <= 1


def test_hoc_micro_f1_stays_at_the_card_value(tokenizer):
    """Card: micro-F1 0.683 at threshold 0.42 on the whole test split; 0.677 on these 400 rows."""
    model = biogpt.BioGptForSequenceClassification.from_pretrained(HOC)
    settings = model.config.extra["biogpt_studio"]
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    rows = []
    with open(DATA / "HoC" / "test.tsv", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                text, label = line.rstrip("\n").split("\t")
                rows.append((text, set(label.split("|")) - {settings["empty_label"]}))
    rows = rows[::12][:400]
    tp = fp = fn = 0
    with torch.no_grad():
        for start in range(0, len(rows), 32):
            chunk = rows[start:start + 32]
            batch = tokenizer([t for t, _ in chunk], padding=True, truncation=True, max_length=settings["max_length"],
                              return_tensors="pt")
            probs = torch.sigmoid(model(**batch).logits)
            for (_, gold), p in zip(chunk, probs):
                predicted = {labels[i] for i in range(len(labels)) if p[i] >= settings["threshold"]}
                tp += len(predicted & gold)
                fp += len(predicted - gold)
                fn += len(gold - predicted)
    f1 = 2 * tp / max(2 * tp + fp + fn, 1)
    assert f1 >= 0.677 - 0.02, f1
