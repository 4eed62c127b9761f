"""Plotly figures built from the engine's results: pure functions, testable without a browser."""

from __future__ import annotations

from typing import TYPE_CHECKING

from biogpt.serving import AnswerResult, ClassificationResult

from .views import visitor_text

if TYPE_CHECKING:
    import plotly.graph_objects as go

ABOVE = "#2f7d4f"  # labels the classifier assigns
BELOW = "#a9b4c2"  # labels it does not
LABEL_LINE = 18  # characters per line of a bar's label
FONT = dict(family="DejaVu Sans, Arial, sans-serif", size=13)


def _figure(height: int) -> "go.Figure":
    import plotly.graph_objects as go

    figure = go.Figure()
    figure.update_layout(
        height=height, margin=dict(l=10, r=20, t=40, b=30), font=FONT, plot_bgcolor="rgba(0,0,0,0)",
        paper_bgcolor="rgba(0,0,0,0)", showlegend=False,
    )
    return figure


def wrapped(label: str, width: int = LABEL_LINE) -> str:
    """A label as escaped lines of about `width` characters: long HoC names would otherwise take the
    width of a phone's screen from the bars."""
    import textwrap

    return "<br>".join(visitor_text(line) for line in textwrap.wrap(label, width) or [""])


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
    figure = _figure(height=max(240, 40 * len(labels) + 110))
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
        title = "Probability of each label<br>(independent: multi-label)"
    elif result.mode == "zero-shot":
        title = "Relative probability of each candidate label<br>(softmax of log-likelihoods)"
    else:
        title = "Probability of each label"
    # Two-line titles sit below the plot's toolbar (top right), which would cover them on a phone.
    figure.update_layout(title=dict(text=title, font=dict(size=14), y=0.97, yanchor="top"), margin=dict(t=80))
    figure.update_xaxes(range=[0, 1], tickformat=".0%", gridcolor="rgba(128,128,128,0.25)")
    # The bars keep the labels as data; the axis shows them wrapped, so long names leave a phone's width to the bars.
    figure.update_yaxes(automargin=True, tickvals=labels, ticktext=[wrapped(result.labels[i]) for i in order])
    return figure


def answer_chart(result: AnswerResult, gold: str = "") -> "go.Figure":
    """PubMedQA's three answers by log-likelihood, not by softmax: a softmax over three sums of
    token log-probabilities turns a lead of a few nats into a 99% bar even when the model knows
    nothing of the task. Bars of log-likelihood show a near-tie as a near-tie. The gold answer of
    an example is marked on its tick."""
    figure = _figure(height=240)
    best = result.best
    names = [f"{a} (gold)" if a == gold else a for a in result.answers]
    values = [float(v) for v in result.log_likelihoods]
    floor = min(values) - 1.0  # bars start one nat below the worst answer, so the longest is preferred
    figure.add_bar(x=[v - floor for v in values], base=floor, y=names, orientation="h", customdata=values,
                   marker_color=[ABOVE if a == best else BELOW for a in result.answers],
                   text=[f"{v:.2f}" for v in values], textposition="auto",
                   hovertemplate="%{y}: log-likelihood %{customdata:.2f}<extra></extra>")
    trained = "pubmedqa" in str(result.settings.get("model", "")).lower()
    # Short lines: the title must fit a phone's 390 px.
    title = "Each answer's log-likelihood<br>(longer = preferred; not a probability)"
    if not trained:
        title += "<br>not trained for PubMedQA: uninformed"
    figure.update_layout(title=dict(text=title, font=dict(size=13)), margin=dict(l=10, r=20, t=80 if trained else 95, b=30),
                         height=260 if trained else 275)
    figure.update_xaxes(range=[floor, max(values) + 0.5], gridcolor="rgba(128,128,128,0.25)",
                        title_text="log-likelihood (nats)")
    figure.update_yaxes(automargin=True, autorange="reversed")
    return figure
