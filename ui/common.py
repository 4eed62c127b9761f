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
