"""What the CLI tests share: real BC5CDR test abstracts as a JSONL corpus, and a runner of
`python -m biogpt.cli` as a user runs it (a subprocess; stdout and stderr apart)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BC5CDR = ROOT.parent / "shared" / "data" / "BC5CDR"


def cli_environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def run_cli(*args: str, cwd: Path | None = None, stdin: str | None = None, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "biogpt.cli", *args], cwd=cwd, input=stdin, capture_output=True,
                          text=True, env=cli_environment(), timeout=timeout)


def bc5cdr_test(count: int) -> list[dict]:
    path = BC5CDR / "ner_spans_test.jsonl"
    if not path.exists():
        pytest.skip(f"{path} is missing (the shared data)")
    with open(path, encoding="utf-8") as stream:
        return [json.loads(line) for _, line in zip(range(count), stream)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """12 BC5CDR test abstracts, the first two cut to a sentence (short rows beside long ones), and
    one document of six abstracts (over 1,024 tokens: read in windows), as {"id", "text"} JSONL."""
    rows = [{"id": doc["pmid"], "text": doc["text"]} for doc in bc5cdr_test(12)]
    rows[0]["text"] = rows[0]["text"][:60]
    rows[1]["text"] = rows[1]["text"][:120]
    rows.append({"id": "long", "text": " ".join(doc["text"] for doc in bc5cdr_test(6))})
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "abstracts.jsonl", rows)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def expected(corpus) -> list[dict]:
    """`biogpt ner` over the corpus, uninterrupted, in one process, as a user runs it."""
    done = run_cli("ner", str(corpus))
    assert done.returncode == 0, done.stderr
    assert "13 written, 0 already done (skipped), 0 bad" in done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]  # stdout: data only, one JSON a line


def assert_same_results(got: list[dict], want: list[dict]) -> None:
    """The same documents in the same order with the same entity spans; scores within 1e-5 (fp32:
    rows batched differently round differently)."""
    assert [(r["id"], r["text"]) for r in got] == [(r["id"], r["text"]) for r in want]
    for a, b in zip(got, want):
        assert [(e["start"], e["end"], e["type"], e["text"]) for e in a["entities"]] == \
            [(e["start"], e["end"], e["type"], e["text"]) for e in b["entities"]]
        assert all(abs(x["score"] - y["score"]) <= 1e-5 for x, y in zip(a["entities"], b["entities"]))
