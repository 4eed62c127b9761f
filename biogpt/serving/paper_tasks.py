"""The Tasks tab's work: one visitor's text through a fine-tuned paper-task model (Microsoft's
converted checkpoints or one trained with `biogpt train prompt`), read into structure.

The input is built as Microsoft's fine-tuned models saw it and decoded as their inference script
does (greedy, beam 1), up to the engine's max_new_tokens (Microsoft's script allows the whole
1,024 positions; the cap is shown with every result). Parsing and the task definitions live in
biogpt.paper_tasks; this module adds where the extracted entities occur in the visitor's text.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import Any

from .. import paper_tasks
from .validation import InputError


@dataclass
class Highlight:
    start: int
    end: int
    role: str  # the column the entity fills: drug, target, chemical, disease


@dataclass
class PaperTaskResult:
    task: str
    title: str
    text: str  # the visitor's text
    source: str  # the source text as the model saw it (lower-cased for relation extraction, as trained)
    generated: str
    columns: list[str]
    items: list[dict[str, str]]
    malformed: list[dict[str, str]]
    highlights: list[Highlight] = field(default_factory=list)
    model: str = ""
    settings: dict[str, Any] = field(default_factory=dict)
    num_input_tokens: int = 0
    elapsed: float = 0.0

    @property
    def rows(self) -> list[list[str]]:
        return paper_tasks.as_rows(paper_tasks.ParsedOutput(self.task, self.generated, self.items, self.malformed))

    def as_json(self) -> dict[str, Any]:
        return {"task": self.task, "model": self.model, "generated": self.generated, "items": self.items,
                "malformed": self.malformed, "settings": self.settings,
                "highlights": [{"start": h.start, "end": h.end, "role": h.role} for h in self.highlights]}


ENTITY_COLUMNS = ("drug", "target", "chemical", "disease")


def find_highlights(text: str, items: list[dict[str, str]]) -> list[Highlight]:
    """Every case-insensitive occurrence of each extracted entity in the text; overlaps keep the
    longer (earlier-starting) mention."""
    found: list[Highlight] = []
    for item in items:
        for role in ENTITY_COLUMNS:
            name = item.get(role, "").strip()
            if len(name) < 2:
                continue
            found += [Highlight(m.start(), m.end(), role) for m in re.finditer(re.escape(name), text, re.IGNORECASE)]
    found.sort(key=lambda h: (h.start, -(h.end - h.start)))
    kept: list[Highlight] = []
    for highlight in found:
        if not kept or highlight.start >= kept[-1].end:
            kept.append(highlight)
    return kept


def source_for(task: str, text: str, question: str = "") -> str:
    """The visitor's text as the task's source (rebuild_data.py's rules)."""
    if task == "pubmedqa":
        return paper_tasks.pubmedqa_source(question, text)
    if task == "hoc":
        return paper_tasks.hoc_source(text)
    return " ".join(text.split()).lower()  # relation extraction: Microsoft's sources are lower-cased


def run(loaded, task: str, text: str, question: str, max_new_tokens: int) -> PaperTaskResult:
    """Build the input, decode greedily, parse. InputError when the model is not a paper-task model."""
    spec = paper_tasks.get_task(task)
    try:
        prompt = paper_tasks.prompt_format_of(loaded.model)
    except ValueError as error:
        raise InputError(f"{loaded.name} cannot run {spec.title}: {error}.") from None
    if prompt.task is not None and prompt.task != task:
        raise InputError(f"{loaded.name} was fine-tuned for {paper_tasks.TASKS[prompt.task].title}, not {spec.title}; "
                         f"pick that task or another model.")
    source = source_for(task, text, question)
    ids = paper_tasks.input_ids(prompt, loaded.tokenizer, source)
    if len(ids) >= loaded.max_positions:
        raise InputError(f"The input is {len(ids)} tokens; this model reads at most {loaded.max_positions - 1}.")
    started = time.perf_counter()
    parsed = paper_tasks.run_model(loaded.model, loaded.tokenizer, task, [source], max_new_tokens, prompt=prompt)[0]
    settings = paper_tasks.decoding_settings(loaded.model, len(ids), max_new_tokens)
    return PaperTaskResult(
        task=task, title=spec.title, text=text, source=source, generated=parsed.text, columns=list(spec.columns),
        items=parsed.items, malformed=parsed.malformed,
        highlights=find_highlights(text, parsed.items) if spec.kind == "triples" else [],
        model=loaded.describe(),
        settings={"model": loaded.name, "task": task, **settings, "learned_prompt_tokens": len(prompt.learned_tokens),
                  "max_source_positions": prompt.max_source_positions,
                  "decoding": "greedy (beam 1), as Microsoft's inference.py"},
        num_input_tokens=len(ids), elapsed=time.perf_counter() - started,
    )
