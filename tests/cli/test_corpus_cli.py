"""`biogpt ner|classify|zero-shot|pubmedqa|generate|analyze` over corpora: batched NER equals one at
a time, interrupted runs resume to the uninterrupted output, every format round-trips, bad
records are reported with their file and line."""

from __future__ import annotations

import csv
import io
import json
import signal
import subprocess
import sys
import time

import pytest

from biogpt.corpus import Writer, done_ids, read
from tests.cli.conftest import BC5CDR, cli_environment, read_jsonl, run_cli, write_jsonl


@pytest.fixture(scope="module")
def engine(one_thread):
    from biogpt.serving import Engine, Limits

    return Engine(limits=Limits.local(), batching=False)


def test_batched_ner_equals_one_document_at_a_time(engine, corpus):
    texts = [row["text"] for row in read_jsonl(corpus)]
    alone = [engine.ner(text) for text in texts]
    together = list(engine.ner_many(texts, batch_docs=5, batch_rows=4))  # batches of mixed lengths, windows
    assert len(together) == len(alone) and sum(len(r.entities) for r in alone) > 20
    assert alone[-1].num_tokens > 1024  # the long document runs in windows
    for one, batched in zip(alone, together):
        assert [(e.start, e.end, e.type) for e in batched.entities] == [(e.start, e.end, e.type) for e in one.entities]
        for a, b in zip(one.entities, batched.entities):
            assert abs(a.score - b.score) <= 1e-5


def test_ner_output_is_the_engines(engine, corpus, expected):
    rows = read_jsonl(corpus)
    assert [r["id"] for r in expected] == [r["id"] for r in rows]  # input order
    for row, result in zip(rows, expected):
        found = engine.ner(row["text"])
        assert [(e["start"], e["end"], e["type"], e["text"]) for e in result["entities"]] == \
            [(e.start, e.end, e.type, e.text) for e in found.entities]


def test_interrupted_and_resumed_equals_uninterrupted(corpus, expected, tmp_path):
    output = tmp_path / "out.jsonl"
    # Ctrl-C as a terminal delivers it: a suite started in the background by a non-interactive shell has SIGINT
    # ignored, which a child inherits (Python then installs no KeyboardInterrupt), and the job ran to its end.
    job = subprocess.Popen([sys.executable, "-m", "biogpt.cli", "ner", str(corpus), "-o", str(output), "--batch", "1"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_environment(),
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not output.exists() or output.read_text().count("\n") < 2):
        time.sleep(0.01)
    job.send_signal(signal.SIGINT)  # Ctrl-C
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 130, stderr
    assert "interrupted; rerun the same command to resume" in stderr
    kept = output.read_text(encoding="utf-8")
    assert kept.endswith("\n") and 2 <= kept.count("\n") < len(expected)  # whole records only, none lost
    with open(output, "a", encoding="utf-8") as stream:
        stream.write('{"id": "half-writ')  # and a record a crash cut in the middle
    resumed = run_cli("ner", str(corpus), "-o", str(output))
    assert resumed.returncode == 0, resumed.stderr
    assert f"{kept.count(chr(10))} already done" in resumed.stderr
    assert_same_entities(read_jsonl(output), expected)
    again = run_cli("ner", str(corpus), "-o", str(output))  # nothing left to do
    assert f"0 written, {len(expected)} already done" in again.stderr
    assert_same_entities(read_jsonl(output), expected)


def assert_same_entities(got: list[dict], want: list[dict]) -> None:
    """The same records and spans; scores within 1e-5. The resumed job batches its documents differently from
    the uninterrupted one (it starts where the Ctrl-C landed), and batching moves a score in its last digits
    (test_batched_ner_equals_one_document_at_a_time)."""
    def spans(rows):
        return [(row["id"], row["text"], [{k: v for k, v in e.items() if k != "score"} for e in row["entities"]])
                for row in rows]

    assert spans(got) == spans(want)
    scores = [(a["score"], b["score"]) for x, y in zip(got, want) for a, b in zip(x["entities"], y["entities"])]
    assert max(abs(a - b) for a, b in scores) <= 1e-5


def test_each_format_round_trips(expected, tmp_path):
    for fmt in ("jsonl", "csv", "pubtator", "bioc"):
        path = tmp_path / f"out.{fmt}"
        half = len(expected) // 2
        for part in (expected[:half], expected[half:]):  # two runs: the second appends (resume)
            writer = Writer(str(path), fmt, _csv_rows, ["id", "start", "end", "type", "text", "score"])
            for result in part:
                writer.write(result)
            writer.close()
        assert done_ids(str(path), fmt) == {r["id"] for r in expected}
        if fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))
            spans = [(r["id"], int(r["start"]), int(r["end"]), r["type"], r["text"]) for r in rows if r["start"]]
            assert spans == [(r["id"], e["start"], e["end"], e["type"], e["text"]) for r in expected for e in r["entities"]]
            continue
        if fmt == "jsonl":
            assert read_jsonl(path) == expected
            continue
        documents = list(read(str(path), fmt))
        assert [(d.id, d.text) for d in documents] == [(r["id"], r["text"]) for r in expected]
        for document, result in zip(documents, expected):
            assert [(e["start"], e["end"], e["type"], e["text"]) for e in document.fields["entities"]] == \
                [(e["start"], e["end"], e["type"], e["text"]) for e in result["entities"]]


def _csv_rows(result: dict) -> list[dict]:
    from biogpt.cli.ner import csv_rows

    return csv_rows(result)


def test_bc5cdr_pubtator_and_bioc_read_as_the_corpus_says(tmp_path, expected):
    """The real PubTator file reads as ner_spans_test.jsonl says (text = title + " " + abstract,
    gold mentions); the CLI reads PubTator and BioC and writes BioC that reads back."""
    gold = read_jsonl(BC5CDR / "ner_spans_test.jsonl")[:5]
    documents = [d for _, d in zip(range(5), read(str(BC5CDR / "CDR_TestSet.PubTator.txt"), "pubtator"))]
    assert [(d.id, d.text) for d in documents] == [(g["pmid"], g["text"]) for g in gold]
    for document, doc_gold in zip(documents, gold):
        assert [(e["start"], e["end"], e["type"]) for e in document.fields["entities"]] == \
            [(e["start"], e["end"], e["type"]) for e in doc_gold["entities"]]
    pubtator = tmp_path / "in.pubtator"
    writer = Writer(str(pubtator), "pubtator")
    for result in expected[:4]:
        writer.write({**result, "entities": []})
    writer.close()
    done = run_cli("ner", str(pubtator), "-o", str(tmp_path / "out.xml"))
    assert done.returncode == 0, done.stderr
    back = list(read(str(tmp_path / "out.xml"), "bioc"))
    assert [(d.id, d.text) for d in back] == [(r["id"], r["text"]) for r in expected[:4]]
    assert [[(e["start"], e["end"], e["type"]) for e in d.fields["entities"]] for d in back] == \
        [[(e["start"], e["end"], e["type"]) for e in r["entities"]] for r in expected[:4]]


def test_bad_records_are_reported_with_their_line(tmp_path, expected):
    path = tmp_path / "mixed.jsonl"
    good = [{"id": r["id"], "text": r["text"]} for r in expected[:2]]
    path.write_text("\n".join([json.dumps(good[0]), "{not json", json.dumps({"id": "x"}), json.dumps({"id": "7", "text": " "}),
                               json.dumps(good[0]), json.dumps(good[1])]) + "\n", encoding="utf-8")
    done = run_cli("ner", str(path))
    assert done.returncode == 0
    assert f"{path}:2: not JSON" in done.stderr
    assert f"{path}:3: no \"text\" string" in done.stderr
    assert f"{path}:4: document 7: The text is empty" in done.stderr
    assert f"{path}:5: the id '{good[0]['id']}' appeared before" in done.stderr
    assert "2 written, 0 already done (skipped), 4 bad" in done.stderr
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == [good[0]["id"], good[1]["id"]]
    strict = run_cli("ner", str(path), "--strict")
    assert strict.returncode == 1 and "stopped at the first bad record" in strict.stderr
    assert [json.loads(line)["id"] for line in strict.stdout.splitlines()] == [good[0]["id"]]


def test_a_job_that_cannot_start_says_why(tmp_path, capsys):
    from biogpt.cli import main

    assert main(["classify", "--text", "a", "-o", str(tmp_path / "x.pubtator")]) == 2  # before any model loads
    assert "biogpt classify writes jsonl, csv, not pubtator (PubTator and BioC hold entities: NER only)." in \
        capsys.readouterr().err
    assert main(["pubmedqa", "--text", "a"]) == 0
    assert "argument:1: --text gives a text only; biogpt pubmedqa needs question, context" in capsys.readouterr().err


def test_every_corpus_subcommand(tmp_path, capsys, one_thread):
    """classify, zero-shot, pubmedqa, generate and analyze through biogpt.cli.main, each against the engine."""
    from biogpt.cli import main
    from biogpt.serving import Engine, GenerationRequest, Limits

    engine = Engine(limits=Limits.local(), batching=False)
    text = "Tumour cells evade apoptosis through loss of p53."

    def cli(*args: str) -> list[dict]:
        capsys.readouterr()
        assert main(list(args)) == 0
        return [json.loads(line) for line in capsys.readouterr().out.splitlines()]

    [hoc] = cli("classify", "--text", text)
    assert hoc["predicted"] == engine.classify(text).predicted
    [zero] = cli("zero-shot", "--labels", "cancer,heart disease", "--text", text)
    assert zero["predicted"] == engine.zero_shot(text, "cancer,heart disease").predicted
    qa = write_jsonl(tmp_path / "qa.jsonl", [{"id": "q1", "question": "Does p53 loss help tumours?", "context": text}])
    [answer] = cli("pubmedqa", str(qa))
    assert answer["answer"] == engine.answer_pubmedqa("Does p53 loss help tumours?", text).best
    [generated] = cli("generate", "--text", "COVID-19 is", "--max-new-tokens", "8")
    *_, alone = engine.generate(GenerationRequest("COVID-19 is", max_new_tokens=8, mode="greedy"))
    assert generated["generated"] == alone.samples[0].text
    [analysis] = cli("analyze", "--text", text)
    assert analysis["tokens"] == list(engine.analyze(text).tokens)
    assert len(analysis["next_token"]) == len(analysis["tokens"]) and set(analysis["head_statistics"]) >= {"entropy"}


def test_progress_on_a_terminal_goes_to_stderr_only(tmp_path, capsys, monkeypatch, one_thread):
    from biogpt.cli import main

    corpus = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"Aspirin causes asthma in case {i}."} for i in range(3)])
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)  # a terminal: the bar shows
    assert main(["ner", str(corpus)]) == 0
    captured = capsys.readouterr()
    assert "3/3" in captured.err and "doc/s" in captured.err and "<00:00" in captured.err  # count, rate, ETA
    assert [json.loads(line)["id"] for line in captured.out.splitlines()] == ["0", "1", "2"]  # stdout: data only


def test_documents_from_stdin(capsys, monkeypatch, one_thread):
    from biogpt.cli import main

    monkeypatch.setattr(sys, "stdin", io.StringIO("Aspirin causes asthma.\n\nCisplatin nephrotoxicity.\n"))
    assert main(["ner"]) == 0  # no file, no --text: stdin, one document a line (blank lines skipped)
    results = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in results] == ["1", "3"] and results[1]["text"] == "Cisplatin nephrotoxicity."
    assert [e["text"] for e in results[1]["entities"]]
