"""Shareable links in the page (issue 16): a tab's state follows the visitor into the URL, and opening
such a link restores the tab and draws it. The encoding itself (what a link may hold, its limits, the
sentences for bad links) is `ui.links`; this is only the Gradio glue.

- `track`: every change of the tab's text or controls re-encodes its state (`links.encode_state`) and
  the page writes it into the address bar with `history.replaceState` (no reload, no history entry).
- `restore_on_load`: on page load, a link naming this tab selects the tab, fills its controls and the
  view is drawn (by the tab itself when it draws on opening, else in the same event), as an ordinary
  request in the tab's concurrency group, so issue 8's limits (per visitor, per tab) apply.
  A bad link is one toast; unknown keys are named in a toast.
- `copy_link_button`: copies the address bar (the state of the tab last changed) to the clipboard.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence
from urllib.parse import parse_qsl

import gradio as gr

from ui import links

# Writes the state into the address bar, keeping Gradio's own __theme parameter.
WRITE_URL_JS = """(query) => {
  if (query === null || query === undefined) return;
  const theme = new URLSearchParams(window.location.search).get('__theme');
  const params = new URLSearchParams(query);
  if (theme) params.set('__theme', theme);
  const search = params.toString();
  window.history.replaceState(null, '', window.location.pathname + (search ? '?' + search : ''));
}"""
COPY_JS = """() => { navigator.clipboard && navigator.clipboard.writeText(window.location.href).catch(() => {}); }"""


def track(tab_id: str, text: gr.components.Component, controls: Mapping[str, gr.components.Component],
          defaults: Mapping[str, Any]) -> None:
    """Keep the address bar in step with the tab's text and controls."""
    names = list(controls)
    query = gr.Textbox(visible=False, elem_id=f"{tab_id}-link-query")

    def encode(text_value, *values):
        try:
            return links.encode_state(tab_id, text_value or "", dict(zip(names, values)), defaults)
        except ValueError as error:  # a text too long for a link: say so once, keep the last link
            gr.Warning(str(error), title="Link")
            return gr.skip()

    # change: typed or set by the tab itself (a lesson sets its text); always_last keeps the newest state.
    triggers = [text.change, *(component.change for component in controls.values())]
    gr.on(triggers, encode, [text, *controls.values()], [query], api_visibility="private", queue=False,
          show_progress="hidden", trigger_mode="always_last").then(None, [query], None, js=WRITE_URL_JS, api_visibility="private")


def restore_on_load(tab_id: str, text: gr.components.Component, controls: Mapping[str, gr.components.Component],
                    defaults: Mapping[str, Any], render: Callable[[str, dict], tuple] | None = None,
                    outputs: Sequence[gr.components.Component] = (), concurrency_id: str = "") \
        -> Callable[[Callable, gr.Tabs], None]:
    """What create_app calls with `demo.load` and the page's Tabs: restore a link naming this tab.

    With `render`, the link is drawn in the same event, queued in `concurrency_id` (`render(text, settings)`
    returns the values of `outputs`). Without, the event only fills the controls (decoding, no model: its own
    "link" group) and the tab draws itself as it does when opened and when a control changes; drawing here too
    would be a second or third request of this visitor in the tab, past issue 8's per-tab limit (a 429)."""
    names = list(controls)

    def restore(request: gr.Request):
        nothing = (gr.skip(),) * (2 + len(names) + len(outputs))
        query = str(request.url.query) if request is not None else ""
        if dict(parse_qsl(query)).get("tab") != tab_id:  # no link, or another tab's
            return nothing
        try:
            state = links.decode_state(query, {tab_id: defaults})
            settings = {**defaults, **state.settings}
            drawn = render(state.text, settings) if render else ()
        except ValueError as error:
            gr.Warning(str(error), title="Link")
            return nothing
        if state.ignored:
            gr.Warning(f"This link's {', '.join(state.ignored)} mean nothing here and were ignored.", title="Link")
        return (gr.Tabs(selected=tab_id), state.text, *(settings[name] for name in names), *drawn)

    def on_load(load: Callable, tabs: gr.Tabs) -> None:
        # Queued even when it only decodes: a bad link's toast travels on the queue's stream.
        load(restore, None, [tabs, text, *controls.values(), *outputs], api_visibility="private",
             concurrency_id=concurrency_id if render else "link", show_progress="minimal" if render else "hidden")

    return on_load


def copy_link_button(elem_id: str) -> gr.Button:
    button = gr.Button("Copy link", size="sm", elem_id=elem_id)
    button.click(None, None, None, js=COPY_JS, api_visibility="private")
    return button
