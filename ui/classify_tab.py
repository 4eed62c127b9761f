"""Classify tab: a fine-tuned classifier's own labels (HoC by default), or zero-shot labels
scored by a language model's log-likelihood."""

from __future__ import annotations

import json

import gradio as gr

from biogpt.serving import ZERO_SHOT_TEMPLATE, Engine

from . import link_wiring, plots, views
from .common import PRIVATE, load_examples, model_dropdown, page_and_api, progress_reporter, status_note


def label_exports(prefix: str):
    """The result kept for the page, a sortable table of every label, and JSON and CSV downloads."""
    result = gr.State(None)
    table = gr.Dataframe(headers=views.LABEL_TABLE_HEADERS, interactive=False, label="Every label (probability %)",
                         max_height=320, elem_id=f"{prefix}-table")
    with gr.Row():
        json_file = gr.File(label="Download JSON", elem_id=f"{prefix}-json-file")
        csv_file = gr.File(label="Download CSV", elem_id=f"{prefix}-csv-file")
    return result, table, json_file, csv_file


def export_labels(result):
    """Table and files of a classification, named for the task, model and time."""
    if result is None:
        return gr.skip(), gr.skip(), gr.skip()
    task = "zero-shot" if result.mode == "zero-shot" else "classify"
    model = result.settings["model"]
    return (views.label_rows(result),
            views.write_export(json.dumps(views.labels_json(result), ensure_ascii=False, indent=1), ".json", task, model),
            views.write_export(views.labels_csv(result), ".csv", task, model))


def build_classify_tab(engine: Engine) -> dict:
    examples = load_examples()
    # Which of the two is open: a link names it (its "mode") and opens it again.
    mode = gr.Radio(["supervised", "zero-shot"], value="supervised", visible=False, elem_id="cls-mode")
    with gr.Tabs() as modes:
        with gr.Tab("Supervised", id="supervised") as supervised_tab:
            gr.Markdown(
                "A checkpoint fine-tuned for classification answers with its own labels. The bundled model "
                "predicts the **Hallmarks of Cancer** (HoC): a sentence can show several hallmarks or none, so "
                "each label has its own probability and a threshold decides."
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    text = gr.Textbox(label="Text", lines=4, elem_id="cls-text")
                    model = model_dropdown(engine, "classify", elem_id="cls-model")
                    with gr.Row():
                        run = gr.Button("Classify", variant="primary", elem_id="cls-run", scale=3)
                        copy_link = link_wiring.link_button("cls-copy-link")
                    gr.Examples([[e["text"]] for e in examples["classify"]], inputs=[text],
                                label="Examples (HoC training sentences)")
                with gr.Column(scale=3):
                    status = status_note("cls-status")
                    labels = gr.Label(label="Top labels", num_top_classes=3, elem_id="cls-label")
                    info = gr.Markdown(label="Summary", elem_id="cls-info")
            chart = gr.Plot(label="All labels", elem_id="cls-chart")
            cls_result, cls_table, cls_json, cls_csv = label_exports("cls")

        with gr.Tab("Zero-shot", id="zero-shot") as zero_shot_tab:
            gr.Markdown(
                "Any causal BioGPT can rank labels it was never trained on: each candidate is put into the "
                "template and scored by the model's log-likelihood of it, given the text."
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    zs_text = gr.Textbox(label="Text", lines=4, elem_id="zs-text")
                    candidates = gr.Textbox(label="Candidate labels (comma-separated)",
                                            value="a drug side effect, a genetic disorder, an infection",
                                            elem_id="zs-labels")
                    template = gr.Textbox(label="Template", value=ZERO_SHOT_TEMPLATE, elem_id="zs-template",
                                          info="{text} and {label} are filled in; the part after {text} is scored")
                    zs_model = model_dropdown(engine, "generate", elem_id="zs-model")
                    per_token = gr.Checkbox(value=True, label="Average the log-likelihood per token",
                                            info="Keeps long labels from losing just for their length")
                    with gr.Row():
                        zs_run = gr.Button("Rank labels", variant="primary", elem_id="zs-run", scale=3)
                        zs_copy_link = link_wiring.link_button("zs-copy-link")
                    gr.Examples([[e["text"], ", ".join(e["labels"])] for e in examples["zero_shot"]],
                                inputs=[zs_text, candidates], label="Examples (BC5CDR and HoC training data)")
                with gr.Column(scale=3):
                    zs_status = status_note("zs-status")
                    zs_labels = gr.Label(label="Most likely", num_top_classes=3, elem_id="zs-label")
                    zs_info = gr.Markdown(label="Summary", elem_id="zs-info")
            zs_chart = gr.Plot(label="All candidates", elem_id="zs-chart")
            zs_result, zs_table, zs_json, zs_csv = label_exports("zs")

    supervised_tab.select(lambda: "supervised", None, mode, **PRIVATE)
    zero_shot_tab.select(lambda: "zero-shot", None, mode, **PRIVATE)
    link = link_wiring.shareable(
        "classify", text, {"mode": mode, "model": model, "zs_text": zs_text, "labels": candidates, "template": template,
                           "zs_model": zs_model, "per_token": per_token},
        action_key="mode", arrange=lambda settings: {modes: gr.Tabs(selected=settings["mode"])}, arranged=[modes])
    link.copies_on(copy_link)
    link.copies_on(zs_copy_link)

    def classify(text, model, progress=gr.Progress(track_tqdm=True)):
        result = engine.classify(text, model=model, progress=progress_reporter(progress))
        return views.label_confidences(result), plots.label_chart(result), views.classification_info(result), result

    page_and_api([run.click, text.submit, link.opened("supervised").change], classify, [text, model],
                 [labels, chart, info, cls_result], status,
                 api_name="classify",
                 api_description="A fine-tuned classifier's labels with probabilities, a chart, and a summary naming "
                                 "the labels above the threshold (multi-label) and the settings.",
                 ).then(export_labels, cls_result, [cls_table, cls_json, cls_csv], **PRIVATE)

    def zero_shot(text, candidates, template, model, per_token, progress=gr.Progress(track_tqdm=True)):
        result = engine.zero_shot(text, candidates, template=template, model=model, normalize=per_token,
                                  progress=progress_reporter(progress))
        return views.label_confidences(result), plots.label_chart(result), views.classification_info(result), result

    page_and_api([zs_run.click, zs_text.submit, link.opened("zero-shot").change], zero_shot,
                 [zs_text, candidates, template, zs_model, per_token],
                 [zs_labels, zs_chart, zs_info, zs_result], zs_status, api_name="zero_shot",
                 api_description="Rank candidate labels by a language model's log-likelihood of the filled template.",
                 ).then(export_labels, zs_result, [zs_table, zs_json, zs_csv], **PRIVATE)
    return {"on_load": link}
