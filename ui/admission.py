"""Admission control: no visitor can fill the queue, and no tab can starve the others.

Gradio's queue has one `max_size` for all events together, so 60 Generate requests from one
client filled it and Classify, NER and everybody else's Generate got "Queue is full". Here:

- Gradio's global cap is lifted (`demo.queue(max_size=None)`) and each tab (Gradio concurrency
  group: Generate, PubMedQA, NER, Classify, zero-shot, Attention, ...) gets its own waiting room
  of `waiting_per_tab` requests.
- Each visitor, keyed by client address, may have at most `per_visitor` requests queued or
  running over all tabs, and `per_visitor_per_tab` in any one tab.

The client address is the one Gradio's own `gr.Request.client.host` reports: uvicorn rewrites it
from X-Forwarded-For only when the connection comes from a trusted proxy (`FORWARDED_ALLOW_IPS`,
127.0.0.1 by default), so a visitor cannot pick it. On a Hugging Face Space (SPACE_ID is set) the
connection comes from the Space's proxy on a private address, which uvicorn does not trust, so
`client.host` is the proxy's; there the key is the right-most public address of X-Forwarded-For,
the one the proxy itself appended (entries to its left are whatever the client sent). The
session hash is chosen by the client and is not used.

The counts come from Gradio's queue itself: an event counts from the moment its join is admitted
until its answer (its result, its error, or the acknowledgement of a Stop) has been written to its
client's stream, or until the queue drops it (e.g. removed because its client left), so nothing
here can drift, and a script may send its next call as soon as it has read an answer. A visitor
over its own limits gets HTTP 429 and one sentence, which the browser shows as an error toast
(gradio_client raises an httpx.HTTPStatusError whose response carries it as "detail"). A full tab
answers 503, as Gradio's own full queue does: the browser says the app is busy, gradio_client
raises its QueueError("Queue is full! Please try again.").

`reader_gone(request)` gives an event handler a check for "the visitor who sent this has gone"
(closed the page or the connection, or pressed Stop, or never opened the stream that would
carry the answer: nobody has read the session's stream for LISTENER_GRACE seconds while it ran),
so that decoding stops at the next model call instead of running to the end for nobody.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable
from urllib.parse import parse_qs

from .http_guard import MAX_BODY_BYTES, send_refusal

API_PREFIX = "/gradio_api"
# POST routes that put an event in the queue: the browser's and gradio_client's join, and the REST /call routes.
_JOIN = re.compile(rf"^{API_PREFIX}/(?:queue/join|call/(?:v2/)?(?P<api_name>[^/]+))/?$")
# GET routes that carry a session's answers: the browser's and gradio_client's stream, and REST /call's.
_DATA = re.compile(rf"^{API_PREFIX}/(?:queue/data|call/(?:v2/)?[^/]+/(?P<event_id>[^/]+))/?$")
# Seconds a running request may go on with nobody reading its session's stream (a join posted and
# never read, or a stream closed without Gradio noticing) before reader_gone says so. Gradio's
# clients keep the stream open while anything of theirs runs; a REST client reads it right after its POST.
LISTENER_GRACE = 10.0


def client_address(scope) -> str:
    """The visitor's address for a request's ASGI scope (see the module docstring)."""
    host = (scope.get("client") or ("?", 0))[0]
    if not os.environ.get("SPACE_ID") or not _private(host):
        return host
    forwarded = [value.decode("latin-1") for name, value in scope.get("headers", []) if name == b"x-forwarded-for"]
    for entry in reversed(",".join(forwarded).split(",")):
        entry = entry.strip()
        if entry and not _private(entry):
            return entry
    return host


def _private(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return False
    return parsed.is_private or parsed.is_loopback


@dataclass(frozen=True)
class AdmissionLimits:
    per_visitor: int = 6  # requests queued or running per client address, all tabs together
    per_visitor_per_tab: int = 2  # the same, in any one tab (concurrency group)
    waiting_per_tab: int = 32  # requests waiting (not yet running) in one tab, all visitors together


class Admission:
    """The decisions; `middleware` applies them to the app's HTTP requests."""

    def __init__(self, demo, limits: AdmissionLimits | None = None):
        self.demo = demo
        self.limits = limits or AdmissionLimits()
        self.refused = Counter()  # reason -> count, for tests and logs
        # Joins admitted and not yet handed to the queue: (host, group) -> count.
        self._joining: Counter = Counter()
        # Streams open per session, and when each session's last stream closed.
        self._listening: Counter = Counter()
        self._last_heard: dict[str, float] = {}

    # ----- what the queue holds ------------------------------------------------------------

    def _queue(self):
        return getattr(self.demo, "_queue", None)

    def _fn(self, fn_index: Any = None, api_name: str | None = None):
        fns = getattr(self.demo, "fns", {}) or {}
        if api_name is not None:
            return next((fn for fn in fns.values() if getattr(fn, "api_name", None) == api_name), None)
        if isinstance(fn_index, int) and not isinstance(fn_index, bool):
            return fns.get(fn_index)
        return None

    def counted_events(self) -> dict:
        """Event id -> Gradio's event, for the events that count against their visitor: queued, running, or
        finished with the answer not yet written to the client's stream.

        Gradio keeps an answered event in `event_ids_to_events` until an analytics step it runs in a thread
        after sending the answer is done; on busy cores that lags, and a script's next call found its last
        one still counted (429). The session stream takes an event's id out of `pending_event_ids_session`
        right after writing its process_completed (result, error, or a Stop's acknowledgement); the id is
        added there before the event enters the queue, and nothing else takes it out while the event is
        queued or running. So an event whose id is missing there has been answered. Both are attributes of
        Gradio's Queue, not API: without the second one every event in the queue counts."""
        queue = self._queue()
        if queue is None:
            return {}
        events = dict(getattr(queue, "event_ids_to_events", {}))
        unanswered = getattr(queue, "pending_event_ids_session", None)
        if not isinstance(unanswered, dict):
            return events
        return {event_id: event for event_id, event in events.items()
                if event_id in unanswered.get(getattr(event, "session_hash", None), ())}

    def held(self, host: str) -> Counter:
        """Concurrency group -> this visitor's events queued or running (plus joins being admitted)."""
        counts: Counter = Counter()
        for event in self.counted_events().values():
            scope = getattr(getattr(event, "request", None), "scope", None)
            if scope is not None and client_address(scope) == host:
                counts[event.concurrency_id] += 1
        for (joining_host, group), count in self._joining.items():
            if joining_host == host:
                counts[group] += count
        return counts

    def waiting(self, group: str) -> int:
        queue = self._queue()
        room = getattr(queue, "event_queue_per_concurrency_id", {}).get(group) if queue is not None else None
        joining = sum(count for (_, g), count in self._joining.items() if g == group)
        return (len(room.queue) if room is not None else 0) + joining

    @staticmethod
    def tab_name(fn) -> str:
        # A tab's page and API events share a named concurrency group (ui.common.page_and_api); its name is the tab's.
        group = str(getattr(fn, "concurrency_id", "") or "")
        name = (group if group and not group.isdigit() else str(getattr(fn, "api_name", "") or "this")).replace("_", " ")
        return {"ner": "NER", "pubmedqa": "PubMedQA", "zero shot": "zero-shot"}.get(
            name, name.capitalize() if name.islower() else name)

    # ----- the decision ------------------------------------------------------------------------

    def refusal(self, host: str, fn) -> tuple[int, str] | None:
        """(HTTP status, one sentence) when this visitor may not add an event of `fn` now; None to admit it."""
        group = fn.concurrency_id
        held = self.held(host)
        total = sum(held.values())
        if total >= self.limits.per_visitor:
            self.refused["visitor"] += 1
            return 429, f"You already have {total} requests waiting; wait for them to finish."
        if held[group] >= self.limits.per_visitor_per_tab:
            self.refused["visitor-tab"] += 1
            return 429, (f"You already have {held[group]} {self.tab_name(fn)} requests waiting; "
                         "wait for them to finish.")
        waiting = self.waiting(group)
        if waiting >= self.limits.waiting_per_tab:
            self.refused["tab"] += 1
            return 503, (f"{waiting} {self.tab_name(fn)} requests are waiting already, the most this server queues; "
                         "try again in a minute.")
        return None

    def unheard(self, session: str, since: float) -> bool:
        """Whether nobody has read `session`'s stream for LISTENER_GRACE seconds (counted from `since` at the earliest)."""
        if self._listening.get(session):
            return False
        return time.monotonic() - max(since, self._last_heard.get(session, since)) > LISTENER_GRACE

    def _stream_opened(self, session: str) -> None:
        self._listening[session] += 1

    def _stream_closed(self, session: str) -> None:
        self._listening[session] -= 1
        if self._listening[session] <= 0:
            del self._listening[session]
        now = self._last_heard[session] = time.monotonic()
        if len(self._last_heard) > 4096:  # keep what a running request may still ask about
            for old in [s for s, heard in self._last_heard.items() if now - heard > 10 * LISTENER_GRACE]:
                del self._last_heard[old]

    def _session_of(self, scope, event_id: str | None) -> str | None:
        if event_id is None:
            values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("session_hash")
            return values[0] if values else None
        queue = self._queue()
        event = getattr(queue, "event_ids_to_events", {}).get(event_id) if queue is not None else None
        return event.session_hash if event is not None else event_id  # Gradio's own fallback for /call

    # ----- the ASGI side -----------------------------------------------------------------------

    def middleware(self, app):
        return _AdmissionMiddleware(app, self)


class _AdmissionMiddleware:
    def __init__(self, app, admission: Admission):
        self.app = app
        self.admission = admission

    async def __call__(self, scope, receive, send):
        match = _JOIN.match(scope.get("path", "")) if scope["type"] == "http" and scope.get("method") == "POST" else None
        if match is None:
            stream = _DATA.match(scope.get("path", "")) if scope["type"] == "http" and scope.get("method") == "GET" else None
            session = self.admission._session_of(scope, stream.group("event_id")) if stream is not None else None
            if session is None:
                await self.app(scope, receive, send)
                return
            self.admission._stream_opened(session)
            try:
                await self.app(scope, receive, send)
            finally:
                self.admission._stream_closed(session)
            return
        body, more = b"", True
        messages = []
        while more:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                break
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:  # http_guard refuses these first; kept for an app without it
                await send_refusal(send, 413, f"The request has more than {MAX_BODY_BYTES // 2**20} MB; send less text.",
                                   close=False, detail=True)
                return
        fn = None
        api_name = match.group("api_name")
        if api_name is not None:
            fn = self.admission._fn(api_name=api_name)
        else:
            try:
                fn_index = json.loads(body).get("fn_index")
            except (ValueError, AttributeError):
                fn_index = None  # Gradio answers a malformed join itself
            fn = self.admission._fn(fn_index=fn_index)
            if fn is None and fn_index is not None:  # Gradio's own answer is a 500 (a KeyError inside)
                await send_refusal(send, 404, "This app has no event of that number; /gradio_api/info lists the endpoints.",
                                   close=False, detail=True)
                return
        host = client_address(scope)
        key = None
        if fn is not None:  # every event joined counts, also UI-only ones a client could join by hand
            refused = self.admission.refusal(host, fn)
            if refused is not None:
                await send_refusal(send, *refused, close=False, detail=True)
                return
            key = (host, fn.concurrency_id)
            self.admission._joining[key] += 1

        replay = iter(messages)

        async def receive_again():
            try:
                return next(replay)
            except StopIteration:
                return await receive()

        try:
            await self.app(scope, receive_again, send)
        finally:
            if key is not None:
                self.admission._joining[key] -= 1
                if self.admission._joining[key] <= 0:
                    del self.admission._joining[key]


def install(demo, limits: AdmissionLimits | None = None) -> Admission:
    """Put admission control in front of `demo`'s queue: its `launch()` adds the middleware."""
    from starlette.middleware import Middleware

    admission = Admission(demo, limits)
    launch = demo.launch

    @functools.wraps(launch)
    def launch_with_admission(*args, app_kwargs: dict | None = None, **kwargs):
        app_kwargs = dict(app_kwargs or {})
        app_kwargs["middleware"] = [*app_kwargs.get("middleware", []), Middleware(_AdmissionMiddleware, admission=admission)]
        return launch(*args, app_kwargs=app_kwargs, **kwargs)

    demo.launch = launch_with_admission
    demo.admission = admission
    return admission


def reader_gone(request) -> Callable[[], bool] | None:
    """For a handler given `request: gr.Request`: a check that says True once nobody waits for
    this event any more (the visitor's connection closed, Stop was pressed, or the queue dropped
    it). None when the event cannot be found (e.g. a direct call outside the queue)."""
    raw = getattr(request, "request", None) if request is not None else None
    app = getattr(raw, "scope", {}).get("app") if raw is not None else None
    try:
        blocks = app.get_blocks()
        events = blocks._queue.event_ids_to_events
    except AttributeError:
        return None
    event = next((e for e in list(events.values()) if getattr(e, "request", None) is raw), None)
    if event is None:
        return None
    admission = getattr(blocks, "admission", None)
    started = time.monotonic()

    def gone() -> bool:
        if not event.alive or events.get(event._id) is not event:
            return True
        return admission is not None and admission.unheard(event.session_hash, started)

    return gone


__all__ = ["Admission", "AdmissionLimits", "client_address", "install", "reader_gone"]
