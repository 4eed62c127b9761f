"""The Generate tab's branching panel: open a generated token (click, tap, or Enter on it; or type
its number), pick one of its alternatives and continue from there with the same settings and seed,
as a new branch; switch between branches; export them; or explain the token in the Attention tab.

The tree itself is `ui.branches` (pure); this module only lays out components and wires events.
Branches are decoded by `Engine.generate(request, forced=ForcedPrefix(...))` in Generate's
concurrency group. "Explain this token" finds the token in the Attention tab's reading of the text
(by its first character), then the browser fills that tab and presses its Attribute button.
"""

from __future__ import annotations

from typing import Callable

import gradio as gr

from biogpt.serving import DecodingStopped, Engine, GenerationResult
from biogpt.serving.requests import ForcedPrefix

from . import branches, views
from .admission import reader_gone
from .common import PRIVATE, on_page, status_note

# A click, tap or Enter / Space on a generated token (views.generation_html's focusable spans, whose
# details start "token N:") puts N in the panel's token box, which opens it. Installed once per page.
OPEN_TOKEN_JS = """
if (!window.studioBranching) {
  window.studioBranching = true;
  const open = (event) => {
    const token = event.target.closest && event.target.closest("#gen-tokens .tok[data-tip]");
    const number = token && /^token (\\d+):/.exec(token.dataset.tip);
    const box = document.querySelector("#gen-branch-token input");
    if (!number || !box) return false;
    box.value = number[1];
    box.dispatchEvent(new Event("input", { bubbles: true }));
    box.dispatchEvent(new Event("change", { bubbles: true }));
    return true;
  };
  document.addEventListener("click", open);
  document.addEventListener("keydown", (event) => {
    if ((event.key === "Enter" || event.key === " ") && open(event)) event.preventDefault();
  });
}
"""

# "Explain this token": open the Attention tab (Gradio draws a tab's components when it is first
# opened), wait for them, fill its text and the Attribution panel's token number, then press Attribute
# and, once it has answered, Analyse (the attention view of that text).
EXPLAIN_JS = """
(target) => {
  if (!target || target.text === undefined) return;
  const tab = [...document.querySelectorAll("#studio-tabs [role=tab]")].find((t) => t.textContent.trim() === "Attention");
  if (tab) tab.click();
  const set = (selector, value) => {
    const box = document.querySelector(selector);
    if (!box) return;
    box.value = value;
    box.dispatchEvent(new Event("input", { bubbles: true }));
  };
  let tries = 0;
  const fill = () => {
    if (!document.querySelector("#attention-text textarea") || !document.querySelector("#attribution-position input")) {
      if (++tries < 100) setTimeout(fill, 100);
      return;
    }
    if (tries >= 0) {  // first sight: let the newly drawn tab take its initial values before ours
      tries = -1;
      setTimeout(fill, 500);
      return;
    }
    set("#attention-text textarea", target.text);
    set("#attribution-position input", String(target.position));
    set("#attribution-target textarea, #attribution-target input", "");
    set("#attribution-contrast textarea, #attribution-contrast input", "");
    // One after the other: a visitor may have two requests of a tab in its queue at once (ui.admission),
    // and the tab's opening drew a view already.
    const summary = () => document.querySelector("#attribution-summary")?.innerText;
    const before = summary();
    let waited = 0;
    const analyse = () => {
      if (summary() === before && ++waited < 600) return setTimeout(analyse, 100);
      document.querySelector("#attention-analyse")?.click();
    };
    setTimeout(() => { document.querySelector("#attribution-run")?.click(); analyse(); }, 300);
  };
  fill();
}
"""


RESULT_PANES = 5  # what a result fills in the Generate tab: text, tokens, summary, token table, JSON


def position_at(offsets: list[tuple[int, int]], char: int) -> int:
    """The analysed token that starts at character `char` (or the first after it; the position after
    the text when none does). Token 0, BioGPT's </s> marker, is never it."""
    for index, (start, end) in enumerate(offsets):
        if index > 0 and end > start and start >= char:
            return index
    return len(offsets)


def _whole(value, problem: str) -> int:
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(problem) from None


def build_branch_panel(engine: Engine, latest: gr.State) -> Callable[[list[gr.Component]], None]:
    """The panel's components, in the current Blocks context. `latest` holds the tab's newest result.
    Returns `wire(shown)`: call it with the components a result fills (text, tokens HTML, summary,
    table, JSON), once they exist."""
    tree = gr.State(None)
    with gr.Accordion("Branch from a token: what if the model had picked another word?", open=True,
                      elem_id="gen-branching"):
        gr.HTML('<div class="hint">Click, tap or press Enter on a generated token (or type its number), pick '
                "an alternative and continue with the same settings and seed: the tokens before it are kept "
                "exactly, and each branch can be reproduced from its seed, forced tokens and settings.</div>",
                js_on_load=OPEN_TOKEN_JS, elem_id="gen-branch-hint")
        branch_status = status_note("gen-branch-status")
        with gr.Row(equal_height=False):
            token = gr.Number(None, precision=0, label="Token number", minimum=1, elem_id="gen-branch-token")
            # Custom values allowed: the choices change with every opened token (the page's guard checks
            # a fixed list); the handler reads the value as a token id and says so when it is not one.
            alternative = gr.Dropdown([], value=None, label="Alternatives", interactive=True, allow_custom_value=True,
                                      elem_id="gen-branch-alternative")
        opened = gr.Markdown("", elem_id="gen-branch-opened")
        with gr.Row():
            go = gr.Button("Continue with this", variant="primary", elem_id="gen-branch-continue")
            explain = gr.Button("Explain this token", elem_id="gen-explain")
        selector = gr.Dropdown([], value=None, label="Branch shown", interactive=True, allow_custom_value=True,
                               elem_id="gen-branch-select")
        export = gr.File(label="Branches (JSON: seed, forced tokens, sampler rule, settings)", visible=False,
                         elem_id="gen-branch-export")
        explain_target = gr.JSON(visible=False)

    def open_token(current, result, number):
        """The opened token's alternatives (the page's tree made or kept for the newest run)."""
        if number is None or result is None:
            return current, gr.update(choices=[], value=None), ""
        current = branches.tree_for(current, result)
        choices = branches.choices_at(current, int(number) - 1)
        sample = current.shown.sample
        chosen = sample.token_texts[int(number) - 1].strip() or "∅"
        said = (f"Token {int(number)} of branch {current.current}: **{views.visitor_text(chosen)}** "
                f"({views.percent(float(sample.probabilities[int(number) - 1]))}); choose another and continue.")
        return current, gr.update(choices=choices, value=choices[0][1] if choices else None), said

    def shown_outputs(current, result: GenerationResult) -> tuple:
        return (result.samples[0].text, views.generation_html(result), views.generation_info(result),
                views.token_rows(result), views.generation_json(result), current,
                gr.update(choices=branches.branch_labels(current), value=current.current))

    def export_file(current):
        return gr.update(value=views.write_export(branches.export_json(current), ".json", task="branches",
                                                  model=current.request.model), visible=True)

    def continue_with(current, result, number, token_id, request: gr.Request):
        """A new branch: the shown branch's tokens before `number`, then `token_id`, then decoding as before."""
        current = branches.tree_for(current, result)
        if token_id is None:
            raise ValueError("Open a generated token and choose one of its alternatives first.")
        position = int(number) - 1 if number is not None else None
        forced = branches.forced_ids(current, position, _whole(token_id, "Choose one of the token's alternatives."))
        results = engine.generate(branches.branch_request(current, forced), should_stop=reader_gone(request),
                                  forced=ForcedPrefix(token_ids=forced))
        final = None
        try:
            for final in results:
                pass
        except DecodingStopped:
            return (gr.skip(),) * (RESULT_PANES + 3)  # nobody is reading
        branches.add_branch(current, position, forced, final)
        return (*shown_outputs(current, final), export_file(current))

    continue_with.__annotations__ = {"request": gr.Request}  # gradio finds the request by its type hint

    def switch(current, number):
        if current is None or number is None or number == "":
            return (gr.skip(),) * (RESULT_PANES + 2)
        # A typed label ("2 · token 4: ...") names its branch by its first number.
        chosen = number.split("·")[0].strip() if isinstance(number, str) else number
        current.current = current.branch(_whole(chosen, "Choose a branch from the list.")).number
        return shown_outputs(current, current.shown.result)

    def explain_token(current, result, number):
        current = branches.tree_for(current, result)
        target = branches.explain_target(current, None if number is None else int(number) - 1)
        analysis = engine.analyze(target["text"])  # the Attention tab's reading (cached, so it reuses it)
        target["position"] = position_at(analysis.offsets, target["char"])
        return current, target

    def wire(shown: list[gr.Component]) -> None:
        assert len(shown) == RESULT_PANES, "text, tokens HTML, summary, token table, JSON"
        token.change(on_page(open_token, 3), [tree, latest, token], [tree, alternative, opened, branch_status],
                     **PRIVATE)
        go.click(on_page(continue_with, len(shown) + 3), [tree, latest, token, alternative],
                 [*shown, tree, selector, export, branch_status], api_visibility="private",
                 concurrency_id="generate")
        selector.input(on_page(switch, len(shown) + 2), [tree, selector], [*shown, tree, selector, branch_status],
                       **PRIVATE)
        # The target is cleared first, so that a refused explanation leaves the browser nothing old to act on.
        explain.click(lambda: None, None, explain_target, **PRIVATE).then(
            on_page(explain_token, 2), [tree, latest, token], [tree, explain_target, branch_status],
            api_visibility="private", concurrency_id="attention").then(
            None, [explain_target], None, js=EXPLAIN_JS, **PRIVATE)

    return wire


__all__ = ["build_branch_panel", "position_at"]

