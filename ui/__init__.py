"""BioGPT Studio's Gradio app: `create_app(engine)` builds the page, one function a tab.

The tabs only arrange components and call the engine; what they show is built by pure
functions in `views.py` (HTML, tables, exports) and `plots.py` (plotly figures).

Gradio 6 takes theme and CSS at launch(), so `launch_options()` holds them for app.py and
the tests alike.
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from biogpt.hub import ASSETS_DIR
from biogpt.serving import Engine

from .attention_tab import build_attention_tab
from .classify_tab import build_classify_tab
from .generate_tab import build_generate_tab
from . import http_guard, layer_route, link_wiring
from .http_guard import StudioBlocks
from .ner_tab import build_ner_tab
from .tasks_tab import build_tasks_tab
from .teach_tab import build_teach_tab

DISCLAIMER = (
    "This is a research and teaching tool. Language models write fluent text that can be wrong; "
    "never use its output for diagnosis or treatment."
)


# (tab title, tab id, builder).
TABS: list[tuple[str, str, Callable[[Engine], None]]] = [
    ("Generate", "generate", build_generate_tab),
    ("NER", "ner", build_ner_tab),
    ("Classify", "classify", build_classify_tab),
    ("Attention", "attention", build_attention_tab),
    ("Tasks", "tasks", build_tasks_tab),
    ("Teach", "teach", build_teach_tab),
]


def header_html(engine: Engine) -> str:
    model = html.escape(engine.describe_choice(engine.default_model))
    return (
        '<div class="studio-header">'
        '<div class="studio-title"><h1>BioGPT Studio</h1>'
        "<span>Run, inspect and teach Microsoft's biomedical GPT</span></div>"
        f'<div class="studio-serving">Answering on <b>{html.escape(engine.device)}</b> in '
        f"<b>{html.escape(engine.dtype)}</b>"
        + (f" with <b>{html.escape(engine.quantize)}</b> weights" if engine.quantize else "")
        + (f" ({html.escape(engine.quantization_note)})" if engine.quantization_note else "")
        + f" · default model <b>{model}</b> · every result names the model, "
        "settings and seed that produced it"
        + (f'<br><span class="studio-warning">{html.escape(engine.dtype_note)}</span>' if engine.dtype_note else "")
        + "</div>"
        f'<div class="studio-disclaimer" role="note"><b>Not medical advice.</b> {html.escape(DISCLAIMER)}</div>'
        "</div>"
    )


def create_app(engine: Engine) -> gr.Blocks:
    """The whole page. The caller queues and launches it (see app.py)."""
    # delete_cache: exported files and uploads older than an hour are removed every hour.
    # StudioBlocks: every API input is checked first and a bad one is answered with a sentence.
    with StudioBlocks(title="BioGPT Studio", delete_cache=(3600, 3600)) as demo:
        gr.HTML(header_html(engine), elem_id="studio-header")
        link_targets = []
        with gr.Tabs(elem_id="studio-tabs") as tabs:
            for title, tab_id, build in TABS:
                with gr.Tab(title, id=tab_id, elem_id=f"tab-{tab_id}") as tab:
                    built = build(engine)
                if isinstance(built, dict) and "on_open" in built:  # a tab that draws something when opened
                    built["on_open"](tab.select)
                if isinstance(built, dict) and "on_load" in built:  # a tab that restores a shared link (a LinkTarget)
                    link_targets.append(built["on_load"])
        link_wiring.restore_links(demo.load, tabs, link_targets)  # one load event for every tab's links
    layer_route.install(demo, engine)  # the Attention page fetches a heatmap's layer there
    return demo


def studio_theme() -> gr.themes.Base:
    """Gradio's Soft theme in teal, with every text colour at least 4.5:1 against its background
    (WCAG AA) in the light and the dark mode: Soft's greys, teal labels and teal buttons measure
    2.2-3.7:1. The axe-core scan in tests/browser/test_every_user.py checks it."""
    return gr.themes.Soft(
        primary_hue="teal", secondary_hue="orange",
        font=["DejaVu Sans", "Arial", "sans-serif"], font_mono=["DejaVu Sans Mono", "monospace"],
    ).set(
        body_text_color_subdued="*neutral_600", body_text_color_subdued_dark="*neutral_300",
        input_placeholder_color="*neutral_500", input_placeholder_color_dark="*neutral_400",
        block_label_text_color="*primary_800", block_label_background_fill_dark="*primary_800",
        block_title_text_color="*primary_800",
        button_primary_background_fill="*primary_700", button_primary_background_fill_dark="*primary_700",
        button_primary_background_fill_hover="*primary_800", button_primary_background_fill_hover_dark="*primary_800",
        checkbox_label_background_fill_selected="*primary_700",
        checkbox_label_background_fill_selected_dark="*primary_700",
    )


def launch_options() -> dict[str, Any]:
    """Keyword arguments for launch(): system fonts only (offline-safe), our CSS, the API link, the
    HTTP guards (body cap, no uploads, 404 for unknown endpoints) and a bound on kept sessions."""
    return dict(
        theme=studio_theme(),
        css=(ASSETS_DIR / "style.css").read_text(encoding="utf-8"),
        js=(ASSETS_DIR / "studio.js").read_text(encoding="utf-8"),
        footer_links=["api", "gradio", "settings"],
        share=False,
        ssr_mode=False,
        app_kwargs=http_guard.app_kwargs(),
        state_session_capacity=http_guard.MAX_SESSIONS,
    )


__all__ = ["TABS", "create_app", "header_html", "launch_options"]
