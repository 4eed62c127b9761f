"""Scoring with the language model: PubMedQA's yes / no / maybe and zero-shot labels, both as
log-likelihoods of continuations after a shared prefix."""

from __future__ import annotations

import time

import numpy as np

from .registry import LoadedModel
from .results import AnswerResult, ClassificationResult
from .validation import InputError, Limits, candidate_labels, clean_text

PUBMEDQA_ANSWERS = ("yes", "no", "maybe")
# BioGPT's PubMedQA fine-tuning target (microsoft/BioGPT, examples/QA-PubMedQA/rebuild_data.py).
PUBMEDQA_LEAD = "the answer to the question given the context is"
ZERO_SHOT_TEMPLATE = "{text} This text is about {label}."
MAX_TEXT_PLACEHOLDERS = 4  # {text} in a zero-shot template; one is the rule, a few leave room for style


def pubmedqa_prompt(question: str, context: str, long_answer: str = "") -> str:
    """BioGPT's PubMedQA fine-tuning phrasing: `question: ... context: ...` (plus ` answer: ...`
    when a long answer is given, as in the reasoning-free setting), ended with a full stop, then
    "the answer to the question given the context is"."""
    source = f"question: {question} context: {context}" + (f" answer: {long_answer}" if long_answer else "")
    if not source.endswith("."):
        source += "."
    return f"{source} {PUBMEDQA_LEAD}"


def answer_pubmedqa(loaded: LoadedModel, prompt: str) -> AnswerResult:
    """Each answer's probability is the softmax of the log-likelihoods the model gives " yes.",
    " no." and " maybe." after the prompt."""
    scores, _ = score_continuations(loaded, prompt, [f" {a}." for a in PUBMEDQA_ANSWERS])
    return AnswerResult(
        prompt=prompt, answers=list(PUBMEDQA_ANSWERS), probabilities=softmax(scores),
        log_likelihoods=scores.astype(np.float32), model=loaded.describe(),
        settings={"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype,
                  "scoring": "log-likelihood of ' yes.' / ' no.' / ' maybe.' after the prompt, softmax over the three"},
    )


def zero_shot_template(template: str) -> str:
    """The template, checked: it holds "{text}" before "{label}", and "{text}" at most a few times."""
    template = clean_text(template, "template", 500)
    if "{label}" not in template or "{text}" not in template:
        raise InputError("The template must contain both {text} and {label}, e.g. '{text} This text is about {label}.'")
    if template.index("{text}") > template.index("{label}"):
        raise InputError("In the template, {text} must come before {label}: the label is scored given the text.")
    # Each {text} copies the whole text into every candidate's prompt; a template that repeats
    # it many times cost seconds of tokenising before the token cap refused it.
    repeats = template.count("{text}")
    if repeats > MAX_TEXT_PLACEHOLDERS:
        raise InputError(f"The template uses {{text}} {repeats} times; at most {MAX_TEXT_PLACEHOLDERS} are allowed, "
                         "as each copy of the text is scored again.")
    return template


def zero_shot_labels(labels: list[str] | str, limits: Limits) -> list[str]:
    """Two to `limits.max_candidate_labels` distinct labels, each of a bounded length."""
    labels = candidate_labels(labels, limits)
    if len(labels) < 2:
        raise InputError("Give at least two candidate labels, separated by commas.")
    if len(labels) > limits.max_candidate_labels:
        raise InputError(f"At most {limits.max_candidate_labels} candidate labels are allowed, got {len(labels)}.")
    if any(len(label) > limits.max_label_chars for label in labels):
        raise InputError(f"Each label may have at most {limits.max_label_chars} characters.")
    return labels


def zero_shot(loaded: LoadedModel, text: str, labels: list[str], template: str, normalize: bool) -> ClassificationResult:
    """Score each candidate label by the language model's log-likelihood of the template.

    The part of the template before "{label}" is shared, and each label is scored by the
    log-likelihood of the rest (label and what follows), averaged per token when `normalize`
    (so long labels are not penalised for their length). The probabilities are a softmax over
    the candidates: relative, never absolute.
    """
    _check_zero_shot_size(loaded, text, template, labels)
    started = time.perf_counter()
    before, after = template.split("{label}", 1)
    # str.replace, not str.format: braces in a visitor's text must stay text.
    prefix = before.replace("{text}", text).rstrip(" ")
    gap = " " if before.endswith(" ") else ""
    totals, counts = score_continuations(
        loaded, prefix, [gap + label + after.replace("{text}", text) for label in labels]
    )
    scores = totals / counts if normalize else totals
    probabilities = softmax(scores)
    return ClassificationResult(
        text=text, labels=labels, probabilities=probabilities, predicted=[labels[int(np.argmax(probabilities))]],
        mode="zero-shot", multi_label=False, threshold=None, model=loaded.describe(),
        settings={"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype, "template": template,
                  "score": "mean log-likelihood per token" if normalize else "total log-likelihood"},
        scores=scores.astype(np.float32), elapsed=time.perf_counter() - started,
    )


def _check_zero_shot_size(loaded: LoadedModel, text: str, template: str, labels: list[str]) -> None:
    """Refuse before any candidate is built when the filled template cannot fit the model.

    The estimate adds the pieces' token counts (tokenising each once); tokenisation is nearly
    additive, and the slack of a few tokens per piece keeps borderline prompts for the exact
    check in `score_continuations`.
    """
    count = lambda piece: len(loaded.tokenizer.encode(piece, add_special_tokens=False)) if piece.strip() else 0  # noqa: E731
    repeats = template.count("{text}")
    frame = template.replace("{text}", " ").replace("{label}", " ", 1)
    estimate = repeats * count(text) + count(frame) + max(count(label) for label in labels)
    slack = 4 * (repeats + 2)
    if estimate - slack > loaded.max_positions:
        raise InputError(
            f"The filled template needs about {estimate:,} tokens but {loaded.name} reads at most "
            f"{loaded.max_positions:,}; shorten the text or the template."
        )


def score_continuations(loaded: LoadedModel, prefix: str, continuations: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Log-likelihood of each continuation after `prefix`, and its token count.

    The prefix runs once; its KV cache is copied for every candidate, which scores all of
    them in one batched call. Tokenisation is not additive (Moses and BPE look at whole
    words), so the shared part is the longest run of ids common to every candidate.
    """
    import torch
    import torch.nn.functional as F

    tokenizer, model = loaded.tokenizer, loaded.model
    full = [tokenizer.encode(prefix + c) for c in continuations]
    prefix_ids = tokenizer.encode(prefix)
    shared = min(common_prefix_length(prefix_ids, f) for f in full)
    shared = max(1, min(shared, min(len(f) for f in full) - 1))  # every candidate keeps >= 1 token to score
    longest = max(len(f) for f in full)
    if longest > loaded.max_positions:
        raise InputError(
            f"The text needs {longest:,} tokens but {loaded.name} reads at most {loaded.max_positions:,}; shorten it."
        )
    tails = [f[shared:] for f in full]
    width = max(len(t) for t in tails)
    pad = tokenizer.pad_token_id
    with torch.inference_mode():
        device = model.device
        head = model.biogpt(torch.tensor([full[0][:shared]], device=device), use_cache=True)
        first = F.log_softmax(model.output_projection(head.last_hidden_state[:, -1]).float(), dim=-1)[0]
        cache = head.past_key_values
        cache.reorder(torch.zeros(len(tails), dtype=torch.long, device=device))
        # Right padding needs no mask: a causal model never lets a real token see the pads after it.
        batch = torch.tensor([t + [pad] * (width - len(t)) for t in tails], device=device)
        hidden = model.biogpt(batch, past_key_values=cache, use_cache=True).last_hidden_state
        rows, cols, targets = [], [], []
        for i, t in enumerate(tails):
            for j in range(1, len(t)):
                rows.append(i)
                cols.append(j - 1)
                targets.append(t[j])
        totals = torch.tensor([float(first[t[0]]) for t in tails])
        if targets:
            picked = model.output_projection(hidden[rows, cols])
            logprobs = F.log_softmax(picked.float(), dim=-1)
            token_scores = logprobs[torch.arange(len(targets)), torch.tensor(targets, device=device)].cpu()
            totals.index_add_(0, torch.tensor(rows), token_scores)
    return totals.numpy().astype(np.float64), np.asarray([len(t) for t in tails])


def softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return (shifted / shifted.sum()).astype(np.float32)


def common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n
