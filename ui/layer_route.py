"""The route the page fetches a heatmap's layer from when the visitor changes the layer (issue 15).

The page redraws a heatmap itself from the layer it holds (ui.attention_heatmap); for another layer it
needs that layer's numbers, not a figure. Asked through a Gradio event, the layer reached the page
150-250 ms after the key press although the server built it in 30-60 ms: every event makes Gradio's
front end update the loading status of each component that shows progress, which searches the
component tree and snapshots the component's state each time (profiled in Chromium: Svelte's
`$state.snapshot` and Gradio's tree search were most of the page's own work). A plain fetch skips that:

    POST <page>/studio/attention-layer   {"text": "...", "controls": {"layer": 3, "view": "Heatmap", ...}}

- 200: the payload (`attention_tab.redraw_data` with draw=True), JSON.
- 204: nothing the page can draw from (the analysis left the cache, or the controls name another view):
  the page asks the tab's Gradio event instead, which draws the view on the server.
- 400: one sentence for a request that is not one the page sends. 429: every worker is busy: the page
  asks the Gradio event instead, whose queue holds the per-visitor limits (ui.admission).

Cheap and bounded whoever calls it: it only reads analyses already cached (it never runs the model),
builds at most `WORKERS` payloads at a time in worker threads, and its body is capped with every
other one by ui.http_guard.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import fields
from typing import Any

import anyio
from starlette.middleware import Middleware

from ui import attention_tab
from ui.attention_heatmap import payload_text
from ui.http_guard import MAX_BODY_BYTES, send_refusal

PATH = "/studio/attention-layer"
WORKERS = 2  # payloads built at once (30-300 ms each on one core); a third request is answered 429 at once
CONTROL_NAMES = {f.name for f in fields(attention_tab.Controls)}
BAD_REQUEST = ('Send {"text": the analysed text, "controls": the Attention tab\'s controls by name} as JSON, '
               "as the page does.")


def controls_from(body: bytes) -> tuple[str, attention_tab.Controls] | None:
    """The text and controls a request names, or None when it is not what the page sends."""
    try:
        request = json.loads(body)
    except (ValueError, RecursionError):
        return None
    if not isinstance(request, dict) or not isinstance(request.get("text"), str):
        return None
    controls = request.get("controls")
    if not isinstance(controls, dict) or not set(controls) <= CONTROL_NAMES:
        return None
    if any(value is not None and not isinstance(value, (str, int, float, bool)) for value in controls.values()):
        return None
    return request["text"], attention_tab.Controls(**controls)


class LayerRoute:
    """ASGI middleware answering POST …/studio/attention-layer; everything else goes on to the app."""

    def __init__(self, app, engine):
        self.app = app
        self.engine = engine
        self.workers = asyncio.Semaphore(WORKERS)

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST" or not scope.get("path", "").endswith(PATH):
            await self.app(scope, receive, send)
            return
        body = b""
        while True:  # http_guard (outside this middleware) has refused a body over MAX_BODY_BYTES
            message = await receive()
            if message["type"] != "http.request":
                return  # the page left
            body += message.get("body", b"")
            if len(body) > MAX_BODY_BYTES or not message.get("more_body", False):
                break
        request = controls_from(body)
        if request is None:
            await send_refusal(send, 400, BAD_REQUEST)
            return
        if self.workers.locked():
            await send_refusal(send, 429, "The server is busy; the page asks again through the queue.")
            return
        async with self.workers:
            answer = await anyio.to_thread.run_sync(self._payload, *request)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode()),
                   (b"cache-control", b"no-store")]
        await send({"type": "http.response.start", "status": 200 if answer else 204, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    def _payload(self, text: str, controls: attention_tab.Controls) -> bytes:
        try:
            payload = attention_tab.redraw_data(self.engine, text, controls, True)
        except Exception:  # noqa: BLE001 - the page then asks the Gradio event, which says what went wrong
            payload = None
        return b"" if payload is None else payload_text(payload).encode("utf-8")


def install(demo, engine) -> None:
    """Add the route to the app `demo.launch` creates (as ui.admission adds its middleware)."""
    launch = demo.launch

    def launch_with_layer_route(*args: Any, app_kwargs: dict | None = None, **kwargs: Any):
        app_kwargs = dict(app_kwargs or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(LayerRoute, engine=engine)]
        return launch(*args, app_kwargs=app_kwargs, **kwargs)

    demo.launch = launch_with_layer_route
