"""Named-entity recognition with a token-classification BioGPT: Moses words, BIO tags, windows
over long documents, decoding to character spans, and strict span scores.

Shared by the trainer (biogpt.train) and the app's engine, so both read a document the way the
model was trained: single or doubled input, the tag on a word's first or last piece, and the
window and stride stored in config.json's "biogpt_studio" block.
"""

from __future__ import annotations

import bisect
import contextlib
from dataclasses import dataclass
from typing import Any, Iterable

import torch
import torch.nn.functional as F

from .config import STUDIO_KEY, BioGptConfig
from .tokenizer import tokenize_all

IGNORE = -100  # label of pieces the loss skips (transformers' ignore_index)


def split_words(pieces: list[str], spans: list[tuple[int, int]]) -> list[tuple[int, int, int, int]]:
    """Group BPE pieces into Moses words: (first piece, end piece, char start, char end).

    A word ends at a piece ending in "</w>" or where whitespace separates two pieces.
    """
    words = []
    first = 0
    for i in range(len(pieces)):
        if i == len(pieces) - 1 or pieces[i].endswith("</w>") or spans[i + 1][0] > spans[i][1]:
            chunk = spans[first:i + 1]
            words.append((first, i + 1, min(s for s, _ in chunk), max(e for _, e in chunk)))
            first = i + 1
    return words


def bio_tags(words: list[tuple[int, int, int, int]], entities: list[tuple[int, int, str]]) -> list[str]:
    """The BIO tag of every word: a word overlapping entities takes the one it overlaps most
    (the earlier on a tie); the entity's first word is B-type, its later words I-type."""
    ends = [w[3] for w in words]
    best: dict[int, tuple[int, int]] = {}  # word -> (overlap, entity index)
    for index, (start, end, _) in enumerate(entities):
        w = bisect.bisect_right(ends, start)  # first word ending after the entity starts
        while w < len(words) and words[w][2] < end:
            overlap = min(end, words[w][3]) - max(start, words[w][2])
            if overlap > 0 and (w not in best or overlap > best[w][0]):
                best[w] = (overlap, index)
            w += 1
    tags = ["O"] * len(words)
    started: set[int] = set()
    for w in sorted(best):
        index = best[w][1]
        tags[w] = ("I-" if index in started else "B-") + entities[index][2]
        started.add(index)
    return tags


def tags_to_spans(words: list[tuple[int, int, int, int]], tags: list[str]) -> list[tuple[int, int, str]]:
    """Character spans from word tags ("O", "B-type", "I-type"). An I- tag that does not continue
    an entity of its type starts one (the usual lenient reading of invalid BIO)."""
    spans = []
    current: list | None = None
    for word, tag in zip(words, tags):
        if tag == "O":
            if current:
                spans.append(tuple(current))
            current = None
            continue
        if tag[:2] in ("B-", "I-"):
            prefix, kind = tag[0], tag[2:]
        else:  # a label without a BIO prefix (IO tagging, "LABEL_3"): consecutive words form one entity
            prefix, kind = "I", tag
        if prefix == "B" or current is None or current[2] != kind:
            if current:
                spans.append(tuple(current))
            current = [word[2], word[3], kind]
        else:
            current[1] = word[3]
    if current:
        spans.append(tuple(current))
    return spans


def precision_recall_f1(tp: int, fp: int, fn: int) -> dict[str, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "tp": tp, "fp": fp, "fn": fn, "support": tp + fn}


def span_scores(gold: list[Iterable[tuple]], predicted: list[Iterable[tuple]], types: list[str] | None = None) -> dict:
    """Strict span precision/recall/F1: a prediction counts only with the exact start, end and
    type of a gold span of the same document. Per type, micro over all, and the macro F1."""
    counts: dict[str, list[int]] = {}
    for gold_doc, pred_doc in zip(gold, predicted, strict=True):
        gold_set, pred_set = set(gold_doc), set(pred_doc)
        for span in gold_set | pred_set:
            c = counts.setdefault(span[2], [0, 0, 0])
            if span in gold_set and span in pred_set:
                c[0] += 1
            elif span in pred_set:
                c[1] += 1
            else:
                c[2] += 1
    for kind in types or []:
        counts.setdefault(kind, [0, 0, 0])
    per_type = {kind: precision_recall_f1(*c) for kind, c in sorted(counts.items())}
    micro = precision_recall_f1(*(sum(c[i] for c in counts.values()) for i in range(3)))
    macro = sum(s["f1"] for s in per_type.values()) / len(per_type) if per_type else 0.0
    return {"micro": micro, "per_type": per_type, "macro_f1": macro}


def window_starts(length: int, size: int, stride: int) -> list[int]:
    """Start offsets of windows of `size` covering `length` pieces, `stride` apart, the last flush right."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size, stride))
    if starts[-1] != length - size:
        starts.append(length - size)
    return starts


def ner_row(window_ids: list[int], sep: int, doubled: bool) -> tuple[list[int], int]:
    """Model input for one window and where its labelled copy begins.

    single:  </s> w1 .. wn                  (labels on w1..wn)
    doubled: </s> w1 .. wn </s> w1 .. wn    (labels on the second copy only)
    """
    if doubled:
        return [sep] + window_ids + [sep] + window_ids, len(window_ids) + 2
    return [sep] + window_ids, 1


@dataclass
class NerSettings:
    """How a token-classification model reads a document; stored in config.json for the app."""

    doubled: bool = False
    label_token: str = "last"  # which piece of a word carries its tag: "first" or "last"
    window: int = 1023
    stride: int = 512

    @classmethod
    def from_config(cls, config: BioGptConfig) -> NerSettings:
        extra = config.extra.get(STUDIO_KEY) or {}
        doubled = extra.get("ner_input") == "doubled"
        default_window = (config.max_position_embeddings - 2) // 2 if doubled else config.max_position_embeddings - 1
        window = int(extra.get("ner_window", default_window))
        return cls(doubled, extra.get("ner_label_token", "first"), window, int(extra.get("ner_stride", max(1, window // 2))))

    def to_extra(self) -> dict[str, Any]:
        return {
            "task": "ner", "ner_scheme": "BIO", "ner_input": "doubled" if self.doubled else "single",
            "ner_label_token": self.label_token, "ner_window": self.window, "ner_stride": self.stride,
            "ner_words": "Moses words: a word ends at a piece ending in '</w>' or at whitespace",
        }


@dataclass
class NerEncoded:
    ids: list[int]
    words: list[tuple[int, int, int, int]]
    piece_labels: list[int] | None = None  # per piece: tag id on each word's label piece, else -100


def encode_ner_documents(tokenizer, texts: list[str], workers: int = 1) -> list[NerEncoded]:
    encoded = []
    for ids, pieces, spans in tokenize_all(tokenizer, texts, with_offsets=True, workers=workers):
        encoded.append(NerEncoded(ids, split_words(pieces, spans)))
    return encoded


def label_piece(word: tuple[int, int, int, int], label_token: str) -> int:
    return word[0] if label_token == "first" else word[1] - 1


def window_rows(docs: list[NerEncoded], settings: NerSettings, sep: int) -> list[dict]:
    rows = []
    for d, doc in enumerate(docs):
        for start in window_starts(len(doc.ids), settings.window, settings.stride):
            window = doc.ids[start:start + settings.window]
            ids, label_start = ner_row(window, sep, settings.doubled)
            row = {"doc": d, "start": start, "length": len(window), "ids": ids, "label_start": label_start}
            if doc.piece_labels is not None:
                labels = [IGNORE] * len(ids)
                labels[label_start:label_start + len(window)] = doc.piece_labels[start:start + len(window)]
                row["labels"] = labels
            rows.append(row)
    return rows


def pad_batch(sequences: list[list[int]], pad_id: int, labels: list[list[int]] | None = None) -> dict[str, torch.Tensor]:
    """Right padding. The model is causal, so right padding cannot change any real token's output:
    no attention mask is needed (SDPA's fast causal path); the head's loss ignores pad labels."""
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    for i, s in enumerate(sequences):
        ids[i, :len(s)] = torch.tensor(s, dtype=torch.long)
    batch = {"input_ids": ids}
    if labels is not None:
        lab = torch.full((len(sequences), width), IGNORE, dtype=torch.long)
        for i, s in enumerate(labels):
            lab[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        batch["labels"] = lab
    return batch


@torch.no_grad()
def ner_piece_probabilities(model, docs: list[NerEncoded], settings: NerSettings, sep: int, pad_id: int,
                            batch_size: int = 8, autocast=None) -> tuple[list[torch.Tensor], float | None]:
    """Per document, a [pieces, labels] tensor of probabilities, each piece read from the window
    where it is most central; plus the mean loss over labelled pieces when labels are known."""
    device = model.device
    rows = window_rows(docs, settings, sep)
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]["ids"]))
    num_labels = model.config.num_labels
    probs = [torch.zeros(len(d.ids), num_labels) for d in docs]
    centrality = [torch.full((len(d.ids),), -1, dtype=torch.long) for d in docs]
    loss_sum, loss_count = 0.0, 0
    for b in range(0, len(order), batch_size):
        chunk = [rows[i] for i in order[b:b + batch_size]]
        batch = pad_batch([r["ids"] for r in chunk], pad_id, [r["labels"] for r in chunk] if "labels" in chunk[0] else None)
        with (autocast or contextlib.nullcontext)():
            logits = model(input_ids=batch["input_ids"].to(device)).logits.float()
        if "labels" in batch:
            labels = batch["labels"].to(device)
            loss_sum += F.cross_entropy(logits.reshape(-1, num_labels), labels.reshape(-1), ignore_index=IGNORE,
                                        reduction="sum").item()
            loss_count += int((labels != IGNORE).sum())
        row_probs = logits.softmax(-1).cpu()
        for r, row in enumerate(chunk):
            n, s, ls = row["length"], row["start"], row["label_start"]
            position = torch.arange(n)
            score = torch.minimum(position, n - 1 - position)
            target = slice(s, s + n)
            better = score > centrality[row["doc"]][target]
            probs[row["doc"]][target][better] = row_probs[r, ls:ls + n][better]
            centrality[row["doc"]][target] = torch.where(better, score, centrality[row["doc"]][target])
    return probs, (loss_sum / loss_count if loss_count else None)


WORD_AGGREGATIONS = ("first", "last", "average", "max")


def word_probabilities(doc: NerEncoded, probs: torch.Tensor, strategy: str) -> torch.Tensor:
    """[words, labels]: each word's label probabilities from its pieces' ([pieces, labels]).

    "first" or "last" reads the piece that carries the tag in training (`label_piece`); "average"
    averages the pieces' probabilities; "max" takes the piece with the most confident label.
    """
    if strategy in ("first", "last"):
        return probs[torch.tensor([label_piece(w, strategy) for w in doc.words])]
    if strategy == "average":
        return torch.stack([probs[first:end].mean(0) for first, end, _, _ in doc.words])
    if strategy == "max":
        pieces = [probs[first:end] for first, end, _, _ in doc.words]
        return torch.stack([p[int(p.max(-1).values.argmax())] for p in pieces])
    raise ValueError(f"Unknown word aggregation {strategy!r}; use one of {', '.join(WORD_AGGREGATIONS)}.")


def decode_entities(doc: NerEncoded, probs: torch.Tensor, id2label: dict[int, str], strategy: str) -> list[dict]:
    """Word tags from each word's pieces (`word_probabilities`), then BIO -> character spans with
    a confidence: the mean of the entity's words' top probabilities."""
    if not doc.words:
        return []
    word_probs = word_probabilities(doc, probs, strategy)
    best = word_probs.argmax(-1).tolist()
    tags = [id2label[i] for i in best]
    confidences = word_probs.max(-1).values.tolist()
    entities = []
    for start, end, kind in tags_to_spans(doc.words, tags):
        inside = [confidences[i] for i, w in enumerate(doc.words) if w[2] >= start and w[3] <= end]
        entities.append({"start": start, "end": end, "type": kind, "score": sum(inside) / len(inside)})
    return entities


def predict_entities(model, tokenizer, texts: list[str], batch_size: int = 8) -> list[list[dict]]:
    """Entities of each text as {start, end, type, score, text}, read the way the model was trained
    (config.json's "biogpt_studio" block: single or doubled input, first or last piece, windows)."""
    settings = NerSettings.from_config(model.config)
    docs = encode_ner_documents(tokenizer, list(texts))
    was_training = model.training
    model.eval()
    probs, _ = ner_piece_probabilities(model, docs, settings, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size)
    model.train(was_training)
    results = []
    for text, doc, p in zip(texts, docs, probs):
        found = decode_entities(doc, p, model.config.id2label, settings.label_token)
        results.append([{**e, "text": text[e["start"]:e["end"]]} for e in found])
    return results
