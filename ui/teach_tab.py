"""The Teach tab (issue 16): guided lessons, head roles, side-by-side comparison, the glossary and
a downloadable offline report, on top of the Attention tab's views.

Thin like the Attention tab: every figure comes from `ui.attention_tab.render_view` or the same view
builders it uses (so a lesson's heatmap is exactly the Attention tab's), the numbers from the Engine
(`head_roles`, `compare`, `lessons.prepare`), the report from `ui.report`. API endpoints `/lesson`,
`/head_roles` and `/compare` take their first argument first and default everything else; a bad
input is one sentence (a toast in the page, AppError over the API).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gradio as gr
import numpy as np
import pandas as pd

from biogpt.interpret import ROLES
from ui import attention_plots as plots
from ui import attention_tab, glossary, lessons, link_wiring
from ui.attention_tab import Controls, render_view
from ui.common import controls_signature, model_dropdown, on_page, page_and_api, status_note
from ui.report import ReportSection, build_report, write_report

COMPARE_VIEWS = ("Heatmap", "Overview", "Logit lens")
DIFFERENCE_SCALE = "RdBu"  # diverging: red where A attends more, blue where B does
COMPARE_TEXT = "Aspirin inhibits platelet aggregation in patients with coronary artery disease."
COMPARE_OTHER = "Ibuprofen inhibits platelet aggregation in patients with coronary artery disease."
EMPTY_SECTIONS: dict[str, Any] = {}


# ----- pure parts: what each panel shows (no gradio) -------------------------------------------


def lesson_markdown(prepared: lessons.PreparedLesson) -> str:
    lesson = prepared.lesson
    return (f"#### {lesson.title}\n\n" + " ".join(prepared.explanation) +
            f"\n\n**Question for students:** {lesson.question}")


def open_lesson(engine, key: str):
    """A lesson ready to show: (prepared lesson, the view it opens as `render_view` draws it)."""
    prepared = lessons.prepare(engine, key)
    controls = Controls(**{k: v for k, v in prepared.settings.items() if k in Controls.__dataclass_fields__})
    return prepared, render_view(engine, prepared.text, controls)


def roles_table(roles, role: str) -> tuple[list[str], list[list[Any]]]:
    """Every head with every role score (layer and head 1-based), ordered by `role` (strongest first)."""
    columns = ["layer", "head", *(ROLES[name][0] for name in ROLES)]
    rows = [[layer + 1, head + 1, *(round(float(roles.scores[name][layer, head]), 4) for name in ROLES)]
            for layer, head, _ in roles.ranking(role)]
    return columns, rows


def roles_grid(roles, role: str):
    """The layers x heads grid of one role score, drawn as the Overview's grid; the strongest head outlined."""
    values = roles.scores[role]
    layer, head, _ = roles.ranking(role)[0]
    top = 1.0 if ROLES[role][1] else float(max(values.max(), 1.0))
    return plots.overview_grid(values, ROLES[role][0], selected=(layer, head), value_range=(0.0, top))


def _diverging(figure, matrix: np.ndarray, label: str):
    """A difference drawn on a colour scale centred on 0, symmetric around it."""
    finite = np.abs(matrix[np.isfinite(matrix)])
    bound = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    figure.update_traces(colorscale=DIFFERENCE_SCALE, reversescale=True, zmin=-bound, zmax=bound, zmid=0,
                         colorbar=dict(title=dict(text=label, side="right"), thickness=14),
                         hovertemplate="%{y} / %{x}<br>A − B %{z:.4f}<extra></extra>")
    return figure


def _pair_labels(comparison, pairs: np.ndarray) -> list[str]:
    tokens_a, tokens_b = comparison.a.tokens, comparison.b.tokens
    return [tokens_a[i] if tokens_a[i] == tokens_b[j] else f"{tokens_a[i]} / {tokens_b[j]}" for i, j in pairs]


def difference_figure(engine, comparison, view: str, controls: Controls, lenses):
    """A minus B for `view` where it is defined, else a figure that says why not."""
    layer, head = controls.layer - 1, controls.head - 1
    if comparison.no_difference:
        return plots.message_figure(comparison.no_difference, "No difference")
    if view == "Overview":
        matrix = comparison.statistics_difference(controls.statistic)
        figure = plots.overview_grid(matrix, f"{comparison.a.STATISTICS[controls.statistic]}, A − B",
                                     value_range=(-1.0, 1.0))
        return _diverging(figure, matrix, "A − B")
    if view == "Logit lens":
        difference = comparison.lens_difference(*lenses)
        labels = _pair_labels(comparison, difference.pairs)
        matrix = difference.top_prob_difference
        figure = plots.attention_heatmap(matrix, plots.layer_names(comparison.a.num_layers), labels,
                                         "Top-1 probability, A − B, per layer and aligned token")
        return _diverging(figure, matrix, "A − B")
    aggregate = controls.aggregate if controls.aggregate in comparison.a.AGGREGATES else "head"
    difference = comparison.heatmap_difference(layer, head, aggregate, start=controls.start,
                                               max_side=attention_tab.HEATMAP_SIDE)
    labels = _pair_labels(comparison, difference.pairs)
    what = f"Layer {layer + 1}, head {head + 1}" if aggregate == "head" else {
        value: name for name, value in attention_tab.AGGREGATE_CHOICES}[aggregate]
    figure = plots.attention_heatmap(difference.matrix, labels, labels, f"{what}: attention A − B on aligned tokens")
    return _diverging(figure, difference.matrix, "A − B")


def side_figures(engine, comparison, view: str, controls: Controls):
    """Side A and side B drawn by the Attention tab's own builders for `view`."""
    builder = {"Heatmap": attention_tab._heatmap, "Overview": attention_tab._overview,
               "Logit lens": attention_tab._lens}[view]
    figures = []
    for side, name in ((comparison.a, comparison.names[0]), (comparison.b, comparison.names[1])):
        layer = min(max(controls.layer, 1), side.num_layers) - 1
        head = min(max(controls.head, 1), side.num_heads) - 1
        figure = builder(engine, side, controls, layer, head)[0]
        figure.update_layout(title=dict(text=f"{plots.escape(name)}: {figure.layout.title.text or ''}"))
        figures.append(figure)
    return figures


def compare_views(engine, text: str, other_text: str = "", model: str | None = None, other_model: str = "",
                  heads_off: str = "", view: str = "Heatmap", controls: Controls | None = None):
    """(figure A, figure B, difference figure, the alignment and difference sentences) of a comparison."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Type or paste a biomedical text first, then compare.")
    view = view if view in COMPARE_VIEWS else "Heatmap"
    controls = controls or Controls()
    comparison = engine.compare(text, other_text or "", model or None, other_model or "", heads_off or "")
    lenses = (engine.logit_lens(comparison.a), engine.logit_lens(comparison.b)) if view == "Logit lens" else None
    figure_a, figure_b = side_figures(engine, comparison, view, dataclasses.replace(controls, view=view))
    difference = difference_figure(engine, comparison, view, controls, lenses)
    sentences = [f"A = {comparison.names[0]}; B = {comparison.names[1]}.", comparison.alignment_sentence()]
    if comparison.no_difference:
        sentences.append(comparison.no_difference)
    return figure_a, figure_b, difference, "\n".join(sentences)


def report_html(text: str, settings: dict[str, Any], sections: dict[str, Any]) -> str:
    """The offline report of what this visitor opened in the tab (one section per panel)."""
    if not sections:
        raise ValueError("Open a lesson, the head roles or a comparison first; the report holds what you opened.")
    parts = [ReportSection(title, section["explanation"], section.get("figure"), section.get("table", []))
             for title, section in sections.items()]
    return build_report("BioGPT Studio: attention report", text, settings, parts)


# ----- the Gradio tab -------------------------------------------------------------------------


def build_teach_tab(engine) -> dict[str, Any]:
    gr.Markdown(  # what the tab offers, in two sentences
        "### Teach attention\n"
        "Six guided lessons, the role every head plays, two analyses side by side and a glossary. Each lesson "
        "opens its view in one click; **Download report** saves what you opened as one HTML file that works offline."
    )
    with gr.Row(equal_height=False):
        with gr.Column(scale=4):
            text = gr.Textbox(COMPARE_TEXT, label="Text", lines=2, max_lines=8, elem_id="teach-text")
        with gr.Column(scale=1, min_width=220):
            model = model_dropdown(engine, "generate", "teach-model")
    status = status_note("teach-status")
    sections = gr.State(EMPTY_SECTIONS)

    with gr.Accordion("Lessons", open=True, elem_id="teach-lessons"):
        lesson = gr.Radio([(item.title, item.key) for item in lessons.LESSONS], value=None, label="Lesson",
                          elem_id="teach-lesson")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                lesson_plot = gr.Plot(show_label=False, elem_id="teach-lesson-plot")
            with gr.Column(scale=2):
                lesson_text = gr.Markdown(elem_id="teach-lesson-text")
                lesson_table = gr.Dataframe(interactive=False, label="The lesson's numbers", max_height=360,
                                            elem_id="teach-lesson-table")

    with gr.Accordion("Head roles", open=False, elem_id="teach-roles"):
        gr.Markdown("Scores of every head on the model's own probe (a repeated random token sequence). Sort the "
                    "table by any column; click a row to open that head's heatmap on the text above.",
                    elem_id="teach-roles-intro")
        with gr.Row():
            role = gr.Dropdown([(label, key) for key, (label, _) in ROLES.items()], value="previous", label="Role",
                               elem_id="teach-role")
            show_roles = gr.Button("Score every head", elem_id="teach-roles-run")
        with gr.Row(equal_height=False):
            roles_plot = gr.Plot(show_label=False, elem_id="teach-roles-plot")
            roles_frame = gr.Dataframe(interactive=False, label="Every head", max_height=420, elem_id="teach-roles-table")
        head_plot = gr.Plot(show_label=False, elem_id="teach-head-plot")

    with gr.Accordion("Side by side", open=False, elem_id="teach-compare") as compare_box:
        gr.Markdown("Compare the text above with a second text, with a second model, or with heads switched off "
                    "(one of the three). The difference is A − B on the tokens that align.", elem_id="teach-compare-intro")
        with gr.Row():
            other_text = gr.Textbox("", label="Second text", lines=2, placeholder=COMPARE_OTHER, elem_id="teach-other-text")
            other_model = gr.Dropdown([("(none)", ""), *[(engine.describe_choice(n), n)
                                                         for n in engine.model_choices("generate")]],
                                      value="", label="Second model", elem_id="teach-other-model")
            heads_off = gr.Textbox("", label="Heads to switch off", info="layer.head, e.g. 3.5 or 4.*",
                                   elem_id="teach-heads-off")
        gr.Examples([[COMPARE_TEXT, COMPARE_OTHER]], inputs=[text, other_text], label="Example: one drug for another")
        with gr.Row():
            compare_view = gr.Radio(list(COMPARE_VIEWS), value="Heatmap", label="View", elem_id="teach-compare-view")
            layer = gr.Number(1, precision=0, minimum=1, label="Layer", elem_id="teach-layer")
            head = gr.Number(1, precision=0, minimum=1, label="Head", elem_id="teach-head")
            run_compare = gr.Button("Compare", variant="primary", elem_id="teach-compare-run")
        # A textbox: the alignment names the visitor's tokens, shown as text and never as markup.
        alignment = gr.Textbox(label="Which tokens are compared", interactive=False, lines=2, elem_id="teach-alignment")
        with gr.Row(equal_height=False):
            plot_a = gr.Plot(show_label=False, elem_id="teach-plot-a")
            plot_b = gr.Plot(show_label=False, elem_id="teach-plot-b")
        plot_difference = gr.Plot(show_label=False, elem_id="teach-plot-difference")

    with gr.Accordion("Glossary", open=False, elem_id="teach-glossary"):
        gr.Markdown(glossary.glossary_markdown())

    with gr.Row():
        link_wiring.copy_link_button("teach-copy-link")
        report_button = gr.Button("Download report", elem_id="teach-report")
        report_file = gr.File(label="Report", visible=False, elem_id="teach-report-file")

    # ----- handlers: each returns its outputs and the report's sections of this visitor ----------

    def lesson_handler(key, kept=None):
        """Open lesson `key` (formula, sink, previous, induction, lens, ablation): its text, model, the view
        drawn with its settings, its explanation and question, and its numbers as a table."""
        prepared, result = open_lesson(engine, key)
        table = prepared.table
        frame = pd.DataFrame(table)
        kept = {**(kept or {}), "Lesson": {"explanation": [*prepared.explanation, prepared.lesson.question],
                                           "figure": result.figure, "table": table}}
        return prepared.text, prepared.settings["model"], result.figure, lesson_markdown(prepared), frame, kept

    lesson_handler.__signature__ = controls_signature(["key", "kept"], {"key": "formula", "kept": None})

    def roles_handler(model_value=None, role_value="previous", kept=None):
        """Every head's role scores on the model's own probe: the grid of one role and the table of all."""
        roles = engine.head_roles(model_value or None)
        figure = roles_grid(roles, role_value)
        columns, rows = roles_table(roles, role_value)
        kept = {**(kept or {}), "Head roles": {"explanation": [f"{ROLES[role_value][0]} of every head."],
                                               "figure": figure, "table": [dict(zip(columns, r)) for r in rows[:16]]}}
        return figure, pd.DataFrame(rows, columns=columns), kept

    roles_handler.__signature__ = controls_signature(["model", "role", "kept"],
                                                     {"model": None, "role": "previous", "kept": None})

    def compare_handler(text_value, other_text_value="", model_value=None, other_model_value="", heads_off_value="",
                        view_value="Heatmap", layer_value=1, head_value=1, kept=None):
        """Two analyses side by side (text against a second text, a second model, or heads switched off):
        figure A, figure B, the difference A − B where it is defined, and which tokens were compared."""
        controls = Controls(layer=int(layer_value or 1), head=int(head_value or 1))
        figure_a, figure_b, difference, said = compare_views(engine, text_value, other_text_value, model_value,
                                                             other_model_value, heads_off_value, view_value, controls)
        kept = {**(kept or {}), "Side by side, A": {"explanation": [said], "figure": figure_a},
                "Side by side, B": {"explanation": [], "figure": figure_b},
                "Side by side, A − B": {"explanation": [], "figure": difference}}
        return figure_a, figure_b, difference, said, kept

    compare_handler.__signature__ = controls_signature(
        ["text", "other_text", "model", "other_model", "heads_off", "view", "layer", "head", "kept"],
        {"other_text": "", "model": None, "other_model": "", "heads_off": "", "view": "Heatmap", "layer": 1,
         "head": 1, "kept": None})

    def open_head(text_value, model_value, event: gr.SelectData):
        layer_value, head_value = (int(v) for v in event.row_value[:2])
        result = render_view(engine, text_value, Controls(model=model_value, layer=layer_value, head=head_value))
        return (result.figure,)

    def report_handler(text_value, model_value, kept):
        path = write_report(report_html(text_value, {"model": model_value}, kept or {}))
        return (gr.update(value=path, visible=True),)

    page_and_api([lesson.input], lesson_handler, [lesson, sections],
                 [text, model, lesson_plot, lesson_text, lesson_table, sections], status, "lesson",
                 api_description="Open a lesson: its text, model, view, explanation and numbers.")
    page_and_api([show_roles.click, role.input], roles_handler, [model, role, sections],
                 [roles_plot, roles_frame, sections], status, "head_roles",
                 api_description="Every head's role scores: the grid of one role and the table of all.")
    page_and_api([run_compare.click], compare_handler,
                 [text, other_text, model, other_model, heads_off, compare_view, layer, head, sections],
                 [plot_a, plot_b, plot_difference, alignment, sections], status, "compare",
                 api_description="Two analyses side by side with their difference and token alignment.")
    roles_frame.select(on_page(open_head, 1), [text, model], [head_plot, status], api_visibility="private",
                       concurrency_id="head_roles")
    report_button.click(on_page(report_handler, 1), [text, model, sections], [report_file, status],
                        api_visibility="private", concurrency_id="lesson")
    # Shareable links: the URL follows the lesson and the comparison's controls; a link opens them again.
    link_controls = {"model": model, "lesson": lesson, "other_text": other_text, "other_model": other_model,
                     "heads_off": heads_off, "view": compare_view, "layer": layer, "head": head}
    link_defaults = {name: component.value for name, component in link_controls.items()}
    link_wiring.track("teach", text, link_controls, link_defaults)
    drawn = [lesson_plot, lesson_text, lesson_table, plot_a, plot_b, plot_difference, alignment, compare_box]

    def draw_link(text_value, settings):
        """The lesson a link names and the comparison it describes, each drawn as its panel draws it."""
        lesson_part = compare_part = None
        if settings["lesson"]:
            prepared, result = open_lesson(engine, settings["lesson"])
            lesson_part = (result.figure, lesson_markdown(prepared), pd.DataFrame(prepared.table))
        if settings["other_text"] or settings["other_model"] or settings["heads_off"]:
            controls = Controls(layer=int(settings["layer"] or 1), head=int(settings["head"] or 1))
            compare_part = compare_views(engine, text_value, settings["other_text"], settings["model"],
                                         settings["other_model"], settings["heads_off"], settings["view"], controls)
        compare_part = (*compare_part, gr.Accordion(open=True)) if compare_part else (gr.skip(),) * 5
        return (*(lesson_part or (gr.skip(),) * 3), *compare_part)

    on_load = link_wiring.restore_on_load("teach", text, link_controls, link_defaults, draw_link, drawn,
                                          concurrency_id="lesson")
    return {"on_load": on_load, "text": text, "model": model, "lesson": lesson, "lesson_plot": lesson_plot}
