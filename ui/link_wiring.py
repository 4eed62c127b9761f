"""Shareable links in the page (issue 16): a tab's state follows the visitor into the URL, and opening
such a link restores the tab and runs it once. The encoding itself (what a link may hold, its limits, the
sentences for bad links) is `ui.links`; this is only the Gradio glue.

- `track`: every change of the tab's text or controls re-encodes its state (`links.encode_state`) and
  the page writes it into the address bar with `history.replaceState` (no reload, no history entry).
- `LinkTarget` (made by `shareable` for a tab that runs on a button, by `restore_on_load` for one that
  draws with a function of its own): what `restore_links` fills when a link names the tab, and the hidden
  trigger (`opened`) whose change the tab adds to its run's triggers. Filling the controls fires only
  their `.change` events (the URL, the mode's groups: no model), so the link's run is that one ordinary
  request, queued in the tab's own concurrency group where issue 8's per-visitor, per-tab limits apply.
- `restore_links`: ONE page-load event for all tabs (decoding only, no model, group "link"): one load
  event a tab would make every page load cost the visitor as many queued requests as there are tabs.
  A bad link is one toast; unknown keys are named in a toast.
- `link_button` and `LinkTarget.copies_on`: Copy link encodes the tab's own state, writes it into the address bar and copies it.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import parse_qsl

import gradio as gr

from ui import links
from ui.common import on_page, status_note
from ui.views import visitor_text

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
WRITE_AND_COPY_JS = f"""(query) => {{ ({WRITE_URL_JS})(query); ({COPY_JS})(); }}"""
HIDDEN_EVENT = dict(api_visibility="private", queue=False, show_progress="hidden")


def _link_toast(message: str) -> None:
    gr.Warning(visitor_text(message), title="Link")  # the message may quote the link: shown as text


def _encoder(tab_id: str, names: list[str], defaults: Mapping[str, Any]) -> Callable:
    def encode(text_value, *values):
        try:
            return links.encode_state(tab_id, text_value or "", dict(zip(names, values)), defaults)
        except ValueError as error:  # a text too long for a link: say so once, keep the last link
            _link_toast(str(error))
            return gr.skip()

    return encode


# Numbers each state change in the page: encodings may come back out of order, and only a newer one is written.
NUMBER_JS = "(...values) => [...values.slice(0, -1), (window.studioLinkNumber = (window.studioLinkNumber || 0) + 1)]"
# Resolves SETTLE_MS after a change: with a new value when no other change came meanwhile, else unchanged.
SETTLE_MS = 1000
SETTLE_JS = f"""async (settled) => {{
  const mine = (window.studioLinkChange = (window.studioLinkChange || 0) + 1);
  await new Promise((done) => setTimeout(done, {SETTLE_MS}));
  return mine === window.studioLinkChange ? String(mine) : undefined;  // undefined: Gradio leaves the box alone
}}"""
WRITE_NEWER_URL_JS = f"""(numbered) => {{
  if (!numbered) return;
  const cut = numbered.indexOf('|'), number = Number(numbered.slice(0, cut));
  if (number < (window.studioLinkWritten || 0)) return;
  window.studioLinkWritten = number;
  ({WRITE_URL_JS})(numbered.slice(cut + 1));
}}"""


def track(tab_id: str, text: gr.components.Component, controls: Mapping[str, gr.components.Component],
          defaults: Mapping[str, Any]) -> None:
    """Keep the address bar in step with the tab's text and controls."""
    encode = _encoder(tab_id, list(controls), defaults)
    number = gr.Number(0, visible=False)
    numbered = gr.Textbox(visible="hidden", elem_id=f"{tab_id}-link-query")

    def encode_numbered(text_value, *values_and_number):
        *values, change = values_and_number
        query = encode(text_value, *values)
        return f"{int(change)}|{query}" if isinstance(query, str) else query  # else gr.skip(): too long for a link

    # Every change is encoded ("always_last" dropped a control changed while the text's encoding was under way);
    # the page numbers them and writes only the newest (see WRITE_NEWER_URL_JS). Changed by the visitor or set
    # by the tab itself (a lesson sets its text, a link fills the controls).
    # The encoding waits until the visitor pauses (SETTLE_JS): a request in flight for every keystroke or slider
    # step kept the page busy, and a redraw in the page (the Attention heatmap) showed ~100 ms later.
    settled = gr.Textbox("", visible=False)
    triggers = [text.change, *(component.change for component in controls.values())]
    gr.on(triggers, None, [settled], [settled], js=SETTLE_JS, api_visibility="private")
    settled.change(encode_numbered, [text, *controls.values(), number], [numbered], js=NUMBER_JS,
                   trigger_mode="multiple", **HIDDEN_EVENT)
    # On the hidden box's change, not in a .then: a .then's js read the box before its new value had arrived.
    numbered.change(None, [numbered], None, js=WRITE_NEWER_URL_JS, api_visibility="private")


def _choice_values(component: gr.components.Component) -> list | None:
    """The values a radio or dropdown accepts (None: any value of its kind)."""
    choices = getattr(component, "choices", None)
    if choices is None or getattr(component, "allow_custom_value", False) or getattr(component, "multiselect", False):
        return None
    return [choice[1] if isinstance(choice, (tuple, list)) else choice for choice in choices]


class LinkTarget:
    """One tab as a link restores it: its text, its controls and their defaults, and a hidden trigger per
    action the link may run (`action_key` names the setting that chooses it, e.g. Classify's mode)."""

    def __init__(self, tab_id: str, text: gr.components.Component, controls: Mapping[str, gr.components.Component],
                 defaults: Mapping[str, Any] | None = None, action_key: str | None = None,
                 arrange: Callable[[dict], dict] | None = None, arranged: Sequence[gr.components.Component] = ()):
        self.tab_id, self.text, self.controls, self.action_key = tab_id, text, dict(controls), action_key
        self.defaults = dict(defaults) if defaults is not None else {n: c.value for n, c in self.controls.items()}
        self.arrange, self.arranged = arrange, list(arranged)  # layout a link sets too (Classify's inner tab)
        self.openers: dict[str, gr.Textbox] = {}

    def opened(self, action: str = "") -> gr.Textbox:
        """The hidden trigger whose change means "a link opened this tab for `action`": the tab adds
        `.change` of it to the triggers of that action's run."""
        if action not in self.openers:
            self.openers[action] = gr.Textbox(visible=False, elem_id=f"{self.tab_id}-link-opened{'-' + action if action else ''}")
        return self.openers[action]

    @property
    def components(self) -> list[gr.components.Component]:
        return [self.text, *self.controls.values(), *self.arranged, *self.openers.values()]

    def restored(self, state: links.LinkState, tabs: gr.Tabs) -> dict:
        """The updates that show a decoded link and fire its run once; ValueError for a value no control takes."""
        settings = {**self.defaults, **state.settings}
        for name, component in self.controls.items():
            allowed = _choice_values(component)
            if allowed is not None and name in state.settings and settings[name] not in allowed:
                raise ValueError(f"The link's {name} must be one of {', '.join(map(str, allowed[:12]))}, "
                                 f"not {str(settings[name])[:40]!r}.")
        action = str(settings[self.action_key]) if self.action_key else ""
        if action not in self.openers:
            raise ValueError(f"This link's {self.action_key or 'tab'} cannot be opened from a link.")
        return {tabs: gr.Tabs(selected=self.tab_id), self.text: state.text,
                **{component: settings[name] for name, component in self.controls.items()},
                **(self.arrange(settings) if self.arrange else {}),
                self.openers[action]: f"{time.time_ns()}"}  # a new value: its change runs the tab

    def copies_on(self, button: gr.Button) -> None:
        """`button` (a tab's "Copy link", see `link_button`) puts this tab's own state into the address bar and
        the clipboard, also when another tab was changed last."""
        query = gr.Textbox(visible="hidden")
        button.click(_encoder(self.tab_id, list(self.controls), self.defaults), [self.text, *self.controls.values()],
                     [query], **HIDDEN_EVENT).then(None, [query], None, js=WRITE_AND_COPY_JS, api_visibility="private")


def link_button(elem_id: str) -> gr.Button:
    """A tab's "Copy link", placed by the tab near its main action (wired by `LinkTarget.copies_on`)."""
    return gr.Button("Copy link", size="sm", elem_id=elem_id, min_width=100)


def shareable(tab_id: str, text: gr.components.Component, controls: Mapping[str, gr.components.Component],
              action_key: str | None = None, arrange: Callable[[dict], dict] | None = None,
              arranged: Sequence[gr.components.Component] = ()) -> LinkTarget:
    """A tab that runs on a button: the URL tracks it, and a link fills it and fires `opened(action)`.
    The defaults a link leaves out are the controls' values as built."""
    target = LinkTarget(tab_id, text, controls, None, action_key, arrange, arranged)
    track(tab_id, text, controls, target.defaults)
    return target


def restore_on_load(tab_id: str, text: gr.components.Component, controls: Mapping[str, gr.components.Component],
                    defaults: Mapping[str, Any], render: Callable[[str, dict], tuple],
                    outputs: Sequence[gr.components.Component] = (), concurrency_id: str = "") -> LinkTarget:
    """A tab that draws a link with its own function: `render(text, settings)` returns the values of
    `outputs`, queued in `concurrency_id` (the tab's group); a failure is one toast and a status note."""
    target = LinkTarget(tab_id, text, controls, defaults)
    names = list(controls)

    def draw(text_value, *values):
        return render(text_value, dict(zip(names, values)))

    status = status_note(f"{tab_id}-link-status")
    target.opened().change(on_page(draw, len(outputs)), [text, *controls.values()], [*outputs, status],
                           api_visibility="private", concurrency_id=concurrency_id or tab_id, show_progress="minimal")
    return target


def restore_links(load: Callable, tabs: gr.Tabs, targets: Iterable[LinkTarget]) -> None:
    """What create_app calls once with `demo.load`, the page's Tabs and every tab's LinkTarget."""
    by_tab = {target.tab_id: target for target in targets}
    if not by_tab:
        return
    outputs = [tabs, *(component for target in by_tab.values() for component in target.components)]

    def updates_of(request) -> dict:
        query = str(request.url.query) if request is not None else ""
        if "tab" not in dict(parse_qsl(query)):  # no link (maybe only Gradio's __theme)
            return {}
        try:
            state = links.decode_state(query, {tab_id: target.defaults for tab_id, target in by_tab.items()})
            updates = by_tab[state.tab].restored(state, tabs)
        except ValueError as error:
            _link_toast(str(error))
            return {}
        if state.ignored:
            _link_toast(f"This link's {', '.join(state.ignored)} mean nothing here and were ignored.")
        return updates

    def restore(request: gr.Request):
        updates = updates_of(request)
        return tuple(updates.get(component, gr.skip()) for component in outputs)

    # Queued although it only decodes: a bad link's toast travels on the queue's stream.
    load(restore, None, outputs, api_visibility="private", concurrency_id="link", show_progress="hidden")


def copy_link_button(elem_id: str) -> gr.Button:
    """Copy link for a tab whose state is the address bar's (Teach, the only tab it tracks on its page)."""
    button = link_button(elem_id)
    button.click(None, None, None, js=COPY_JS, api_visibility="private")
    return button
