"""One corpus job: read documents, skip those already written, run a task, write results, report.

The CLI's corpus subcommands (biogpt.cli.ner, .classify, ...) each describe a `Task`; `run_job`
does the rest the same way for all of them: inputs from files, stdin or arguments; resume by id;
bad records reported with their file and line (or the job stopped with --strict); a progress bar
with documents/s and ETA on stderr when it is a terminal; counts at the end. stdout carries the
results only (when no --output is given).

Output order is input order, in one process and on Ray (biogpt.corpus.distributed keeps it).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from .readers import BadRecord, Document, count_records, guess_format, read
from .writers import NER_ONLY, Writer, done_ids

# A task's work in a process: documents in, one result dict (with "id") or one refusal (an
# exception whose message is a sentence, e.g. biogpt.serving.InputError) out per document, in order.
Process = Callable[[Iterable[Document]], Iterator["dict[str, Any] | Exception"]]


@dataclass
class Task:
    """What a subcommand does to each document; `build` runs once per process (or Ray worker) and
    returns the function that does it (so the model loads where it runs)."""

    name: str
    build: Callable[[], Process]
    csv_columns: list[str]
    csv_rows: Callable[[dict], list[dict]] | None = None  # one result as CSV rows (default: the result itself)
    fields: tuple[str, ...] = ("text",)  # the JSONL keys each document needs
    output_formats: tuple[str, ...] = ("jsonl", "csv")
    input_formats: tuple[str, ...] = ("text", "jsonl")
    refusals: tuple[type, ...] = (ValueError,)  # per-document errors that skip the document


def add_arguments(parser: argparse.ArgumentParser, task_formats: tuple[tuple[str, ...], tuple[str, ...]],
                  batch: int = 32) -> None:
    """The flags every corpus subcommand shares: inputs, formats, output, resume, --strict, Ray."""
    inputs, outputs = task_formats
    parser.add_argument("inputs", nargs="*", metavar="FILE",
                        help="input files ('-' for stdin; stdin when none and no --text)")
    parser.add_argument("--text", action="append", default=[], metavar="TEXT",
                        help="a document given on the command line (repeatable; ids arg1, arg2, ...)")
    parser.add_argument("--input-format", choices=inputs, default=None,
                        help=f"how to read the inputs ({', '.join(inputs)}; default from the file name: "
                             ".jsonl, .xml (BioC), .pubtator, else one document a line)")
    parser.add_argument("-o", "--output", default="-",
                        help="output file (default stdout); a rerun with the same output skips the ids already in it")
    parser.add_argument("--output-format", choices=outputs, default=None,
                        help=f"{', '.join(outputs)} (default: from the output's name, else jsonl)")
    parser.add_argument("--strict", action="store_true", help="stop at the first bad record instead of skipping it")
    parser.add_argument("--batch", type=int, default=batch, help=f"documents per model batch (default {batch})")
    parser.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                        help="run on a Ray cluster through Ray Data (pip install .[scale]): 'auto' or the head's address")
    parser.add_argument("--ray-workers", type=int, default=None,
                        help="model replicas on the cluster, one CPU each (default: the cluster's CPUs)")


class JobError(Exception):
    """A job that cannot start (bad flags, unreadable input): one sentence, exit status 2."""


def output_format(args: argparse.Namespace, task: Task) -> str:
    fmt = args.output_format
    if fmt is None:
        suffix = args.output.lower().rsplit(".", 1)[-1] if "." in args.output else ""
        fmt = {"csv": "csv", "xml": "bioc", "pubtator": "pubtator"}.get(suffix, "jsonl")
    if fmt not in task.output_formats:
        raise JobError(f"biogpt {task.name} writes {', '.join(task.output_formats)}, not {fmt}"
                       + (" (PubTator and BioC hold entities: NER only)." if fmt in NER_ONLY else "."))
    return fmt


def sources(args: argparse.Namespace, task: Task) -> list[tuple[str, str]]:
    """(path, format) of each input; '-' is stdin."""
    paths = list(args.inputs) or ([] if args.text else ["-"])
    if paths == ["-"] and sys.stdin.isatty() and not args.text:
        raise JobError(f"biogpt {task.name}: give input files, --text, or pipe documents to stdin.")
    result = []
    for path in paths:
        fmt = args.input_format or ("text" if path == "-" else guess_format(path))
        if fmt not in task.input_formats:
            raise JobError(f"biogpt {task.name} reads {', '.join(task.input_formats)}, not {fmt} ({path}); "
                           "pass --input-format.")
        result.append((path, fmt))
    return result


def records(args: argparse.Namespace, task: Task) -> Iterator[Document | BadRecord]:
    for number, text in enumerate(args.text, 1):
        if "text" in task.fields and len(task.fields) == 1:
            yield Document(f"arg{number}", text, "argument", number)
        else:
            yield BadRecord("argument", number, f"--text gives a text only; biogpt {task.name} needs "
                                                f"{', '.join(task.fields)}: use a JSONL file")
    for path, fmt in sources(args, task):
        yield from read(path, fmt, task.fields)


class Counts:
    def __init__(self) -> None:
        self.written = self.already_done = self.bad = 0

    def __str__(self) -> str:
        return f"{self.written:,} written, {self.already_done:,} already done (skipped), {self.bad:,} bad (reported above)"


class StrictStop(Exception):
    pass


def run_job(args: argparse.Namespace, task: Task) -> int:
    """Run `task` over the inputs as the flags say; the exit status (0; 1 stopped by --strict;
    2 a job that could not start; 130 interrupted)."""
    try:
        fmt = output_format(args, task)
        input_list = sources(args, task) if args.inputs or not args.text else []
    except JobError as error:
        print(error, file=sys.stderr)
        return 2
    except OSError as error:
        print(f"biogpt {task.name}: {error}", file=sys.stderr)
        return 2
    finished = done_ids(args.output, fmt)
    counts = Counts()
    total = None
    if sys.stderr.isatty():
        known = [count_records(path, f) for path, f in input_list]
        total = None if None in known else sum(known) + len(args.text)
    from tqdm import tqdm

    bar = tqdm(total=total, unit="doc", file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True,
               desc=f"biogpt {task.name}")
    in_flight: collections.deque[Document] = collections.deque()
    seen: set[str] = set()

    stopping: list[BadRecord] = []  # --strict: the bad record the job stops at

    def report(bad: BadRecord) -> None:
        counts.bad += 1
        bar.update(1)
        tqdm.write(f"bad record: {bad}", file=sys.stderr)
        if args.strict:
            stopping.append(bad)

    def to_compute() -> Iterator[Document]:
        """The documents to run, in order; reading ends at a bad record under --strict (the
        documents before it are still computed and written)."""
        for record in records(args, task):
            if isinstance(record, BadRecord):
                report(record)
            elif record.id in finished:
                counts.already_done += 1
                bar.update(1)
            elif record.id in seen:
                report(BadRecord(record.source, record.line, f"the id {record.id!r} appeared before in this job"))
            else:
                seen.add(record.id)
                in_flight.append(record)
                yield record
            if stopping:
                return

    writer = None
    try:
        writer = Writer(args.output, fmt, task.csv_rows, task.csv_columns)
        if args.ray:
            from .distributed import run_on_ray

            results = run_on_ray(task, to_compute(), args.ray, args.ray_workers, args.batch)
        else:
            results = task.build()(to_compute())
        for result in results:
            document = in_flight.popleft()
            if isinstance(result, task.refusals):
                report(BadRecord(document.source, document.line, f"document {document.id}: {result}"))
                if stopping:
                    raise StrictStop
                continue
            writer.write(result)
            counts.written += 1
            bar.update(1)
        if stopping:
            raise StrictStop
        status = 0
    except StrictStop:
        status = 1
        print(f"biogpt {task.name}: stopped at the first bad record (--strict).", file=sys.stderr)
    except KeyboardInterrupt:
        status = 130
        print(f"biogpt {task.name}: interrupted; rerun the same command to resume.", file=sys.stderr)
    except OSError as error:
        status = 2
        print(f"biogpt {task.name}: {error}", file=sys.stderr)
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    print(f"biogpt {task.name}: {counts}.", file=sys.stderr)
    return status


def batched(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    iterator = iter(items)
    return iter(lambda: list(itertools.islice(iterator, size)), [])
