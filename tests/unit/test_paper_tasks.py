"""The paper's tasks: Microsoft's output formats parsed (malformed pieces reported, never dropped),
their input layout, the metrics of hard_match_evaluation.py on hand-checked cases, and the test
splits read as rebuild_data.py builds them."""

from __future__ import annotations

import pytest

from biogpt.paper_eval import Example, default_data_dir, read_split, score
from biogpt.paper_tasks import PromptFormat, as_rows, input_ids, parse_generation, relation_target
from biogpt.tokenizer import BioGptTokenizer

DATA = default_data_dir()
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="../shared/data is not here")


def test_ddi_output_with_echoed_prompt():
    text = ("warfarin is given with aspirin . learned1 learned2 learned3 the interaction between aspirin and warfarin "
            "is effect; the interaction between cimetidine and theophylline is mechanism.")
    parsed = parse_generation("ddi", text)
    assert parsed.items == [{"drug": "aspirin", "target": "warfarin", "interaction": "effect"},
                            {"drug": "cimetidine", "target": "theophylline", "interaction": "mechanism"}]
    assert parsed.malformed == [] and not parsed.failed


def test_partial_triples_and_unknown_relations_are_reported():
    text = "the interaction between aspirin and warfarin is synergy; the interaction between ketoconazole; foo bar."
    parsed = parse_generation("ddi", text)
    # The triple with an unknown relation word is kept (Microsoft's scorer sees it) and flagged.
    assert parsed.items == [{"drug": "aspirin", "target": "warfarin", "interaction": "synergy"}]
    reasons = [m["reason"] for m in parsed.malformed]
    assert reasons[0] == "unknown relation word 'synergy'"
    assert [m["text"] for m in parsed.malformed[1:]] == ["the interaction between ketoconazole", "foo bar"]
    rows = as_rows(parsed)
    assert rows[0] == ["aspirin", "warfarin", "synergy", "ok"] and rows[-1][-1].startswith("malformed")
    assert parse_generation("ddi", "").failed


def test_kd_dti_bc5cdr_pubmedqa_hoc_formats():
    kd = parse_generation("kd-dti", "the interaction between psoralen and monoamine oxidase (mao) is inhibitor.")
    assert kd.items == [{"drug": "psoralen", "target": "monoamine oxidase (mao)", "interaction": "inhibitor"}]
    cdr = parse_generation("bc5cdr", "the relation between famotidine and delirium exists;the relation between x exists.")
    assert cdr.items == [{"chemical": "famotidine", "disease": "delirium"}]
    assert cdr.malformed[0]["text"] == "the relation between x exists"
    qa = parse_generation("pubmedqa", "learned9 the answer to the question given the context is yes.")
    assert qa.items == [{"answer": "yes"}] and not qa.malformed
    assert parse_generation("pubmedqa", "the answer to the question given the context is perhaps.").malformed
    assert parse_generation("pubmedqa", "we found nothing.").failed
    hoc = parse_generation("hoc", "the type of this document is resisting cell death | inducing angiogenesis | magic.")
    assert [i["label"] for i in hoc.items] == ["resisting cell death", "inducing angiogenesis", "magic"]
    assert [m["text"] for m in hoc.malformed] == ["magic"]


def test_relation_metrics_follow_hard_match_evaluation():
    gold = [Example("1", "", [{"drug": "Aspirin", "target": "warfarin", "interaction": "effect"},
                              {"drug": "cimetidine", "target": "theophylline", "interaction": "mechanism"}]),
            Example("2", "", [{"drug": "MAO inhibitors (MAOI)", "target": "tyramine", "interaction": "advise"}])]
    outputs = [parse_generation("ddi", "the interaction between aspirin and warfarin is effect; "
                                       "the interaction between a and b is int."),
               parse_generation("ddi", "the interaction between maoi and tyramine is advise.")]
    scores = score("ddi", outputs, gold)
    # Document 1: p 1/2, r 1/2; document 2 matches through the abbreviation in brackets: p 1, r 1.
    assert scores["precision"] == pytest.approx(75.0) and scores["recall"] == pytest.approx(75.0)
    assert scores["f1"] == pytest.approx(75.0)
    assert scores["failed"] == 0 and scores["examples"] == 2
    failed = score("ddi", [parse_generation("ddi", "nothing"), outputs[1]], gold)
    assert failed["f1"] == pytest.approx(50.0) and failed["failed"] == 1


def test_qa_and_hoc_metrics():
    qa = score("pubmedqa", [parse_generation("pubmedqa", f"the answer to the question given the context is {a}.")
                            for a in ("yes", "no", "maybe", "yes")],
               [Example(str(i), "", g) for i, g in enumerate(("yes", "yes", "maybe", "yes"))])
    assert qa["accuracy"] == 75.0
    hoc = score("hoc", [parse_generation("hoc", "the type of this document is empty."),
                        parse_generation("hoc", "the type of this document is resisting cell death|cellular energetics.")],
                [Example("1", "", "empty"), Example("2", "", "resisting cell death")])
    # tp 2, predicted 3, gold 2: p 2/3, r 1 -> F1 0.8
    assert hoc["micro_f1"] == pytest.approx(80.0)


def test_input_layout_source_then_prompt():
    tokenizer = BioGptTokenizer.from_pretrained("bundled-tokenizer")
    tokenizer.add_symbols([f"learned{i}</w>" for i in (1, 2, 3)])
    learned = [tokenizer.convert_tokens_to_ids(f"learned{i}</w>") for i in (1, 2, 3)]
    prompt = PromptFormat(task="ddi", learned_tokens=[f"learned{i}</w>" for i in (1, 2, 3)], max_source_positions=5)
    short = input_ids(prompt, tokenizer, "aspirin")
    assert short == tokenizer.encode("aspirin") + learned
    long = input_ids(prompt, tokenizer, "aspirin and warfarin were given together to many patients")
    assert long[0] == 2 and len(long) == 1 + 5 + 3
    assert long[5] == tokenizer.convert_tokens_to_ids("...</w>")  # fairseq's truncation mark
    prefixed = PromptFormat(learned_tokens=prompt.learned_tokens, prefix=True, sep_token="<seqsep>")
    tokenizer.add_symbols(["<seqsep>"])
    ids = input_ids(prefixed, tokenizer, "aspirin")
    assert ids[1:4] == learned and ids[-1] == tokenizer.convert_tokens_to_ids("<seqsep>")


@needs_data
def test_splits_read_as_rebuild_data():
    ddi = read_split("ddi", DATA / "DDI" / "test.json")
    assert len(ddi) == 191 and ddi[0].source == ddi[0].source.lower()
    assert ddi[0].target.startswith("the interaction between ") and ddi[0].target.endswith(".")
    assert len(read_split("kd-dti", DATA / "KD-DTI" / "test.json")) == 1159
    qa = read_split("pubmedqa", DATA / "PubMedQA" / "test.tsv")
    assert len(qa) == 500 and qa[0].source.startswith("question: ") and qa[0].gold in ("yes", "no", "maybe")
    hoc = read_split("hoc", DATA / "HoC" / "test.tsv")
    assert len(hoc) == 4947 and all(e.source.endswith(".") for e in hoc)
    cdr = read_split("bc5cdr", DATA / "BC5CDR" / "ner_spans_test.jsonl")
    assert cdr and cdr[0].source.startswith("famotidine-associated delirium. a series")


def test_relation_target_order_is_microsofts():
    triples = [{"drug": "b", "target": "x", "interaction": "int"}, {"drug": "a", "target": "y", "interaction": "Effect"}]
    assert relation_target(triples, "a then b") == ("the interaction between a and y is effect; "
                                                   "the interaction between b and x is int.")

