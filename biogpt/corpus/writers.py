"""Results out: JSONL (every task), CSV (every task), PubTator and BioC XML (NER), written so a
job can stop at any moment and resume.

Every record is written whole and flushed before the next one starts, so Ctrl-C or a kill loses
no finished document; a record cut off by a crash mid-write is removed on resume. `done_ids`
reads back which ids an output already holds; the job skips them.

Results are dicts: {"id", ...task fields}; NER's are {"id", "text", "entities": [{start, end,
type, text, score}]}, which the PubTator and BioC writers need (and the NER readers give back).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from typing import Any, Callable, TextIO
from xml.sax.saxutils import escape, quoteattr, unescape

OUTPUT_FORMATS = ("jsonl", "csv", "pubtator", "bioc")
NER_ONLY = ("pubtator", "bioc")
BIOC_HEAD = '<?xml version="1.0" encoding="UTF-8"?>\n<collection><source>BioGPT Studio</source><key>biogpt ner</key>\n'
BIOC_TAIL = "</collection>\n"


class Writer:
    """Writes results one by one to a file or stdout; `close` finishes the file (BioC's closing tag)."""

    def __init__(self, path: str, fmt: str, csv_row: Callable[[dict], list[dict]] | None = None,
                 csv_columns: list[str] | None = None) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"Unknown output format {fmt!r}; use one of {', '.join(OUTPUT_FORMATS)}.")
        self.fmt, self.path = fmt, path
        self.csv_row, self.csv_columns = csv_row, csv_columns
        fresh = path == "-" or not os.path.exists(path) or os.path.getsize(path) == 0
        if path == "-":
            self.stream: TextIO = sys.stdout
        else:
            if not fresh:
                _cut_partial_record(path, fmt)
            self.stream = open(path, "a", encoding="utf-8", newline="")
        if fresh and fmt == "bioc":
            self.stream.write(BIOC_HEAD)
        if fresh and fmt == "csv":
            csv.DictWriter(self.stream, csv_columns or []).writeheader()
        self.stream.flush()

    def write(self, result: dict[str, Any]) -> None:
        text = {"jsonl": _jsonl, "csv": self._csv, "pubtator": _pubtator, "bioc": _bioc}[self.fmt](result)
        self.stream.write(text)  # one write, then a flush: a record is on disk whole or not at all
        self.stream.flush()

    def _csv(self, result: dict[str, Any]) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.csv_columns or [], extrasaction="ignore", lineterminator="\n")
        writer.writerows(self.csv_row(result) if self.csv_row else [result])
        return buffer.getvalue()

    def close(self) -> None:
        if self.fmt == "bioc":
            self.stream.write(BIOC_TAIL)
        self.stream.flush()
        if self.stream is not sys.stdout:
            self.stream.close()


def _jsonl(result: dict[str, Any]) -> str:
    return json.dumps(result, ensure_ascii=False) + "\n"


def _pubtator(result: dict[str, Any]) -> str:
    text, identifier = result["text"], result["id"]
    cut = result.get("title_length")
    title, abstract = (text[:cut], text[cut + 1:]) if cut is not None else (text, "")
    # A newline or a "|" in an id would break the format's lines: PubTator has no escaping.
    lines = [f"{identifier}|t|{_one_line(title)}", f"{identifier}|a|{_one_line(abstract)}"]
    for entity in result["entities"]:
        lines.append(f"{identifier}\t{entity['start']}\t{entity['end']}\t{_one_line(entity['text'])}\t{entity['type']}\t"
                     f"{entity['score']:.6f}")
    return "\n".join(lines) + "\n\n"


def _one_line(text: str) -> str:
    """PubTator keeps a text on one line: newlines and tabs become spaces (one character for one,
    so offsets stay valid)."""
    return re.sub(r"[\r\n\t]", " ", text)


def _bioc(result: dict[str, Any]) -> str:
    parts = [f"<document><id>{escape(str(result['id']))}</id><passage><offset>0</offset>"
             f"<text>{escape(result['text'])}</text>"]
    for number, entity in enumerate(result["entities"]):
        parts.append(f"<annotation id={quoteattr(str(number))}><infon key=\"type\">{escape(entity['type'])}</infon>"
                     f"<infon key=\"score\">{entity['score']:.6f}</infon>"
                     f"<location offset=\"{entity['start']}\" length=\"{entity['end'] - entity['start']}\"/>"
                     f"<text>{escape(entity['text'])}</text></annotation>")
    parts.append("</passage></document>\n")
    return "".join(parts)


def _cut_partial_record(path: str, fmt: str) -> None:
    """Remove what a crash left half-written after the last whole record (and BioC's closing tag,
    so new documents go inside the collection)."""
    with open(path, "rb") as stream:
        data = stream.read()
    if fmt == "bioc":
        end = data.rfind(b"</document>\n")
        keep = end + len(b"</document>\n") if end >= 0 else len(BIOC_HEAD.encode())
    elif fmt == "pubtator":
        end = data.rfind(b"\n\n")
        keep = end + 2 if end >= 0 else 0
    else:  # jsonl, csv: whole lines
        keep = data.rfind(b"\n") + 1
    if keep != len(data):
        with open(path, "r+b") as stream:
            stream.truncate(keep)


def done_ids(path: str, fmt: str) -> set[str]:
    """The ids an earlier run of the job already wrote to `path` (none for stdout or a new file)."""
    if path == "-" or not os.path.exists(path):
        return set()
    with open(path, encoding="utf-8", newline="") as stream:
        data = stream.read()
    if fmt == "jsonl":
        ids = set()
        for line in data.splitlines(keepends=True):
            if line.endswith("\n") and line.strip():
                ids.add(str(json.loads(line)["id"]))
        return ids
    if fmt == "csv":
        whole = data[:data.rfind("\n") + 1]
        return {row["id"] for row in csv.DictReader(io.StringIO(whole))}
    if fmt == "pubtator":
        whole = data[:data.rfind("\n\n") + 2]
        return set(re.findall(r"^(.*?)\|t\|", whole, re.M))
    whole = data[:data.rfind("</document>\n") + len("</document>\n")]
    return {unescape(m) for m in re.findall(r"<document><id>(.*?)</id>", whole)}
