"""One real app (engine + Gradio, as app.py builds it) for the Attention tab's API and browser
tests: started on first use, once per pytest process, closed at exit. Sharing it keeps the two
test modules from loading the model and starting a server twice on two cores."""

from __future__ import annotations

import atexit
import base64
import contextlib
import html
import json

import numpy as np

from app_server import running_app

_server: tuple[str, object] | None = None


def attention_server() -> tuple[str, object]:
    """(url, engine) of the shared app."""
    global _server
    if _server is None:
        stack = contextlib.ExitStack()
        _server = stack.enter_context(running_app(preload=False))
        atexit.register(stack.close)
    return _server


def decode_plot(plot: dict) -> tuple[list[dict], dict]:
    """gr.Plot over the API: plotly JSON whose arrays are base64 typed arrays -> numpy."""
    assert plot["type"] == "plotly"
    figure = json.loads(plot["plot"])

    def decode(value):
        if isinstance(value, dict) and "bdata" in value:
            array = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
            shape = value.get("shape")
            if isinstance(shape, str):  # plotly writes "rows, cols"
                shape = [int(x) for x in shape.split(",")]
            return array.reshape(shape) if shape else array
        return value

    return [{key: decode(value) for key, value in trace.items()} for trace in figure["data"]], figure["layout"]


def plain(label: str) -> str:
    """An axis label as the token it names: no zero-width de-duplication, no HTML escapes."""
    return html.unescape(str(label).replace("\u200b", ""))
