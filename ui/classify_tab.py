"""Classify tab: a fine-tuned classifier's own labels (HoC by default), or zero-shot labels
scored by a language model's log-likelihood."""

from __future__ import annotations

import gradio as gr

from biogpt.serving import ZERO_SHOT_TEMPLATE, Engine

from . import plots, views
from .common import friendly_errors, load_examples, model_dropdown, progress_reporter


def build_classify_tab(engine: Engine) -> None:
    examples = load_examples()
    with gr.Tabs():
        with gr.Tab("Supervised", id="supervised"):
            gr.Markdown(
                "A checkpoint fine-tuned for classification answers with its own labels. The bundled model "
                "predicts the **Hallmarks of Cancer** (HoC): a sentence can show several hallmarks or none, so "
                "each label has its own probability and a threshold decides."
            )
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    text = gr.Textbox(label="Text", lines=4, elem_id="cls-text")
                    model = model_dropdown(engine, "classify", elem_id="cls-model")
                    run = gr.Button("Classify", variant="primary", elem_id="cls-run")
                    gr.Examples([[e["text"]] for e in examples["classify"]], inputs=[text],
                                label="Examples (HoC training sentences)")
                with gr.Column(scale=3):
                    labels = gr.Label(label="Top labels", num_top_classes=3, elem_id="cls-label")
                    info = gr.Markdown(label="Summary", elem_id="cls-info")
            chart = gr.Plot(label="All labels", elem_id="cls-chart")

        with gr.Tab("Zero-shot", id="zero-shot"):
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
                    zs_run = gr.Button("Rank labels", variant="primary", elem_id="zs-run")
                    gr.Examples([[e["text"], ", ".join(e["labels"])] for e in examples["zero_shot"]],
                                inputs=[zs_text, candidates], label="Examples (BC5CDR and HoC training data)")
                with gr.Column(scale=3):
                    zs_labels = gr.Label(label="Most likely", num_top_classes=3, elem_id="zs-label")
                    zs_info = gr.Markdown(label="Summary", elem_id="zs-info")
            zs_chart = gr.Plot(label="All candidates", elem_id="zs-chart")

    @friendly_errors
    def classify(text, model, progress=gr.Progress(track_tqdm=True)):
        result = engine.classify(text, model=model, progress=progress_reporter(progress))
        return views.label_confidences(result), plots.label_chart(result), views.classification_info(result)

    gr.on([run.click, text.submit], classify, inputs=[text, model], outputs=[labels, chart, info],
          api_name="classify",
          api_description="A fine-tuned classifier's labels with probabilities, a chart, and a summary naming "
                          "the labels above the threshold (multi-label) and the settings.")

    @friendly_errors
    def zero_shot(text, candidates, template, model, per_token, progress=gr.Progress(track_tqdm=True)):
        result = engine.zero_shot(text, candidates, template=template, model=model, normalize=per_token,
                                  progress=progress_reporter(progress))
        return views.label_confidences(result), plots.label_chart(result), views.classification_info(result)

    gr.on([zs_run.click, zs_text.submit], zero_shot, inputs=[zs_text, candidates, template, zs_model, per_token],
          outputs=[zs_labels, zs_chart, zs_info], api_name="zero_shot",
          api_description="Rank candidate labels by a language model's log-likelihood of the filled template.")
