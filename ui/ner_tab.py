"""NER tab: Chemical and Disease spans marked in the text, a table with offsets, JSON and CSV."""

from __future__ import annotations

import json

import gradio as gr

from biogpt.serving import NER_AGGREGATIONS, Engine

from . import link_wiring, views
from .common import load_examples, model_dropdown, on_page, page_and_api, progress_reporter, status_note

AGGREGATION_HELP = (
    "How a word's tag is read from its pieces: auto = the piece the model was trained to tag; "
    "first / last piece; average of the pieces; the most confident piece (max)."
)


def build_ner_tab(engine: Engine) -> dict:
    examples = load_examples()
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            text = gr.Textbox(label="Text", lines=6, elem_id="ner-text",
                              placeholder="Paste a biomedical sentence or abstract")
            with gr.Row():
                run = gr.Button("Find entities", variant="primary", elem_id="ner-run", scale=3)
                copy_link = link_wiring.link_button("ner-copy-link")
        with gr.Column(scale=2):
            model = model_dropdown(engine, "ner", elem_id="ner-model")
            aggregation = gr.Radio(list(NER_AGGREGATIONS), value="auto", label="Word aggregation",
                                   info=AGGREGATION_HELP, elem_id="ner-aggregation")
    status = status_note("ner-status")
    highlighted = gr.HTML(label="Highlighted text", elem_id="ner-highlighted")
    info = gr.Markdown(label="Summary", elem_id="ner-info")
    table = gr.Dataframe(headers=views.ENTITY_TABLE_HEADERS, interactive=False, label="Entity table",
                         max_height=320, elem_id="ner-table")
    with gr.Row():
        json_file = gr.File(label="Download JSON", elem_id="ner-json-file")
        csv_file = gr.File(label="Download CSV", elem_id="ner-csv-file")
    with gr.Accordion("Entities as JSON", open=False):
        entities = gr.JSON(label="Entities JSON", elem_id="ner-json")
    gr.Examples([[e["text"]] for e in examples["ner"]], inputs=[text], label="Examples (BC5CDR training abstracts)")

    def find_entities(text, model, aggregation, progress=gr.Progress(track_tqdm=True)):
        result = engine.ner(text, model=model, aggregation=aggregation, progress=progress_reporter(progress))
        exported = views.entities_json(result, requested_aggregation=aggregation)
        model_name = result.settings["model"]
        return (
            views.entities_html(result),
            views.ner_info(result),
            views.entity_rows(result),
            exported,
            views.write_export(json.dumps(exported, ensure_ascii=False, indent=1), ".json", "ner", model_name),
            views.write_export(views.entities_csv(result), ".csv", "ner", model_name),
        )

    # Spans are read again (cheap) when the aggregation changes, so the radio never disagrees with
    # what is shown; nothing happens before the first run.
    def reread(text, model, aggregation, progress=gr.Progress(track_tqdm=True)):
        if not text.strip():
            return (gr.skip(),) * 6
        return find_entities(text, model, aggregation, progress)

    outputs = [highlighted, info, table, entities, json_file, csv_file]
    aggregation.input(on_page(reread, len(outputs)), inputs=[text, model, aggregation], outputs=[*outputs, status],
                      api_visibility="private", concurrency_id="ner")
    link = link_wiring.shareable("ner", text, {"model": model, "aggregation": aggregation})
    link.copies_on(copy_link)
    page_and_api([run.click, text.submit, link.opened().change], find_entities, [text, model, aggregation], outputs, status,
                 api_name="ner",
                 api_description="Chemical and Disease entities: marked-up HTML, a summary, the entity table "
                                 "(text, type, start, end, confidence), the entities as JSON, and JSON and CSV files.")
    return {"on_load": link}
