"""Tasks tab: the BioGPT paper's fine-tuned tasks (relation extraction on BC5CDR, DDI and KD-DTI,
PubMedQA, HoC) with Microsoft's fine-tuned checkpoints converted by `biogpt convert`, or a model
trained with `biogpt train prompt`: the answer parsed into a table, the entities marked in the
text, malformed pieces listed, JSON and CSV exports."""

from __future__ import annotations

import html
import json

import gradio as gr

from biogpt.serving import Engine

from . import link_wiring, views
from .common import page_and_api, progress_reporter, status_note

NO_MODELS = (
    "No fine-tuned paper-task model is offered by this server. Convert one of Microsoft's checkpoints "
    "(`biogpt convert RE-DDI-BioGPT/ converted/`) or train one (`biogpt train prompt --paper-task ddi ...`), "
    "then start the app with `--allow-model converted/`."
)
ROLE_COLOURS = {"drug": "#b3e5fc", "target": "#ffe0b2", "chemical": "#c8e6c9", "disease": "#f8bbd0"}


def highlighted_html(result) -> str:
    """The visitor's text (escaped) with each extracted entity marked where it occurs."""
    if not result.highlights:
        note = "no extracted entity occurs in the text" if result.items and result.columns[0] != "answer" else ""
        return f'<div class="paper-text">{html.escape(result.text)}</div>' + (f"<p>{note}</p>" if note else "")
    parts, position = [], 0
    for mark in result.highlights:
        parts.append(html.escape(result.text[position:mark.start]))
        parts.append(f'<mark class="paper-entity" data-role="{mark.role}" style="background:{ROLE_COLOURS[mark.role]}" '
                     f'title="{mark.role}">{html.escape(result.text[mark.start:mark.end])}</mark>')
        position = mark.end
    parts.append(html.escape(result.text[position:]))
    return f'<div class="paper-text">{"".join(parts)}</div>'


def summary_markdown(result) -> str:
    found = len(result.items)
    lines = [f"**{html.escape(result.title)}** · {html.escape(result.model)} · {result.num_input_tokens} input tokens · "
             f"{result.elapsed:.1f} s · greedy, at most {result.settings['max_new_tokens']} new tokens",
             f"{found} item{'s' if found != 1 else ''} read from the answer"
             + (f"; **{len(result.malformed)} malformed piece(s)** listed in the table" if result.malformed else "")
             + ("; nothing could be read (Microsoft's scripts count this as failed)" if not result.items else "")]
    return "\n\n".join(lines)


def build_tasks_tab(engine: Engine) -> dict:
    models = list(engine.operator_models)
    tasks = engine.paper_task_choices()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            text = gr.Textbox(label="Text (title. abstract; or PubMedQA's context)", lines=6, elem_id="tasks-text",
                              placeholder="Paste an abstract")
            question = gr.Textbox(label="Question (PubMedQA only)", lines=1, elem_id="tasks-question")
            with gr.Row():
                run = gr.Button("Run the task", variant="primary", elem_id="tasks-run", scale=3)
                copy_link = link_wiring.link_button("tasks-copy-link")
        with gr.Column(scale=2):
            task = gr.Dropdown(choices=tasks, value=tasks[0][1], label="Task", elem_id="tasks-task")
            model = gr.Dropdown(choices=models, value=models[0] if models else None, label="Fine-tuned model",
                                info="Models the server was started with (--allow-model)", elem_id="tasks-model")
            if not models:
                gr.Markdown(NO_MODELS, elem_id="tasks-no-models")
    status = status_note("tasks-status")
    highlighted = gr.HTML(elem_id="tasks-highlighted")
    summary = gr.Markdown(elem_id="tasks-summary")
    table = gr.Dataframe(interactive=False, label="Extracted", max_height=320, elem_id="tasks-table")
    generated = gr.Textbox(label="The model's answer, as written", interactive=False, elem_id="tasks-generated")
    with gr.Row():
        json_file = gr.File(label="Download JSON", elem_id="tasks-json-file")
        csv_file = gr.File(label="Download CSV", elem_id="tasks-csv-file")
    with gr.Accordion("Result as JSON", open=False):
        exported = gr.JSON(label="Result JSON", elem_id="tasks-json")

    def run_task(task, model, text, question, progress=gr.Progress(track_tqdm=True)):
        result = engine.paper_task(task, text, model, question or "", progress=progress_reporter(progress))
        columns = [*result.columns, "status"]
        data = result.as_json()
        return (
            highlighted_html(result),
            summary_markdown(result),
            {"headers": columns, "data": result.rows},
            result.generated,
            data,
            views.write_export(json.dumps(data, ensure_ascii=False, indent=1), ".json", f"task-{task}",
                               result.settings["model"]),
            views.write_export(views.table_csv(columns, result.rows), ".csv", f"task-{task}", result.settings["model"]),
        )

    outputs = [highlighted, summary, table, generated, exported, json_file, csv_file]
    link = link_wiring.shareable("tasks", text, {"task": task, "model": model, "question": question})
    link.copies_on(copy_link)
    page_and_api([run.click, link.opened().change], run_task, [task, model, text, question], outputs, status,
                 api_name="paper_task",
                 api_description="One of the BioGPT paper's tasks with a fine-tuned model: marked-up text, a summary, "
                                 "the extracted table (malformed pieces included), the answer as written, the result "
                                 "as JSON, and JSON and CSV files.")
    return {"on_load": link}
