"""Plotly figures of the Attention tab, built from biogpt.interpret's numpy results.

Pure functions: arrays and labels in, a `go.Figure` out, no model and no gradio. Numbers go in
as numpy float32 so plotly ships them as compact base64 typed arrays. Token axes are categorical
with labels made unique by invisible zero-width spaces (a text repeats words), which lets plotly
thin the tick labels on long texts by itself while hover still shows each token.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

FONT = "DejaVu Sans, Arial, sans-serif"
# Blues with its light end stretched: most attention weights are small, and a linear scale would
# leave all but the strongest links (often the first-token sink) white. Hover gives exact values.
ATTENTION_SCALE = [[0.0, "#f7fbff"], [0.03, "#deebf7"], [0.1, "#9ecae1"], [0.25, "#4292c6"], [0.55, "#08519c"],
                   [1.0, "#08306b"]]
HEAD_COLOURS = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
    "#bcbd22", "#7f7f7f", "#393b79", "#ad494a", "#637939", "#8c6d31", "#7b4173", "#3182bd",
]
ZERO_WIDTH = "\u200b"
LENS_PLOT_PX = 640  # the logit lens's plot width in a desktop page (1400 px wide), less its margins
CHAR_PX = 7.0  # the widest average character of 10 px DejaVu Sans cell text, with the cell's padding


def _slim_template() -> go.layout.Template:
    """plotly_white's look without its 3-D, polar and geo parts: applying the full template costs
    about 9 ms a figure, a fifth of a view change."""
    import plotly.io as pio

    full = pio.templates["plotly_white"].layout.to_plotly_json()
    keep = ("colorway", "font", "hovermode", "hoverlabel", "paper_bgcolor", "plot_bgcolor", "xaxis", "yaxis",
            "title", "shapedefaults", "annotationdefaults")
    return go.layout.Template(layout={key: full[key] for key in keep if key in full})


TEMPLATE = _slim_template()


def escape(label: str) -> str:
    """Plotly reads a subset of HTML in text: show "<" and ">" literally (e.g. the </s> marker)."""
    return str(label).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def axis_labels(labels: Sequence[str]) -> list[str]:
    """Escaped labels, repeats made unique with zero-width spaces so categories never merge."""
    seen: dict[str, int] = {}
    out = []
    for label in labels:
        text = escape(label) or "␣"
        count = seen.get(text, 0)
        seen[text] = count + 1
        out.append(text + ZERO_WIDTH * count)
    return out


def layer_names(num_layers: int) -> list[str]:
    """Rows of per-layer views: the embeddings, then layer 1..L (the last one is the output)."""
    return ["embeddings"] + [f"layer {i}" for i in range(1, num_layers + 1)]


def _layout(fig: go.Figure, title: str, height: int = 640) -> go.Figure:
    fig.update_layout(
        title=dict(text=title, x=0.01, xanchor="left", font=dict(size=16)),
        template=TEMPLATE, font=dict(family=FONT, size=12), height=height,
        margin=dict(l=90, r=30, t=70, b=90), hoverlabel=dict(font=dict(family=FONT)),
    )
    fig.update_xaxes(automargin=True)  # long rotated token labels (logit lens, heatmaps) get the room they need
    fig.update_yaxes(automargin=True)
    return fig


def message_figure(text: str, title: str = "") -> go.Figure:
    """An empty plot that says what to do next."""
    fig = go.Figure()
    fig.add_annotation(text=escape(text), x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False, font=dict(size=15))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, title, height=320)


# ----- 1. heatmap -----------------------------------------------------------------------------


def attention_heatmap(
    matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], title: str,
    colorbar: str = "attention", zmax: float | None = None,
) -> go.Figure:
    """Query rows against key columns; blank cells are the future (or below the threshold)."""
    matrix = np.asarray(matrix, np.float32)
    finite = matrix[np.isfinite(matrix)]
    top = float(zmax if zmax is not None else (finite.max() if finite.size else 1.0)) or 1.0
    fig = go.Figure(go.Heatmap(
        z=matrix, x=axis_labels(col_labels), y=axis_labels(row_labels), colorscale=ATTENTION_SCALE,
        zmin=0.0, zmax=top, hoverongaps=False, colorbar=dict(title=dict(text=colorbar, side="right"), thickness=14),
        hovertemplate="<b>%{y}</b> attends to <b>%{x}</b><br>weight %{z:.4f}<extra></extra>",
    ))
    # Square cells and one token step on both axes: plotly thins the labels of a category axis by its
    # length in pixels, so with equal axis lengths the rows and the columns label the same tokens, and
    # a tick mark ties each label to its cell (at 238 tokens a label names one cell in five or six).
    ticks = dict(tickfont=dict(size=11), showgrid=False, ticks="outside", ticklen=4, tickcolor="#888")
    fig.update_yaxes(autorange="reversed", title_text="token (query)", scaleanchor="x", scaleratio=1, constrain="domain",
                     constraintoward="top", **ticks)
    fig.update_xaxes(title_text="attends to (key)", tickangle=-60, side="bottom", constrain="domain", **ticks)
    side = max(matrix.shape)
    return _layout(fig, title, height=int(min(820, max(460, 260 + 14 * side))))


# ----- 2. overview ----------------------------------------------------------------------------


def overview_grid(values: np.ndarray, statistic: str, selected: tuple[int, int] | None = None,
                  value_range: tuple[float, float] = (0.0, 1.0)) -> go.Figure:
    """A layers x heads grid coloured by one statistic on a fixed scale (`value_range`, its ends
    marked on the colour bar), so that a 0.37 share never looks saturated; the selected head is outlined."""
    layers, heads = values.shape
    low, high = value_range
    fig = go.Figure(go.Heatmap(
        z=np.asarray(values, np.float32), x=[f"head {h}" for h in range(1, heads + 1)],
        y=[f"layer {number}" for number in range(1, layers + 1)], colorscale="Viridis", zmin=low, zmax=high,
        colorbar=dict(title=dict(text=f"{escape(statistic)} ({low:g}–{high:.3g})", side="right"), thickness=14,
                      tickvals=[low, (low + high) / 2, high], ticktext=[f"{low:g}", f"{(low + high) / 2:.3g}", f"{high:.3g}"]),
        texttemplate="%{z:.2f}" if layers * heads <= 400 else None, textfont=dict(size=10),
        hovertemplate="%{y}, %{x}<br>" + escape(statistic) + " %{z:.3f}<extra></extra>",
    ))
    if selected is not None:
        layer, head = selected
        fig.add_shape(type="rect", x0=head - 0.5, x1=head + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line=dict(color="#e4572e", width=3), xref="x", yref="y")
    fig.update_yaxes(autorange="reversed", showgrid=False)
    fig.update_xaxes(side="top", showgrid=False)
    title = f"{escape(statistic)} of every head ({layers} layers × {heads} heads)"
    return _layout(fig, title, height=int(min(900, max(360, 140 + 26 * layers))))


# ----- 3. token links -------------------------------------------------------------------------


def token_links_figure(
    tokens: Sequence[str], position: int, heads: np.ndarray, positions: np.ndarray, weights: np.ndarray,
    direction: str, layer: int, head: int | None,
) -> go.Figure:
    """bertviz-style lines from one token to the tokens it is most linked with, one colour a head.

    Only the linked tokens are listed (in text order), so a 1,024-token text stays readable.
    """
    others = sorted(set(int(p) for p in positions))
    if not others:
        return message_figure("This token has no attention links here.")
    slot = {p: i for i, p in enumerate(others)}
    span = max(len(others) - 1, 1)
    y_of = {p: 1 - i / span if len(others) > 1 else 0.5 for p, i in slot.items()}
    fig = go.Figure()
    links = sorted(zip(heads.tolist(), positions.tolist(), weights.tolist()), key=lambda x: x[2])
    if len(set(heads.tolist())) == 1:
        # One head: one line per link, width and opacity following the weight.
        groups = [(h, [(p, w)], w) for h, p, w in links]
    else:
        # Every head: one trace per head and strength band (3 bands), so 16 heads stay quick to draw.
        bands: dict[tuple[int, int], list[tuple[int, float]]] = {}
        for h, p, w in links:
            bands.setdefault((h, 0 if w < 0.1 else 1 if w < 0.3 else 2), []).append((p, w))
        groups = [(h, items, (0.05, 0.2, 0.5)[band]) for (h, band), items in sorted(bands.items())]
    shown: set[int] = set()
    for h, items, w in groups:
        colour = HEAD_COLOURS[h % len(HEAD_COLOURS)]
        xs, ys, names = [], [], []
        for p, weight in items:
            xs += [0, 1, None]
            ys += [0.5, y_of[p], None]
            names += [f"{escape(tokens[p])} (#{p}): {weight:.3f}"] * 3
        fig.add_trace(go.Scatter(
            x=xs, y=ys, mode="lines", line=dict(color=colour, width=1 + 11 * w), opacity=0.35 + 0.65 * min(w, 1.0),
            legendgroup=f"h{h}", name=f"head {h + 1}", showlegend=h not in shown, text=names,
            hovertemplate=f"head {h + 1}<br>%{{text}}<extra></extra>",
        ))
        shown.add(h)
    fig.add_trace(go.Scatter(
        x=[0], y=[0.5], mode="markers+text", text=[f"<b>{escape(tokens[position])}</b> (#{position})"],
        textposition="middle left", marker=dict(size=12, color="#e4572e"), showlegend=False, hoverinfo="skip",
    ))
    strongest = {}
    for h, p, w in zip(heads.tolist(), positions.tolist(), weights.tolist()):
        strongest[p] = max(strongest.get(p, 0.0), w)
    fig.add_trace(go.Scatter(
        x=[1] * len(others), y=[y_of[p] for p in others], mode="markers+text",
        text=[f"{escape(tokens[p])} (#{p})  <span style='color:#888'>{strongest[p]:.3f}</span>" for p in others],
        textposition="middle right",
        marker=dict(size=8, color="#444"), showlegend=False, hoverinfo="skip",
    ))
    fig.update_xaxes(visible=False, range=[-0.9, 1.9])
    fig.update_yaxes(visible=False, range=[-0.08, 1.08])
    who = f"head {head + 1}" if head is not None else "every head"
    verb = "attends to" if direction == "to" else "is attended by"
    title = f"“{escape(tokens[position])}” {verb}: strongest links in layer {layer + 1}, {who}"
    fig.update_layout(legend=dict(orientation="v", x=1.0, y=1.0))
    return _layout(fig, title, height=int(min(900, max(420, 120 + 26 * len(others)))))


# ----- 4. hidden states -----------------------------------------------------------------------


def hidden_states_figure(
    norms: np.ndarray, tokens: Sequence[str], coords: np.ndarray, traced: Sequence[int], explained: np.ndarray,
) -> go.Figure:
    """Top: the norm of every token's hidden state at every layer. Bottom: the PCA trajectory of
    the traced tokens from the embeddings (circle) to the last layer (star)."""
    steps = norms.shape[0]
    names = layer_names(steps - 1)
    fig = make_subplots(
        rows=2, cols=1, row_heights=[0.42, 0.58], vertical_spacing=0.16,
        subplot_titles=("Hidden-state norm per layer and token (the last row is after the final layer norm)",
                        f"PCA of the traced tokens through the layers "
                        f"(axes explain {100 * explained[0]:.0f}% and {100 * explained[1]:.0f}% of the variance)"),
    )
    fig.add_trace(go.Heatmap(
        z=np.asarray(norms, np.float32), x=axis_labels(tokens), y=names, colorscale="Viridis",
        colorbar=dict(title=dict(text="norm", side="right"), thickness=14, len=0.4, y=0.8),
        hovertemplate="<b>%{x}</b> at %{y}<br>norm %{z:.2f}<extra></extra>",
    ), row=1, col=1)
    for i, position in enumerate(traced):
        colour = HEAD_COLOURS[i % len(HEAD_COLOURS)]
        label = escape(tokens[position])
        fig.add_trace(go.Scatter(
            x=coords[i, :, 0], y=coords[i, :, 1], mode="lines+markers", name=f"{label} (#{position})",
            line=dict(color=colour, width=2), marker=dict(size=7, color=colour,
            symbol=["circle"] + ["circle-open"] * (steps - 2) + ["star"]),
            text=names, hovertemplate=f"{label}: %{{text}}<extra></extra>",
        ), row=2, col=1)
    fig.update_yaxes(autorange="reversed", row=1, col=1, showgrid=False)
    fig.update_xaxes(tickangle=-60, row=1, col=1, showgrid=False)
    fig.update_xaxes(title_text="PC 1", row=2, col=1, zeroline=False)
    fig.update_yaxes(title_text="PC 2", row=2, col=1, zeroline=False)
    fig.update_layout(legend=dict(y=0.5, x=1.02, yanchor="top"))
    return _layout(fig, "Hidden states: how big each representation is, and where it moves", height=860)


# ----- 5. logit lens --------------------------------------------------------------------------


def logit_lens_figure(
    top_probs: np.ndarray, top_labels: np.ndarray, tokens: Sequence[str], first: int, total: int,
    watch_ranks: np.ndarray | None = None, watch_labels: Sequence[str] = (), watch_position: int | None = None,
) -> go.Figure:
    """Layers x positions: each cell the lens's top token and its probability (after reading that
    column's token). With a watch list, a second panel ranks the watched tokens layer by layer."""
    steps, width, k = top_probs.shape
    names = layer_names(steps - 1)
    names[-1] += " (output)"
    rows = 2 if watch_ranks is not None and len(watch_labels) else 1
    watched = (escape(tokens[watch_position - first])
               if watch_position is not None and first <= watch_position < first + width else watch_position)
    fig = make_subplots(rows=rows, cols=1, vertical_spacing=0.22, row_heights=[0.62, 0.38] if rows == 2 else [1.0],
                        subplot_titles=(None, None) if rows == 1 else ("", f"Rank of the watched tokens after “{watched}”"))
    labels = np.vectorize(escape, otypes=[object])(top_labels)
    hover = np.empty((steps, width), dtype=object)
    for s in range(steps):
        for c in range(width):
            hover[s, c] = "<br>".join(f"{labels[s, c, j]}  {top_probs[s, c, j]:.3f}" for j in range(min(k, 5)))
    # Plotly neither clips nor shrinks a cell's text: cut each label to what a cell of a desktop-wide
    # plot holds (on a phone the page's style hides cell text; a tap shows the hover).
    fits = int(LENS_PLOT_PX / width / CHAR_PX)
    cell_text = [[escape(shorten(str(x), fits)) for x in row] for row in top_labels[:, :, 0]]
    fig.add_trace(go.Heatmap(
        z=top_probs[:, :, 0].astype(np.float32), x=axis_labels(tokens), y=names, colorscale="Blues",
        zmin=0.0, zmax=1.0, text=cell_text, customdata=hover,
        texttemplate="%{text}" if fits >= 3 else None, textfont=dict(size=10),
        colorbar=dict(title=dict(text="top-1 probability", side="right"), thickness=14, len=0.6 if rows == 2 else 1,
                      y=0.7 if rows == 2 else 0.5),
        hovertemplate="after <b>%{x}</b>, %{y}:<br>%{customdata}<extra></extra>",
    ), row=1, col=1)
    fig.update_yaxes(autorange="reversed", showgrid=False, row=1, col=1)
    fig.update_xaxes(tickangle=-60, showgrid=False, row=1, col=1,
                     title_text="each cell: the next token that layer predicts<br>after reading this column's token",
                     title_font=dict(size=12))
    if rows == 2:
        for i, label in enumerate(watch_labels):
            fig.add_trace(go.Scatter(
                x=names, y=watch_ranks[:, i], mode="lines+markers", name=escape(label),
                line=dict(color=HEAD_COLOURS[i % len(HEAD_COLOURS)], width=2),
                hovertemplate=f"{escape(label)} at %{{x}}: rank %{{y:,}}<extra></extra>",
            ), row=2, col=1)
        fig.update_yaxes(type="log", autorange="reversed", title_text="rank (1 = top)", row=2, col=1)
        fig.update_xaxes(tickangle=-45, row=2, col=1)
        fig.update_layout(legend=dict(orientation="h", x=0, y=-0.12, yanchor="top", title_text="watched: "))
    shown = f"tokens {first + 1}–{first + width} of {total}" if width < total else f"all {total} tokens"
    title = f"Logit lens ({shown})"  # short enough for a phone; the x axis says what a cell is
    return _layout(fig, title, height=int(max(460, 210 + 24 * steps) + (340 if rows == 2 else 0)))


def shorten(label: str, limit: int = 9) -> str:
    return label if len(label) <= limit else label[: max(limit - 1, 1)] + "…"


# ----- 6. generation replay -------------------------------------------------------------------


def generation_figure(
    rows: np.ndarray, tokens: Sequence[str], prompt_length: int, step: int, chosen_prob: float, title_what: str,
) -> go.Figure:
    """Top: at one step, the attention of the token the model had just read over everything
    before it. Bottom: every step at once (rows: the token chosen at that step)."""
    steps, width = rows.shape
    labels = axis_labels(tokens[:width])
    read = prompt_length + step - 1
    colours = ["#9ecae1" if i < prompt_length else "#fd8d3c" for i in range(read + 1)]
    fig = make_subplots(rows=2, cols=1, vertical_spacing=0.2, row_heights=[0.45, 0.55],
                        subplot_titles=("Attention at this step (blue: prompt, orange: generated)", "All steps"))
    fig.add_trace(go.Bar(
        x=labels[: read + 1], y=rows[step, : read + 1].astype(np.float32), marker_color=colours, showlegend=False,
        hovertemplate="%{x}: %{y:.4f}<extra></extra>",
    ), row=1, col=1)
    new = [f"→ {escape(t)}" for t in tokens[prompt_length : prompt_length + steps]]
    grid = rows.astype(np.float32).copy()
    for s in range(steps):
        grid[s, prompt_length + s :] = np.nan
    fig.add_trace(go.Heatmap(
        z=grid, x=labels, y=axis_labels(new), colorscale=ATTENTION_SCALE, zmin=0.0, hoverongaps=False,
        colorbar=dict(title=dict(text="attention", side="right"), thickness=14, len=0.5, y=0.25),
        hovertemplate="choosing <b>%{y}</b>, on <b>%{x}</b>: %{z:.4f}<extra></extra>",
    ), row=2, col=1)
    fig.add_shape(type="rect", xref="x2 domain", yref="y2", x0=0, x1=1, y0=step - 0.5, y1=step + 0.5,
                  line=dict(color="#e4572e", width=2))
    fig.update_yaxes(autorange="reversed", showgrid=False, row=2, col=1)
    fig.update_xaxes(tickangle=-60, showgrid=False, row=2, col=1)
    fig.update_xaxes(tickangle=-60, row=1, col=1)
    fig.update_yaxes(title_text="weight", row=1, col=1)
    chosen = escape(tokens[prompt_length + step])
    title = (f"Step {step + 1} of {steps}: reading “{escape(tokens[read])}”, the model chose “{chosen}” "
             f"(p = {chosen_prob:.2f}) · {title_what}")
    return _layout(fig, title, height=int(min(1000, 560 + 14 * steps)))


# ----- 7. ablation ----------------------------------------------------------------------------


def ablation_figure(labels: Sequence[str], before: np.ndarray, after: np.ndarray, heads_text: str, kl: float) -> go.Figure:
    """The next-token candidates with every head (grey) and with the chosen heads off (orange)."""
    names = axis_labels(labels)
    fig = go.Figure([
        go.Bar(y=names, x=np.asarray(before, np.float32), orientation="h", name="all heads", marker_color="#9e9e9e",
               hovertemplate="%{y}: %{x:.4f}<extra>all heads</extra>"),
        go.Bar(y=names, x=np.asarray(after, np.float32), orientation="h", name=f"without {escape(heads_text)}",
               marker_color="#fd8d3c", hovertemplate="%{y}: %{x:.4f}<extra>ablated</extra>"),
    ])
    fig.update_layout(barmode="group", legend=dict(orientation="h", y=-0.12))
    fig.update_yaxes(autorange="reversed", title_text="next token")
    fig.update_xaxes(title_text="probability", rangemode="tozero")
    title = f"Next token with and without {escape(heads_text)} (KL divergence {kl:.3f} nats)"
    return _layout(fig, title, height=int(max(380, 150 + 34 * len(labels))))
