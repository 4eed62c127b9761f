"""Generate tab: free text with every decoding control, streamed and coloured by probability;
and PubMedQA mode, where the model scores yes / no / maybe."""

from __future__ import annotations

import time
from dataclasses import fields

import gradio as gr

from biogpt.serving import DECODING_MODES, MAX_SEED, DecodingStopped, Engine, GenerationRequest, parse_stop_strings
from biogpt.serving.requests import ForcedPrefix

from . import link_wiring, plots, views
from .admission import reader_gone
from .branch_panel import build_branch_panel
from .branches import parse_forced_ids
from .common import (PRIVATE, api_only, controls_signature, load_examples, model_dropdown, on_page, page_and_api,
                     progress_reporter, status_note)

# Each preset sets the decoding controls; the visitor can change any of them afterwards.
PRESETS = {
    "faithful": dict(mode="greedy", repetition_penalty=1.2, no_repeat_ngram_size=3),
    "balanced": dict(mode="sampling", temperature=0.8, top_k=50, top_p=0.9, typical_p=1.0,
                     repetition_penalty=1.2, no_repeat_ngram_size=3),
    "creative": dict(mode="sampling", temperature=1.1, top_k=0, top_p=0.95, typical_p=1.0,
                     repetition_penalty=1.1, no_repeat_ngram_size=0),
    "beam search": dict(mode="beam search", num_beams=5, repetition_penalty=1.0, no_repeat_ngram_size=3),
}
DEFAULT_PRESET = "balanced"
CUSTOM = "custom"  # what the Preset radio shows once a control it sets is edited by hand
# The free-text controls are GenerationRequest's fields, in its order: that one list names the
# API's parameters, orders the inputs and builds the request.
REQUEST_FIELDS = [f.name for f in fields(GenerationRequest)]
# The API's branch (issue 17): tokens to force first, as ids and/or text; empty = an ordinary run.
FORCED_FIELDS = ["forced_token_ids", "forced_text"]
# What the presets set, in the same order.
PRESET_FIELDS = [name for name in REQUEST_FIELDS if any(name in preset for preset in PRESETS.values())]
RENDER_EVERY = 0.12  # seconds between streamed repaints: smooth, without resending the page per token
# Generate requests on one model share each decoding forward (biogpt.batching), so more of them
# may run at once than --concurrency allows the other tabs.
BATCHED_CONCURRENCY = 8


def generate_concurrency(engine: Engine) -> int | str:
    """Generate's slots: BATCHED_CONCURRENCY streams, plus room for the beam searches the engine
    runs or lets wait (they wait inside a slot), so waiting beam searches never take the streams' slots."""
    if not engine.batching:
        return "default"
    return BATCHED_CONCURRENCY + engine.limits.max_parallel_beam_searches + engine.limits.max_waiting_beam_searches


def build_generate_tab(engine: Engine) -> dict:
    examples = load_examples()
    limits = engine.limits
    defaults = GenerationRequest(prompt="", **{k: v for k, v in PRESETS[DEFAULT_PRESET].items()})
    model = model_dropdown(engine, "generate", elem_id="gen-model")
    # Which sub-tab is open: a link names it (its "sub_tab") and opens it again.
    sub_tab = gr.Radio(["free-text", "pubmedqa"], value="free-text", visible=False, elem_id="gen-sub-tab")
    with gr.Tabs() as sub_tabs:
        with gr.Tab("Free text", id="free-text") as free_text_tab:
            # On a phone the columns stack; assets/style.css then orders their parts: the prompt and
            # Generate, the main settings, the result, the other settings, the examples last.
            with gr.Row(equal_height=False, elem_id="gen-layout"):
                with gr.Column(scale=3, elem_id="gen-main"):
                    prompt = gr.Textbox(label="Prompt", lines=3, elem_id="gen-prompt",
                                        placeholder="The beginning of a biomedical sentence, e.g. 'Aspirin is used to'")
                    with gr.Row(elem_id="gen-actions"):
                        run = gr.Button("Generate", variant="primary", elem_id="gen-run")
                        stop = gr.Button("Stop", variant="stop", elem_id="gen-stop")
                        copy_link = link_wiring.link_button("gen-copy-link")
                    status = status_note("gen-status")
                    tokens = gr.HTML(label="Tokens coloured by probability", elem_id="gen-tokens")
                    # The newest result of this visitor's run, so that Stop can show exactly it.
                    latest = gr.State(None)
                    info = gr.Markdown(label="Run summary", elem_id="gen-info")
                    wire_branching = build_branch_panel(engine, latest)
                    with gr.Accordion("Plain text, to copy", open=False):
                        output = gr.Textbox(label="Generated text (first sample)", lines=3, interactive=False,
                                            buttons=["copy"], elem_id="gen-output")
                    with gr.Accordion("Every token: probability and top-5 alternatives", open=False):
                        table = gr.Dataframe(headers=views.TOKEN_TABLE_HEADERS, label="Tokens", interactive=False, wrap=True,
                                             max_height=360, column_widths=["9%", "10%", "18%", "13%", "50%"],
                                             elem_id="gen-table")
                    with gr.Accordion("Raw output (JSON)", open=False):
                        raw = gr.JSON(label="Result", elem_id="gen-json")
                    gr.Examples([[e["prompt"]] for e in examples["generate"]], inputs=[prompt],
                                label="Examples (BC5CDR training titles)", elem_id="gen-examples")
                with gr.Column(scale=2, elem_classes=["controls"], elem_id="gen-controls"):
                    preset = gr.Radio([*PRESETS, CUSTOM], value=DEFAULT_PRESET, label="Preset",
                                      info="Sets the controls below; shows custom once you change one",
                                      elem_id="gen-preset")
                    mode = gr.Radio(list(DECODING_MODES), value=defaults.mode, label="Decoding", elem_id="gen-mode")
                    max_new_tokens = gr.Slider(1, limits.max_new_tokens, value=64, step=1, label="Max new tokens",
                                               elem_id="gen-max-new-tokens")
                    with gr.Group(visible=defaults.mode == "sampling") as sampling_group:
                        with gr.Row():
                            temperature = gr.Slider(0.05, 2.0, value=defaults.temperature, step=0.05, label="Temperature")
                            top_k = gr.Slider(0, 200, value=defaults.top_k, step=1, label="Top-k")
                        with gr.Row():
                            top_p = gr.Slider(0.05, 1.0, value=defaults.top_p, step=0.01, label="Top-p")
                            typical_p = gr.Slider(0.05, 1.0, value=defaults.typical_p, step=0.01, label="Typical-p")
                    with gr.Group(visible=defaults.mode == "beam search") as beam_group:
                        num_beams = gr.Slider(1, limits.max_beams, value=defaults.num_beams, step=1, label="Beams")
                    with gr.Row():
                        repetition_penalty = gr.Slider(1.0, 2.0, value=defaults.repetition_penalty, step=0.05,
                                                       label="Repetition penalty")
                        no_repeat_ngram_size = gr.Slider(0, 10, value=defaults.no_repeat_ngram_size, step=1,
                                                         label="No-repeat n-gram")
                    with gr.Row():
                        num_return_sequences = gr.Slider(1, limits.max_return_sequences, value=1, step=1,
                                                         label="Sequences")
                        seed = gr.Number(-1, precision=None, label=f"Seed (0 to {MAX_SEED:,}; -1 = random)",
                                         elem_id="gen-seed")
                    stop_strings = gr.Textbox("", label="Stop strings", placeholder="comma-separated, \\n for a newline")
                    gr.Markdown(
                        "Top-k 0, top-p 1, typical-p 1, penalty 1 and n-gram 0 switch that control off. Several "
                        "sequences (sampling or beams) appear side by side when done. A random seed is drawn "
                        "when the seed is -1 and shown with the result.",
                        elem_classes=["hint"],
                    )
        with gr.Tab("PubMedQA", id="pubmedqa") as pubmedqa_tab:
            gr.Markdown(
                "BioGPT's PubMedQA format: the question and its abstract become "
                "`question: … context: …` followed by *the answer to the question given the context is*, "
                "and the model scores **yes**, **no** and **maybe**. Best with `microsoft/BioGPT-Large-PubMedQA`; "
                "the small bundled model was not trained for it."
            )
            # On a phone: the question, its action and the answer first, the examples after (assets/style.css).
            with gr.Row(equal_height=False, elem_id="qa-layout"):
                with gr.Column(scale=3, elem_id="qa-main"):
                    question = gr.Textbox(label="Question", lines=1, elem_id="qa-question")
                    context = gr.Textbox(label="Context (abstract)", lines=6, elem_id="qa-context")
                    gold = gr.Textbox("", label="Gold answer", info="PubMedQA's label of an example; empty for your own",
                                      interactive=False, elem_id="qa-gold")
                    with gr.Accordion("Long answer (optional: the reasoning-free setting)", open=False):
                        long_answer = gr.Textbox("", label="Long answer", lines=2, elem_id="qa-long-answer")
                    with gr.Row():
                        answer_run = gr.Button("Answer yes / no / maybe", variant="primary", elem_id="qa-run", scale=3)
                        qa_copy_link = link_wiring.link_button("qa-copy-link")
                    gr.Examples([[e["question"], e["context"], e["label"]] for e in examples["pubmedqa"]],
                                inputs=[question, context, gold], label="Examples (PubMedQA training set)",
                                elem_id="qa-examples")
                with gr.Column(scale=2):
                    answer_status = status_note("qa-status")
                    # The API's softmax over the three log-likelihoods, not shown: on the page it read as
                    # certainty (100%) for a near-tie or an uninformed choice. The log-likelihood bars and
                    # the gold answer say what the model chose, and by how much.
                    answer = gr.Label(label="Softmax over the three answers (uncalibrated)", num_top_classes=3,
                                      visible=False, elem_id="qa-answer")
                    answer_plot = gr.Plot(label="yes / no / maybe", elem_id="qa-plot")
                    answer_info = gr.Markdown(label="Summary", elem_id="qa-info")
                    with gr.Accordion("Prompt sent to the model", open=False):
                        answer_prompt = gr.Textbox(label="Prompt", show_label=False, lines=4, interactive=False,
                                                   elem_id="qa-prompt")

    controls = dict(prompt=prompt, model=model, max_new_tokens=max_new_tokens, mode=mode, temperature=temperature,
                    top_k=top_k, top_p=top_p, typical_p=typical_p, repetition_penalty=repetition_penalty,
                    no_repeat_ngram_size=no_repeat_ngram_size, num_beams=num_beams,
                    num_return_sequences=num_return_sequences, seed=seed, stop=stop_strings,
                    forced_token_ids=gr.Textbox("", visible=False), forced_text=gr.Textbox("", visible=False))

    def generate(*values_progress_request):
        *values, progress, request = values_progress_request  # gradio appends them (see controls_signature)
        chosen = dict(zip(REQUEST_FIELDS, values))
        forced_ids, forced_text = values[len(REQUEST_FIELDS):]
        generation_request = GenerationRequest(**{**chosen, "stop": parse_stop_strings(chosen["stop"])})
        forced_ids = parse_forced_ids(forced_ids)
        forced = ForcedPrefix(token_ids=forced_ids, text=forced_text or "") if forced_ids or forced_text else None
        last_paint = 0.0
        # The visitor's connection closing (or Stop) ends the decoding at its next model call.
        results = engine.generate(generation_request, progress=progress_reporter(progress), should_stop=reader_gone(request),
                                  forced=forced)
        try:
            for result in results:
                if not result.finished and time.monotonic() - last_paint < RENDER_EVERY:
                    continue
                last_paint = time.monotonic()
                first = result.samples[0].text
                if not result.finished:
                    yield (first, views.generation_html(result), views.generation_info(result), gr.skip(), gr.skip(),
                           result)
                else:
                    yield (first, views.generation_html(result), views.generation_info(result),
                           views.token_rows(result), views.generation_json(result), result)
        except DecodingStopped:
            return  # nobody is reading

    generate.__signature__ = controls_signature([*REQUEST_FIELDS, *FORCED_FIELDS], progress=gr.Progress(track_tqdm=True),
                                                request=True)
    generate.__annotations__ = {"request": gr.Request}  # gradio finds the request by type hint, not by the signature
    inputs = [controls[name] for name in [*REQUEST_FIELDS, *FORCED_FIELDS]]
    outputs = [output, tokens, info, table, raw, latest]
    api_only(generate, inputs, outputs, "generate", concurrency_limit=generate_concurrency(engine),
             api_description="Continue a prompt. Returns the first sample's text, the coloured HTML, a run summary, "
                             "a table of token probabilities and the full result as JSON (settings and seed included). "
                             "forced_token_ids ([ids] or '5, 17') and/or forced_text are emitted first (a branch; "
                             "the settings then name them and the sampler rule).")
    # Shareable links: the prompt, model, preset and decoding settings (seed included), and PubMedQA's question,
    # context and long answer; the link opens the sub-tab it was made on and runs that one once.
    free_text_tab.select(lambda: "free-text", None, sub_tab, **PRIVATE)
    pubmedqa_tab.select(lambda: "pubmedqa", None, sub_tab, **PRIVATE)
    link = link_wiring.shareable(
        "generate", prompt, {"sub_tab": sub_tab, "model": model, "preset": preset,
                             **{name: controls[name] for name in REQUEST_FIELDS if name != "prompt"},
                             "question": question, "context": context, "long_answer": long_answer},
        action_key="sub_tab", arrange=lambda settings: {sub_tabs: gr.Tabs(selected=settings["sub_tab"])},
        arranged=[sub_tabs])
    link.copies_on(copy_link)
    link.copies_on(qa_copy_link)
    # A new run forgets the previous result first: Stop before its first token shows nothing old.
    generation = gr.on([run.click, prompt.submit, link.opened("free-text").change], lambda: None, None, latest,
                       **PRIVATE).then(
        on_page(generate, len(outputs)), inputs, [*outputs, status], api_visibility="private",
        concurrency_id="generate", concurrency_limit=generate_concurrency(engine))
    # The message is set in a second step: an update the cancelled stream had already sent could
    # otherwise arrive after it and put "generating" back.
    def show_stopped(result):
        """Every pane describes what was generated before Stop, with its seed and settings."""
        if result is None:
            return ("", "", "**Stopped before any text was generated** (beam search and several samples show "
                    "their text only when done).", [], None)
        return (result.samples[0].text, views.generation_html(result, stopped=True),
                views.generation_info(result, stopped=True), views.token_rows(result), views.generation_json(result))

    stop.click(None, None, None, cancels=[generation], **PRIVATE).then(
        show_stopped, latest, [output, tokens, info, table, raw], **PRIVATE)
    wire_branching([output, tokens, info, table, raw])

    def apply_preset(name):
        values = PRESETS.get(name, {})  # "custom" keeps the controls as they are
        return tuple(gr.update(value=values[key]) if key in values else gr.update() for key in PRESET_FIELDS)

    preset.input(apply_preset, preset, [controls[name] for name in PRESET_FIELDS], **PRIVATE)
    # Editing a control the presets set makes the preset "custom", so that any preset can be chosen again.
    for name in PRESET_FIELDS:
        controls[name].input(lambda: CUSTOM, None, preset, **PRIVATE)

    def show_mode_controls(chosen_mode):
        return gr.update(visible=chosen_mode == "sampling"), gr.update(visible=chosen_mode == "beam search")

    mode.change(show_mode_controls, mode, [sampling_group, beam_group], **PRIVATE)

    def answer_pubmedqa(question, context, model, long_answer, gold="", progress=gr.Progress(track_tqdm=True)):
        result = engine.answer_pubmedqa(question, context, model=model, long_answer=long_answer,
                                        progress=progress_reporter(progress))
        return (views.answer_confidences(result), plots.answer_chart(result, gold), views.answer_info(result, gold),
                result.prompt)

    # A question typed by hand has no gold answer.
    question.input(lambda: "", None, gold, **PRIVATE)
    page_and_api([answer_run.click, question.submit, link.opened("pubmedqa").change], answer_pubmedqa,
                 [question, context, model, long_answer, gold], [answer, answer_plot, answer_info, answer_prompt],
                 answer_status, api_name="pubmedqa",
                 api_description="Score yes / no / maybe for a question and its context (BioGPT's PubMedQA prompt). "
                                 "The first output is a softmax over the three log-likelihoods: uncalibrated, "
                                 "so read it with the log-likelihoods in the summary.")
    return {"on_load": link}
