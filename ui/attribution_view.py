"""The Attention tab's attribution view, built from `biogpt.interpret.Attribution`: pure functions.

Shown at word or token level: the text coloured by each piece's score (escaped HTML), a bar chart
of the scores beside the attention rollout of the same position (so a teacher can point at where
attention and attribution disagree), and a summary saying what was explained and, for integrated
gradients, how far the scores are from completeness and how many steps it took.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from .attention_plots import FONT, TEMPLATE, axis_labels

LEVELS = ("word", "token")
METHOD_NAMES = {"gradient_x_input": "gradient × input", "integrated_gradients": "integrated gradients",
                "occlusion": "occlusion"}
POSITIVE, NEGATIVE = "#b2182b", "#2166ac"  # red pushed the explained value up, blue pushed it down


def pieces(attribution, level: str) -> tuple[list[str], np.ndarray, np.ndarray | None]:
    """(labels, scores, rollout) at `level`: words sum their tokens' scores and rollout shares."""
    if level not in LEVELS:
        raise ValueError(f"The level must be one of {', '.join(LEVELS)}, got {level!r}.")
    rollout = None if attribution.rollout is None else np.asarray(attribution.rollout, dtype=np.float64)
    if level == "token":
        return list(attribution.tokens), np.asarray(attribution.token_scores, dtype=np.float64), rollout
    if rollout is not None:
        rollout = np.array([rollout[start:end].sum() for start, end in attribution.word_tokens])
    return list(attribution.words), np.asarray(attribution.word_scores, dtype=np.float64), rollout


def score_colour(score: float, largest: float) -> str:
    """A light red (positive) or blue (negative) background, stronger for larger |score|; the
    text on it stays dark, so it reads at any strength."""
    share = min(abs(score) / largest, 1.0) if largest > 0 else 0.0
    hue = 0 if score >= 0 else 215
    return f"hsl({hue}, 75%, {97 - 30 * share:.0f}%)"


def coloured_html(attribution, level: str = "word") -> str:
    """The text read, each word (or token) on its score's colour, the score in its tooltip."""
    labels, scores, _ = pieces(attribution, level)
    largest = float(np.abs(scores).max()) if len(scores) else 0.0
    spans = []
    for label, score in zip(labels, scores):
        tip = f"{label}: {score:+.4f}"
        spans.append(f'<span class="attr-piece" style="background:{score_colour(score, largest)}" '
                     f'title="{html.escape(tip)}" data-score="{score:.6g}">{html.escape(label)}</span>')
    target = html.escape(_question(attribution))
    return (f'<div class="attribution-text" aria-label="{target}">{" ".join(spans)}'
            f'<span class="attr-target"> → <strong>{html.escape(attribution.target)}</strong></span></div>'
            '<div class="hint">Red pushed the explained value up, blue pushed it down; stronger colour, larger share. '
            "Hover a piece for its score.</div>")


def attribution_figure(attribution, level: str = "word") -> go.Figure:
    """Attribution bars (left) beside attention rollout of the same position (right), one row a piece."""
    labels, scores, rollout = pieces(attribution, level)
    names = axis_labels(labels)
    columns = 2 if rollout is not None else 1
    titles = [f"{METHOD_NAMES.get(attribution.method, attribution.method)} (nats)"]
    if rollout is not None:
        titles.append("attention rollout (share)")
    figure = make_subplots(rows=1, cols=columns, shared_yaxes=True, horizontal_spacing=0.06, subplot_titles=titles)
    figure.add_trace(go.Bar(x=scores.astype(np.float32), y=names, orientation="h", name="attribution",
                            marker_color=[POSITIVE if s >= 0 else NEGATIVE for s in scores],
                            hovertemplate="%{y}: %{x:+.4f}<extra></extra>"), row=1, col=1)
    if rollout is not None:
        figure.add_trace(go.Bar(x=rollout.astype(np.float32), y=names, orientation="h", name="rollout",
                                marker_color="#6a51a3", hovertemplate="%{y}: %{x:.3f}<extra></extra>"), row=1, col=2)
    figure.update_yaxes(autorange="reversed", type="category")
    figure.update_layout(template=TEMPLATE, font_family=FONT, showlegend=False, bargap=0.15,
                         height=max(260, 22 * len(labels) + 90), margin=dict(l=10, r=10, t=40, b=30),
                         title=dict(text=axis_labels([_question(attribution)])[0], font_size=13))
    return figure


def attribution_summary(attribution) -> str:
    """Markdown: what was explained, f(input), and for integrated gradients the completeness check."""
    lines = [f"**{_escape_md(_question(attribution))}** · {METHOD_NAMES.get(attribution.method, attribution.method)}"
             + (f" ({attribution.occlusion} each piece)" if attribution.occlusion else "")
             + f" · f = {attribution.value:.4f} nats · {attribution.seconds:.2f} s"]
    if attribution.completeness_gap is not None:
        within = abs(attribution.completeness_gap) <= attribution.completeness_tolerance
        baseline = "padding" if attribution.baseline == "padding" else f"the text “{_escape_md(attribution.baseline)}”"
        lines.append(
            f"Baseline: {baseline}, f(baseline) = {attribution.baseline_value:.4f} · scores sum to "
            f"{float(np.sum(attribution.token_scores)):.4f} = f − f(baseline) "
            f"{'within' if within else 'OUTSIDE'} the tolerance: gap {attribution.completeness_gap:+.2e} "
            f"(tolerance {attribution.completeness_tolerance:.1e}) · {attribution.steps} steps")
    return "  \n".join(lines)


def attribution_json(attribution) -> dict[str, Any]:
    """The result as plain JSON (the API's and the export's form)."""
    return {
        "method": attribution.method, "position": attribution.position, "target": attribution.target,
        "target_id": attribution.target_id, "contrast": attribution.contrast, "contrast_id": attribution.contrast_id,
        "value": attribution.value, "baseline": attribution.baseline, "baseline_value": attribution.baseline_value,
        "completeness_gap": attribution.completeness_gap, "completeness_tolerance": attribution.completeness_tolerance,
        "steps": attribution.steps, "occlusion": attribution.occlusion,
        "tokens": [{"token": t, "id": int(i), "score": float(s)}
                   for t, i, s in zip(attribution.tokens, attribution.token_ids, attribution.token_scores)],
        "words": [{"word": w, "tokens": list(r), "score": float(s)}
                  for w, r, s in zip(attribution.words, attribution.word_tokens, attribution.word_scores)],
        "rollout": None if attribution.rollout is None else [float(v) for v in attribution.rollout],
    }


def _question(attribution) -> str:
    asked = f"Why “{attribution.target}”"
    if attribution.contrast is not None:
        asked += f" rather than “{attribution.contrast}”"
    return f"{asked} after token #{attribution.position - 1}?"


def _escape_md(text: str) -> str:
    """Visitor text inside Markdown: HTML escaped, Markdown's emphasis and code marks neutralised."""
    return html.escape(str(text), quote=False).replace("*", "\\*").replace("_", "\\_").replace("`", "'")
