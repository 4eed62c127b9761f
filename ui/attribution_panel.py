"""The Attention tab's Attribution panel: which tokens of the text drove one token (or "why X rather
than Y"), by gradient x input, integrated gradients or occlusion, beside attention rollout.

Thin: `Engine.attribute` computes (memoised on the analysis, so changing the level only redraws);
`ui.attribution_view` draws. Its events run in the tab's queue ("attention" concurrency group, the
tab's admission). `/attribute` on the API takes the text first and defaults everything else. The
Generate tab's "Explain this token" fills the text and position and presses Attribute (ui.branch_panel).
"""

from __future__ import annotations

from typing import Any

import gradio as gr

from biogpt.serving import Engine

from . import attribution_view as view
from .common import controls_signature, friendly_errors, on_page, status_note

METHOD_CHOICES = [("integrated gradients", "integrated_gradients"), ("gradient × input", "gradient_x_input"),
                  ("occlusion", "occlusion")]
OCCLUSION_CHOICES = [("remove it", "remove"), ("replace it by padding", "replace")]
# The API's parameters after the text, in the order of the panel's inputs, with their defaults.
DEFAULTS: dict[str, Any] = dict(position=None, method="integrated_gradients", target="", contrast="", baseline_text="",
                                steps=32, occlusion="remove", level="word", model=None)
HINT = (
    "Which tokens before the chosen one raised (red) or lowered (blue) its log-probability. Integrated gradients "
    "add up exactly to the change from a baseline (padding, or your counterfactual text of the same length, e.g. "
    "“female” for “male”); occlusion removes or replaces one word or token at a time. Type a contrast word to ask "
    "“why this rather than that”. The purple bars are attention rollout for the same token: where attention and "
    "attribution disagree, attention is not an explanation."
)


def attribution_outputs(engine: Engine, text: str, position, method: str, target: str, contrast: str,
                        baseline_text: str, steps, occlusion: str, level: str, model: str | None):
    """(coloured text, figure, summary) of one attribution; an empty position explains the text's last token."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError("Type or paste a biomedical text first, then press Attribute.")
    model = model or None
    if position is None or position == "":
        position = engine.analyze(text, model).length - 1
    try:
        position = int(position)
        steps = int(steps)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("The token number and the steps must be whole numbers.") from None
    result = engine.attribute(text, position, method=method, target=target or None, contrast=contrast or None,
                              steps=steps, baseline_text=baseline_text or "", occlusion=occlusion, model=model)
    return view.coloured_html(result, level), view.attribution_figure(result, level), view.attribution_summary(result)


def build_attribution_panel(engine: Engine, text: gr.Textbox, model_picker: gr.Component) -> dict[str, Any]:
    """The panel's components, inside the current Blocks context, wired to `text` and `model_picker`."""
    with gr.Accordion("Attribution: which words drove a token", open=True, elem_id="attribution"):
        gr.Markdown(HINT, elem_classes=["hint"])
        with gr.Row(equal_height=False):
            with gr.Column(scale=1, min_width=280):
                method = gr.Radio(METHOD_CHOICES, value=DEFAULTS["method"], label="Method", elem_id="attribution-method")
                position = gr.Number(DEFAULTS["position"], precision=0, label="Explain token #",
                                     info="#0 is </s>; the tokens before it are read; empty = the text's last token",
                                     elem_id="attribution-position")
                target = gr.Textbox("", label="Target word", info="empty = the token at that number",
                                    elem_id="attribution-target")
                contrast = gr.Textbox("", label="Rather than (contrast word)", info="empty = no contrast",
                                      elem_id="attribution-contrast")
                baseline_text = gr.Textbox("", label="Baseline text (integrated gradients)",
                                           info="empty = padding; else as many tokens as the text",
                                           elem_id="attribution-baseline")
                steps = gr.Slider(2, 256, value=DEFAULTS["steps"], step=1, label="Steps (integrated gradients)",
                                  info="more are added where completeness needs them", elem_id="attribution-steps")
                occlusion = gr.Radio(OCCLUSION_CHOICES, value=DEFAULTS["occlusion"], label="Occlusion: each piece",
                                     elem_id="attribution-occlusion")
                level = gr.Radio(list(view.LEVELS), value=DEFAULTS["level"], label="Level", elem_id="attribution-level")
                run = gr.Button("Attribute", variant="primary", elem_id="attribution-run")
            with gr.Column(scale=3):
                status = status_note("attribution-status")
                coloured = gr.HTML(elem_id="attribution-text")
                plot = gr.Plot(label="Attribution and attention rollout", show_label=False, elem_id="attribution-plot")
                summary = gr.Markdown(elem_id="attribution-summary")

    inputs = [text, position, method, target, contrast, baseline_text, steps, occlusion, level, model_picker]
    outputs = [coloured, plot, summary]

    def attribute(text, *values):
        """Attribute the token at `position` of `text` (or `target`) to the tokens before it.

        Returns the text coloured by each word's (or token's) score as HTML, a plotly bar chart with
        attention rollout beside it, and a summary (f, and for integrated gradients the completeness
        gap, its tolerance and the steps used). Token numbers count from 0 (#0 is the </s> marker).
        """
        return attribution_outputs(engine, text, *values)

    attribute.__signature__ = controls_signature(["text", *DEFAULTS], DEFAULTS)
    api = gr.Button(visible=False, elem_classes=["api-only"])
    api.click(friendly_errors(attribute), inputs, outputs, api_name="attribute", concurrency_id="attention")
    gr.on([run.click, level.input], on_page(attribute, len(outputs)), inputs, [*outputs, status],
          api_visibility="private", concurrency_id="attention", trigger_mode="always_last")
    return {"position": position, "target": target, "contrast": contrast, "run": run, "method": method,
            "summary": summary}
