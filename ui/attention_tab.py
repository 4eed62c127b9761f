"""The Attention tab: see inside BioGPT, from one head to the logit lens, without recomputing.

Thin by design: every control calls `render_view` with the whole state of the controls; it asks
the engine for the analysis (cached by model and text, so only a new text runs the model), picks
the numbers one view needs from it (the `Analysis` and the engine's views), and hands them to a
builder in `ui.attention_plots`. `/attention` on the API is the same function with the text first
and every other argument defaulted: the fields of `Controls`, listed once. The heatmap's head, Show,
sink toggle and threshold are the exception: the page redraws them from the layer the server sent
after the heatmap (`ui.attention_heatmap`), and asks `render_view` only when it cannot.

Positions are numbered from 0 (token #0 is the `</s>` marker BioGPT puts first, so the text's
first token is #1); layers and heads are numbered from 1 as in papers.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ui import attention_plots as plots
from ui import glossary, link_wiring, views
from ui.attention_heatmap import floats as _floats
from ui.attention_heatmap import heatmap_payload, heatmap_view, payload_text, redraw_js
from ui.report import ReportSection, build_report, write_report

VIEWS = ("Heatmap", "Overview", "Token links", "Hidden states", "Logit lens", "Generation replay", "Ablation")
AGGREGATE_CHOICES = [
    ("One head", "head"), ("Mean of this layer's heads", "heads"), ("Mean of this head across layers", "layers"),
    ("Mean of every head", "all"), ("Rollout up to this layer", "rollout"),
]
DIRECTION_CHOICES = [("What it attends to", "to"), ("What attends to it", "from")]
HEATMAP_SIDE = 256  # cells a side a heatmap sends at most: larger texts are pooled or windowed
LENS_WINDOW = 16  # positions the logit lens shows at once (each cell carries a word)
TRACE_DEFAULT = 5  # tokens the PCA traces when none are named

EXPLANATIONS = {
    "Heatmap": (
        "Each row is a token and shows how it spreads its attention over the tokens before it (the columns); "
        "darker means more, and the upper-right half is blank because BioGPT reads left to right. "
        "Many heads park spare attention on the first token, the `</s>` “sink”: hide it to see the rest, or "
        "switch to an average or to rollout, which follows attention through all the layers below."
    ),
    "Overview": (
        "Every cell is one attention head, coloured by the statistic you choose, so heads with a clear job stand "
        "out: previous-token heads, heads that sit on the first-token sink, heads that look far back. "
        "The outlined cell is the head chosen with the layer and head sliders; move them and switch to Heatmap "
        "to look inside it."
    ),
    "Token links": (
        "Lines join the chosen token to the tokens it attends to most (or that attend to it most), one colour "
        "per head, thicker for stronger attention (the number is the strongest weight). Only the strongest links are "
        "drawn, so even a 1,024-token text stays readable; under Show, “One head” draws one head, any other choice every head."
    ),
    "Hidden states": (
        "The top panel shows how large each token's internal representation (the residual stream) is after every "
        "layer; it usually grows with depth. The bottom panel flattens the traced tokens' representations to "
        "two dimensions (PCA), so you can watch each one travel from its embedding (circle) to the last layer (star). "
        "The “embeddings” row is the input to layer 1: each token's embedding plus its position's, before any layer."
    ),
    "Logit lens": (
        "Each cell is the token the model would predict next if it stopped at that layer (the final layer norm "
        "and output projection applied early), shaded by its probability; reading down a column you watch the "
        "prediction form, and the last row is the model's real output. Type words in the watch list to follow "
        "their rank, layer by layer, after the chosen token. The “embeddings” row reads the input itself (token plus "
        "position embedding, before any layer) through the output head."
    ),
    "Generation replay": (
        "The model continues the text greedily, one token at a time, and the attention is read from that decoding "
        "itself: at each step, the bars show where the token it had just read was looking when the next one was "
        "chosen. Step through to see new tokens lean on the prompt, on each other, or on the first-token sink."
    ),
    "Ablation": (
        "Switch chosen heads off (their attention weights multiplied by zero) and compare the model's next-token "
        "probabilities with and without them. A big change means those heads matter for this prediction; small "
        "changes are common, because many heads are redundant."
    ),
}


@dataclass
class ViewResult:
    figure: Any
    explanation: str
    summary: str
    table: Callable[[], dict]  # the view's numbers for CSV/JSON, built only when asked for


@dataclass
class Controls:
    """Every control of the tab, in the order of the API's parameters after the text; `render_view`
    reads the ones its view needs. The handler's signature and the tab's inputs follow these fields."""

    view: str = "Heatmap"
    model: str | None = None
    layer: int = 1
    head: int = 1
    aggregate: str = "head"
    hide_sink: bool = False
    min_weight: float = 0.0
    start: int = 0
    statistic: str = "entropy"
    token: str = ""
    direction: str = "to"
    links: int = 8
    trace: str = ""
    watch: str = ""
    heads_off: str = ""
    continue_tokens: int = 0
    new_tokens: int = 20
    step: int = 1


def _clamp(value: Any, low: int, high: int) -> int:
    try:
        number = int(round(float(value)))
    except (TypeError, ValueError, OverflowError):  # inf, "1e999" and 400-digit numbers too
        number = low
    return max(low, min(high, number))


def _analysis(engine, text: str, model: str | None):
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Type or paste a biomedical text first, then press Analyse.")
    return engine.analyze(text, model or None)


def render_view(engine, text: str, controls: Controls) -> ViewResult:
    """The figure, explanation and summary line of one view; raises ValueError with a readable message."""
    started = time.perf_counter()
    was_cached = engine.cached_analysis(text, controls.model or None) is not None
    analysis = _analysis(engine, text, controls.model)
    view = controls.view if controls.view in VIEWS else "Heatmap"
    layer = _clamp(controls.layer, 1, analysis.num_layers) - 1
    head = _clamp(controls.head, 1, analysis.num_heads) - 1
    builder = {
        "Heatmap": _heatmap, "Overview": _overview, "Token links": _links, "Hidden states": _hidden,
        "Logit lens": _lens, "Generation replay": _generation, "Ablation": _ablation,
    }[view]
    figure, table, extra = builder(engine, analysis, controls, layer, head)
    elapsed = time.perf_counter() - started
    source = "from the cache" if was_cached else f"analysed in {analysis.seconds:.2f} s"
    summary = f"{summary_head(analysis, source)} · this view took {1000 * elapsed:.0f} ms"
    if extra:
        summary += "\n\n" + extra
    return ViewResult(figure, EXPLANATIONS[view], summary, table)


def summary_head(analysis, source: str) -> str:
    """The summary line under a view, up to its timing: the text's length, the model and its shape, and
    whether the analysis ran now or came from the cache."""
    return (f"**{analysis.length:,} tokens** · {analysis.model_id} · {analysis.num_layers} layers × "
            f"{analysis.num_heads} heads · {source}")


def redraw_data(engine, text: str, c: Controls, draw: bool = False) -> dict | None:
    """What the page needs to redraw the heatmap drawn with these controls by itself (see ui.attention_heatmap;
    `draw`: the page asked for it to draw it); None for another view, or when the analysis is no longer cached."""
    analysis = engine.cached_analysis(text, c.model or None) if isinstance(text, str) and text.strip() else None
    if analysis is None:
        return None
    layer = _clamp(c.layer, 1, analysis.num_layers) - 1
    start = _clamp(c.start, 0, max(analysis.length - 1, 0))
    return heatmap_payload(analysis, text, c, layer, start, HEATMAP_SIDE, summary_head(analysis, "from the cache"), draw)


# ----- the views ------------------------------------------------------------------------------


def _heatmap(engine, analysis, c: Controls, layer: int, head: int):
    return heatmap_view(analysis, c, layer, head, _clamp(c.start, 0, max(analysis.length - 1, 0)), HEATMAP_SIDE)


def statistic_range(key: str, length: int) -> tuple[float, float]:
    """The fixed colour range of a head statistic, so that a colour reads the same in every text:
    shares 0-1, entropy 0 to ln(length) (attention spread evenly over every token), distance 0 to length - 1."""
    return {"entropy": (0.0, float(np.log(max(length, 2)))), "distance": (0.0, float(max(length - 1, 1)))}.get(
        key, (0.0, 1.0))


def _overview(engine, analysis, c: Controls, layer: int, head: int):
    key = c.statistic if c.statistic in analysis.STATISTICS else "entropy"
    values = analysis.head_statistics()[key]
    label = analysis.STATISTICS[key]
    figure = plots.overview_grid(values, label, selected=(layer, head), value_range=statistic_range(key, analysis.length))

    def table() -> dict:
        stats = analysis.head_statistics()
        rows = [[layer_index + 1, h + 1, *[float(stats[name][layer_index, h]) for name in analysis.STATISTICS]]
                for layer_index in range(analysis.num_layers) for h in range(analysis.num_heads)]
        return {"columns": ["layer", "head", *analysis.STATISTICS.values()], "rows": rows, "meta": {"view": "overview"}}

    return figure, table, f"Selected: layer {layer + 1}, head {head + 1}: {label.lower()} {values[layer, head]:.3f}."


def _links(engine, analysis, c: Controls, layer: int, head: int):
    position = analysis.find_token(c.token)
    direction = c.direction if c.direction in ("to", "from") else "to"
    one_head = head if c.aggregate == "head" else None
    top = _clamp(c.links, 1, 30)
    heads, positions, weights = analysis.token_links(layer, position, one_head, direction, top)
    figure = plots.token_links_figure(analysis.tokens, position, heads, positions, weights, direction, layer, one_head)

    def table() -> dict:
        rows = [[layer + 1, int(h) + 1, position, analysis.tokens[position], int(p), analysis.tokens[p], float(w)]
                for h, p, w in zip(heads, positions, weights)]
        return {"columns": ["layer", "head", "position", "token", "other position", "other token", "weight"],
                "rows": rows, "meta": {"view": "token links", "direction": direction}}

    return figure, table, ""


def _traced_positions(analysis, spec: str) -> list[int]:
    if spec and spec.strip():
        positions = [analysis.find_token(part) for part in spec.split(",") if part.strip()]
        return list(dict.fromkeys(positions))[:12]
    candidates = list(range(1, analysis.length)) or [0]
    picks = np.linspace(0, len(candidates) - 1, min(TRACE_DEFAULT, len(candidates))).round().astype(int)
    return list(dict.fromkeys(candidates[i] for i in picks))


def _hidden(engine, analysis, c: Controls, layer: int, head: int):
    norms = analysis.hidden_norms()
    traced = _traced_positions(analysis, c.trace)
    coords, explained = analysis.pca(traced)
    figure = plots.hidden_states_figure(norms, analysis.tokens, coords, traced, explained)

    def table() -> dict:
        names = plots.layer_names(analysis.num_layers)
        rows = [[names[s], i, analysis.tokens[i], float(norms[s, i])]
                for s in range(norms.shape[0]) for i in range(analysis.length)]
        pca = [[analysis.tokens[p], p, names[s], float(coords[n, s, 0]), float(coords[n, s, 1])]
               for n, p in enumerate(traced) for s in range(coords.shape[1])]
        return {"columns": ["layer", "position", "token", "norm"], "rows": rows,
                "meta": {"view": "hidden states", "pca_columns": ["token", "position", "layer", "pc1", "pc2"],
                         "pca": pca, "explained_variance": _floats(explained)}}

    return figure, table, ""


def _lens(engine, analysis, c: Controls, layer: int, head: int):
    lens = engine.logit_lens(analysis)
    first, last = analysis.window(_clamp(c.start, 0, analysis.length - 1), LENS_WINDOW)
    words = [w for w in (c.watch or "").split(",") if w.strip()][:8]
    watch = None
    position = analysis.find_token(c.token)
    if words:
        watch = engine.watch_tokens(analysis, position, words)
    figure = plots.logit_lens_figure(
        lens.probs[:, first:last], lens.labels[:, first:last], analysis.tokens[first:last], first, analysis.length,
        watch.ranks if watch else None, watch.labels if watch else (), position,
    )
    names = plots.layer_names(analysis.num_layers)

    def table() -> dict:
        rows = [[names[s], i, analysis.tokens[i],
                 *[x for j in range(lens.ids.shape[2]) for x in (str(lens.labels[s, i, j]), float(lens.probs[s, i, j]))]]
                for s in range(lens.ids.shape[0]) for i in range(analysis.length)]
        columns = ["layer", "position", "token"] + [x for j in range(lens.ids.shape[2]) for x in (f"top{j + 1}", f"p{j + 1}")]
        meta: dict[str, Any] = {"view": "logit lens"}
        if watch:
            meta["watch"] = {"position": position, "words": watch.words, "tokens": watch.labels,
                             "ranks": watch.ranks.tolist(), "probabilities": watch.probs.tolist()}
        return {"columns": columns, "rows": rows, "meta": meta}

    extra = ""
    if words:
        extra = f"Watch list read after “{analysis.tokens[position]}” (token #{position}); a word counts by its first token."
    return figure, table, extra


def _generation(engine, analysis, c: Controls, layer: int, head: int):
    try:
        trace = engine.trace_generation(analysis, _clamp(c.new_tokens, 1, 64))
    except ValueError as error:  # e.g. a text that already fills every position
        return plots.message_figure(str(error), "Generation replay"), lambda: {"columns": [], "rows": [], "meta": {}}, ""
    step = _clamp(c.step, 1, trace.steps) - 1
    if c.aggregate == "head":
        rows, what = trace.attentions[:, layer, head], f"layer {layer + 1}, head {head + 1}"
    elif c.aggregate in ("all", "layers"):
        rows, what = trace.attentions.astype(np.float32).mean((1, 2)), "mean of every head"
    else:
        rows, what = trace.attentions[:, layer].astype(np.float32).mean(1), f"layer {layer + 1}, mean of its heads"
    figure = plots.generation_figure(rows, trace.tokens, trace.prompt_length, step, float(trace.probs[step]), what)
    continuation = " ".join(trace.tokens[trace.prompt_length:])

    def table() -> dict:
        out = [[s + 1, trace.tokens[trace.prompt_length + s], float(trace.probs[s]), *_floats(rows[s, : trace.prompt_length + s])]
               for s in range(trace.steps)]
        return {"columns": ["step", "chosen token", "probability", *trace.tokens[:-1]], "rows": out,
                "meta": {"view": "generation replay", "what": what}}

    return figure, table, f"Greedy continuation ({trace.steps} tokens, {trace.seconds:.1f} s): *{continuation}*"


def _ablation(engine, analysis, c: Controls, layer: int, head: int):
    spec = (c.heads_off or "").strip() or f"{layer + 1}.{head + 1}"
    heads = analysis.parse_heads(spec)
    if not heads:
        raise ValueError("Name at least one head to switch off, e.g. 3.5 or 4.* (layer.head).")
    result = engine.ablate(analysis, heads, 8, _clamp(c.continue_tokens, 0, 40))
    heads_text = _heads_text(heads, analysis.num_heads)
    figure = plots.ablation_figure(result.labels, result.before, result.after, heads_text, result.kl)
    extra = ""
    if result.continuation_before is not None:
        extra = (f"Greedy continuation with all heads: *{' '.join(result.continuation_before)}*  \n"
                 f"Without {heads_text}: *{' '.join(result.continuation_after)}*")

    def table() -> dict:
        rows = [[label, int(i), float(b), float(a)]
                for label, i, b, a in zip(result.labels, result.ids, result.before, result.after)]
        return {"columns": ["token", "id", "p with all heads", "p ablated"], "rows": rows,
                "meta": {"view": "ablation", "heads": [[layer_index + 1, h + 1] for layer_index, h in heads], "kl": result.kl,
                         "continuation_before": result.continuation_before, "continuation_after": result.continuation_after}}

    return figure, table, extra


def _heads_text(heads, num_heads: int) -> str:
    by_layer: dict[int, list[int]] = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    parts = []
    for layer, hs in by_layer.items():
        parts.append(f"L{layer + 1} (all heads)" if len(hs) == num_heads else ", ".join(f"L{layer + 1}H{h + 1}" for h in hs))
    text = ", ".join(parts)
    return text if len(text) <= 60 else f"{len(heads)} heads"


def write_downloads(result: ViewResult, view: str, folder: str | None = None) -> list[str]:
    """The view's numbers as CSV (its main table) and JSON (the table with its metadata)."""
    data = result.table()
    folder = Path(folder or views.export_folder())  # bounded: the oldest exports are removed
    stem = "attention-" + view.lower().replace(" ", "-")
    csv_path, json_path = folder / f"{stem}.csv", folder / f"{stem}.json"
    csv_path.write_text(views.table_csv(data["columns"], data["rows"]), encoding="utf-8", newline="")
    json_path.write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    return [str(csv_path), str(json_path)]


REPORT_VIEWS = ("Heatmap", "Overview")  # what a report holds besides the view on screen


def report_html(engine, text: str, controls: Controls) -> str:
    """The offline report of this analysis: the view on screen first, then the heatmap of the chosen head and
    the overview of every head, each with its explanation and summary, and the settings that differ from
    the defaults (ui.report: plotly.js inlined, no network)."""
    shown = controls.view if controls.view in VIEWS else "Heatmap"
    sections = []
    for view in dict.fromkeys((shown, *REPORT_VIEWS)):
        result = render_view(engine, text, replace(controls, view=view))
        summary = re.sub(r" · this view took \d+ ms", "", result.summary).replace("**", "")
        sections.append(ReportSection(view, (result.explanation, summary), result.figure))
    defaults = asdict(Controls())
    settings = {name: value for name, value in asdict(controls).items() if value != defaults[name] or name == "view"}
    return build_report("BioGPT Studio: attention report", text, settings, sections)


# ----- the Gradio tab -------------------------------------------------------------------------

FALLBACK_EXAMPLES = ["Naloxone reverses the antihypertensive effect of clonidine."]


def _examples() -> list[str]:
    """Short texts from the app's examples (train splits of the shared data sets)."""
    try:
        from ui.common import load_examples

        data = load_examples()
        texts = [e["text"] for e in data.get("ner", [])] + [e["text"] for e in data.get("classify", [])]
    except Exception:  # examples are a nicety; the tab works without them
        texts = []
    short = [t.split(". ")[0].rstrip(".") + "." for t in texts]
    return list(dict.fromkeys(short + texts[:1]))[:5] or FALLBACK_EXAMPLES


def _model_shape(engine) -> tuple[int, int]:
    """Slider ranges before the first analysis: the default model's (layers, heads) from its
    config alone (nothing loaded or downloaded), else microsoft/biogpt's; the sliders adapt after
    each analysis."""
    try:
        shape = engine.interpreter.model_shape(engine.default_choice("generate"))
    except Exception:  # noqa: BLE001 - a guess is enough for a slider's first range
        shape = None
    return shape or (24, 16)


def build_attention_tab(engine, model_picker=None, default_text: str | None = None) -> dict[str, Any]:
    """Build the tab's components inside the current Blocks context and wire its events.

    `model_picker`: an existing model dropdown to read the model from; without one the tab makes
    its own (the models the engine offers for generation). Returns the main components.
    """
    import gradio as gr

    from ui.attribution_panel import build_attribution_panel
    from ui.common import controls_signature, friendly_errors, model_dropdown

    layers0, heads0 = _model_shape(engine)
    examples = _examples()

    gr.Markdown(
        "### See inside BioGPT\n"
        "Analyse a text once, then explore it freely: every view is computed from that one forward pass, so "
        "switching layers, heads and views is instant. Layers and heads count from 1; token #0 is the "
        "`</s>` marker BioGPT puts before every text. Hover any plot for exact values; its camera icon saves a PNG."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            text = gr.Textbox(label="Text", value=default_text or examples[0], lines=3, max_lines=12,
                              elem_id="attention-text")
        with gr.Column(scale=1, min_width=220):
            if model_picker is None and hasattr(engine, "model_choices"):
                model_picker = model_dropdown(engine, "generate", "attention-model")
            analyse = gr.Button("Analyse", variant="primary", elem_id="attention-analyse")
            copy_link = link_wiring.link_button("attention-copy-link")
    gr.Examples([[e] for e in examples], inputs=[text], label="Examples (from the training splits of BC5CDR and HoC)")
    view = gr.Radio(list(VIEWS), value="Heatmap", label="View", elem_id="attention-view")
    explanation = gr.Markdown(EXPLANATIONS["Heatmap"], elem_id="attention-explanation")
    with gr.Accordion("Glossary: query, key, value, head, layer, softmax, ...", open=False,
                      elem_id="attention-glossary"):  # one place every view links to (issue 16)
        gr.Markdown(glossary.glossary_markdown())
    with gr.Row(equal_height=False):
        with gr.Column(scale=1, min_width=280):
            with gr.Group() as head_group:
                layer = gr.Slider(1, layers0, value=1, step=1, label="Layer", elem_id="attention-layer")
                head = gr.Slider(1, heads0, value=1, step=1, label="Head", elem_id="attention-head")
            with gr.Group() as aggregate_group:
                aggregate = gr.Radio(AGGREGATE_CHOICES, value="head", label="Show", elem_id="attention-aggregate")
            with gr.Group() as heatmap_group:
                hide_sink = gr.Checkbox(False, label="Hide the first-token sink",
                                        info="blanks token #0's row and column and renormalises the other rows",
                                        elem_id="attention-hide-sink")
                min_weight = gr.Slider(0, 1, value=0, step=0.01, label="Hide weights below", elem_id="attention-threshold")
            with gr.Group() as start_group:
                start = gr.Slider(0, 1023, value=0, step=1, label="Zoom: first token shown",
                                  info="for long texts; 0 shows the whole text",
                                  elem_id="attention-start")
            with gr.Group(visible=False) as overview_group:
                statistic = gr.Dropdown([(label, key) for key, label in engine.interpreter.STATISTICS.items()],
                                        value="entropy", label="Colour heads by",
                                        elem_id="attention-statistic")
            with gr.Group(visible=False) as token_group:
                token = gr.Textbox("", label="Token", info="a word of the text or its number; empty = the last token",
                                   elem_id="attention-token")
            with gr.Group(visible=False) as links_group:
                direction = gr.Radio(DIRECTION_CHOICES, value="to", label="Links", elem_id="attention-direction")
                links = gr.Slider(1, 30, value=8, step=1, label="Strongest links per head", elem_id="attention-links")
            with gr.Group(visible=False) as hidden_group:
                trace = gr.Textbox("", label="Tokens to trace",
                                   info="comma-separated words or numbers; empty = five across the text",
                                   elem_id="attention-trace")
            with gr.Group(visible=False) as lens_group:
                watch = gr.Textbox("", label="Watch list",
                                   info="comma-separated words whose rank to follow after the chosen token",
                                   elem_id="attention-watch")
            with gr.Group(visible=False) as generation_group:
                new_tokens = gr.Slider(1, 64, value=20, step=1, label="New tokens to generate", elem_id="attention-new-tokens")
                step = gr.Slider(1, 64, value=1, step=1, label="Step", elem_id="attention-step")
            with gr.Group(visible=False) as ablation_group:
                heads_off = gr.Textbox("", label="Heads to switch off",
                                       info="layer.head, e.g. 3.5 or 4.* (every head of layer 4); empty = the selected head",
                                       elem_id="attention-heads-off")
                continue_tokens = gr.Slider(0, 40, value=0, step=1, label="Greedy continuation to compare",
                                            info="tokens; 0 = none",
                                            elem_id="attention-continue")
        with gr.Column(scale=3):
            plot = gr.Plot(label="Attention view", show_label=False, elem_id="attention-plot")
            # What belongs to this plot (the selected head, the watch list, the continuation) sits under it.
            summary = gr.Markdown(elem_id="attention-summary")
            with gr.Row():
                download = gr.Button("Download this view's data (CSV + JSON)", size="sm", elem_id="attention-download")
                report = gr.Button("Download report (HTML, opens offline)", size="sm", elem_id="attention-report")
            files = gr.File(label="Data", file_count="multiple", visible=False, elem_id="attention-files")
            # The layer the page redraws the heatmap from, and the request it sends when it cannot (ui.attention_heatmap).
            # The layer travels as one JSON string, which the page parses once (Gradio copies a nested value object
            # by object for each handler that reads it).
            redraw_source = gr.Textbox("", visible=False, elem_id="attention-redraw-source")
            redraw_request = gr.Textbox("0", visible=False, elem_id="attention-redraw-request")
            layer_request = gr.Textbox("0", visible=False, elem_id="attention-layer-request")

    if model_picker is None:  # an engine without a model registry: one fixed model
        model_picker = gr.Textbox(value="", visible=False)
    attribution = build_attribution_panel(engine, text, model_picker)
    components = {"view": view, "model": model_picker, "layer": layer, "head": head, "aggregate": aggregate,
                  "hide_sink": hide_sink, "min_weight": min_weight, "start": start, "statistic": statistic, "token": token,
                  "direction": direction, "links": links, "trace": trace, "watch": watch, "heads_off": heads_off,
                  "continue_tokens": continue_tokens, "new_tokens": new_tokens, "step": step}
    inputs = [text, *(components[f.name] for f in fields(Controls))]  # in the order of Controls' fields

    def to_controls(values) -> Controls:
        return Controls(*values)

    def attention(text, *values):
        """Analyse `text` once (cached by model and text) and draw one view of it.

        Returns the plotly figure, two sentences on what it shows, and a summary line. Layers and heads
        count from 1; token numbers from 0 (#0 is the </s> marker).
        """
        result = render_view(engine, text, to_controls(values))
        return result.figure, result.explanation, result.summary

    # What the API lists: the text, then every field of Controls with its default (not *values).
    attention.__signature__ = controls_signature(["text", *(f.name for f in fields(Controls))],
                                                 {f.name: f.default for f in fields(Controls)})
    attention = friendly_errors(attention)

    def limits(text_value, *values):
        """After a view is drawn: the sliders' ranges for this analysis (cheap, so not queued)."""
        try:
            analysis = engine.cached_analysis(text_value, to_controls(values).model or None)
        except Exception:  # noqa: BLE001 - the error was already shown by the render
            analysis = None
        if analysis is None:
            return gr.update(), gr.update(), gr.update()
        return (gr.update(maximum=analysis.num_layers), gr.update(maximum=analysis.num_heads),
                gr.update(maximum=max(analysis.length - 1, 1)))

    def send_layer(text_value, *values):
        """After a heatmap is drawn: the layer the page redraws it from (None for other views), queued with
        the views because packing a layer of a long text is real work."""
        try:
            return payload_text(redraw_data(engine, text_value, to_controls(values)))
        except Exception:  # noqa: BLE001 - the error was already shown by the render; the page then asks the server
            return payload_text(None)

    def send_drawable_layer(text_value, *values):
        """A layer change the page can draw itself: the new layer's payload alone. If the page cannot have it
        (the analysis left the cache, or the controls moved on to another view), the server draws the view."""
        c = to_controls(values)
        payload = redraw_data(engine, text_value, c, draw=True)
        if payload is not None:
            return gr.skip(), gr.skip(), gr.skip(), payload_text(payload)
        result = render_view(engine, text_value, c)
        return result.figure, result.explanation, result.summary, payload_text(redraw_data(engine, text_value, c))

    def after_drawing(event):
        event.then(limits, inputs, [layer, head, start], api_visibility="private", show_progress="hidden", queue=False) \
            .then(send_layer, inputs, [redraw_source], api_visibility="private", show_progress="hidden",
                  concurrency_id="attention_views")
        return event

    @friendly_errors
    def export(text_value, *values):
        c = to_controls(values)
        return gr.update(value=write_downloads(render_view(engine, text_value, c), c.view), visible=True)

    @friendly_errors
    def report_file(text_value, *values):
        return gr.update(value=[write_report(report_html(engine, text_value, to_controls(values)))], visible=True)

    groups = {
        "Heatmap": [head_group, aggregate_group, heatmap_group, start_group],
        "Overview": [head_group, overview_group],
        "Token links": [head_group, aggregate_group, token_group, links_group],
        "Hidden states": [hidden_group],
        "Logit lens": [start_group, token_group, lens_group],
        "Generation replay": [head_group, aggregate_group, generation_group],
        "Ablation": [head_group, ablation_group],
    }
    all_groups = [head_group, aggregate_group, heatmap_group, start_group, overview_group, token_group, links_group,
                  hidden_group, lens_group, generation_group, ablation_group]

    def show_groups(chosen: str):
        visible = set(map(id, groups.get(chosen, [])))
        return [gr.update(visible=id(g) in visible) for g in all_groups] + [gr.update(visible=False)]

    def step_range(count):
        return gr.update(maximum=_clamp(count, 1, 64))

    outputs = [plot, explanation, summary]
    def prefetch(text_value, *values):
        """After an analysis, compute its logit lens while the visitor looks at the first view, so
        that opening the lens later answers from the cache (the lens costs a few forwards)."""
        try:
            analysis = engine.cached_analysis(text_value, to_controls(values).model or None)
            if analysis is not None:
                engine.logit_lens(analysis)
        except Exception:  # noqa: BLE001 - a prefetch never bothers the visitor; the view reports errors
            pass

    def analysis_event(event):
        after_drawing(event).then(prefetch, inputs, None, api_visibility="private", show_progress="hidden",
                                  concurrency_id="attention-prefetch", concurrency_limit=1)

    analysis_event(analyse.click(attention, inputs, outputs, api_name="attention", concurrency_id="attention"))
    analysis_event(text.submit(attention, inputs, outputs, api_visibility="private", concurrency_id="attention"))
    view.change(show_groups, [view], all_groups + [files], api_visibility="private", show_progress="hidden", queue=False)
    new_tokens.change(step_range, [new_tokens], [step], api_visibility="private", show_progress="hidden", queue=False)
    # The layer, a head, Show, the sink toggle or the threshold: the page redraws the heatmap from the layer it
    # holds; another layer it fetches from ui/layer_route.py, or, when the route cannot answer, sets layer_request
    # and draws the payload that comes back (redraw_source's change); for anything else it sets redraw_request,
    # which asks the server like any other control.
    redraw_inputs = [view, model_picker, layer, head, aggregate, hide_sink, min_weight, start, text, summary, redraw_request,
                     layer_request]
    redraw_outputs = [summary, redraw_request, layer_request]
    gr.on([c.change for c in (layer, head, aggregate, hide_sink, min_weight)], None, redraw_inputs, redraw_outputs,
          js=redraw_js("control"), api_visibility="private")
    redraw_source.change(None, [redraw_source, *redraw_inputs], redraw_outputs, js=redraw_js("arrival"),
                         api_visibility="private")
    layer_request.change(friendly_errors(send_drawable_layer), inputs, [*outputs, redraw_source], api_visibility="private",
                         trigger_mode="always_last", show_progress="minimal", concurrency_id="attention_views")
    # Sliders answer on change (typed numbers too); always_last drops the steps of a drag that a newer value
    # has overtaken. Views of an analysis have their own concurrency group, so a slider never waits behind
    # other visitors' analyses; a new model is a new analysis.
    triggers = [c.change for c in (view, statistic, direction, step, start, links, new_tokens, continue_tokens,
                                   redraw_request)]
    triggers += [c.submit for c in (token, trace, watch, heads_off)]
    for event_triggers, group in ((triggers, "attention_views"), ([model_picker.change], "attention")):
        after_drawing(gr.on(event_triggers, attention, inputs, outputs, api_visibility="private",
                            trigger_mode="always_last", show_progress="minimal", concurrency_id=group))
    # A shared link (issue 16): the URL follows the text and every control; opening a link fills them and fires
    # link.opened(), drawn as one analysis (the views its filled controls fire then find it cached). Wired after
    # the redraws: Gradio runs a trigger's handlers in order, and the link's server round trip must not delay them.
    link = link_wiring.shareable("attention", text, {f.name: components[f.name] for f in fields(Controls)})
    link.copies_on(copy_link)
    analysis_event(link.opened().change(attention, inputs, outputs, api_visibility="private", concurrency_id="attention"))
    download.click(export, inputs, [files], api_visibility="private", concurrency_id="attention")
    report.click(report_file, inputs, [files], api_visibility="private", concurrency_id="attention")
    def on_open(trigger) -> None:
        """Draw the text already in the box when the tab is opened (the analysis is cached, so later openings
        only redraw)."""
        after_drawing(trigger(attention, inputs, outputs, api_visibility="private", show_progress="minimal",
                              concurrency_id="attention"))

    return {"on_open": on_open, "on_load": link, "text": text, "analyse": analyse, "plot": plot, "summary": summary,
            "explanation": explanation,
            "view": view, "layer": layer, "head": head, "model": model_picker, "attribution": attribution}
