"""The Generate tab's branch tree: every continuation a visitor made from another one's token.

Pure (no gradio): the tab keeps one `BranchTree` in the visitor's page state (gr.State), so it is
bounded (MAX_BRANCHES) and lives as long as the page. A branch is exactly reproducible from what it
records: the request (settings), the seed the first run used, and the forced token ids
(biogpt.generation.SAMPLER_RULE says how the sampler continues after them); `export` writes all of it.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

from biogpt.serving import GenerationRequest, GenerationResult

MAX_BRANCHES = 32  # branches one page keeps, the first run included


@dataclass
class Branch:
    """One run of the tree: the first one (parent None) or a continuation forced up to `position`."""

    number: int  # 1 for the first run, then in the order they were made
    parent: int | None
    label: str  # where and how it diverged, e.g. "2 · token 4: 'levels' → 'doses' (from 1)"
    position: int | None  # 0-based index of the token that was replaced; None for the first run
    forced_token_ids: list[int]
    result: GenerationResult

    @property
    def sample(self):
        return self.result.samples[0]


@dataclass
class BranchTree:
    """The runs a visitor branched from one generation; `current` is the one shown."""

    request: GenerationRequest  # the first run's request (its drawn seed included): every branch's settings
    branches: list[Branch] = field(default_factory=list)
    current: int = 1

    def branch(self, number: int) -> Branch:
        for branch in self.branches:
            if branch.number == int(number):
                return branch
        raise ValueError(f"There is no branch {number} on this page; pick one from the branch list.")

    @property
    def shown(self) -> Branch:
        return self.branch(self.current)


def request_of(result: GenerationResult) -> GenerationRequest:
    """The request that reproduces `result`, read from its settings (which name the seed it drew)."""
    names = {f.name for f in dataclasses.fields(GenerationRequest)} - {"prompt"}
    settings = result.settings
    return GenerationRequest(prompt=result.prompt, **{k: v for k, v in settings.items() if k in names})


def branching_problem(result: GenerationResult) -> str:
    """Why this result cannot be branched ("" when it can): branches continue one greedy or sampled sequence."""
    if result.settings.get("mode") == "beam search":
        return ("Beam search cannot continue from a chosen token (it keeps and reranks several sequences); "
                "generate with greedy or sampling to branch.")
    if len(result.samples) != 1:
        return "Branching continues one sequence: generate with Sequences 1 to branch."
    if not len(result.samples[0].token_ids):
        return "This run has no tokens to branch from yet."
    return ""


def start_tree(result: GenerationResult) -> BranchTree:
    """A new tree whose first run is `result`; every branch reuses its settings and the seed it drew,
    so each continues from the same random state."""
    problem = branching_problem(result)
    if problem:
        raise ValueError(problem)
    return BranchTree(request=request_of(result), branches=[Branch(1, None, "1 · first run", None, [], result)])


def tree_for(tree: BranchTree | None, latest: GenerationResult | None) -> BranchTree:
    """The page's tree for the newest run `latest`: the same tree while it is its first run, a new one after."""
    if latest is None:
        raise ValueError("Generate a text first, then open one of its tokens to branch from it.")
    if tree is not None:
        first = tree.branches[0].result
        if first.settings == latest.settings and first.prompt == latest.prompt and \
                first.samples[0].token_ids.tolist() == latest.samples[0].token_ids.tolist():
            return tree
    return start_tree(latest)


def explain_target(tree: BranchTree, position: int) -> dict[str, Any]:
    """What "Explain this token" hands the Attention tab: the shown branch's whole text (prompt and
    continuation, as the Generate tab shows it), the character where token `position` starts, and
    the token. The tab re-reads that text; the token starting at that character is explained."""
    sample = tree.shown.sample
    position = _checked_position(sample, position)
    prompt = tree.request.prompt
    joiner = " " if prompt[-1:].strip() and sample.text[:1].isalnum() else ""  # as views.generation_html joins them
    before = prompt + joiner + "".join(sample.token_texts[:position])
    piece = sample.token_texts[position]
    start = len(before) + len(piece) - len(piece.lstrip())
    return {"text": prompt + joiner + sample.text, "char": start, "token": piece.strip(), "token_number": position + 1}


def choices_at(tree: BranchTree, position: int) -> list[tuple[str, int]]:
    """The alternatives of the shown branch's token `position` as (label, token id), best first,
    the token it chose left out: what "continue with this" can force there."""
    sample = tree.shown.sample
    position = _checked_position(sample, position)
    chosen = int(sample.token_ids[position])
    return [(f"{surface!r} {probability:.1%}", int(token_id))
            for (surface, probability), token_id in zip(sample.alternatives[position], sample.alternative_ids[position])
            if int(token_id) != chosen]


def forced_ids(tree: BranchTree, position: int, token_id: int) -> list[int]:
    """The tokens a branch at `position` forces: the shown branch's tokens before it, then `token_id`."""
    sample = tree.shown.sample
    position = _checked_position(sample, position)
    if len(tree.branches) >= MAX_BRANCHES:
        raise ValueError(f"This page keeps at most {MAX_BRANCHES} branches; generate again to start a new tree.")
    return [int(t) for t in sample.token_ids[:position]] + [int(token_id)]


def branch_request(tree: BranchTree, forced: list[int]) -> GenerationRequest:
    """The first run's request (same seed and settings); Max new tokens grows to fit the forced
    tokens (they count in it) only when it must."""
    return dataclasses.replace(tree.request, max_new_tokens=max(int(tree.request.max_new_tokens), len(forced)))


def parse_forced_ids(value: Any) -> list[int]:
    """The API's forced_token_ids: a list of whole numbers, or text such as "[5, 17]" or "5, 17"."""
    if value is None or value == "":
        return []
    if isinstance(value, str):
        text = value.strip()
        try:
            value = json.loads(text if text.startswith("[") else f"[{text}]")
        except ValueError:
            raise ValueError("forced_token_ids must be whole numbers, e.g. [1901, 7, 42] or 1901, 7, 42.") from None
    if not isinstance(value, list) or any(isinstance(t, bool) or not isinstance(t, int) for t in value):
        raise ValueError("forced_token_ids must be whole numbers, e.g. [1901, 7, 42] or 1901, 7, 42.")
    return value


def add_branch(tree: BranchTree, position: int, forced: list[int], result: GenerationResult) -> Branch:
    """Record the continuation `result` of the shown branch, replaced at `position`, and show it."""
    parent = tree.shown
    old = parent.sample.token_texts[position].strip() or f"#{int(parent.sample.token_ids[position])}"
    new = result.samples[0].token_texts[position].strip() or f"#{forced[-1]}"
    number = max(b.number for b in tree.branches) + 1
    label = f"{number} · token {position + 1}: {old!r} → {new!r} (from {parent.number})"
    branch = Branch(number, parent.number, label, position, list(forced), result)
    tree.branches.append(branch)
    tree.current = number
    return branch


def branch_labels(tree: BranchTree) -> list[tuple[str, int]]:
    """(label, number) for the branch selector, in the order they were made."""
    return [(b.label, b.number) for b in tree.branches]


def export(tree: BranchTree) -> dict[str, Any]:
    """Everything that reproduces each branch: seed, forced token ids, sampler rule and settings."""
    return {
        "prompt": tree.request.prompt,
        "request": dataclasses.asdict(tree.request),
        "branches": [
            {
                "branch": b.number,
                "parent": b.parent,
                "label": b.label,
                "diverged_at_token": None if b.position is None else b.position + 1,
                "seed": b.result.settings.get("seed"),
                "forced_token_ids": b.forced_token_ids,
                "sampler_rule": b.result.settings.get("sampler_rule"),
                "settings": b.result.settings,
                "model": b.result.model,
                "text": b.sample.text,
                "token_ids": [int(t) for t in b.sample.token_ids],
            }
            for b in tree.branches
        ],
    }


def export_json(tree: BranchTree) -> str:
    return json.dumps(export(tree), ensure_ascii=False, indent=2, default=str)


def _checked_position(sample, position) -> int:
    try:
        index = int(position)
    except (TypeError, ValueError):
        raise ValueError("Open a generated token first (click, tap or Tab to it).") from None
    if not 0 <= index < len(sample.token_ids):
        raise ValueError(f"This branch has tokens 1 to {len(sample.token_ids)}; there is no token {index + 1}.")
    return index
