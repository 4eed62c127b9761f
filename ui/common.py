"""What every tab shares: error translation, the model picker, load progress, the examples."""

from __future__ import annotations

import functools
import inspect
import json
import logging
from typing import Any, Callable

import gradio as gr

from biogpt.hub import ASSETS_DIR
from biogpt.serving import Engine, InputError, ModelNotAvailableError

from .views import visitor_text

logger = logging.getLogger("biogpt.studio")
MAX_MESSAGE_CHARS = 400  # an error message quoting a long input is cut to this, in the middle


def _as_user_error(error: BaseException) -> gr.Error:
    """A one-sentence gr.Error: a toast in the browser, an AppError in gradio_client.

    Gradio renders a toast's message as HTML, and messages may quote what the visitor typed:
    `<`, `>` and `&` are escaped so that markup shows as text, and a long quote is shortened in
    the middle. A refused input is the visitor's mistake: no traceback (which would repeat the
    whole input) goes to the server's log."""
    if isinstance(error, gr.Error):
        return error
    if isinstance(error, (InputError, ModelNotAvailableError, ValueError)):
        # Engine, loading and generation all word their ValueErrors for the visitor.
        message = str(error)
        logger.warning("Refused a request: %s", " ".join(message.split())[:160])  # one line, no traceback
        if len(message) > MAX_MESSAGE_CHARS:
            half = MAX_MESSAGE_CHARS // 2
            message = f"{message[:half]} … {message[-half:]}"
        return gr.Error(visitor_text(message), print_exception=False)
    logger.exception("Unexpected error in a request", exc_info=error)
    return gr.Error(
        f"Something went wrong on the server ({type(error).__name__}). The app is still running: "
        "try again, or try a shorter text."
    )


def friendly_errors(handler: Callable) -> Callable:
    """Wrap an event handler (plain or generator) so that every failure reaches the visitor as
    a readable gr.Error and never as a bare red badge."""
    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def generator_wrapper(*args: Any, **kwargs: Any):
            try:
                yield from handler(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - translated, logged when unexpected
                raise _as_user_error(error) from error

        return generator_wrapper

    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any):
        try:
            return handler(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            raise _as_user_error(error) from error

    return wrapper


def controls_signature(names: list[str], defaults: dict[str, Any] | None = None,
                       progress: gr.Progress | None = None, request: bool = False) -> inspect.Signature:
    """The signature gradio reads for a handler that takes its controls as *values: the API's
    parameter names in the inputs' order (with defaults where given), then gradio's special
    arguments, which it passes positionally after the values."""
    def parameter(name: str, **extra: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, **extra)

    defaults = defaults or {}
    parameters = [parameter(n, default=defaults[n]) if n in defaults else parameter(n) for n in names]
    if progress is not None:
        parameters.append(parameter("progress", default=progress))
    if request:
        parameters.append(parameter("request", default=None, annotation=gr.Request))
    return inspect.Signature(parameters)


def progress_reporter(progress: gr.Progress) -> Callable[[float, str], None]:
    """The engine reports load steps as (fraction, message); Gradio draws them as a bar."""
    return lambda fraction, message: progress(fraction, desc=message)


def model_dropdown(engine: Engine, task: str, elem_id: str, label: str = "Model") -> gr.Dropdown:
    """Only the models the server offers: Gradio rejects any other value before the engine sees it."""
    return gr.Dropdown(
        choices=[(engine.describe_choice(name), name) for name in engine.model_choices(task)],
        value=engine.default_choice(task),
        label=label,
        info="Hub models are downloaded on first use; that needs internet and takes a while.",
        elem_id=elem_id,
    )


@functools.lru_cache(maxsize=1)
def load_examples() -> dict[str, Any]:
    """assets/examples.json: examples from the shared datasets' train splits, one list a tab."""
    with open(ASSETS_DIR / "examples.json", encoding="utf-8") as f:
        return json.load(f)


PRIVATE = dict(api_visibility="private", queue=False)  # UI-only events: not in the API, not queued


# Shown above a tab's results after a refused request, in place of Gradio's red "Error" badge on
# every output: the toast says why once, and this says that what is shown is the previous result.
PREVIOUS_RESULT_NOTE = (
    "**Not updated:** the last request was refused (the message at the top right says why); "
    "the results below are from the previous run."
)


def status_note(elem_id: str) -> gr.Markdown:
    """The line that marks a tab's results as previous after a refused request (empty otherwise)."""
    return gr.Markdown("", elem_id=elem_id, elem_classes=["status-note"])


def on_page(handler: Callable, outputs: int) -> Callable:
    """The page's version of a handler whose results fill `outputs` components, plus one status
    note: a failure becomes one toast (gr.Warning, titled Error) and leaves every output as it was,
    with the note saying so; success clears the note. The API keeps the raising version (an
    AppError carrying the same sentence), registered by api_only."""
    keep = (gr.skip(),) * outputs

    def toast(error: Exception) -> None:
        shown = _as_user_error(error)  # logs real faults with their traceback, input errors not at all
        gr.Warning(shown.message, title="Error")

    if inspect.isgeneratorfunction(handler):

        @functools.wraps(handler)
        def generator_page(*args: Any, **kwargs: Any):
            try:
                for update in handler(*args, **kwargs):
                    yield (*update, "")
            except Exception as error:  # noqa: BLE001 - shown as a toast
                toast(error)
                yield (*keep, PREVIOUS_RESULT_NOTE)

        return generator_page

    @functools.wraps(handler)
    def page(*args: Any, **kwargs: Any):
        try:
            return (*handler(*args, **kwargs), "")
        except Exception as error:  # noqa: BLE001 - shown as a toast
            toast(error)
            return (*keep, PREVIOUS_RESULT_NOTE)

    return page


def api_only(handler: Callable, inputs: list, outputs: list, api_name: str, **event_kwargs: Any):
    """The API's event for a handler the page calls through on_page: fired by a trigger no
    visitor sees, so that gradio_client keeps `api_name`, its parameters, outputs and AppError."""
    trigger = gr.Button(visible=False, elem_classes=["api-only"])
    return trigger.click(friendly_errors(handler), inputs, outputs, api_name=api_name,
                         concurrency_id=api_name, **event_kwargs)


def page_and_api(triggers: list, handler: Callable, inputs: list, outputs: list, status: gr.Markdown,
                 api_name: str, api_description: str = "", **event_kwargs: Any):
    """Both events of a tab's main action (see on_page and api_only); they share one concurrency
    group, so the page and the API together stay within the tab's limit. Returns the page's event."""
    api_only(handler, inputs, outputs, api_name, api_description=api_description, **event_kwargs)
    return gr.on(triggers, on_page(handler, len(outputs)), inputs, [*outputs, status], api_visibility="private",
                 concurrency_id=api_name, **event_kwargs)
