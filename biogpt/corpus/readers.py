"""Documents in: plain text, JSONL, PubTator and BioC XML, read lazily, each bad record reported
with its file and line instead of being dropped without a word.

A reader yields `Document`s and `BadRecord`s in file order. Ids must be unique within a job: a
resumed job skips the ids its output already holds.
"""

from __future__ import annotations

import contextlib
import json
import sys
import xml.sax
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, TextIO

INPUT_FORMATS = ("text", "jsonl", "pubtator", "bioc")


@dataclass
class Document:
    id: str
    text: str
    source: str  # file name ("-" for stdin, "argument" for text given on the command line)
    line: int  # 1-based line where the record starts
    fields: dict[str, Any] = field(default_factory=dict)  # other JSONL fields; PubTator's title length


@dataclass
class BadRecord:
    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


Record = Document | BadRecord


def guess_format(path: str) -> str:
    """The format a file name suggests: .jsonl/.json -> jsonl, .xml -> bioc, .pubtator -> pubtator, else text."""
    name = path.lower()
    if name.endswith((".jsonl", ".json", ".ndjson")):
        return "jsonl"
    if name.endswith((".xml", ".bioc")):
        return "bioc"
    if ".pubtator" in name:
        return "pubtator"
    return "text"


def read(path: str, fmt: str, fields: tuple[str, ...] = ("text",)) -> Iterator[Record]:
    """Records of one file ("-": stdin). `fields` are the JSONL keys a task needs (text, or question
    and context); other formats give `text` only."""
    if fmt not in INPUT_FORMATS:
        raise ValueError(f"Unknown input format {fmt!r}; use one of {', '.join(INPUT_FORMATS)}.")
    source = "-" if path == "-" else path
    if fmt == "bioc":
        stream = sys.stdin.buffer if path == "-" else open(path, "rb")
        with contextlib.nullcontext(stream) if path == "-" else stream:  # stdin stays open
            yield from read_bioc(stream, source)
        return
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8", newline="")
    with contextlib.nullcontext(stream) if path == "-" else stream:
        if fmt == "jsonl":
            yield from read_jsonl(stream, source, fields)
        else:
            yield from {"text": read_text, "pubtator": read_pubtator}[fmt](stream, source)


def read_text(stream: TextIO, source: str) -> Iterator[Record]:
    """One document per non-blank line; its id is `<file name>:<line>` (`<line>` for stdin)."""
    stem = "" if source == "-" else Path(source).name + ":"
    for number, line in enumerate(stream, 1):
        text = line.rstrip("\r\n")
        if text.strip():
            yield Document(f"{stem}{number}", text, source, number)


def read_jsonl(stream: TextIO, source: str, fields: tuple[str, ...] = ("text",)) -> Iterator[Record]:
    """One JSON object a line with a string or number "id" and string `fields`; blank lines are skipped."""
    for number, line in enumerate(stream, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            yield BadRecord(source, number, f"not JSON ({error.msg} at column {error.colno})")
            continue
        if not isinstance(record, dict):
            yield BadRecord(source, number, f"a JSON {type(record).__name__}, not an object with \"id\" and \"text\"")
            continue
        identifier = record.get("id")
        if isinstance(identifier, bool) or not isinstance(identifier, (str, int)) or str(identifier) == "":
            yield BadRecord(source, number, "no \"id\" (a string or a whole number)")
            continue
        problem = next((name for name in fields if not isinstance(record.get(name), str)), None)
        if problem:
            yield BadRecord(source, number, f"no \"{problem}\" string")
            continue
        extra = {k: v for k, v in record.items() if k not in ("id", "text")}
        yield Document(str(identifier), record.get("text", ""), source, number, extra)


def read_pubtator(stream: TextIO, source: str) -> Iterator[Record]:
    """PubTator: `PMID|t|title`, `PMID|a|abstract`, then annotation lines, a blank line between
    documents. The text is title + " " + abstract (the offsets' convention in BC5CDR); mention
    lines (PMID, start, end, text, type, ...) become fields["entities"], relation lines are read past."""
    current: dict[str, Any] | None = None
    for number, line in enumerate(stream, 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            if current:
                yield _pubtator_document(current, source)
            current = None
            continue
        parts = line.split("|", 2)
        if len(parts) == 3 and parts[1] in ("t", "a"):
            if current and current["id"] != parts[0]:
                yield _pubtator_document(current, source)
                current = None
            if current is None:
                current = {"id": parts[0], "line": number, "t": None, "a": None, "entities": []}
            if current[parts[1]] is not None:
                yield BadRecord(source, number, f"document {parts[0]} has a second |{parts[1]}| line")
                continue
            current[parts[1]] = parts[2]
        elif current and line.split("\t", 1)[0] == current["id"]:
            columns = line.split("\t")
            if len(columns) >= 5 and columns[1].isdigit() and columns[2].isdigit():
                current["entities"].append({"start": int(columns[1]), "end": int(columns[2]), "type": columns[4],
                                            "text": columns[3], "note": "\t".join(columns[5:])})
        else:
            yield BadRecord(source, number, "neither a PMID|t| or PMID|a| line nor an annotation of the document above")
    if current:
        yield _pubtator_document(current, source)


def _pubtator_document(current: dict[str, Any], source: str) -> Record:
    if current["t"] is None:
        return BadRecord(source, current["line"], f"document {current['id']} has no title (PMID|t|) line")
    title, abstract = current["t"], current["a"] or ""
    text = f"{title} {abstract}" if abstract else title
    return Document(current["id"], text, source, current["line"],
                    {"title_length": len(title), "entities": current["entities"]})


class _BiocHandler(xml.sax.ContentHandler):
    """Collects <document>s: id, and passages placed at their offsets (spaces between)."""

    def __init__(self, source: str) -> None:
        super().__init__()
        self.source = source
        self.done: list[Record] = []
        self.path: list[str] = []
        self.chars: list[str] = []
        self.document: dict[str, Any] | None = None
        self.passage: dict[str, Any] | None = None
        self.annotation: dict[str, Any] | None = None
        self.infon_key = ""
        self.locator = None

    def setDocumentLocator(self, locator) -> None:
        self.locator = locator

    def startElement(self, name, attrs) -> None:
        self.path.append(name)
        self.chars = []
        if name == "document":
            self.document = {"id": None, "line": self.locator.getLineNumber() if self.locator else 0, "passages": [],
                             "entities": []}
        elif name == "passage" and self.document is not None:
            self.passage = {"offset": None, "text": ""}
        elif name == "annotation" and self.document is not None:
            self.annotation = {"type": "", "start": None, "end": None, "text": ""}
        elif name == "infon" and self.annotation is not None:
            self.infon_key = attrs.get("key", "")
        elif name == "location" and self.annotation is not None and self.annotation["start"] is None:
            try:
                start = int(attrs.get("offset", ""))
                self.annotation.update(start=start, end=start + int(attrs.get("length", "")))
            except ValueError:
                self.annotation["start"] = "bad"

    def characters(self, content) -> None:
        self.chars.append(content)

    def endElement(self, name) -> None:
        value = "".join(self.chars)
        self.chars = []
        self.path.pop()
        parent = self.path[-1] if self.path else ""
        if self.document is None:
            return
        if self.annotation is not None:
            if name == "infon" and self.infon_key == "type":
                self.annotation["type"] = value
            elif name == "text" and parent == "annotation":
                self.annotation["text"] = value
            elif name == "annotation":
                self.document["entities"].append(self.annotation)
                self.annotation = None
            return
        if name == "id" and parent == "document":
            self.document["id"] = value.strip()
        elif name == "offset" and parent == "passage" and self.passage is not None:
            self.passage["offset"] = value.strip()
        elif name == "text" and parent == "passage" and self.passage is not None:
            self.passage["text"] = value
        elif name == "passage" and self.passage is not None:
            self.document["passages"].append(self.passage)
            self.passage = None
        elif name == "document":
            self.done.append(self._finish(self.document))
            self.document = None

    def _finish(self, document: dict[str, Any]) -> Record:
        line = document["line"]
        if not document["id"]:
            return BadRecord(self.source, line, "a <document> without an <id>")
        text = ""
        for passage in document["passages"]:
            try:
                offset = int(passage["offset"]) if passage["offset"] is not None else len(text) + (1 if text else 0)
            except ValueError:
                return BadRecord(self.source, line, f"document {document['id']}: passage offset "
                                                    f"{passage['offset']!r} is not a whole number")
            if offset < len(text):
                return BadRecord(self.source, line, f"document {document['id']}: passage at offset {offset} "
                                                    f"overlaps the one before (ends at {len(text)})")
            text += " " * (offset - len(text)) + passage["text"]
        if any(not isinstance(entity["start"], int) for entity in document["entities"]):
            return BadRecord(self.source, line, f"document {document['id']}: an annotation's <location> "
                                                "has no whole-number offset and length")
        return Document(document["id"], text, self.source, line, {"entities": document["entities"]})


def read_bioc(stream, source: str) -> Iterator[Record]:
    """BioC XML, parsed incrementally (a collection of any size in little memory); each document's
    passages are placed at their offsets so annotation offsets point into the text. Broken XML
    ends the file with a bad record at the line the parser stopped."""
    handler = _BiocHandler(source)
    parser = xml.sax.make_parser()
    parser.setFeature(xml.sax.handler.feature_external_ges, False)  # no external entities, no network
    parser.setContentHandler(handler)
    try:
        for block in iter(lambda: stream.read(1 << 16), b""):
            parser.feed(block)
            yield from handler.done
            handler.done.clear()
        parser.close()
    except xml.sax.SAXParseException as error:
        yield from handler.done
        yield BadRecord(source, error.getLineNumber(), f"not well-formed BioC XML ({error.getMessage()}); "
                                                       "the rest of the file is not read")
        return
    yield from handler.done


def count_records(path: str, fmt: str) -> int | None:
    """About how many records a file holds, for the progress bar's ETA (None for stdin)."""
    if path == "-":
        return None
    marker = {"text": None, "jsonl": None, "pubtator": b"|t|", "bioc": b"<document"}[fmt]
    count = 0
    with open(path, "rb") as stream:
        for line in stream:
            if marker is None:
                count += bool(line.strip())
            else:
                count += line.count(marker)
    return count
