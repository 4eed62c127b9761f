"""The same corpus job on a Ray cluster through Ray Data (`--ray auto|ADDRESS`, extra [scale]).

The driver reads the inputs and writes the output exactly as in one process (resume by id, bad
records reported); documents go to the cluster in slices of `SLICE` as a Ray Dataset, through
`map_batches` over one model replica per worker (an actor that builds the task once, with one
CPU and one torch thread), and come back in input order (`preserve_order`). Each record keeps
its id, so the output is the single-process output.
"""

from __future__ import annotations

import json
from typing import Any, Iterable, Iterator

from .job import Task, batched
from .readers import Document

SLICE = 4_096  # documents per Dataset: bounds the driver's memory on a corpus of any size


class _Replica:
    """One model replica on a Ray worker: the task built once, then a batch of documents at a time."""

    def __init__(self, task: Task) -> None:
        import torch

        torch.set_num_threads(1)  # one CPU per replica: replicas, not threads, use the cores
        self.process = task.build()

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        documents = [Document(str(i), str(t), "", 0, json.loads(f)) for i, t, f in
                     zip(batch["id"], batch["text"], batch["fields"])]
        outcomes, refusals = [], []
        for result in self.process(documents):
            refused = isinstance(result, Exception)
            outcomes.append("" if refused else json.dumps(result, ensure_ascii=False))
            refusals.append(f"{type(result).__name__}\t{result}" if refused else "")
        return {"result": outcomes, "refusal": refusals}


class RemoteRefusal(ValueError):
    """A document a worker refused (its exception's message, a sentence)."""


def connect(address: str) -> None:
    import ray

    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")


def run_on_ray(task: Task, documents: Iterable[Document], address: str, workers: int | None,
               batch: int) -> Iterator[dict[str, Any] | Exception]:
    try:
        import ray
    except ImportError:
        raise OSError("--ray needs Ray: pip install '.[scale]' (or biogpt-studio[scale]).") from None
    connect(address)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    for piece in batched(documents, SLICE):
        rows = [{"id": d.id, "text": d.text, "fields": json.dumps(d.fields, ensure_ascii=False)} for d in piece]
        dataset = ray.data.from_items(rows).map_batches(
            _Replica, fn_constructor_args=(task,), batch_size=batch, batch_format="numpy",
            concurrency=workers, num_cpus=1)
        for row in dataset.iter_rows():
            if row["refusal"]:
                yield RemoteRefusal(str(row["refusal"]).split("\t", 1)[1])
            else:
                yield json.loads(row["result"])
