"""Corpora for the command line: read documents (readers), write results resumably (writers), run a
task over them in one process (job) or on a Ray cluster (distributed, optional extra [scale])."""

from .job import Task, add_arguments, run_job
from .readers import INPUT_FORMATS, BadRecord, Document, read
from .writers import OUTPUT_FORMATS, Writer, done_ids

__all__ = ["INPUT_FORMATS", "OUTPUT_FORMATS", "BadRecord", "Document", "Task", "Writer", "add_arguments", "done_ids",
           "read", "run_job"]
