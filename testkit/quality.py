"""Issue 7's quality set on the bundled LM, for tests/unit/test_quantize.py and bench/bench_quality.py alike."""

from __future__ import annotations

import json

import torch

from testkit import DATA

QUALITY_PROMPTS, QUALITY_NEW_TOKENS = 20, 64


def quality_texts() -> tuple[list[str], list[str]]:
    """(prompts: the first 20 PubMed titles of the corpus, perplexity texts: 30 BC5CDR test abstracts)."""
    with open(DATA / "pubmed-corpus" / "pubmed_docs.jsonl", encoding="utf-8") as f:
        titles = [json.loads(line)["title"] for line, _ in zip(f, range(QUALITY_PROMPTS))]
    with open(DATA / "BC5CDR" / "ner_spans_test.jsonl", encoding="utf-8") as f:
        abstracts = [json.loads(line)["text"] for line, _ in zip(f, range(30))]
    return titles, abstracts


def greedy_continuation(model, ids: torch.Tensor) -> torch.Tensor:
    """The model's 64 greedy new tokens after `ids` ([1, prompt]), eos not allowed to end them early."""
    with torch.inference_mode():
        return model.generate(ids, max_new_tokens=QUALITY_NEW_TOKENS, min_new_tokens=QUALITY_NEW_TOKENS,
                              do_sample=False)[0, ids.shape[1]:]
