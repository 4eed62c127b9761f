"""Plotly figures built from the engine's results: pure functions, testable without a browser."""

from __future__ import annotations

from typing import TYPE_CHECKING

from biogpt.serving import AnswerResult, ClassificationResult

from .views import visitor_text

if TYPE_CHECKING:
    import plotly.graph_objects as go

ABOVE = "#2f7d4f"  # labels the classifier assigns
BELOW = "#a9b4c2"  # labels it does not
FONT = dict(family="DejaVu Sans, Arial, sans-serif", size=13)


def _figure(height: int) -> "go.Figure":
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.update_layout(
        height=height, margin=dict(l=10, r=20, t=40, b=30), font=FONT, plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)", showlegend=False,
    )
    return figure


def label_chart(result: ClassificationResult) -> "go.Figure":
    """One horizontal bar per label, most likely on top; the multi-label threshold as a line.

    Supervised multi-label scores are independent probabilities (they need not sum to 1);
    single-label and zero-shot scores are a softmax over the labels, which the title says.
    Plotly reads a subset of HTML in text, and zero-shot labels are typed by the visitor: they
    go in escaped, so that `<a href=...>` shows as those characters and not as a link.
    """
    order = sorted(range(len(result.labels)), key=lambda i: result.probabilities[i])
    labels = [visitor_text(result.labels[i]) for i in order]
    values = [float(result.probabilities[i]) for i in order]
    predicted = {visitor_text(label) for label in result.predicted}
    figure = _figure(height=max(220, 34 * len(labels) + 80))
    hover = "%{y}: %{x:.1%}<extra></extra>"
    if result.scores is not None:
        scores = [float(result.scores[i]) for i in order]
        figure.add_bar(x=values, y=labels, orientation="h", customdata=scores,
                       hovertemplate="%{y}: %{x:.1%} (log-likelihood %{customdata:.3f})<extra></extra>",
                       marker_color=[ABOVE if label in predicted else BELOW for label in labels],
                       text=[f"{v:.1%}" for v in values], textposition="auto")
    else:
        figure.add_bar(x=values, y=labels, orientation="h", hovertemplate=hover,
                       marker_color=[ABOVE if label in predicted else BELOW for label in labels],
                       text=[f"{v:.1%}" for v in values], textposition="auto")
    if result.multi_label and result.threshold is not None:
        figure.add_vline(x=result.threshold, line_dash="dash", line_color="#c0392b",
                         annotation_text=f"threshold {result.threshold:g}", annotation_position="top")
        title = "Probability of each label (independent: multi-label)"
    elif result.mode == "zero-shot":
        title = "Relative probability of each candidate label (softmax of log-likelihoods)"
    else:
        title = "Probability of each label"
    figure.update_layout(title=dict(text=title, font=dict(size=14)))
    figure.update_xaxes(range=[0, 1], tickformat=".0%", gridcolor="rgba(128,128,128,0.25)")
    figure.update_yaxes(automargin=True)
    return figure


def answer_chart(result: AnswerResult) -> "go.Figure":
    """PubMedQA's three answers as bars, the chosen one highlighted."""
    figure = _figure(height=220)
    best = result.best
    figure.add_bar(x=result.answers, y=[float(p) for p in result.probabilities],
                   marker_color=[ABOVE if a == best else BELOW for a in result.answers],
                   text=[f"{p:.1%}" for p in result.probabilities], textposition="auto",
                   hovertemplate="%{x}: %{y:.1%}<extra></extra>")
    figure.update_layout(title=dict(text="yes / no / maybe, scored by the model", font=dict(size=14)))
    figure.update_yaxes(range=[0, 1], tickformat=".0%", gridcolor="rgba(128,128,128,0.25)")
    return figure
