"""Pretraining and fine-tuning: `python -m biogpt.train lm|ner|classify ...`.

    # a causal LM from scratch (or --init CHECKPOINT to continue), packed 512-token blocks
    python -m biogpt.train lm --train docs.jsonl notes.txt --layers 4 --hidden 256 --heads 8 \
        --intermediate 1024 --out runs/lm
    # Chemical/Disease NER (BIO) on BC5CDR, strict span F1 on the test split
    python -m biogpt.train ner --init runs/lm --train BC5CDR/ner_spans_train.jsonl \
        --valid BC5CDR/ner_spans_valid.jsonl --test BC5CDR/ner_spans_test.jsonl --out runs/ner
    # sequence classification from `text<TAB>label` TSV; --multi-label for `a|b` labels (HoC)
    python -m biogpt.train classify --init runs/lm --multi-label --train HoC/train.tsv \
        --test HoC/test.tsv --out runs/hoc

The output folder is a `save_pretrained` checkpoint (config.json with id2label, model.safetensors)
that loads here and in transformers, plus the tokenizer files, metrics.json, train_log.jsonl
and a model card (README.md). The best model on the validation split is written there every
time it improves, so an interrupted run still leaves a usable model.

Decisions worth knowing (each is also recorded in config.json under "biogpt_studio" where
inference needs it):

* Splits. Validation is the --valid file or, without one, a fixed share of the training
  documents chosen by a hash of their text (--valid-percent), so the split never depends on
  file order or seed. Only --test is ever used for the final numbers. A training or
  validation file whose name contains "test" is refused, and training/validation examples
  whose text also occurs in the --test data are dropped: test data cannot leak by construction.
* LM data: a .jsonl line gives `title + " " + abstract` (or `text`), HTML entities unescaped
  (some PubMed abstracts hold "&gt;"); a .txt line is one document. Every document starts with
  "</s>" as in BioGPT; documents are concatenated and cut into --block-size blocks. Perplexity
  is exp(mean token loss) over the held-out blocks.
* NER: BIO tags per Moses word (a word ends at a BPE piece ending in "</w>" or at whitespace);
  a word that overlaps an entity takes its type (B on the entity's first word). One piece per
  word carries the label, the others are -100: by default the word's LAST piece, since in a
  causal model only the last piece has seen the whole word (--label-token first is the usual
  encoder recipe). Predictions are decoded back to character spans through the tokenizer's
  offsets. Long documents are cut into windows of --max-length pieces with --stride; each
  piece takes its prediction from the window where it sits most centrally. --double-text feeds
  "</s> window </s> window" and labels only the second copy, so every labelled piece has seen
  its right context (the app must build the same input: see `predict_entities`).
  Evaluation is strict: exact (start, end, type) character spans, per type and micro.
  (Reading, decoding and scoring live in biogpt/ner.py, which the app's engine shares.)
* Classification: right padding (the model pools at the last non-pad token). Multi-label
  rows `a|b` become 0/1 vectors; the --empty-label ("empty" for HoC) means "none of them", i.e.
  the all-zeros vector, not a class of its own. The sigmoid threshold is tuned on validation
  for micro-F1 and stored in config.json.
* Optimisation: AdamW (no weight decay on biases and norms), linear warmup then cosine or
  linear decay, gradient clipping, bf16 autocast on request. With --max-minutes the schedule
  runs on whichever is further along, steps or the time budget, so the learning rate has
  decayed when the budget ends. Early stopping (--patience) keeps the best validation model.
* Checkpoints: the resumable state (weights as safetensors, optimizer and counters through
  torch.save, read back with weights_only=True) goes to --checkpoint-dir every --save-every
  steps; --resume continues at the saved step with the same batch order.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import hashlib
import html
import json
import math
import os
import platform
import random
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import STUDIO_KEY, BioGptConfig
from .model import BioGptForCausalLM, BioGptForSequenceClassification, BioGptForTokenClassification
from .ner import (
    IGNORE,
    NerSettings,
    bio_tags,
    decode_entities,
    encode_ner_documents,
    label_piece,
    ner_piece_probabilities,
    pad_batch,
    precision_recall_f1,
    predict_entities,
    span_scores,
    tags_to_spans,
    window_rows,
)
from .tokenizer import tokenize_all

DEFAULT_TOKENIZER = Path(__file__).resolve().parent.parent / "assets" / "tokenizers" / "biogpt"
CHECKPOINT_STATE = "trainer_state.pt"
CHECKPOINT_WEIGHTS = "model.safetensors"
CHECKPOINT_BEST = "best.safetensors"


class DataError(ValueError):
    """Bad input data; the message names the file and, where there is one, the line."""

    def __init__(self, path: str | Path, line: int | None, message: str):
        self.path, self.line = str(path), line
        where = f"{path}, line {line}" if line else str(path)
        super().__init__(f"{where}: {message}")


# --------------------------------------------------------------------------------------------
# Splits and the test-data guard
# --------------------------------------------------------------------------------------------


def refuse_test_file(path: str | Path, role: str) -> None:
    """Training and validation data must not be a test split; the file name is the tell."""
    if "test" in Path(path).name.lower():
        raise DataError(
            path, None,
            f"refusing to use a file named like a test split as {role} data. Test data is only for the "
            "final evaluation (--test). Rename the file if it really is not a test split.",
        )


def stable_fraction(key: str) -> float:
    """A number in [0, 1) fixed by `key` alone: held-out splits do not depend on order or seed."""
    return int(hashlib.md5(key.encode("utf-8")).hexdigest()[:12], 16) / float(16**12)


def split_holdout(items: list, keys: list[str], percent: float) -> tuple[list, list]:
    """(kept, held_out): items whose key hashes below `percent`% are held out.

    With two or more items both sides are non-empty, whatever the percentage.
    """
    fractions = [stable_fraction(k) for k in keys]
    held = [f < percent / 100.0 for f in fractions]
    if len(items) >= 2 and percent > 0:
        order = sorted(range(len(items)), key=lambda i: fractions[i])
        if not any(held):
            held[order[0]] = True
        if all(held):
            held[order[-1]] = False
    return [x for x, h in zip(items, held) if not h], [x for x, h in zip(items, held) if h]


def text_key(text: str) -> str:
    return " ".join(text.split()).lower()


# --------------------------------------------------------------------------------------------
# Readers (each names the file and line of anything wrong)
# --------------------------------------------------------------------------------------------


def _open_lines(path: str | Path) -> list[str]:
    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "no such file")
    with open(path, encoding="utf-8", newline="") as f:
        # Only "\n" ends a line: str.splitlines() would also split on \x0b, \x1c, \x85, \u2028 ...
        # which occur inside real abstracts.
        lines = [line.removesuffix("\r") for line in f.read().split("\n")]
    if not any(line.strip() for line in lines):
        raise DataError(path, None, "the file is empty")
    return lines


def _json_line(path, number: int, line: str) -> dict:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(path, number, f"not valid JSON ({error.msg})") from None
    if not isinstance(value, dict):
        raise DataError(path, number, "expected a JSON object")
    return value


def read_lm_documents(path: str | Path) -> list[str]:
    """.jsonl: title + " " + abstract (or "text"), HTML-unescaped; any other file: one document a line."""
    documents = []
    lines = _open_lines(path)
    if str(path).endswith(".jsonl"):
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = _json_line(path, number, line)
            if "title" in record or "abstract" in record:
                text = f"{record.get('title') or ''} {record.get('abstract') or ''}"
            elif "text" in record:
                text = str(record["text"])
            else:
                raise DataError(path, number, "expected 'title'/'abstract' or 'text' fields")
            text = " ".join(html.unescape(text).split())
            if text:
                documents.append(text)
    else:
        documents = [line.strip() for line in lines if line.strip()]
    if not documents:
        raise DataError(path, None, "no documents in the file")
    return documents


@dataclass
class NerDocument:
    id: str
    text: str
    entities: list[tuple[int, int, str]]  # [start, end) character spans into text, and the type
    source: str  # "file:line" for messages


def _check_entity(path, number, text: str, start, end, kind, mention, types) -> tuple[int, int, str]:
    try:
        start, end = int(start), int(end)
    except (TypeError, ValueError):
        raise DataError(path, number, f"entity offsets must be integers, got {start!r}, {end!r}") from None
    if not (0 <= start < end <= len(text)):
        raise DataError(path, number, f"entity span [{start}, {end}) is out of range for a text of {len(text)} characters")
    if mention is not None and text[start:end] != mention:
        raise DataError(path, number, f"entity [{start}, {end}) reads {text[start:end]!r} in the text, not {mention!r}")
    if not kind or not isinstance(kind, str):
        raise DataError(path, number, f"entity type missing or not a string: {kind!r}")
    if types is not None and kind not in types:
        raise DataError(path, number, f"unknown entity type {kind!r}; expected one of {sorted(types)}")
    return start, end, kind


def read_ner_documents(path: str | Path, types: set[str] | None = None) -> list[NerDocument]:
    """BC5CDR-style .jsonl (pmid, text, entities[start, end, type, mention]) or a PubTator file."""
    lines = _open_lines(path)
    first = next(line for line in lines if line.strip())
    if str(path).endswith(".jsonl") or first.lstrip().startswith("{"):
        documents = []
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            record = _json_line(path, number, line)
            text = record.get("text")
            if not isinstance(text, str) or not text:
                raise DataError(path, number, "missing or empty 'text'")
            entities = []
            for entity in record.get("entities") or []:
                if not isinstance(entity, dict):
                    raise DataError(path, number, "each entity must be an object with start, end, type")
                entities.append(_check_entity(
                    path, number, text, entity.get("start"), entity.get("end"), entity.get("type"),
                    entity.get("mention"), types,
                ))
            doc_id = str(record.get("pmid", record.get("id", f"{Path(path).name}:{number}")))
            documents.append(NerDocument(doc_id, text, sorted(set(entities)), f"{path}:{number}"))
        if not documents:
            raise DataError(path, None, "no documents in the file")
        return documents
    return _read_pubtator(path, lines, types)


def _read_pubtator(path, lines: list[str], types) -> list[NerDocument]:
    """PubTator: `pmid|t|title`, `pmid|a|abstract`, then `pmid<TAB>start<TAB>end<TAB>mention<TAB>type...`;
    offsets index `title + " " + abstract`. Relation lines (`pmid<TAB>CID<TAB>...`) are skipped."""
    documents: list[NerDocument] = []
    current: dict[str, Any] | None = None

    def finish():
        if current is not None:
            documents.append(NerDocument(current["id"], current["text"], sorted(set(current["entities"])), current["source"]))

    for number, line in enumerate(lines, 1):
        if not line.strip():
            finish()
            current = None
            continue
        if "|t|" in line[:40] and "\t" not in line.split("|t|")[0]:
            finish()
            pmid, title = line.split("|t|", 1)
            current = {"id": pmid, "title": title, "text": None, "entities": [], "source": f"{path}:{number}"}
            continue
        if current is None:
            raise DataError(path, number, "expected a 'pmid|t|title' line to start a document")
        if "|a|" in line[:40] and "\t" not in line.split("|a|")[0]:
            current["text"] = current["title"] + " " + line.split("|a|", 1)[1]
            continue
        fields = line.split("\t")
        if len(fields) >= 2 and not fields[1].isdigit():
            continue  # a relation line
        if len(fields) < 5:
            raise DataError(path, number, f"expected pmid, start, end, mention, type separated by tabs, got {len(fields)} fields")
        if current["text"] is None:
            current["text"] = current["title"]
        current["entities"].append(_check_entity(path, number, current["text"], fields[1], fields[2], fields[4], fields[3], types))
    finish()
    if not documents:
        raise DataError(path, None, "no documents in the file")
    for doc in documents:
        if doc.text is None:
            raise DataError(path, None, f"document {doc.id} has no text")
    return documents


@dataclass
class TsvRow:
    text: str
    label: str
    line: int
    path: str


def read_tsv(path: str | Path) -> list[TsvRow]:
    """`text<TAB>label` lines; blank lines are skipped, anything else must have exactly one tab."""
    rows = []
    for number, line in enumerate(_open_lines(path), 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise DataError(path, number, f"expected 'text<TAB>label', found {len(fields)} tab-separated fields")
        text, label = fields[0].strip(), fields[1].strip()
        if not text:
            raise DataError(path, number, "empty text")
        if not label:
            raise DataError(path, number, "empty label")
        rows.append(TsvRow(text, label, number, str(path)))
    if not rows:
        raise DataError(path, None, "no rows in the file")
    return rows


# --------------------------------------------------------------------------------------------
# Classification metrics
# --------------------------------------------------------------------------------------------


def classification_scores(gold: torch.Tensor, predicted: torch.Tensor, labels: list[str]) -> dict:
    """gold/predicted: [n, classes] 0/1 (one-hot for single-label). Accuracy is exact match."""
    gold, predicted = gold.bool(), predicted.bool()
    per_class = {}
    for c, name in enumerate(labels):
        tp = int((gold[:, c] & predicted[:, c]).sum())
        fp = int((~gold[:, c] & predicted[:, c]).sum())
        fn = int((gold[:, c] & ~predicted[:, c]).sum())
        per_class[name] = precision_recall_f1(tp, fp, fn)
    micro = precision_recall_f1(*(sum(s[k] for s in per_class.values()) for k in ("tp", "fp", "fn")))
    return {
        "accuracy": float((gold == predicted).all(-1).float().mean()) if len(gold) else 0.0,
        "micro_f1": micro["f1"],
        "micro_precision": micro["precision"],
        "micro_recall": micro["recall"],
        "macro_f1": sum(s["f1"] for s in per_class.values()) / max(len(per_class), 1),
        "per_class": per_class,
        "n": len(gold),
    }


def tune_threshold(gold: torch.Tensor, probs: torch.Tensor) -> float:
    """The sigmoid threshold (0.01 .. 0.99) with the best micro-F1 on these examples."""
    best, best_f1 = 0.5, -1.0
    gold = gold.bool()
    for step in range(1, 100):
        t = step / 100
        pred = probs >= t
        tp = int((gold & pred).sum())
        denominator = int(gold.sum()) + int(pred.sum())
        f1 = 2 * tp / denominator if denominator else 0.0
        if f1 > best_f1 + 1e-12:
            best, best_f1 = t, f1
    return best


# --------------------------------------------------------------------------------------------
# Tasks: data, batches and evaluation for lm / ner / classify
# --------------------------------------------------------------------------------------------


def pack_blocks(documents: list[list[int]], block: int, keep_tail: bool) -> list[torch.Tensor] | torch.Tensor:
    """Concatenate token lists and cut them into rows of `block` tokens; the tail (if longer than
    one token) becomes a last, shorter row when `keep_tail`, else it is dropped."""
    stream = torch.tensor([t for doc in documents for t in doc], dtype=torch.long)
    full = len(stream) // block
    blocks = stream[: full * block].view(full, block)
    if not keep_tail:
        return blocks
    rows = list(blocks)
    if len(stream) > full * block + 1:
        rows.append(stream[full * block:])
    return rows


def block_batches(blocks: list[torch.Tensor], batch_size: int):
    if not len(blocks):
        return
    full = [b for b in blocks if len(b) == len(blocks[0])]
    for i in range(0, len(full), batch_size):
        yield torch.stack(full[i:i + batch_size])
    for b in blocks[len(full):]:
        yield b.unsqueeze(0)


@torch.no_grad()
def blocks_perplexity(model, batches, autocast=contextlib.nullcontext) -> dict:
    """exp(mean next-token loss) over blocks; each block's first token is context only."""
    total, count = 0.0, 0
    for ids in batches:
        ids = ids.to(model.device)
        with autocast():
            logits = model(input_ids=ids).logits
        total += F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1), reduction="sum").item()
        count += ids[:, 1:].numel()
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}


def perplexity(model, tokenizer, texts: list[str], block_size: int = 512, batch_size: int = 8) -> dict:
    """Held-out perplexity of a causal LM on `texts`, measured exactly as `train lm` does: each text
    encoded with its leading "</s>", all concatenated and cut into `block_size` blocks."""
    was_training = model.training
    model.eval()
    blocks = pack_blocks([tokenizer.encode(t) for t in texts], block_size, keep_tail=True)
    result = blocks_perplexity(model, block_batches(blocks, batch_size))
    model.train(was_training)
    return result


def _limit(items: list, n: int | None) -> list:
    return items[:n] if n else items


def _bucketed_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding): sort within chunks of 50 batches."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * 50
    batches = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


class Task:
    name = ""
    model_class: type = BioGptForCausalLM
    metric = "loss"
    greater_is_better = False

    def model_overrides(self) -> dict[str, Any]:
        return {}

    def studio_extra(self) -> dict[str, Any]:
        return {"task": self.name}

    def on_best(self, metrics: dict) -> None:
        """Called when `metrics` (validation) is the best so far; e.g. keep its threshold."""

    def to_device(self, device) -> None:
        """Move data the task keeps as tensors to `device`; tasks that pad batches on the fly keep none."""

    def headline(self, metrics: dict) -> str:
        return f"{self.metric}={metrics.get(self.metric, float('nan')):.4f}"


class LmTask(Task):
    name = "lm"
    model_class = BioGptForCausalLM
    metric = "perplexity"
    greater_is_better = False

    def __init__(self, args, tokenizer, log):
        self.args, self.tokenizer = args, tokenizer
        train_docs, valid_docs, test_docs = _train_valid_test(args, log, read_lm_documents, text_key)
        if not train_docs:
            raise DataError(args.train[0], None, "no training documents left")
        started = time.time()
        encoded = tokenize_all(tokenizer, train_docs + valid_docs + test_docs, workers=args.workers)
        train_ids = encoded[:len(train_docs)]
        valid_ids = encoded[len(train_docs):len(train_docs) + len(valid_docs)]
        test_ids = encoded[len(train_docs) + len(valid_docs):]
        # Documents in a fixed shuffled order (seeded), then one stream cut into blocks.
        order = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(args.seed)).tolist()
        self.block = args.block_size
        self.train_blocks = self._pack([train_ids[i] for i in order], keep_tail=False)
        if len(self.train_blocks) == 0:
            raise DataError(args.train[0], None, f"fewer training tokens than one block of {self.block}; lower --block-size")
        self.valid_blocks = self._pack(valid_ids, keep_tail=True)
        self.test_blocks = self._pack(test_ids, keep_tail=True) if test_ids else None
        self.sizes = {
            "train_documents": len(train_docs), "valid_documents": len(valid_docs), "test_documents": len(test_docs),
            "train_tokens": sum(map(len, train_ids)), "valid_tokens": sum(map(len, valid_ids)),
            "test_tokens": sum(map(len, test_ids)), "train_blocks": len(self.train_blocks),
        }
        log(f"tokenised {sum(map(len, encoded)):,} tokens in {time.time() - started:.1f}s; "
            + ", ".join(f"{k}={v:,}" for k, v in self.sizes.items()))

    def _pack(self, documents: list[list[int]], keep_tail: bool) -> list[torch.Tensor] | torch.Tensor:
        return pack_blocks(documents, self.block, keep_tail)

    def to_device(self, device) -> None:
        self.train_blocks = self.train_blocks.to(device)

    def num_train_items(self) -> int:
        return len(self.train_blocks)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.args.seed * 1000 + epoch)
        order = torch.randperm(len(self.train_blocks), generator=generator).tolist()
        size = self.args.batch_size
        return [order[i:i + size] for i in range(0, len(order), size)]

    def make_batch(self, indices: list[int], device) -> tuple[dict, int]:
        ids = self.train_blocks[torch.tensor(indices, device=self.train_blocks.device)].to(device, non_blocking=True)
        return {"input_ids": ids, "labels": ids}, ids.numel()

    def eval_batches(self, split: str):
        return block_batches(self.valid_blocks if split == "valid" else self.test_blocks, self.args.eval_batch_size)

    def has_split(self, split: str) -> bool:
        return bool(self.valid_blocks) if split == "valid" else bool(self.test_blocks)

    def evaluate(self, model, split: str, autocast) -> dict:
        return blocks_perplexity(model, self.eval_batches(split), autocast)

    def sample_batches(self, n: int = 2):
        return [{"input_ids": ids[:4, :256]} for ids in list(self.eval_batches("valid"))[:n]]

    def studio_extra(self) -> dict[str, Any]:
        return {"task": "lm", "block_size": self.block, "document_start": "</s>"}

    def headline(self, metrics: dict) -> str:
        return f"perplexity={metrics['perplexity']:.2f} loss={metrics['loss']:.4f}"


def _train_valid_test(args, log, read, key_of):
    """The three splits from --train/--valid/--test (+ --train-on-dev, held-out validation)."""
    for path in args.train:
        refuse_test_file(path, "training")
    for path in args.valid or []:
        refuse_test_file(path, "validation")
    train = [x for path in args.train for x in read(path)]
    given_valid = [x for path in args.valid or [] for x in read(path)]
    test = [x for path in args.test or [] for x in read(path)]
    train_on_dev = getattr(args, "train_on_dev", False)  # the lm command has no --train-on-dev
    if given_valid and not train_on_dev:
        valid = given_valid
    else:
        train, valid = split_holdout(train, [key_of(x) for x in train], args.valid_percent)
        if train_on_dev:
            train = train + given_valid
            log(f"--train-on-dev: training on train + {len(given_valid)} dev examples; "
                f"validation = {len(valid)} examples held out of train ({args.valid_percent}%)")
    test_keys = {key_of(x) for x in test}
    before = len(train), len(valid)
    train = [x for x in train if key_of(x) not in test_keys]
    valid = [x for x in valid if key_of(x) not in test_keys]
    if (len(train), len(valid)) != before:
        log(f"dropped {before[0] - len(train)} training and {before[1] - len(valid)} validation examples "
            "whose text also occurs in the test data")
    return _limit(train, args.limit_train), _limit(valid, args.limit_eval), _limit(test, args.limit_eval)


class NerTask(Task):
    name = "ner"
    model_class = BioGptForTokenClassification
    metric = "micro_f1"
    greater_is_better = True

    def __init__(self, args, tokenizer, log, max_positions: int):
        self.args, self.tokenizer = args, tokenizer
        types = set(args.entity_types.split(",")) if args.entity_types else None
        if types is None:  # the types of the training files; any other type elsewhere is an error
            types = {e[2] for path in args.train for d in read_ner_documents(path) for e in d.entities}
            if not types:
                raise DataError(args.train[0], None, "no entities in the training data")
        self.types = sorted(types)
        labels = ["O"] + [f"{p}-{t}" for t in self.types for p in ("B", "I")]
        self.id2label = dict(enumerate(labels))
        self.label2id = {v: k for k, v in self.id2label.items()}
        read = lambda path: read_ner_documents(path, types)  # noqa: E731
        self.train, self.valid, self.test = _train_valid_test(args, log, read, lambda d: text_key(d.text))
        if not self.train:
            raise DataError(args.train[0], None, "no training documents left")
        limit = (max_positions - 2) // 2 if args.double_text else max_positions - 1
        window = min(args.max_length or limit, limit)
        self.settings = NerSettings(args.double_text, args.label_token, window, min(args.stride or max(1, window // 2), window))
        started = time.time()
        everything = self.train + self.valid + self.test
        encoded = encode_ner_documents(tokenizer, [d.text for d in everything], workers=args.workers)
        unreachable = 0
        for doc, enc in zip(everything, encoded):
            tags = bio_tags(enc.words, doc.entities)
            enc.piece_labels = [IGNORE] * len(enc.ids)
            for word, tag in zip(enc.words, tags):
                enc.piece_labels[label_piece(word, args.label_token)] = self.label2id[tag]
            unreachable += len(set(doc.entities) - set(tags_to_spans(enc.words, tags)))
        n_train, n_valid = len(self.train), len(self.valid)
        self.enc = {"train": encoded[:n_train], "valid": encoded[n_train:n_train + n_valid], "test": encoded[n_train + n_valid:]}
        self.docs = {"train": self.train, "valid": self.valid, "test": self.test}
        self.rows = window_rows(self.enc["train"], self.settings, tokenizer.eos_token_id)
        entity_count = sum(len(d.entities) for d in everything)
        self.sizes = {
            "train_documents": n_train, "valid_documents": n_valid, "test_documents": len(self.test),
            "train_windows": len(self.rows), "train_entities": sum(len(d.entities) for d in self.train),
            "entities_not_on_word_boundaries": unreachable,
        }
        log(f"tokenised {len(everything)} documents in {time.time() - started:.1f}s; "
            + ", ".join(f"{k}={v:,}" for k, v in self.sizes.items())
            + f" (of {entity_count:,} entities: a word-level tagger cannot recover those)")

    def model_overrides(self) -> dict[str, Any]:
        return {"id2label": self.id2label, "problem_type": None}

    def studio_extra(self) -> dict[str, Any]:
        return self.settings.to_extra()

    def num_train_items(self) -> int:
        return len(self.rows)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.args.seed * 1000 + epoch)
        return _bucketed_batches([len(r["ids"]) for r in self.rows], self.args.batch_size, generator)

    def make_batch(self, indices: list[int], device) -> tuple[dict, int]:
        rows = [self.rows[i] for i in indices]
        batch = pad_batch([r["ids"] for r in rows], self.tokenizer.pad_token_id, [r["labels"] for r in rows])
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}, sum(len(r["ids"]) for r in rows)

    def has_split(self, split: str) -> bool:
        return bool(self.docs[split])

    def evaluate(self, model, split: str, autocast) -> dict:
        docs, enc = self.docs[split], self.enc[split]
        probs, loss = ner_piece_probabilities(model, enc, self.settings, self.tokenizer.eos_token_id,
                                              self.tokenizer.pad_token_id, self.args.eval_batch_size, autocast)
        predicted = [[(e["start"], e["end"], e["type"]) for e in decode_entities(d, p, self.id2label, self.settings.label_token)]
                     for d, p in zip(enc, probs)]
        scores = span_scores([d.entities for d in docs], predicted, self.types)
        return {"loss": loss, "micro_f1": scores["micro"]["f1"], "micro_precision": scores["micro"]["precision"],
                "micro_recall": scores["micro"]["recall"], "macro_f1": scores["macro_f1"],
                "per_type": scores["per_type"], "documents": len(docs)}

    def sample_batches(self, n: int = 2):
        rows = window_rows(self.enc["valid"][:8], self.settings, self.tokenizer.eos_token_id)
        return [pad_batch([r["ids"] for r in rows[i:i + 4]], self.tokenizer.pad_token_id) for i in range(0, min(len(rows), 4 * n), 4)]

    def headline(self, metrics: dict) -> str:
        per = " ".join(f"{k}={v['f1']:.4f}" for k, v in metrics["per_type"].items())
        return f"micro_f1={metrics['micro_f1']:.4f} (P={metrics['micro_precision']:.4f} R={metrics['micro_recall']:.4f}) {per}"


class ClassifyTask(Task):
    name = "classify"
    model_class = BioGptForSequenceClassification
    greater_is_better = True

    def __init__(self, args, tokenizer, log, max_positions: int):
        self.args, self.tokenizer = args, tokenizer
        self.multi = args.multi_label
        self.metric = "micro_f1" if self.multi else "accuracy"
        self.threshold = 0.5
        if args.labels:
            names = [x.strip() for x in args.labels.split(",") if x.strip()]
        else:  # the labels of the training files (before any hold-out or --limit-train)
            names = sorted({name for path in args.train for r in read_tsv(path) for name in self._split_label(r)})
        self.train, self.valid, self.test = _train_valid_test(args, log, read_tsv, lambda r: text_key(r.text))
        if not self.train:
            raise DataError(args.train[0], None, "no training rows left")
        if not names:
            raise DataError(args.train[0], None, "no labels found (every row is the empty label?)")
        self.labels = names
        self.label2id = {n: i for i, n in enumerate(names)}
        self.max_length = min(args.max_length or max_positions, max_positions)
        started = time.time()
        everything = self.train + self.valid + self.test
        encoded = tokenize_all(tokenizer, [r.text for r in everything], workers=args.workers)
        truncated = sum(len(ids) > self.max_length for ids in encoded)
        self.ids = [ids[: self.max_length] for ids in encoded]
        self.targets = [self._target(r) for r in everything]
        n_train, n_valid = len(self.train), len(self.valid)
        self.split_index = {"train": range(0, n_train), "valid": range(n_train, n_train + n_valid),
                            "test": range(n_train + n_valid, len(everything))}
        self.sizes = {"train_rows": n_train, "valid_rows": n_valid, "test_rows": len(self.test),
                      "truncated_rows": truncated, "labels": len(names)}
        log(f"tokenised {len(everything)} rows in {time.time() - started:.1f}s; "
            + ", ".join(f"{k}={v:,}" for k, v in self.sizes.items()) + f"; labels: {names}")

    def _split_label(self, row: TsvRow) -> list[str]:
        if not self.multi:
            return [row.label]
        parts = [p.strip() for p in row.label.split(self.args.label_sep)]
        if any(not p for p in parts):
            raise DataError(row.path, row.line, f"empty label in {row.label!r}")
        if self.args.empty_label in parts:
            if len(parts) > 1:
                raise DataError(row.path, row.line, f"{self.args.empty_label!r} (no label) combined with others: {row.label!r}")
            return []
        return parts

    def _target(self, row: TsvRow):
        names = self._split_label(row)
        unknown = [n for n in names if n not in self.label2id]
        if unknown:
            raise DataError(row.path, row.line, f"unknown label {unknown[0]!r}; the labels are {self.labels}")
        if not self.multi:
            return self.label2id[names[0]]
        vector = [0.0] * len(self.labels)
        for n in names:
            vector[self.label2id[n]] = 1.0
        return vector

    def model_overrides(self) -> dict[str, Any]:
        problem = "multi_label_classification" if self.multi else "single_label_classification"
        return {"id2label": dict(enumerate(self.labels)), "problem_type": problem}

    def studio_extra(self) -> dict[str, Any]:
        extra = {"task": "classify", "multi_label": self.multi, "max_length": self.max_length,
                 "input": "tokenizer(text): '</s>' + text, right-padded, pooled at the last token"}
        if self.multi:
            extra.update(threshold=self.threshold, empty_label=self.args.empty_label)
        return extra

    def on_best(self, metrics: dict) -> None:
        if self.multi:
            self.threshold = metrics["threshold"]

    def num_train_items(self) -> int:
        return len(self.train)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.args.seed * 1000 + epoch)
        return _bucketed_batches([len(self.ids[i]) for i in self.split_index["train"]], self.args.batch_size, generator)

    def _batch(self, rows: list[int]) -> dict:
        batch = pad_batch([self.ids[i] for i in rows], self.tokenizer.pad_token_id)
        targets = [self.targets[i] for i in rows]
        batch["labels"] = torch.tensor(targets, dtype=torch.float if self.multi else torch.long)
        return batch

    def make_batch(self, indices: list[int], device) -> tuple[dict, int]:
        rows = [self.split_index["train"][i] for i in indices]
        batch = self._batch(rows)
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}, sum(len(self.ids[i]) for i in rows)

    def has_split(self, split: str) -> bool:
        return len(self.split_index[split]) > 0

    @torch.no_grad()
    def evaluate(self, model, split: str, autocast) -> dict:
        rows = sorted(self.split_index[split], key=lambda i: len(self.ids[i]))
        logits_all, gold_all = [], []
        for b in range(0, len(rows), self.args.eval_batch_size):
            batch = self._batch(rows[b:b + self.args.eval_batch_size])
            with autocast():
                logits_all.append(model(input_ids=batch["input_ids"].to(model.device)).logits.float().cpu())
            gold_all.append(batch["labels"])
        logits, gold = torch.cat(logits_all), torch.cat(gold_all)
        if self.multi:
            loss = F.binary_cross_entropy_with_logits(logits, gold).item()
            probs = logits.sigmoid()
            threshold = tune_threshold(gold, probs) if split == "valid" else self.threshold
            scores = classification_scores(gold, probs >= threshold, self.labels)
            scores.update(threshold=threshold, loss=loss)
            if split == "valid":
                scores["micro_f1_at_0.5"] = classification_scores(gold, probs >= 0.5, self.labels)["micro_f1"]
            return scores
        loss = F.cross_entropy(logits, gold).item()
        one_hot = lambda x: F.one_hot(x, len(self.labels))  # noqa: E731
        scores = classification_scores(one_hot(gold), one_hot(logits.argmax(-1)), self.labels)
        scores["loss"] = loss
        return scores

    def sample_batches(self, n: int = 2):
        rows = list(self.split_index["valid"])[: 4 * n]
        return [{"input_ids": self._batch(rows[i:i + 4])["input_ids"]} for i in range(0, len(rows), 4)]

    def headline(self, metrics: dict) -> str:
        text = f"accuracy={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f} micro_f1={metrics['micro_f1']:.4f}"
        return text + (f" threshold={metrics['threshold']:.2f}" if self.multi else "")


# --------------------------------------------------------------------------------------------
# Model, optimizer, schedule
# --------------------------------------------------------------------------------------------


def build_model(args, task: Task, tokenizer, log):
    overrides = dict(task.model_overrides())
    if args.dropout is not None:
        overrides.update(hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout)
    if getattr(args, "classifier_dropout", None) is not None:
        overrides["classifier_dropout"] = args.classifier_dropout
    vocab = len(tokenizer)
    if args.init:
        model = task.model_class.from_pretrained(args.init, **overrides)
        if model.config.vocab_size < vocab:
            raise SystemExit(f"error: the tokenizer has {vocab} tokens but {args.init} only {model.config.vocab_size}")
        log(f"initialised from {args.init}" + (" (new, untrained head)" if model.head_is_untrained else ""))
    else:
        values = BioGptConfig.from_json_file(args.config_json).to_dict() if args.config_json else {"vocab_size": vocab}
        values.pop("model_type", None)
        for flag, key in (("layers", "num_hidden_layers"), ("hidden", "hidden_size"), ("heads", "num_attention_heads"),
                          ("intermediate", "intermediate_size"), ("max_positions", "max_position_embeddings")):
            if getattr(args, flag) is not None:
                values[key] = getattr(args, flag)
        if args.dropout is None:
            overrides.setdefault("hidden_dropout_prob", values.get("hidden_dropout_prob", 0.1))
        values.update(overrides)
        values["extra"] = {}
        config = BioGptConfig(**{k: v for k, v in values.items() if k in BioGptConfig.__dataclass_fields__})
        if config.vocab_size < vocab:
            raise SystemExit(f"error: vocab_size {config.vocab_size} is smaller than the tokenizer's {vocab}")
        model = task.model_class(config)
        model.init_weights()
        log(f"new model from scratch: {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
            f"{config.num_attention_heads} heads, intermediate {config.intermediate_size}, vocab {config.vocab_size}, "
            f"max positions {config.max_position_embeddings}")
    if args.freeze_embeddings:
        # Fine-tuning on a few thousand documents overfits; the 10.8 M token embeddings are most
        # of a small model's weights. Frozen, they also stay byte-identical to the base LM's.
        model.biogpt.embed_tokens.weight.requires_grad_(False)
        log("token embeddings frozen")
    model.config.extra.pop(STUDIO_KEY, None)
    return model


def make_optimizer(model, args, device) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if param.dim() >= 2 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.AdamW(groups, lr=args.lr, betas=(args.beta1, args.beta2), eps=1e-8, **kwargs)


def lr_factor(step: int, warmup: int, progress: float, schedule: str, min_ratio: float) -> float:
    """Linear warmup over `warmup` steps, then decay by `progress` in [0, 1] to min_ratio."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return min_ratio + (1 - min_ratio) * (1 - progress)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------


def _state_without_tied(model) -> dict[str, torch.Tensor]:
    state = model.state_dict()
    if model.config.tie_word_embeddings:
        state.pop("output_projection.weight", None)
    return state


def save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, tmp, metadata={"format": "pt"})
    os.replace(tmp, path)


def load_tensors(model, path: Path) -> None:
    from safetensors.torch import load_file

    load_state(model, load_file(path))


def save_model_folder(model, tokenizer, out: Path, dtype: torch.dtype) -> None:
    """save_pretrained in `dtype` (config.json + model.safetensors, written atomically) + tokenizer files."""
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / ".saving"
    shutil.rmtree(tmp, ignore_errors=True)
    clone = copy.deepcopy(model).to("cpu", dtype)
    clone.save_pretrained(tmp)
    for name in ("config.json", "model.safetensors"):
        os.replace(tmp / name, out / name)
    shutil.rmtree(tmp, ignore_errors=True)
    if not (out / "vocab.json").is_file():
        tokenizer.save_pretrained(out)


# --------------------------------------------------------------------------------------------
# Progress, logging, model card
# --------------------------------------------------------------------------------------------


class Progress:
    """A tqdm bar on a terminal (if tqdm is installed), otherwise plain lines on stdout."""

    def __init__(self, mode: str, total: int, initial: int):
        self.bar = None
        if mode == "bar" or (mode == "auto" and sys.stderr.isatty()):
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
            except ImportError:
                self.bar = None

    def update(self, step: int, text: str, force: bool) -> None:
        if self.bar is not None:
            if text:
                self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(step - self.bar.n)  # tqdm redraws at most every mininterval
        elif force:
            print(f"step {step}: {text}", flush=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def device_description(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


DATA_PROVENANCE = [
    ("BC5CDR", "BioCreative V CDR corpus (Li et al., 2016; NCBI), 1,500 PubMed abstracts with Chemical and Disease "
               "mentions, 500/500/500 train/dev/test. Public-domain notice in `BC5CDR/CDR_README.txt`; cite the corpus."),
    ("HoC", "Hallmarks of Cancer corpus (Baker et al., 2016), sentence level, 10 hallmarks, as prepared in the "
            "microsoft/BioGPT repository (MIT; the corpus keeps its own terms). The original valid file equals test, "
            "so validation is held out of train."),
    ("PubMedQA", "PubMedQA PQA-L expert-labelled questions (Jin et al., 2019), as prepared in the microsoft/BioGPT "
                 "repository; the dataset keeps its own terms."),
    ("pubmed_docs", "PubMed titles and abstracts (3,834 deduplicated documents from BC5CDR train+dev, KD-DTI, DDI "
                    "MedLine and PubMedQA train+valid; test splits removed), from the microsoft/BioGPT repository's "
                    "`data/`. Abstracts are NLM/PubMed records; each corpus keeps its own terms."),
    ("hoc_sentences", "HoC sentences not in HoC test (Moses-tokenised), from the microsoft/BioGPT repository."),
    ("ddi_drugbank", "DrugBank drug-label texts from the DDI-2013 corpus (not PubMed), from the microsoft/BioGPT "
                     "repository; the corpus keeps its own terms."),
]


def write_model_card(out: Path, task: Task, model, info: dict) -> None:
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    files = info["data_files"]
    sources = sorted({text for key, text in DATA_PROVENANCE if any(key in f for f in files)})
    title = {"lm": "causal language model", "ner": "Chemical/Disease NER (BIO)", "classify": "sequence classifier"}[task.name]
    lines = [
        f"# {out.name}: a small BioGPT {title} trained with BioGPT Studio",
        "",
        f"Status: **{info['status']}**.",
        "",
        "## Architecture",
        "",
        f"BioGPT (pre-LayerNorm transformer decoder, learned positions with the +2 offset, Moses + BPE tokenizer), "
        f"`{type(model).__name__}`: {config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} heads, intermediate size {config.intermediate_size}, vocabulary {config.vocab_size:,}, "
        f"{config.max_position_embeddings} positions, dropout {config.hidden_dropout_prob}; {params / 1e6:.1f} M parameters. "
        f"Weights stored as {info['save_dtype']} safetensors. Loads with `biogpt.{type(model).__name__}.from_pretrained(folder)` "
        f"and with transformers' class of the same name.",
    ]
    if config.id2label and task.name != "lm":
        lines += ["", "Labels: " + ", ".join(f"`{v}`" for _, v in sorted(config.id2label.items())) + "."]
    extra = config.extra.get(STUDIO_KEY, {})
    if task.name == "ner":
        lines += ["", "How to read it (also in config.json, `biogpt_studio`): BIO tags per Moses word, read at the word's "
                  f"**{extra.get('ner_label_token')}** BPE piece; input "
                  + ("`</s> text </s> text` with the tags read on the second copy" if extra.get("ner_input") == "doubled" else "`</s> text`")
                  + f"; windows of {extra.get('ner_window')} pieces, stride {extra.get('ner_stride')}. "
                  "`biogpt.train.predict_entities(model, tokenizer, texts)` does all of this."]
    if task.name == "classify" and extra.get("multi_label"):
        lines += ["", f"Multi-label: sigmoid per label, threshold {extra.get('threshold')} (tuned on validation for micro-F1); "
                  f"`{extra.get('empty_label')}` in the data means no label (all zeros)."]
    lines += ["", "## Data and licences", ""]
    lines += [f"- {s}" for s in sources] or ["- (files below)"]
    roles = [("Training", info["train_files"]), ("Validation", info["valid_files"]), ("Test (final evaluation only)", info["test_files"])]
    lines += [""] + [f"{role} files: " + ", ".join(f"`{f}`" for f in paths) + "." for role, paths in roles if paths]
    if not info["valid_files"]:
        lines.append(f"Validation: {info['valid_percent']}% of the training examples, chosen by a hash of their text.")
    elif info.get("train_on_dev"):
        lines.append(f"The validation files were trained on too (--train-on-dev); early stopping used "
                     f"{info['valid_percent']}% of the training examples, chosen by a hash of their text.")
    lines += ["",
              "Tokenizer: the BioGPT vocabulary and BPE merges from microsoft/BioGPT (MIT licence).",
              "", "## Training", "",
              f"- Initialised from: {info['init']}",
              f"- Data sizes: " + ", ".join(f"{k} {v:,}" for k, v in task.sizes.items()),
              f"- Steps: {info['steps']} ({info['epochs_done']:.2f} epochs), best validation at step {info['best_step']}; "
              f"stopped because: {info['stop_reason']}",
              f"- Wall time: {info['wall_s'] / 60:.1f} min (training loop {info['train_s'] / 60:.1f} min) on {info['device_name']}, "
              f"torch {torch.__version__}",
              "", "Exact command:", "", "```", info["command"], "```",
              "", "## Metrics", ""]
    for split in ("valid", "test"):
        metrics = info["metrics"].get(split)
        if metrics:
            label = "Test split (final, never trained on)" if split == "test" else "Validation split (used for early stopping)"
            lines.append(f"- {label}: {task.headline(metrics)}")
    if task.name == "ner" and info["metrics"].get("test"):
        lines += ["", "| type | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        test = info["metrics"]["test"]
        for kind, s in test["per_type"].items():
            lines.append(f"| {kind} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |")
        lines.append(f"| micro | {test['micro_precision']:.4f} | {test['micro_recall']:.4f} | {test['micro_f1']:.4f} | |")
        lines.append("\nStrict: a predicted entity counts only with the exact character start, end and type.")
    check = info["metrics"].get("fp16_check")
    if check:
        values = [f"{k.split('_', 1)[1]} {v:.4f}" for k, v in check.items() if k.startswith("valid_")]
        lines.append(f"\nStored-weights check ({check['stored_dtype']} against the fp32 weights, fp32 compute): max |logit "
                     f"difference| {check['max_abs_logit_diff']:.2e}, mean {check['mean_abs_logit_diff']:.1e}, largest logit "
                     f"{check['max_abs_logit']:.1f} (tolerance {check['tolerance']:g}: "
                     f"{'within' if check['within_tolerance'] else 'ABOVE'}); validation " + ", ".join(values) + ".")
    lines += ["", "## Limitations", "",
              "A small model trained for minutes on a few MB of text: a demonstration of the architecture and the "
              "pipeline, not a research-grade model. Do not use its outputs for medical decisions."]
    notes = {
        "lm": "More text (the full PubMed corpus BioGPT used), a wider/deeper model and longer training lower perplexity.",
        "ner": "A better pretrained base (e.g. microsoft/biogpt), a CRF or span decoder, and ensembling would raise F1.",
        "classify": "A better pretrained base (e.g. microsoft/biogpt) and per-label thresholds would raise F1.",
    }
    lines += ["", "What would raise the numbers: " + notes[task.name], ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")


# --------------------------------------------------------------------------------------------
# The training loop
# --------------------------------------------------------------------------------------------


class Trainer:
    def __init__(self, args, task: Task, model, tokenizer, device, out: Path, log):
        self.args, self.task, self.model, self.tokenizer, self.device, self.out, self.log = args, task, model, tokenizer, device, out, log
        self.ckpt = Path(args.checkpoint_dir) if args.checkpoint_dir else out / "checkpoint"
        self.optimizer = make_optimizer(model, args, device)
        batches = math.ceil(task.num_train_items() / args.batch_size)
        self.steps_per_epoch = max(1, batches // args.grad_accum)
        self.total_steps = math.ceil(args.epochs * self.steps_per_epoch) if args.epochs else 10**12
        if args.max_steps:
            self.total_steps = min(self.total_steps, args.max_steps)
        if self.total_steps >= 10**12:
            raise SystemExit("error: give --epochs or --max-steps")
        self.warmup = args.warmup_steps if args.warmup_steps is not None else int(0.06 * self.total_steps)
        self.eval_every = args.eval_every or self.steps_per_epoch
        self.save_every = args.save_every or self.eval_every
        self.budget_s = args.max_minutes * 60 if args.max_minutes else None
        self.state = {"step": 0, "epoch": 0, "batch": 0, "elapsed": 0.0, "best": None, "best_step": 0, "bad_evals": 0,
                      "tokens": 0, "last_eval_step": -1}
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_metrics: dict | None = None
        self.history_path = out / "train_log.jsonl"

    def autocast(self):
        if self.args.bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def write_log(self, record: dict) -> None:
        with open(self.history_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    # ----- checkpoints -----

    def save_checkpoint(self) -> None:
        self.ckpt.mkdir(parents=True, exist_ok=True)
        save_tensors(_state_without_tied(self.model), self.ckpt / CHECKPOINT_WEIGHTS)
        if self.best_state is not None:
            save_tensors(self.best_state, self.ckpt / CHECKPOINT_BEST)
        state = {
            "optimizer": self.optimizer.state_dict(),
            "counters": json.dumps({**self.state, "best_metrics": self.best_metrics, "task_extra": self.task.studio_extra()}),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else torch.empty(0, dtype=torch.uint8),
            "args": json.dumps(_resume_relevant(self.args)),
        }
        tmp = self.ckpt / (CHECKPOINT_STATE + ".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.ckpt / CHECKPOINT_STATE)

    def remove_checkpoint(self) -> None:
        """Delete only the files this trainer writes (the folder may be shared or user-chosen)."""
        for name in (CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, CHECKPOINT_BEST):
            (self.ckpt / name).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.ckpt.rmdir()  # only if now empty

    def try_resume(self) -> bool:
        path = self.ckpt / CHECKPOINT_STATE
        if not path.is_file():
            self.log(f"--resume: no checkpoint in {self.ckpt}; starting from scratch")
            return False
        state = torch.load(path, map_location="cpu", weights_only=True)
        saved_args = json.loads(state["args"])
        changed = {k: (saved_args.get(k), v) for k, v in _resume_relevant(self.args).items() if saved_args.get(k) != v}
        if changed:
            self.log(f"warning: resuming with different settings than the checkpoint: {changed}")
        load_tensors(self.model, self.ckpt / CHECKPOINT_WEIGHTS)
        self.optimizer.load_state_dict(state["optimizer"])
        counters = json.loads(state["counters"])
        self.best_metrics = counters.pop("best_metrics")
        task_extra = counters.pop("task_extra")
        if "threshold" in task_extra:
            self.task.threshold = task_extra["threshold"]
        self.state.update(counters)
        if (self.ckpt / CHECKPOINT_BEST).is_file():
            from safetensors.torch import load_file

            self.best_state = load_file(self.ckpt / CHECKPOINT_BEST)
        torch.set_rng_state(state["rng_cpu"])
        if self.device.type == "cuda" and state["rng_cuda"].numel():
            torch.cuda.set_rng_state(state["rng_cuda"], self.device)
        self.log(f"resumed from {self.ckpt} at step {self.state['step']} (epoch {self.state['epoch']}, batch {self.state['batch']})")
        return True

    # ----- evaluation and best model -----

    def evaluate(self) -> bool:
        """Evaluate on validation; on improvement keep and save the model. True = patience exhausted."""
        self.model.eval()
        metrics = self.task.evaluate(self.model, "valid", self.autocast)
        self.model.train()
        step = self.state["step"]
        self.state["last_eval_step"] = step
        value = metrics[self.task.metric]
        best = self.state["best"]
        improved = best is None or (value > best if self.task.greater_is_better else value < best)
        self.write_log({"step": step, "epoch": self.state["epoch"], "elapsed_s": round(self.state["elapsed"], 2),
                        "valid": _brief(metrics), "improved": improved})
        self.progress.write(f"eval step {step}: {self.task.headline(metrics)}" + ("  (best so far, saved)" if improved else ""))
        if improved:
            self.state.update(best=value, best_step=step, bad_evals=0)
            self.best_metrics = _brief(metrics)
            self.task.on_best(metrics)
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in _state_without_tied(self.model).items()}
            self.model.config.extra[STUDIO_KEY] = self.task.studio_extra()
            save_model_folder(self.model, self.tokenizer, self.out, self.args.save_torch_dtype)
            self.write_card_provisional()
        else:
            self.state["bad_evals"] += 1
        return bool(self.args.patience) and self.state["bad_evals"] >= self.args.patience

    def write_card_provisional(self) -> None:
        info = self.card_info("training in progress (best validation checkpoint so far)", {"valid": self.best_metrics})
        write_model_card(self.out, self.task, self.model, info)

    def card_info(self, status: str, metrics: dict) -> dict:
        return {
            "status": status, "metrics": metrics, "save_dtype": self.args.save_dtype,
            "data_files": [str(p) for p in (self.args.train + (self.args.valid or []) + (self.args.test or []))],
            "train_files": list(self.args.train), "valid_files": list(self.args.valid or []),
            "test_files": list(self.args.test or []), "valid_percent": self.args.valid_percent,
            "train_on_dev": getattr(self.args, "train_on_dev", False),
            "init": self.args.init or "random initialisation (from scratch)", "steps": self.state["step"],
            "epochs_done": self.state["step"] / self.steps_per_epoch, "best_step": self.state["best_step"],
            "stop_reason": getattr(self, "stop_reason", "running"), "wall_s": time.time() - self.args.started,
            "train_s": self.state["elapsed"], "device_name": device_description(self.device), "command": self.args.command,
        }

    # ----- the loop -----

    def run(self) -> str:
        """Train; SIGINT or SIGTERM (e.g. from `timeout`) ends training early but still saves and evaluates."""
        import signal
        import threading

        def interrupt(signum, frame):
            raise KeyboardInterrupt

        previous = {}
        if threading.current_thread() is threading.main_thread():
            # Installed explicitly: a background job starts with SIGINT ignored.
            for sig in (signal.SIGINT, signal.SIGTERM):
                previous[sig] = signal.signal(sig, interrupt)
        try:
            return self._run()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _run(self) -> str:
        args, model = self.args, self.model
        model.train()
        start_time = time.time() - self.state["elapsed"]
        last_log_time, tokens_since = time.time(), 0
        loss_sum = torch.zeros((), device=self.device)
        loss_count = 0
        self.log(f"training: {self.total_steps} steps max ({self.steps_per_epoch} per epoch, batch {args.batch_size} x "
                 f"{args.grad_accum} accumulation), warmup {self.warmup}, eval every {self.eval_every} steps"
                 + (f", budget {args.max_minutes} min" if self.budget_s else ""))
        self.progress = Progress(args.progress, self.total_steps, self.state["step"])
        stop = None
        try:
            while stop is None:
                epoch = self.state["epoch"]
                batches = self.task.epoch_batches(epoch)
                usable = (len(batches) // args.grad_accum) * args.grad_accum
                while self.state["batch"] < usable and stop is None:
                    step_tokens = 0
                    for _ in range(args.grad_accum):
                        inputs, tokens = self.task.make_batch(batches[self.state["batch"]], self.device)
                        self.state["batch"] += 1
                        with self.autocast():
                            loss = model(**inputs).loss
                        (loss / args.grad_accum).backward()
                        loss_sum += loss.detach().float()
                        loss_count += 1
                        step_tokens += tokens
                    if args.clip:
                        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
                    step = self.state["step"]
                    self.state["elapsed"] = time.time() - start_time
                    progress = step / self.total_steps
                    if self.budget_s:
                        progress = max(progress, self.state["elapsed"] / self.budget_s)
                    lr = args.lr * lr_factor(step, self.warmup, progress, args.schedule, args.min_lr_ratio)
                    for group in self.optimizer.param_groups:
                        group["lr"] = lr
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                    self.state["step"] = step = step + 1
                    self.state["tokens"] += step_tokens
                    tokens_since += step_tokens

                    now = time.time()
                    if step == 1 or now - last_log_time >= args.log_seconds or (args.log_every and step % args.log_every == 0):
                        mean_loss = (loss_sum / max(loss_count, 1)).item()
                        rate = tokens_since / max(now - last_log_time, 1e-9)
                        text = f"loss {mean_loss:.4f} lr {lr:.2e} {rate:,.0f} tok/s epoch {epoch}"
                        self.progress.update(step, text, force=True)
                        self.write_log({"step": step, "epoch": epoch, "loss": round(mean_loss, 5), "lr": lr,
                                        "tokens_per_s": round(rate), "elapsed_s": round(self.state["elapsed"], 2)})
                        loss_sum.zero_()
                        loss_count, tokens_since, last_log_time = 0, 0, now
                    else:
                        self.progress.update(step, "", force=False)

                    if step % self.eval_every == 0 and self.evaluate():
                        stop = f"early stopping: no improvement in {args.patience} evaluations"
                    self.state["elapsed"] = time.time() - start_time
                    if stop is None and step >= self.total_steps:
                        stop = f"reached {self.total_steps} steps"
                    if stop is None and self.budget_s and self.state["elapsed"] >= self.budget_s:
                        stop = f"time budget of {args.max_minutes} min used"
                    if (self.save_every > 0 and step % self.save_every == 0) or (args.stop_at_step and step >= args.stop_at_step):
                        self.save_checkpoint()
                    if args.stop_at_step and step >= args.stop_at_step and stop is None:
                        self.progress.close()
                        self.log(f"--stop-at-step {args.stop_at_step}: stopping as if interrupted (checkpoint saved)")
                        return "interrupted"
                if stop is None and self.state["batch"] >= usable:
                    self.state["epoch"] += 1
                    self.state["batch"] = 0
                    if usable == 0:
                        raise SystemExit("error: fewer training batches than --grad-accum")
        except KeyboardInterrupt:
            stop = "interrupted (SIGINT/SIGTERM): finishing with the best model so far"
            self.progress.write(stop)
        self.progress.close()
        if self.state["last_eval_step"] != self.state["step"] and (not stop.startswith("interrupted") or self.best_state is None):
            self.evaluate()
        self.state["elapsed"] = time.time() - start_time
        if args.keep_checkpoint:
            self.save_checkpoint()
        self.stop_reason = stop
        self.log(f"training stopped: {stop}; best validation {self.task.metric} {self.state['best']} at step {self.state['best_step']}")
        return stop


def _brief(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items()}


def _resume_relevant(args) -> dict:
    keep = ("task", "train", "valid", "init", "seed", "batch_size", "grad_accum", "lr", "epochs", "max_steps",
            "block_size", "double_text", "label_token", "multi_label", "schedule", "warmup_steps")
    return {k: getattr(args, k, None) for k in keep}


# --------------------------------------------------------------------------------------------
# fp16/bf16 storage check and the final evaluation
# --------------------------------------------------------------------------------------------


@torch.no_grad()
def storage_check(task: Task, reference, stored, device, pad_id: int) -> dict:
    """|logit difference| between the fp32 best weights and the stored (e.g. fp16) ones, at real
    (non-pad) positions of a few validation inputs. Both run in fp32 (what a CPU user gets); on
    CUDA also the stored weights computed in fp16."""
    reference.eval()
    stored.eval()
    half = copy.deepcopy(stored).to(torch.float16) if device.type == "cuda" else None
    worst, worst_half, total, count, scale = 0.0, 0.0, 0.0, 0, 0.0
    for batch in task.sample_batches(4):
        ids = batch["input_ids"].to(device)
        a = reference(input_ids=ids).logits.float()
        diff = (a - stored(input_ids=ids).logits.float()).abs()
        keep = (ids != pad_id) if a.dim() == 3 else torch.ones(a.shape[0], dtype=torch.bool, device=device)
        worst = max(worst, diff[keep].max().item())
        total += diff[keep].sum().item()
        count += diff[keep].numel()
        scale = max(scale, a[keep].abs().max().item())
        if half is not None:
            worst_half = max(worst_half, (a - half(input_ids=ids).logits.float()).abs()[keep].max().item())
    result = {"max_abs_logit_diff": worst, "mean_abs_logit_diff": total / max(count, 1), "max_abs_logit": scale,
              "compute": "fp32 on the stored weights, real (non-pad) positions"}
    if half is not None:
        result["max_abs_logit_diff_fp16_compute"] = worst_half
    return result


def finish(args, task: Task, trainer: Trainer, tokenizer, device, out: Path, log) -> dict:
    model = trainer.model
    if trainer.best_state is None:
        raise SystemExit("error: no evaluation ran, so there is no best model to save")
    load_state(model, trainer.best_state)
    model.config.extra[STUDIO_KEY] = task.studio_extra()
    save_model_folder(model, tokenizer, out, args.save_torch_dtype)
    tokenizer.save_pretrained(out)
    stored = task.model_class.from_pretrained(out, device=device)
    model.eval()
    metrics: dict[str, Any] = {}
    if args.save_torch_dtype != torch.float32:
        check = storage_check(task, model, stored, device, tokenizer.pad_token_id)
        check.update(stored_dtype=args.save_dtype, tolerance=args.fp16_tolerance)
        check["within_tolerance"] = check["max_abs_logit_diff"] <= args.fp16_tolerance
    no_autocast = contextlib.nullcontext
    # Final numbers come from the stored weights, computed in fp32: what a user loads.
    metrics["valid"] = task.evaluate(stored, "valid", no_autocast)
    if args.save_torch_dtype != torch.float32:
        fp32_value = task.evaluate(model, "valid", no_autocast)[task.metric]
        check[f"valid_{task.metric}_fp32_weights"] = fp32_value
        check[f"valid_{task.metric}_stored_weights"] = metrics["valid"][task.metric]
        metrics["fp16_check"] = check
        log(f"stored {args.save_dtype} weights: max |logit diff| vs fp32 = {check['max_abs_logit_diff']:.2e} "
            f"(mean {check['mean_abs_logit_diff']:.1e}, logits up to {check['max_abs_logit']:.1f}); validation "
            f"{task.metric} {fp32_value:.4f} (fp32) vs {metrics['valid'][task.metric]:.4f} (stored)"
            + ("" if check["within_tolerance"] else f"  WARNING: above the tolerance {args.fp16_tolerance}"))
    if task.has_split("test"):
        metrics["test"] = task.evaluate(stored, "test", no_autocast)
    return metrics


def load_state(model, state: dict[str, torch.Tensor]) -> None:
    device = model.device
    missing, unexpected = model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    tied = {"output_projection.weight"} if model.config.tie_word_embeddings else set()
    if set(missing) - tied or unexpected:
        raise RuntimeError(f"the saved state does not fit the model (missing {missing}, unexpected {unexpected})")


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m biogpt.train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="task", required=True)

    lm = sub.add_parser("lm", help="causal language model (pretraining)")
    ner = sub.add_parser("ner", help="token classification (BIO) with strict span F1")
    cls = sub.add_parser("classify", help="sequence classification from text<TAB>label TSV")
    for p in (lm, ner, cls):  # each its own copies: set_defaults on shared parent actions would leak
        _add_common_arguments(p)

    lm.add_argument("--block-size", type=int, default=512)
    lm.set_defaults(lr=1e-3, batch_size=16, epochs=1, valid_percent=3.0, weight_decay=0.1)

    ner.add_argument("--train-on-dev", action="store_true", help="also train on --valid; validate on a slice of train")
    ner.add_argument("--double-text", action="store_true", help="input '</s> text </s> text', labels on the second copy")
    ner.add_argument("--label-token", choices=["first", "last"], default="last", help="which BPE piece of a word is labelled")
    ner.add_argument("--max-length", type=int, help="window length in pieces (default: as many as the positions allow)")
    ner.add_argument("--stride", type=int, help="window stride (default: half a window)")
    ner.add_argument("--entity-types", help="comma-separated types (default: those in the training data)")
    ner.add_argument("--classifier-dropout", type=float)
    ner.set_defaults(lr=2e-4, batch_size=8, epochs=10, valid_percent=10.0)

    cls.add_argument("--multi-label", action="store_true", help="labels joined by --label-sep; sigmoid + tuned threshold")
    cls.add_argument("--label-sep", default="|")
    cls.add_argument("--empty-label", default="empty", help="multi-label: this label means 'none' (all zeros)")
    cls.add_argument("--labels", help="comma-separated label order (default: sorted labels of the training data)")
    cls.add_argument("--max-length", type=int, help="truncate inputs to N tokens (default: the model's positions)")
    cls.add_argument("--train-on-dev", action="store_true", help="also train on --valid; validate on a slice of train")
    cls.set_defaults(lr=1e-4, batch_size=16, epochs=5, valid_percent=10.0)
    return parser


def _add_common_arguments(common: argparse.ArgumentParser) -> None:
    g = common.add_argument_group("data and output")
    g.add_argument("--train", nargs="+", required=True, help="training files (names containing 'test' are refused)")
    g.add_argument("--valid", nargs="+", help="validation files (default: --valid-percent of the training data)")
    g.add_argument("--test", nargs="+", help="test files: used only for the final evaluation")
    g.add_argument("--valid-percent", type=float, default=None, help="held-out share of training data when no --valid")
    g.add_argument("--out", required=True, help="output folder (save_pretrained format + tokenizer + metrics)")
    g.add_argument("--tokenizer", help="tokenizer folder (default: --init's if it has one, else the bundled BioGPT tokenizer)")
    g.add_argument("--limit-train", type=int, help="use only the first N training examples (smoke tests)")
    g.add_argument("--limit-eval", type=int, help="use only the first N validation and test examples (smoke tests)")
    g.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1), help="tokenisation processes")
    g = common.add_argument_group("model")
    g.add_argument("--init", help="start from this checkpoint (folder or hub id); otherwise a new model")
    g.add_argument("--config-json", help="shape of a new model (a config.json)")
    g.add_argument("--layers", type=int)
    g.add_argument("--hidden", type=int)
    g.add_argument("--heads", type=int)
    g.add_argument("--intermediate", type=int)
    g.add_argument("--max-positions", type=int)
    g.add_argument("--dropout", type=float, help="hidden and attention dropout (default: the checkpoint's, 0.1 for new)")
    g.add_argument("--freeze-embeddings", action="store_true", help="keep the token embeddings fixed (fine-tuning)")
    g = common.add_argument_group("optimisation")
    g.add_argument("--epochs", type=float, default=None)
    g.add_argument("--max-steps", type=int, default=0)
    g.add_argument("--max-minutes", type=float, default=0, help="time budget for the training loop (0 = none)")
    g.add_argument("--batch-size", type=int, default=None)
    g.add_argument("--eval-batch-size", type=int, default=None)
    g.add_argument("--grad-accum", type=int, default=1)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--beta1", type=float, default=0.9)
    g.add_argument("--beta2", type=float, default=0.98)
    g.add_argument("--warmup-steps", type=int, default=None, help="default: 6%% of the planned steps")
    g.add_argument("--schedule", choices=["cosine", "linear", "constant"], default="cosine")
    g.add_argument("--min-lr-ratio", type=float, default=0.0)
    g.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (0 = off)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g.add_argument("--bf16", action="store_true", help="bf16 autocast (CPU or CUDA); weights stay fp32")
    g = common.add_argument_group("evaluation, checkpoints, logging")
    g.add_argument("--eval-every", type=int, default=0, help="steps between validations (0 = once an epoch)")
    g.add_argument("--patience", type=int, default=0, help="stop after N validations without improvement (0 = never)")
    g.add_argument("--save-every", type=int, default=0, help="steps between resumable checkpoints (0 = at each validation, -1 = never)")
    g.add_argument("--checkpoint-dir", help="resumable state (default: OUT/checkpoint)")
    g.add_argument("--keep-checkpoint", action="store_true", help="keep the resumable state after a finished run")
    g.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    g.add_argument("--stop-at-step", type=int, default=0, help=argparse.SUPPRESS)  # simulates a crash (tests)
    g.add_argument("--save-dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    g.add_argument("--fp16-tolerance", type=float, default=1e-2, help="max |logit diff| accepted for stored fp16 weights")
    g.add_argument("--progress", choices=["auto", "bar", "lines"], default="auto")
    g.add_argument("--log-every", type=int, default=0, help="log every N steps (also every --log-seconds)")
    g.add_argument("--log-seconds", type=float, default=10.0)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but CUDA is not available")
    return torch.device(name)


def load_tokenizer(args):
    from .tokenizer import BioGptTokenizer

    source = args.tokenizer
    if source is None and args.init and (Path(args.init) / "vocab.json").is_file():
        source = args.init
    return BioGptTokenizer.from_pretrained(source or DEFAULT_TOKENIZER)


def main(argv: list[str] | None = None) -> dict:
    started = time.time()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.started = started
    args.command = "python -m biogpt.train " + shlex.join(argv)
    args.eval_batch_size = args.eval_batch_size or args.batch_size * 2
    args.save_torch_dtype = getattr(torch, args.save_dtype)
    out = Path(args.out)
    if args.init and Path(args.init).resolve() == out.resolve():
        raise SystemExit("error: --out must differ from --init")
    if args.grad_accum < 1 or args.batch_size < 1:
        raise SystemExit("error: --batch-size and --grad-accum must be at least 1")

    def log(message: str) -> None:
        print(f"[{args.task} {time.time() - started:7.1f}s] {message}", flush=True)

    try:
        return _main(args, out, log)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def _main(args, out: Path, log) -> dict:
    device = resolve_device(args.device)
    random.seed(args.seed)
    torch.manual_seed(args.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    tokenizer = load_tokenizer(args)
    log(f"{args.command}")
    log(f"device {device_description(device)}; torch {torch.__version__}; bf16 autocast {'on' if args.bf16 else 'off'}")

    max_positions = args.max_positions
    if max_positions is None:
        if args.init:
            from .loading import resolve_model_dir

            folder = resolve_model_dir(args.init, ["config.json"])
            max_positions = BioGptConfig.from_json_file(folder / "config.json").max_position_embeddings
        elif args.config_json:
            max_positions = BioGptConfig.from_json_file(args.config_json).max_position_embeddings
        else:
            max_positions = BioGptConfig().max_position_embeddings

    # Data first (tokenisation may fork workers, which must happen before CUDA starts).
    if args.task == "lm":
        task: Task = LmTask(args, tokenizer, log)
        if args.block_size > max_positions:
            raise SystemExit(f"error: --block-size {args.block_size} exceeds the model's {max_positions} positions")
    elif args.task == "ner":
        task = NerTask(args, tokenizer, log, max_positions)
    else:
        task = ClassifyTask(args, tokenizer, log, max_positions)
    if not task.has_split("valid"):
        raise SystemExit("error: the validation split is empty; give --valid or more training data")

    torch.manual_seed(args.seed)
    model = build_model(args, task, tokenizer, log).to(device)
    log(f"{type(model).__name__}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters")
    task.to_device(device)

    out.mkdir(parents=True, exist_ok=True)
    trainer = Trainer(args, task, model, tokenizer, device, out, log)
    if not args.resume:  # a fresh run: no stale log or metrics from an earlier run in this folder
        trainer.history_path.unlink(missing_ok=True)
        (out / "metrics.json").unlink(missing_ok=True)
    if args.resume:
        trainer.try_resume()
    stop = trainer.run()
    if stop == "interrupted":
        return {"interrupted_at_step": trainer.state["step"]}

    metrics = finish(args, task, trainer, tokenizer, device, out, log)
    wall = time.time() - args.started
    summary = {
        "task": args.task, "metric": task.metric, "best_valid_step": trainer.state["best_step"],
        "steps": trainer.state["step"], "epochs": trainer.state["step"] / trainer.steps_per_epoch,
        "tokens_seen": trainer.state["tokens"], "stop_reason": trainer.stop_reason,
        "train_loop_s": round(trainer.state["elapsed"], 1), "wall_s": round(wall, 1),
        "device": device_description(device), "torch": torch.__version__, "bf16": args.bf16,
        "save_dtype": args.save_dtype, "data": task.sizes, "command": args.command, **metrics,
    }
    if args.task == "lm":
        summary["heldout_perplexity"] = metrics["valid"]["perplexity"]
    (out / "metrics.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    info = trainer.card_info("finished", metrics)
    info["wall_s"] = wall
    write_model_card(out, task, trainer.model, info)
    if not args.keep_checkpoint:
        trainer.remove_checkpoint()
    parts = [f"valid {task.headline(metrics['valid'])}"]
    if "test" in metrics:
        parts.append(f"test {task.headline(metrics['test'])}")
    print(f"SUMMARY {args.task} {out}: " + " | ".join(parts) + f" | steps {trainer.state['step']} | wall {wall:.1f}s", flush=True)
    return summary


if __name__ == "__main__":
    main()
