"""Training data: the readers (each names the file and line of anything wrong), the
train/validation/test splits with the test-data guard, and LM block packing."""

from __future__ import annotations

import hashlib
import html
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from .config import TrainConfig, TrainError


class DataError(TrainError):
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


def _limit(items: list, n: int | None) -> list:
    return items[:n] if n else items


def train_valid_test(config: TrainConfig, log: Callable[[str], None], read: Callable[[str], list],
                     key_of: Callable[[Any], str]) -> tuple[list, list, list]:
    """The three splits from --train/--valid/--test (+ --train-on-dev, held-out validation)."""
    for path in config.train:
        refuse_test_file(path, "training")
    for path in config.valid or []:
        refuse_test_file(path, "validation")
    train = [x for path in config.train for x in read(path)]
    given_valid = [x for path in config.valid or [] for x in read(path)]
    test = [x for path in config.test or [] for x in read(path)]
    train_on_dev = bool(config.train_on_dev)  # None for lm, which has no --train-on-dev
    if given_valid and not train_on_dev:
        valid = given_valid
    else:
        train, valid = split_holdout(train, [key_of(x) for x in train], config.valid_percent)
        if train_on_dev:
            train = train + given_valid
            log(f"--train-on-dev: training on train + {len(given_valid)} dev examples; "
                f"validation = {len(valid)} examples held out of train ({config.valid_percent}%)")
    test_keys = {key_of(x) for x in test}
    before = len(train), len(valid)
    train = [x for x in train if key_of(x) not in test_keys]
    valid = [x for x in valid if key_of(x) not in test_keys]
    if (len(train), len(valid)) != before:
        log(f"dropped {before[0] - len(train)} training and {before[1] - len(valid)} validation examples "
            "whose text also occurs in the test data")
    return _limit(train, config.limit_train), _limit(valid, config.limit_eval), _limit(test, config.limit_eval)


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
        current["entities"].append(
            _check_entity(path, number, current["text"], fields[1], fields[2], fields[4], fields[3], types))
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
# LM blocks
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

