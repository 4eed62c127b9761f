"""What the HTTP layer refuses before any app code runs, and how API inputs are checked.

- `RequestGuard`, an ASGI middleware given to Gradio's FastAPI app through `launch(app_kwargs=...)`:
  request bodies over `MAX_BODY_BYTES` get 413 at once (by Content-Length, or by counting the
  bytes of a chunked body, which is never handed on), and `/gradio_api/upload` gets 403 (the app
  has no file inputs, so an upload could only be stored and served back to anyone).
- An API name that does not exist is a 404 with a sentence, not a 500; so is the name of a
  private UI event (an export, a view switch) on the REST `/call/<name>` route. The browser
  calls those by number through the queue, which Gradio gives API clients too: they cannot be
  hidden from a client that imitates the browser, only kept cheap and bounded.
- `StudioBlocks`: Gradio's input handling answers a missing argument, NaN, a number sent as a
  string or a list sent as a number with `{"error": null}` (and logs the whole body); this
  Blocks checks the count and the type of every value first and answers with one sentence
  that names the parameter and never repeats what was sent.
"""

from __future__ import annotations

import inspect
import json
import math
import re
from typing import Any

import gradio as gr
from starlette.middleware import Middleware

from .views import visitor_text

# The largest legitimate body: 20,000 characters of text (at most 12 bytes each as JSON escapes,
# 240 KB) plus the other arguments. 2 MiB leaves room for that many times over.
MAX_BODY_BYTES = 2 * 1024 * 1024
# Sessions Gradio keeps (its default is 10,000). Each costs about 0.3 MB (a copy of every
# component's config), even for one REST call, so 500 hold about 150 MB. The least recently used
# goes first; its visitor's next event starts from the page's defaults on the server (the
# Attention sliders' ranges, say, until the next Analyse), which the app tolerates.
MAX_SESSIONS = 500
UPLOAD_SUFFIX = "/gradio_api/upload"
REST_CALL = re.compile(r"/gradio_api/call/(?:v2/)?(?P<name>[^/]+)/?$")
NO_ENDPOINT = "This app has no API endpoint of that name; /gradio_api/info lists them."


async def send_refusal(send, status: int, message: str, *, close: bool = True, detail: bool = False) -> None:
    """Answer an ASGI request with `status` and one sentence as {"error": ...}, before the app sees
    it. `close`: end the connection (a refused body may not have been read). `detail`: also put
    the sentence under "detail", where Gradio's page reads it to show a toast (admission's refusals)."""
    payload = {"detail": message, "error": message} if detail else {"error": message}
    body = json.dumps(payload).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _public_api_names(scope) -> set[str]:
    """The api_names of the public endpoints of the Blocks that Starlette's app (scope["app"]) serves."""
    try:
        fns = scope["app"].get_blocks().fns.values()
    except Exception:  # noqa: BLE001 - not a Gradio app: let the route decide
        return {REST_CALL.search(scope.get("path", ""))["name"]}
    return {fn.api_name for fn in fns if fn.api_visibility == "public" and fn.api_name}


class RequestGuard:
    """Refuse oversize bodies (413) and file uploads (403) before Gradio reads anything."""

    def __init__(self, app, max_body_bytes: int = MAX_BODY_BYTES):
        self.app = app
        self.max_body_bytes = max_body_bytes

    def _too_large(self) -> str:
        return (f"The request body is larger than this server accepts ({self.max_body_bytes // (1024 * 1024)} MB); "
                "send a shorter text.")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        if path.rstrip("/").endswith(UPLOAD_SUFFIX):
            await send_refusal(send, 403, "This app takes no file uploads.")
            return
        call = REST_CALL.search(path) if scope.get("method") == "POST" else None
        if call and call["name"] not in _public_api_names(scope):
            await send_refusal(send, 404, NO_ENDPOINT)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None:
            try:
                too_large = int(length) > self.max_body_bytes
            except ValueError:
                too_large = True
            if too_large:
                await send_refusal(send, 413, self._too_large())
                return
            # The server never hands on more than Content-Length bytes: nothing more to count.
            await self.app(scope, receive, send)
            return
        if b"chunked" not in headers.get(b"transfer-encoding", b"").lower():
            await self.app(scope, receive, send)
            return
        # A chunked body has no length up front: read it here, counting, and hand it on whole
        # only if it fits (at most MAX_BODY_BYTES held per request, as the app would hold anyway).
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await send_refusal(send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # later messages (a disconnect) come from the server as usual

        await self.app(scope, replay, send)


async def unknown_endpoint(request, error) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": NO_ENDPOINT}, status_code=404)


def app_kwargs() -> dict[str, Any]:
    """For `launch(app_kwargs=...)`: Gradio hands these to the FastAPI app it creates."""
    from gradio.route_utils import FnIndexInferError

    return {"middleware": [Middleware(RequestGuard, max_body_bytes=MAX_BODY_BYTES)],
            "exception_handlers": {FnIndexInferError: unknown_endpoint}}


# ----- API inputs -------------------------------------------------------------------------------


def _refuse(message: str) -> gr.Error:
    # print_exception=False: a refused input is the visitor's mistake, not the server's; nothing
    # of what was sent reaches the log.
    return gr.Error(visitor_text(message), print_exception=False)


def _parameter_names(block_fn) -> list[str]:
    try:
        return [p.name for p in inspect.signature(block_fn.fn).parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        return []


def _name(block_fn, index: int, block) -> str:
    names = _parameter_names(block_fn)
    if index < len(names):
        return names[index]
    return str(getattr(block, "label", None) or f"argument {index + 1}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def check_value(block, value: Any, name: str) -> None:
    """Raise a one-sentence gr.Error when `value` cannot be what `block` takes."""
    if isinstance(block, (gr.Slider, gr.Number)):
        if value is None and isinstance(block, gr.Number):
            return
        if not _is_number(value):
            raise _refuse(f"The parameter '{name}' must be a number.")
        if isinstance(value, float) and not math.isfinite(value):
            raise _refuse(f"The parameter '{name}' must be a finite number.")
    elif isinstance(block, gr.Checkbox):
        if value is not None and not isinstance(value, bool):
            raise _refuse(f"The parameter '{name}' must be true or false.")
    elif isinstance(block, gr.Textbox):
        if value is not None and not isinstance(value, str):
            raise _refuse(f"The parameter '{name}' must be text (a string).")
    elif isinstance(block, (gr.Radio, gr.Dropdown)):
        if value is None:
            return
        if isinstance(block, gr.Dropdown) and block.multiselect:
            values = value if isinstance(value, list) else [value]
        else:
            values = [value]
        if getattr(block, "allow_custom_value", False):
            return
        choices = [choice for _, choice in block.choices]
        if any(not isinstance(v, (str, int, float)) or isinstance(v, bool) or v not in choices for v in values):
            shown = ", ".join(str(c) for c in choices[:12]) + (", ..." if len(choices) > 12 else "")
            raise _refuse(f"The value of '{name}' is not in the list of choices: {shown}.")


def check_inputs(block_fn, inputs: list[Any], state=None) -> None:
    """The count and the type of every input of one event, before Gradio processes them."""
    expected = block_fn.inputs
    if not isinstance(inputs, list) or len(inputs) < len(expected):
        got = len(inputs) if isinstance(inputs, list) else 0
        names = [_name(block_fn, i, b) for i, b in enumerate(expected)]
        endpoint = f"/{block_fn.api_name}" if block_fn.api_name else "This event"
        raise _refuse(f"{endpoint} takes {len(expected)} values ({', '.join(names)}) and {got} "
                      f"{'was' if got == 1 else 'were'} sent; gradio_client fills in the defaults.")
    if not block_fn.preprocess:
        return
    for index, block in enumerate(expected):
        if block.stateful or index in block_fn.component_prop_inputs:
            continue
        if state is not None and block._id in state:
            block = state[block._id]  # the session's copy: choices or ranges may have been updated
        check_value(block, inputs[index], _name(block_fn, index, block))


class StudioBlocks(gr.Blocks):
    """gr.Blocks whose API inputs are checked first: each bad value gets a sentence naming it."""

    def validate_inputs(self, block_fn, inputs):  # Gradio's own echoes every received value
        check_inputs(block_fn, inputs)

    async def preprocess_data(self, block_fn, inputs, state, explicit_call: bool = False):
        check_inputs(block_fn, inputs, state)
        return await super().preprocess_data(block_fn, inputs, state, explicit_call)
