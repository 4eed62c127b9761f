"""Microsoft's evaluation of the paper's tasks on their test splits (`biogpt evaluate`).

Reading the splits (as rebuild_data.py does: documents without relations are left out of DDI and
KD-DTI, as their .pmid files leave them out) and scoring parsed generations as the
hard_match_evaluation.py scripts do: DDI and KD-DTI by hard-match precision, recall and F1 per
document, averaged (the scripts' "tp p", "tp r" and "tp micro f1"), plus their ontology-level
scores; PubMedQA by accuracy; HoC by micro F1 over the 11 labels. BC5CDR's official score maps
names to MeSH ids with a file absent here and runs BioCreative's Java evaluator: this module
reports a mention-level score instead, which is not that metric.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .paper_tasks import (
    HOC_LABELS,
    ParsedOutput,
    document_text,
    get_task,
    hoc_source,
    pubmedqa_source,
    relation_target,
)


@dataclass
class Example:
    """One test item: its id, the model's source text, the gold answer, and what the score needs."""

    id: str
    source: str
    gold: Any
    target: str = ""  # the sentence a model is trained to write (used by the training CLI)


def read_split(task: str, path: str | Path) -> list[Example]:
    """The examples of one split file of ../shared/data, as Microsoft's rebuild_data.py builds them."""
    get_task(task)
    path = Path(path)
    examples: list[Example] = []
    if task in ("ddi", "kd-dti"):
        for pmid, doc in json.loads(path.read_text(encoding="utf-8")).items():
            if not doc.get("triples"):
                continue  # rebuild_data.py skips documents without triples; so does the .pmid file
            text = document_text(task, doc.get("title", ""), doc["abstract"])
            examples.append(Example(pmid, text, doc["triples"], relation_target(doc["triples"], text)))
    elif task == "bc5cdr":
        for line in path.read_text(encoding="utf-8").splitlines():
            doc = json.loads(line)
            if not doc.get("cid_relations"):
                continue
            title, abstract = doc["text"][:doc["title_len"]], doc["text"][doc["title_len"] + 1:]
            examples.append(Example(doc["pmid"], document_text(task, title, abstract),
                                    {"entities": doc["entities"], "relations": doc["cid_relations"]}))
    else:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if not line.strip():
                continue
            text, _, label = line.rpartition("\t")
            if task == "pubmedqa":
                found = re.match(r"question: (.*?) context: (.*)$", text.strip(), re.S)
                source = pubmedqa_source(*found.groups()) if found else text
            else:
                source = hoc_source(text)
            examples.append(Example(str(number), source, label.strip()))
    return examples


# --------------------------------------------------------------------------------------------
# DDI and KD-DTI: hard_match_evaluation.py
# --------------------------------------------------------------------------------------------

_ROMAN = {"0": "0", "1": "I", "2": "II", "3": "III", "4": "IV", "5": "V", "6": "VI", "7": "VII", "8": "VIII", "9": "IX"}


def _normalize_name(name: str) -> str:
    name = name.strip()
    if len(name) > 2 and name[-1].isnumeric() and not name[-2].isnumeric() and name[-1] in _ROMAN:
        name = name[:-1] + _ROMAN[name[-1]]
    name = name.replace("-type", "")
    return re.sub("[^a-zA-Z0-9]+", "", name)


def _body(name: str) -> str:
    name = name.strip()
    return _normalize_name(name[:name.rfind("(")].strip()) if "(" in name and name[-1] == ")" else _normalize_name(name)


def _abbreviation(name: str) -> str:
    name = name.strip()
    return _normalize_name(name[name.rfind("(") + 1:-1].strip()) if "(" in name and name[-1] == ")" else _normalize_name(name)


def _normed(triples: set, read) -> set:
    return {tuple(read(part) for part in triple) for triple in triples}


def _precision(pred: set, gold: set) -> float:
    return float(pred == gold) if not pred else len(pred & gold) / len(pred)


def _recall(pred: set, gold: set) -> float:
    return float(pred == gold) if not gold else len(pred & gold) / len(gold)


def _normed_eval(pred: set, gold: set, metric) -> float:
    """A body or an abbreviation match both count (the scripts' normed_eval)."""
    return max(metric(_normed(pred, _abbreviation), _normed(gold, _abbreviation)),
               metric(_normed(pred, _body), _normed(gold, _body)))


def _f1(p: float, r: float) -> float:
    return 0.0 if p + r == 0 else 2 * p * r / (p + r)


def _squash(text: str) -> str:
    return text.strip().lower().replace(" ", "")


def score_relations(parsed: list[ParsedOutput], examples: list[Example]) -> dict[str, float]:
    p, r, f = [], [], []
    all_pred, all_gold = set(), set()
    for output, example in zip(parsed, examples):
        pred = {(_squash(t["drug"]), _squash(t["target"]), _squash(t["interaction"])) for t in output.items}
        gold = {(_squash(t["drug"]), _squash(t["target"]), _squash(t["interaction"])) for t in example.gold}
        p.append(_normed_eval(pred, gold, _precision))
        r.append(_normed_eval(pred, gold, _recall))
        f.append(_f1(p[-1], r[-1]))
        all_pred |= pred
        all_gold |= gold
    n = max(1, len(f))
    onto_p, onto_r = _normed_eval(all_pred, all_gold, _precision), _normed_eval(all_pred, all_gold, _recall)
    return {"precision": 100 * sum(p) / n, "recall": 100 * sum(r) / n, "f1": 100 * sum(f) / n,
            "macro_f1": 100 * _f1(sum(p) / n, sum(r) / n),
            "ontology_precision": 100 * onto_p, "ontology_recall": 100 * onto_r, "ontology_f1": 100 * _f1(onto_p, onto_r)}


# --------------------------------------------------------------------------------------------
# BC5CDR (mention level), PubMedQA, HoC
# --------------------------------------------------------------------------------------------


def score_bc5cdr_mentions(parsed: list[ParsedOutput], examples: list[Example]) -> dict[str, float]:
    """Mention level: a predicted (chemical, disease) pair is right when the two names are, lower-cased,
    mentions in that document of a chemical and a disease that the gold CID relation links. Names are
    mapped to MeSH ids through the document's own mentions, not Microsoft's test.entities.json."""
    true_positive = predicted = gold_total = 0
    for output, example in zip(parsed, examples):
        ids = {"Chemical": {}, "Disease": {}}
        for entity in example.gold["entities"]:
            ids.setdefault(entity["type"], {})[entity["text"].lower()] = entity["mesh"]
        gold = {(rel["chemical"], rel["disease"]) for rel in example.gold["relations"]}
        pred = {(ids["Chemical"].get(t["chemical"].lower()), ids["Disease"].get(t["disease"].lower()))
                for t in output.items}
        true_positive += len(pred & gold)
        predicted += len(pred)
        gold_total += len(gold)
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / gold_total if gold_total else 0.0
    return {"precision": 100 * precision, "recall": 100 * recall, "f1": 100 * _f1(precision, recall)}


def score_pubmedqa(parsed: list[ParsedOutput], examples: list[Example]) -> dict[str, float]:
    right = sum(bool(o.items) and o.items[0]["answer"] == e.gold for o, e in zip(parsed, examples))
    return {"accuracy": 100 * right / max(1, len(examples))}


def score_hoc(parsed: list[ParsedOutput], examples: list[Example]) -> dict[str, float]:
    """Micro F1 over the 11 labels (sklearn's MultiLabelBinarizer with these classes ignores others)."""
    known = set(HOC_LABELS)
    true_positive = predicted = gold_total = 0
    for output, example in zip(parsed, examples):
        pred = {item["label"] for item in output.items} & known
        gold = {label.strip() for label in example.gold.split("|")} & known
        true_positive += len(pred & gold)
        predicted += len(pred)
        gold_total += len(gold)
    precision = true_positive / predicted if predicted else 0.0
    recall = true_positive / gold_total if gold_total else 0.0
    return {"micro_f1": 100 * _f1(precision, recall)}


HEADLINE = {"ddi": "f1", "kd-dti": "f1", "bc5cdr": "f1", "pubmedqa": "accuracy", "hoc": "micro_f1"}


def score(task: str, parsed: list[ParsedOutput], examples: Iterable[Example]) -> dict[str, Any]:
    examples = list(examples)
    if task in ("ddi", "kd-dti"):
        scores = score_relations(parsed, examples)
    elif task == "bc5cdr":
        scores = score_bc5cdr_mentions(parsed, examples)
        scores["note"] = ("mention-level score (names mapped through each document's own mentions); "
                          "not the official BioCreative id-level metric of the paper's 44.98")
    elif task == "pubmedqa":
        scores = score_pubmedqa(parsed, examples)
    else:
        scores = score_hoc(parsed, examples)
    scores.update(task=task, examples=len(examples), failed=sum(o.failed for o in parsed),
                  malformed_pieces=sum(len(o.malformed) for o in parsed), headline=HEADLINE[task])
    return scores


# --------------------------------------------------------------------------------------------
# The test splits in ../shared/data
# --------------------------------------------------------------------------------------------

TEST_FILES = {"ddi": "DDI/test.json", "kd-dti": "KD-DTI/test.json", "bc5cdr": "BC5CDR/ner_spans_test.jsonl",
              "pubmedqa": "PubMedQA/test.tsv", "hoc": "HoC/test.tsv"}


def default_data_dir() -> Path:
    """$BIOGPT_DATA, else the shared data folder beside the project (../shared/data)."""
    import os

    if os.environ.get("BIOGPT_DATA"):
        return Path(os.environ["BIOGPT_DATA"])
    return Path(__file__).resolve().parent.parent.parent / "shared" / "data"


def evaluate_model(model, tokenizer, task: str, examples: list[Example], max_new_tokens: int | None = None,
                   batch_size: int = 8) -> tuple[dict[str, Any], list[ParsedOutput]]:
    """Run the fine-tuned model on `examples` as Microsoft's inference does, and score it."""
    from .paper_tasks import prompt_format_of, run_model

    recorded = prompt_format_of(model).task
    if recorded is not None and recorded != task:
        raise ValueError(f"this model was fine-tuned for {recorded}, not {task}")
    parsed = run_model(model, tokenizer, task, [e.source for e in examples], max_new_tokens, batch_size)
    scores = score(task, parsed, examples)
    scores["max_new_tokens"] = max_new_tokens  # None: up to the model's positions, as inference.py
    return scores, parsed
