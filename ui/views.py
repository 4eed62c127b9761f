"""Rich views of the engine's results as HTML, table rows and export files: pure functions.

Kept apart from the tabs so they can be unit-tested without a server and reused by the
Attention tab. Every piece of visitor or model text goes through `html.escape`.
"""

from __future__ import annotations

import csv
import hashlib
import html
import io
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from biogpt.serving import AnswerResult, ClassificationResult, GenerationResult, NerResult

EXPORT_DIR = Path(tempfile.gettempdir()) / "biogpt-studio-exports"
MAX_EXPORT_FILES = 500  # exports are named by content, so this bounds the folder
# The Attention tab writes each export into a folder of its own under this one; Gradio copies the
# files into its cache (cleaned hourly by delete_cache) when it serves them, so only the newest
# few are kept here.
ATTENTION_EXPORT_DIR = Path(tempfile.gettempdir()) / "biogpt-studio-attention-exports"
MAX_ATTENTION_EXPORTS = 16
ENTITY_COLOURS = {"Chemical": "#c6e3ff", "Disease": "#ffd6c2"}
FALLBACK_COLOURS = ("#d9f2d0", "#f3d9fa", "#fff2b3", "#d4f4f0")
# One number format for probabilities everywhere on the page: a percentage with one decimal.
TOKEN_TABLE_HEADERS = ["sample", "position", "token", "probability %", "top-5 alternatives"]
ENTITY_TABLE_HEADERS = ["entity", "type", "start", "end", "confidence"]
LABEL_TABLE_HEADERS = ["label", "probability", "assigned"]
# What the bundled models are, said beside every result they produce (they are demos, not BioGPT).
TOY_MODEL_NOTE = (
    "**Demo model.** `{name}` is a small 4-layer BioGPT trained here for minutes on PubMed text, so that the "
    "app runs offline: its output shows how the tools work, is not factual and must not be trusted. "
    "Choose `microsoft/biogpt` in the Model list (needs internet the first time) for the published model."
)


def _escape(text: str) -> str:
    return html.escape(text, quote=True)


def visitor_text(text: str) -> str:
    """Text for a place that renders HTML (error toasts, plotly labels) so that markup a visitor
    typed shows as characters: `<`, `>` and `&` escaped, quotes kept for readability."""
    return html.escape(str(text), quote=False)


def settings_line(settings: dict[str, Any]) -> str:
    """`key=value` pairs in code style: everything needed to reproduce an output."""
    shown = []
    for key, value in settings.items():
        if value is None:
            continue
        if isinstance(value, float):
            value = f"{value:g}"
        elif isinstance(value, (list, tuple)):
            value = json.dumps(list(value), ensure_ascii=False)
        shown.append(f"{key}={value}")
    return "`" + " · ".join(s.replace("`", "'") for s in shown) + "`"


def model_note(model_name: str) -> str:
    """A plain-words warning for results of a bundled demo model ("" for published checkpoints)."""
    if model_name.startswith("bundled"):
        return TOY_MODEL_NOTE.format(name=_escape(model_name))
    return ""


def _with_note(summary: str, model_name: str) -> str:
    note = model_note(model_name)
    return f"{summary}  \n{note}" if note else summary


def percent(probability: float) -> str:
    return f"{float(probability):.1%}"


# ----- Generate -------------------------------------------------------------------------------


def probability_colour(probability: float) -> str:
    """Orange for tokens the model doubted, fading to green for tokens it was sure of."""
    p = min(max(float(probability), 0.0), 1.0)
    hue = 25 + 95 * p
    return f"hsl({hue:.0f}, 80%, {88 - 8 * (1 - p):.0f}%)"


def _alternatives_text(alternatives: list[tuple[str, float]]) -> str:
    return ", ".join(f"{token!r} {percent(p)}" for token, p in alternatives)


def generation_html(result: GenerationResult, stopped: bool = False) -> str:
    """The samples side by side; each token coloured by its probability. A token is focusable
    (Tab, or a tap on a phone) and shows its top-5 when focused or hovered; screen readers read it
    from aria-label. `stopped`: the visitor stopped the run, so unfinished samples say so."""
    cards = []
    for index, sample in enumerate(result.samples):
        # The continuation is decoded on its own, so it carries no space after the prompt's last word.
        joiner = " " if result.prompt[-1:].strip() and sample.text[:1].isalnum() else ""
        spans = []
        for position, (piece, p, alternatives) in enumerate(zip(sample.token_texts, sample.probabilities, sample.alternatives)):
            if not piece:
                continue
            tip = f"token {position + 1}: p={percent(p)}\ntop-5: {_alternatives_text(alternatives[:5])}"
            spans.append(
                f'<span class="tok" tabindex="0" role="button" style="background:{probability_colour(p)}" '
                f'title="{_escape(tip)}" data-tip="{_escape(tip)}" aria-label="{_escape(piece.strip() + ". " + tip)}">'
                f"{_escape(piece)}</span>"
            )
        facts = [f"{len(sample.token_ids)} tokens"]
        if len(sample.probabilities):
            facts.append(f"mean p {float(sample.probabilities.mean()):.0%}")
        if sample.beam_score is not None:
            facts.append(f"beam score {sample.beam_score:.3f}")
        facts.append({"eos": "ended: end of text", "stop": "ended: stop string", "length": "ended: length limit"}.get(
            sample.finish_reason or "", "stopped by you" if stopped else "generating…"))
        title = f"Sample {index + 1}" if len(result.samples) > 1 else "Continuation"
        cards.append(
            f'<div class="sample-card"><div class="sample-head"><b>{title}</b> · {" · ".join(facts)}</div>'
            f'<div class="sample-text"><span class="prompt">{_escape(result.prompt)}</span>{joiner}{"".join(spans)}</div></div>'
        )
    legend = (
        '<div class="prob-legend">Token colour = probability the decoder gave it: '
        f'<span class="tok" style="background:{probability_colour(0.05)}">5%</span> '
        f'<span class="tok" style="background:{probability_colour(0.5)}">50%</span> '
        f'<span class="tok" style="background:{probability_colour(0.95)}">95%</span> '
        "· hover, tap or Tab to a token for its top-5 alternatives.</div>"
    )
    return f'<div class="samples" style="--columns:{min(len(result.samples), 2)}">{"".join(cards)}</div>{legend}'


def token_rows(result: GenerationResult) -> list[list[Any]]:
    rows = []
    for index, sample in enumerate(result.samples):
        for position, (token_id, piece, p, alternatives) in enumerate(
            zip(sample.token_ids, sample.token_texts, sample.probabilities, sample.alternatives)
        ):
            shown = piece.strip() or ("</s>" if int(token_id) == 2 else "∅")
            rows.append([index + 1, position + 1, shown, round(100 * float(p), 1), _alternatives_text(alternatives[:5])])
    return rows


def generation_info(result: GenerationResult, stopped: bool = False) -> str:
    """Model, speed and the settings (seed included) that reproduce the result; when `stopped`,
    it says that the text shown is all that was generated before Stop."""
    if stopped and not result.finished:
        speed = (f"**Stopped by you** after {result.new_tokens} tokens in {result.elapsed:.2f} s: "
                 "the text above is everything that was generated")
    elif result.finished:
        speed = f"{result.new_tokens} tokens in {result.elapsed:.2f} s · **{result.tokens_per_second:.1f} tokens/s**"
        if result.first_token_seconds is not None:
            speed += f" (first token after {result.first_token_seconds:.2f} s)"
    else:
        speed = f"generating… {result.new_tokens} tokens · **{result.tokens_per_second:.1f} tokens/s**"
    summary = f"**{_escape(result.model)}** · {speed}  \nSettings: {settings_line(result.settings)}"
    return _with_note(summary, result.settings.get("model", ""))


def generation_json(result: GenerationResult) -> dict[str, Any]:
    return {
        "prompt": result.prompt,
        "settings": result.settings,
        "model": result.model,
        "tokens_per_second": round(result.tokens_per_second, 2),
        "samples": [
            {
                "text": s.text,
                "finish_reason": s.finish_reason,
                "beam_score": s.beam_score,
                "tokens": [
                    {"id": int(i), "text": t, "probability": round(float(p), 6),
                     "top5": [[tok, round(float(q), 6)] for tok, q in alts[:5]]}
                    for i, t, p, alts in zip(s.token_ids, s.token_texts, s.probabilities, s.alternatives)
                ],
            }
            for s in result.samples
        ],
    }


def answer_confidences(result: AnswerResult) -> dict[str, float]:
    return {a: float(p) for a, p in zip(result.answers, result.probabilities)}


def answer_margin(result: AnswerResult) -> float:
    """How far (in nats of log-likelihood) the chosen answer leads the runner-up."""
    ranked = sorted((float(v) for v in result.log_likelihoods), reverse=True)
    return ranked[0] - ranked[1]


def answer_info(result: AnswerResult, gold: str = "") -> str:
    """The model's answer beside the gold answer when the question is a PubMedQA example."""
    scores = ", ".join(f"{a}: {s:.2f}" for a, s in zip(result.answers, result.log_likelihoods))
    verdict = f"model's answer: **{result.best}**"
    if gold:
        verdict += f" · gold answer: **{_escape(gold)}** ({'agrees' if gold == result.best else 'disagrees'})"
    summary = (
        f"**{_escape(result.model)}** · {verdict} · log-likelihoods {scores} "
        f"(lead {answer_margin(result):.2f} nats)  \nSettings: {settings_line(result.settings)}"
    )
    return _with_note(summary, result.settings.get("model", ""))


# ----- NER ------------------------------------------------------------------------------------


def entity_colour(kind: str, kinds: list[str]) -> str:
    if kind in ENTITY_COLOURS:
        return ENTITY_COLOURS[kind]
    others = [k for k in kinds if k not in ENTITY_COLOURS]
    return FALLBACK_COLOURS[others.index(kind) % len(FALLBACK_COLOURS)] if kind in others else FALLBACK_COLOURS[0]


def entities_html(result: NerResult) -> str:
    """The text with each entity marked in place, its type and confidence beside it."""
    parts, position = [], 0
    for entity in result.entities:
        parts.append(_escape(result.text[position:entity.start]))
        colour = entity_colour(entity.type, result.entity_types)
        tip = f"{entity.type} · confidence {entity.score:.1%} · characters {entity.start}–{entity.end}"
        parts.append(
            f'<mark class="entity" data-type="{_escape(entity.type)}" style="background:{colour}" title="{_escape(tip)}">'
            f"{_escape(entity.text)}<span class=\"entity-tag\">{_escape(entity.type)} {entity.score:.0%}</span></mark>"
        )
        position = entity.end
    parts.append(_escape(result.text[position:]))
    legend = " ".join(
        f'<span class="entity-key" style="background:{entity_colour(k, result.entity_types)}">{_escape(k)}</span>'
        for k in result.entity_types
    )
    found = f"{len(result.entities)} entit{'y' if len(result.entities) == 1 else 'ies'} found"
    return f'<div class="ner-legend">{legend} · {found}</div><div class="ner-text">{"".join(parts)}</div>'


def entity_rows(result: NerResult) -> list[list[Any]]:
    return [[e.text, e.type, e.start, e.end, round(e.score, 4)] for e in result.entities]


def entities_json(result: NerResult, requested_aggregation: str = "") -> dict[str, Any]:
    """The entities with what produced them; "auto" is kept beside the piece it resolved to."""
    settings = dict(result.settings)
    if requested_aggregation and requested_aggregation != settings.get("aggregation"):
        settings["aggregation"] = f"{requested_aggregation} ({settings.get('aggregation')})"
    return {
        "text": result.text,
        "settings": settings,
        "entities": [
            {"text": e.text, "type": e.type, "start": e.start, "end": e.end, "confidence": round(e.score, 6)}
            for e in result.entities
        ],
    }


def table_csv(columns: list[Any], rows: list[list[Any]]) -> str:
    """A table as CSV text: the header row, then the rows (the NER and Attention exports)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def entities_csv(result: NerResult) -> str:
    return table_csv(ENTITY_TABLE_HEADERS, entity_rows(result))


def ner_info(result: NerResult) -> str:
    return (
        f"**{_escape(result.model)}** · {result.num_tokens} tokens read in {result.elapsed:.2f} s · "
        f"words tagged by their **{result.aggregation}** piece{'s' if result.aggregation in ('average', 'max') else ''}  \n"
        f"Settings: {settings_line(result.settings)}"
    )


def export_name(task: str, model: str, suffix: str, when: float | None = None) -> str:
    """A download's file name says what it holds: task, model and time, e.g.
    `ner-bundled-ner-2026-12-01T1718.json` (a model path keeps only its last part)."""
    import re
    import time

    model_part = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(model.rstrip("/")).name or "model").strip("-.") or "model"
    stamp = time.strftime("%Y-%m-%dT%H%M%S", time.localtime(when))
    return f"{task}-{model_part}-{stamp}{suffix}"


def write_export(content: str, suffix: str, task: str = "entities", model: str = "model") -> str:
    """Write an export in a folder named by its content (the same result reuses one file) under a
    file name that says what it holds (export_name): the browser's download keeps that name."""
    digest = hashlib.sha1(content.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    folder = EXPORT_DIR / digest
    existing = sorted(folder.glob(f"*{suffix}")) if folder.is_dir() else []
    if existing:
        return str(existing[0])
    EXPORT_DIR.mkdir(parents=True, exist_ok=True)
    folders = sorted(EXPORT_DIR.iterdir(), key=lambda f: f.stat().st_mtime)
    for old in folders[: max(0, len(folders) - MAX_EXPORT_FILES + 1)]:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    folder.mkdir(exist_ok=True)
    path = folder / export_name(task, model, suffix)
    path.write_text(content, encoding="utf-8")
    return str(path)


def export_folder(parent: Path | None = None, keep: int = MAX_ATTENTION_EXPORTS) -> str:
    """A fresh folder under `parent` for one export; the oldest beyond the newest `keep` are removed."""
    parent = Path(parent or ATTENTION_EXPORT_DIR)
    parent.mkdir(parents=True, exist_ok=True)
    folder = tempfile.mkdtemp(prefix="export-", dir=parent)
    folders = []
    for entry in parent.iterdir():
        try:
            folders.append((entry.stat().st_mtime, entry))
        except OSError:  # removed meanwhile by a concurrent export
            pass
    folders.sort()
    for _, old in folders[: max(0, len(folders) - keep)]:
        if str(old) != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


# ----- Classify -------------------------------------------------------------------------------


def label_confidences(result: ClassificationResult) -> dict[str, float]:
    return {label: float(p) for label, p in zip(result.labels, result.probabilities)}


def classification_info(result: ClassificationResult) -> str:
    if result.mode == "zero-shot":
        verdict = f"most likely label: **{_escape(result.predicted[0])}** (probabilities are relative to the candidates)"
    elif result.multi_label:
        chosen = ", ".join(f"**{_escape(p)}**" for p in result.predicted) or "**none** of the labels"
        verdict = f"multi-label, threshold **{result.threshold:g}**: {chosen}"
    else:
        verdict = f"predicted: **{_escape(result.predicted[0])}**"
    summary = f"**{_escape(result.model)}** · {verdict}  \nSettings: {settings_line(result.settings)}"
    return _with_note(summary, result.settings.get("model", ""))


def label_rows(result: ClassificationResult) -> list[list[Any]]:
    """Every label with its probability (a percentage, as on the chart), most likely first."""
    order = sorted(range(len(result.labels)), key=lambda i: -float(result.probabilities[i]))
    return [[result.labels[i], round(100 * float(result.probabilities[i]), 1),
             "yes" if result.labels[i] in result.predicted else "no"] for i in order]


def labels_json(result: ClassificationResult) -> dict[str, Any]:
    return {
        "text": result.text,
        "settings": result.settings,
        "mode": result.mode,
        "predicted": list(result.predicted),
        "labels": [{"label": label, "probability": round(float(p), 6)}
                   for label, p in zip(result.labels, result.probabilities)],
    }


def labels_csv(result: ClassificationResult) -> str:
    return table_csv(["label", "probability", "assigned"],
                     [[label, round(float(p), 6), "yes" if label in result.predicted else "no"]
                      for label, p in zip(result.labels, result.probabilities)])
