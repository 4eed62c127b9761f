"""The heatmap the page redraws by itself: what it needs, and the script that does it (issue 15).

A head, "Show: one head / mean of this layer's heads", "Hide the first-token sink" and "Hide weights
below" change only which numbers of one layer a heatmap shows, so the page redraws them from the layer
it already holds instead of asking the server (a round trip behind other visitors' requests). After
each heatmap the server sends that layer once (`heatmap_payload`): every head's map and the layer's
mean, lower triangles only (the upper one is the blank future), in float16 where that is exact (the
analysis keeps attention weights in float16) and float32 otherwise; the row totals that hiding the
sink divides by; the figure around the numbers (axis labels, height, colour bar; the same whether the
sink is shown or hidden, as a hidden sink is a blank row and column), built by the same
`attention_plots.attention_heatmap` as the server's figure; and the title pieces.
`assets/heatmap_redraw.js` then does what `Analysis.heatmap` does, in the same float32 arithmetic, so a
redrawn heatmap equals the server's figure for the same controls bit for bit
(tests/browser/test_attention_redraw.py compares them). Another layer of the same heatmap: the page
fetches that layer's payload alone (`draw=True`, from ui/layer_route.py, or through the tab's Gradio
event when the route cannot answer) and draws it the same way. Anything else (another view, zoom,
model or text, an aggregate over layers, hiding the sink in a pooled map) the script hands to the server.

Pure: numpy and json, no gradio.
"""

from __future__ import annotations

import base64
import functools
import json
import secrets
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import numpy as np

from biogpt.hub import ASSETS_DIR
from ui import attention_plots as plots

REDRAW_JS = (ASSETS_DIR / "heatmap_redraw.js").read_text(encoding="utf-8")
CLIENT_AGGREGATES = ("head", "heads")  # what the page can redraw: one head, or the mean of the layer's heads


HIDDEN_NOTE = "first token hidden, rows renormalised"
THRESHOLD_NOTE = "weights below {} blank"
NOTES_FORMAT = "<br><span style='font-size:12px'>({})</span>"  # the notes under a heatmap's title (a phone's width cuts one line)


def redraw_js(mode: str) -> str:
    """The page's redraw handler for one of its two uses: "control" (a control changed) or "arrival" (a layer
    came; its handler takes the payload before the controls); see assets/heatmap_redraw.js."""
    if mode == "arrival":  # the payload is the handler's first input
        return f"(payload, ...values) => ({REDRAW_JS})(\"arrival\", payload, ...values)"
    return f"(...values) => ({REDRAW_JS})(\"control\", null, ...values)"


def payload_text(payload: dict | None) -> str:
    """A payload as the page receives it: one JSON string ("null" for none), which the page parses once."""
    return json.dumps(payload, separators=(",", ":"))


def heatmap_what(analysis, aggregate: str, layer: int, head: int) -> str:
    """The start of a heatmap's title: which map it shows (layer and head 0-based here, 1-based on screen)."""
    return {
        "head": f"Layer {layer + 1}, head {head + 1}",
        "heads": f"Layer {layer + 1}, mean of its {analysis.num_heads} heads",
        "layers": f"Head {head + 1}, mean over all {analysis.num_layers} layers",
        "all": f"Mean of all {analysis.num_layers * analysis.num_heads} heads",
        "rollout": f"Attention rollout through layer {layer + 1}",
    }[aggregate]


def heatmap_axis(analysis, cells) -> tuple[list[str], str]:
    """The labels of a heatmap's rows (and columns), and the note on which tokens it shows ("" for all, one a cell)."""
    tokens = analysis.tokens
    if cells.windowed:
        return list(tokens[cells.first : cells.last]), f"tokens {cells.first}–{cells.last - 1} of {analysis.length}"
    if cells.block > 1:
        labels = [f"{tokens[p]} (#{p}–{min(p + cells.block, cells.last) - 1})"
                  for p in range(cells.first, cells.last, cells.block)]
        return labels, (f"{analysis.length:,} tokens in blocks of {cells.block} (the strongest weight of each block); "
                        "set a zoom start to see single tokens")
    return list(tokens[cells.first : cells.last]), ""


def two_decimals(value: float) -> str:
    """`value` to two decimals, a tie rounded up as JavaScript's toFixed(2) does (the page redraws titles too)."""
    return str(Decimal(float(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))


def heatmap_title(what: str, notes: list[str]) -> str:
    return what + (NOTES_FORMAT.format("; ".join(notes)) if notes else "")


def heatmap_view(analysis, c, layer: int, head: int, start: int, side: int):
    """The Heatmap view as the server draws it: (figure, table builder, extra summary text).
    `c` holds the tab's controls; layer and head are 0-based, `start` clamped, `side` the most cells a side."""
    aggregate = c.aggregate if c.aggregate in analysis.AGGREGATES else "head"
    what = heatmap_what(analysis, aggregate, layer, head)
    cells = analysis.heatmap(layer, head, aggregate, hide_first=bool(c.hide_sink), min_weight=float(c.min_weight or 0.0),
                             start=start, max_side=side)
    labels, geometry = heatmap_axis(analysis, cells)
    notes = [HIDDEN_NOTE] if cells.first_hidden else []
    notes += [geometry] if geometry else []
    if c.min_weight and c.min_weight > 0:
        notes.append(THRESHOLD_NOTE.format(two_decimals(c.min_weight)))
    matrix = cells.matrix
    figure = plots.attention_heatmap(matrix, labels, labels, heatmap_title(what, notes),
                                     colorbar="rollout" if aggregate == "rollout" else "attention")

    def table() -> dict:
        return {"columns": ["query \\ key", *labels], "rows": [[r, *floats(v)] for r, v in zip(labels, matrix)],
                "meta": {"view": "heatmap", "what": what, "notes": notes}}

    return figure, table, ""


def floats(values) -> list:
    """Numbers for a CSV/JSON export: rounded to 6 decimals, blank (None) where not finite."""
    return [None if not np.isfinite(v) else round(float(v), 6) for v in np.asarray(values, np.float64)]


# ----- what the page needs to redraw a heatmap itself -------------------------------------------


def _packed(matrix: np.ndarray) -> dict[str, str]:
    """The lower triangle (diagonal included) of a square map, row by row, as little-endian base64:
    float16 when every value survives the trip exactly, else float32."""
    values = np.asarray(matrix, np.float32)[np.tril_indices(matrix.shape[0])]
    half = values.astype(np.float16)
    exact = np.array_equal(half.astype(np.float32), values, equal_nan=True)
    data = half.astype("<f2") if exact else values.astype("<f4")
    return {"dtype": "f2" if exact else "f4", "data": base64.b64encode(data.tobytes()).decode("ascii")}


def _frame(analysis, cells) -> dict[str, Any]:
    """The server's heatmap figure, as gradio sends it, without what a redraw replaces (z, zmax, title)."""
    return json.loads(_frame_json(tuple(heatmap_axis(analysis, cells)[0])))


@functools.lru_cache(maxsize=32)
def _frame_json(labels: tuple[str, ...]) -> str:
    """Plotly builds a figure in tens of ms, most of a layer's payload time, and the frame depends on the
    labels only: the frames of the texts being looked at are kept (a few dozen kB each)."""
    side = len(labels)
    figure = json.loads(plots.attention_heatmap(np.zeros((side, side), np.float32), labels, labels, "").to_json())
    del figure["data"][0]["z"], figure["data"][0]["zmax"]
    return json.dumps(figure)


def heatmap_payload(analysis, text: str, c, layer: int, start: int, side: int, summary: str,
                    draw: bool = False) -> dict[str, Any] | None:
    """What the page needs to redraw this layer's heatmap by itself, or None when the view is not one it can.

    `c` holds the controls the view was drawn with (the payload names the ones that fix it, so the page
    knows when it is stale); `layer` (0-based) and `start` as `render_view` clamped them; `summary` the
    summary line without its timing; `draw`: the page asked for this layer to draw it (a layer change), rather
    than being sent it after a heatmap the server drew."""
    if c.view != "Heatmap" or c.aggregate not in CLIENT_AGGREGATES:
        return None
    hide = bool(c.hide_sink)
    layout = analysis.heatmap(layer, 0, "head", start=start, max_side=side)
    maps = [(h, "head") for h in range(analysis.num_heads)] + [(0, "heads")]  # every head, then the layer's mean
    payload: dict[str, Any] = {
        "id": secrets.token_hex(8), "text": text, "model": c.model or "", "layer_value": c.layer,
        "start_value": c.start if analysis.length > side else None, "length": analysis.length, "heads": analysis.num_heads,
        "pooled": layout.block > 1, "hide": hide, "summary": summary, "draw": draw,
        "what_head": [heatmap_what(analysis, "head", layer, h) for h in range(analysis.num_heads)],
        "what_heads": heatmap_what(analysis, "heads", layer, 0),
        "hidden_note": HIDDEN_NOTE, "threshold_note": THRESHOLD_NOTE, "notes_format": NOTES_FORMAT,
    }
    # The same cells and labels for both toggles (a hidden sink is a blank row and column): one frame.
    payload.update(geometry=heatmap_axis(analysis, layout)[1], frame=_frame(analysis, layout))
    if layout.block > 1:  # the sink is hidden before pooling: a pooled payload holds the maps for this toggle only
        cells = [analysis.heatmap(layer, h, aggregate, hide_first=hide, start=start, max_side=side) for h, aggregate in maps]
        payload.update(maps=[_packed(cell.matrix) for cell in cells])
        return payload
    first, last = layout.first, layout.last
    kept = max(first, 1)  # the first row that hiding the sink renormalises (row #0 is blank then)
    payload.update(
        first=first, last=last,
        maps=[_packed(analysis.attention_map(layer, h, aggregate)[first:last, first:last]) for h, aggregate in maps],
        totals=[base64.b64encode(analysis.hidden_row_totals(layer, h, aggregate)[kept - 1 : last - 1].astype("<f4").tobytes())
                .decode("ascii") for h, aggregate in maps],
    )
    return payload
