"""Issue 13, "One visitor can take the server": admission control and abandoned work.

Every visitor here is a distinct loopback address (Linux routes all of 127/8 to lo): an httpx
client bound to 127.0.0.N speaks to the real app (testkit.app_server.running_app) as the browser
and gradio_client do (`/queue/join` + `/queue/data`, or the REST `/call` routes). Work done for
a request after its client left is counted in model forwards (a hook on the decoder), not timed.
"""

from __future__ import annotations


import contextlib
import json
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from testkit.app_server import EXAMPLES, KNOWN_NER_TEXT, running_app
from tests.helpers import CHROMIUM, chromium_page
from biogpt.serving import GenerationRequest, InputError
from biogpt.generation import DecodingStopped
from ui import admission

_addresses = iter(f"127.0.0.{n}" for n in range(2, 255))
CLASSIFY_TEXT = EXAMPLES["classify"][3]["text"]


def visitor(address: str | None = None) -> httpx.Client:
    """A client whose connections come from its own loopback address."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address or next(_addresses)), timeout=60)


def generate_inputs(mode: str = "greedy", max_new_tokens: int = 64, num_beams: int = 1,
                    prompt: str = "Aspirin is used to") -> list:
    # prompt, model, max new tokens, mode, temperature, top-k, top-p, typical-p, repetition penalty,
    # no-repeat n-gram, beams, sequences, seed, stop strings, forced token ids, forced text (ui/generate_tab.py's inputs)
    return [prompt, "bundled", max_new_tokens, mode, 0.8, 50, 0.9, 1.0, 1.0, 0, num_beams, 1, 1, "", "", ""]


class App:
    def __init__(self, url: str, engine, demo):
        self.url, self.engine, self.demo = url, engine, demo
        self.fn = {d.api_name: fid for fid, d in demo.fns.items()}
        self.decoder = engine.load("bundled", "generate").model.biogpt
        self.forwards = 0
        self.step_delay = 0.0  # seconds added to each decoder forward, so a disconnect lands within one step
        self._hook = self.decoder.register_forward_hook(self._count)

    def _count(self, *_):
        self.forwards += 1
        if self.step_delay:
            time.sleep(self.step_delay)

    def join(self, client: httpx.Client, api_name: str, data: list, session: str | None = None) -> httpx.Response:
        body = {"data": data, "fn_index": self.fn[api_name], "session_hash": session or uuid.uuid4().hex,
                "event_data": None, "trigger_id": None}
        return client.post(self.url + "gradio_api/queue/join", json=body)

    def call(self, client: httpx.Client, api_name: str, data: list) -> tuple[str, object]:
        """A REST call as documented on the API page: ('complete', outputs) or ('error', message),
        or ('refused', (status, detail)) when the join itself is refused."""
        posted = client.post(self.url + f"gradio_api/call/{api_name}", json={"data": data})
        if posted.status_code != 200:
            return "refused", (posted.status_code, posted.json().get("detail"))
        kind = None
        with client.stream("GET", self.url + f"gradio_api/call/{api_name}/{posted.json()['event_id']}") as stream:
            for line in stream.iter_lines():
                if line.startswith("event: "):
                    kind = line[len("event: "):]
                elif line.startswith("data: ") and kind in ("complete", "error"):
                    return kind, json.loads(line[len("data: "):])
        return "closed", None

    def live(self, event_id: str) -> bool:
        """Whether the queue still holds the event (waiting or running)."""
        return event_id in self.demo._queue.event_ids_to_events

    def counted(self, event_id: str) -> bool:
        """Whether admission control counts the event (waiting, running, or its answer not yet sent)."""
        return event_id in self.demo.admission.counted_events()

    def wait_until_gone(self, event_ids, timeout: float = 60) -> bool:
        deadline = time.monotonic() + timeout
        while any(self.live(e) for e in event_ids):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    def abandon(self, sessions) -> None:
        """Open each session's stream and close it, as a browser tab that is closed."""
        with visitor() as client:
            for session in sessions:
                with client.stream("GET", self.url + f"gradio_api/queue/data?session_hash={session}") as stream:
                    if stream.status_code == 200:
                        next(stream.iter_lines(), None)  # the stream is being served: closing it now is a disconnect


@contextlib.contextmanager
def listening(app: App, session: str, address: str):
    """A visitor reading its session's stream (opened after its join, as Gradio's clients do);
    yields the messages as they come (a list that grows) and closes the connection when the block ends."""
    messages: list[dict] = []
    ready = threading.Event()
    client = visitor(address)
    stream_cm = client.stream("GET", app.url + f"gradio_api/queue/data?session_hash={session}")
    response = stream_cm.__enter__()

    def read():
        ready.set()
        with contextlib.suppress(Exception):
            for line in response.iter_lines():
                if line.startswith("data: "):
                    messages.append(json.loads(line[len("data: "):]))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    ready.wait()
    try:
        yield messages
    finally:
        # Shut the socket down first: a plain close() leaves it open while the reader thread is
        # blocked receiving on it, and the server would only notice at its next heartbeat.
        with contextlib.suppress(Exception):
            response.extensions["network_stream"].get_extra_info("socket").shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(Exception):
            stream_cm.__exit__(None, None, None)
        client.close()
        reader.join(timeout=5)


def beam_turns_free(engine, timeout: float = 60) -> bool:
    """Wait until no beam search holds a turn (each holds one until its thread is done)."""
    turns = [engine.beam_turns.semaphore.acquire(timeout=timeout) for _ in range(engine.limits.max_parallel_beam_searches)]
    for taken in turns:
        if taken:
            engine.beam_turns.release()
    return all(turns)


def wait_for(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture(scope="module")
def app():
    installed = []  # app.build installs admission control on the demo it builds: that gives us the demo
    real_install = admission.install
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(admission, "install", lambda demo, limits=None: installed.append(real_install(demo, limits)))
        with running_app() as (url, engine):
            served = App(url, engine, installed[-1].demo)
            yield served
            served._hook.remove()


@pytest.fixture(autouse=True)
def normal_speed(app):
    app.step_delay = 0.0
    yield
    app.step_delay = 0.0


# ----- admission: per visitor, per tab ------------------------------------------------------------


def test_sixty_generate_joins_from_one_visitor_admit_two_and_refuse_the_rest_with_a_sentence(app):
    flooder = visitor()
    sessions, answers = [], []
    for _ in range(60):  # a new session hash each time, as a client rotating them would
        session = uuid.uuid4().hex
        answer = app.join(flooder, "generate", generate_inputs(max_new_tokens=512), session)
        answers.append((answer.status_code, answer.json().get("detail") or answer.json().get("event_id")))
        if answer.status_code == 200:
            sessions.append(session)
    admitted = [value for status, value in answers if status == 200]
    refused = {(status, value) for status, value in answers if status != 200}
    assert len(admitted) == 2, answers[:5]
    assert refused == {(429, "You already have 2 Generate requests waiting; wait for them to finish.")}, refused

    others = visitor()
    assert app.call(others, "classify", [CLASSIFY_TEXT, "bundled-hoc"])[0] == "complete"
    assert app.call(others, "ner", [KNOWN_NER_TEXT, "bundled-ner", "auto"])[0] == "complete"
    assert app.call(others, "generate", generate_inputs(max_new_tokens=8))[0] == "complete"
    app.abandon(sessions)
    assert app.wait_until_gone(admitted, timeout=30)


@pytest.mark.browser  # Chromium too
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's Chromium (apt-get install -y chromium)")
def test_a_browser_visitor_over_the_limit_is_told_so_in_a_toast(app, monkeypatch):
    monkeypatch.setattr(admission, "LISTENER_GRACE", 8.0)  # the two unread joins below end 8 s after they start
    with chromium_page(app.url) as page:
        page.wait_for_selector("#gen-prompt textarea")  # the page is drawn before the window of 8 s opens
        # The same visitor (127.0.0.1) already has two Generate requests from another program.
        with visitor("127.0.0.1") as client:
            joined = [app.join(client, "generate", generate_inputs(max_new_tokens=512)) for _ in range(2)]
        assert all(answer.status_code == 200 for answer in joined)
        try:
            page.fill("#gen-prompt textarea", "Naloxone reverses the")
            page.click("#gen-run")
            toast = page.locator("[data-testid=toast-body]")
            toast.first.wait_for(timeout=10_000)
            assert "You already have 2 Generate requests waiting; wait for them to finish." in toast.first.inner_text()
        finally:
            assert app.wait_until_gone([answer.json()["event_id"] for answer in joined], timeout=60)


def test_one_visitor_across_all_tabs_holds_at_most_six_requests(app):
    flooder = visitor()
    plan = [("generate", generate_inputs(max_new_tokens=512)), ("ner", [KNOWN_NER_TEXT * 40, "bundled-ner", "auto"]),
            ("classify", [CLASSIFY_TEXT, "bundled-hoc"]), ("pubmedqa", ["Does aspirin help?", CLASSIFY_TEXT, "bundled", ""])] * 2
    sessions, admitted, refusals, most_live = [], [], [], 0
    for api_name, data in plan + [("generate", generate_inputs(max_new_tokens=512))] * 2:
        session = uuid.uuid4().hex
        answer = app.join(flooder, api_name, data, session)
        if answer.status_code == 200:
            sessions.append(session)
            admitted.append(answer.json()["event_id"])
        else:
            refusals.append((answer.status_code, answer.json()["detail"]))
        most_live = max(most_live, sum(app.live(e) for e in admitted))
    assert most_live <= 6, most_live
    assert refusals and all(status == 429 and detail.startswith("You already have ") for status, detail in refusals)
    app.abandon(sessions)
    assert app.wait_until_gone(admitted, timeout=60)


def test_a_visitor_hammering_queue_join_from_sixteen_threads_never_gets_another_visitors_classify_refused(app):
    stop = threading.Event()
    flood_status: dict[int, int] = {}
    sessions: list[str] = []
    admitted: list[str] = []
    address = next(_addresses)

    def hammer():
        with visitor(address) as client:
            while not stop.is_set():
                session = uuid.uuid4().hex
                answer = app.join(client, "generate", generate_inputs(max_new_tokens=512), session)
                flood_status[answer.status_code] = flood_status.get(answer.status_code, 0) + 1
                if answer.status_code == 200:
                    sessions.append(session)
                    admitted.append(answer.json()["event_id"])

    latencies = []
    with ThreadPoolExecutor(16) as pool:
        for _ in range(16):
            pool.submit(hammer)
        time.sleep(1.0)  # the flood is on
        legit = visitor()
        try:
            for _ in range(3):
                started = time.perf_counter()
                kind, value = app.call(legit, "classify", [CLASSIFY_TEXT, "bundled-hoc"])
                latencies.append(time.perf_counter() - started)
                assert kind == "complete", value
        finally:
            stop.set()
    print(f"\nclassify under a 16-thread join flood: {[round(s, 2) for s in latencies]} s; flood answers {flood_status}")
    assert flood_status.get(200, 0) <= 2 and flood_status.get(503, 0) == 0
    app.abandon(sessions)
    assert app.wait_until_gone(admitted, timeout=30)


def test_a_full_generate_waiting_room_refuses_generate_only_and_classify_is_still_answered(app):
    # Visitors with 2 Generate requests each: 14 run (Generate's slots), 32 wait (its room), then refusals.
    sessions, admitted, refusal = [], [], None
    for _ in range(30):
        with visitor() as client:
            for _ in range(2):
                session = uuid.uuid4().hex
                answer = app.join(client, "generate", generate_inputs(max_new_tokens=512), session)
                if answer.status_code != 200:
                    refusal = (answer.status_code, answer.json().get("detail"))
                    break
                sessions.append(session)
                admitted.append(answer.json()["event_id"])
        if refusal:
            break
    try:
        # 503 as Gradio's own full queue: gradio_client raises QueueError, the browser says the app is busy.
        assert refusal is not None and refusal[0] == 503 and "Generate requests are waiting already" in refusal[1], refusal
        assert len(admitted) >= 32
        kind, value = app.call(visitor(), "classify", [CLASSIFY_TEXT, "bundled-hoc"])
        assert kind == "complete", value
    finally:
        app.abandon(sessions)
    assert app.wait_until_gone(admitted, timeout=60)


@contextlib.contextmanager
def answered_events_kept(app: App):
    """Gradio drops an answered event from its queue only after an analytics step it runs in a thread;
    on two busy cores that lags. Here that step waits until the block ends, so every answered event stays
    in Gradio's queue meanwhile (yields the ids the queue held before)."""
    queue = app.demo._queue
    analytics, gate = queue.compute_analytics_summary, threading.Event()
    before = set(queue.event_ids_to_events)

    def held_up(records):
        gate.wait(timeout=60)
        return analytics(records)

    queue.compute_analytics_summary = held_up
    try:
        yield before
    finally:
        gate.set()
        del queue.compute_analytics_summary  # the class's own method again
        assert app.wait_until_gone(set(queue.event_ids_to_events) - before, timeout=30)


def test_a_script_that_calls_again_as_soon_as_it_has_an_answer_is_never_refused(app):
    from gradio_client import Client

    limits = app.demo.admission.limits
    calls = [("generate", generate_inputs(max_new_tokens=2)), ("classify", [CLASSIFY_TEXT, "bundled-hoc"]),
             ("ner", [KNOWN_NER_TEXT, "bundled-ner", "auto"])]
    plan = [calls[n % len(calls)] for n in range(limits.per_visitor + 1)]  # 7 calls, 3 of them Generate
    assert sum(api_name == "generate" for api_name, _ in plan) > limits.per_visitor_per_tab
    with answered_events_kept(app) as before:
        # A script on the REST /call routes (as curl), one call after the other.
        with visitor() as client:
            answers = [app.call(client, api_name, data) for api_name, data in plan]
        assert [kind for kind, _ in answers] == ["complete"] * len(plan), [a for a in answers if a[0] != "complete"]
        # Every one is still in Gradio's queue, so counting the queue's events would have refused the 3rd Generate.
        assert len(set(app.demo._queue.event_ids_to_events) - before) == len(plan)
        # A script with gradio_client, from another address (127.0.0.1).
        script = Client(app.url, verbose=False)
        for api_name, data in plan:
            script.predict(*data, api_name=f"/{api_name}")  # a 429 would raise httpx.HTTPStatusError
        assert len(set(app.demo._queue.event_ids_to_events) - before) == 2 * len(plan)
        # What is queued or running still counts: two Generate joins nobody reads, then a third is refused.
        sessions = [uuid.uuid4().hex for _ in range(3)]
        with visitor() as flooder:
            joined = [app.join(flooder, "generate", generate_inputs(max_new_tokens=512), session) for session in sessions]
        app.abandon(sessions)
        assert [answer.status_code for answer in joined] == [200, 200, 429], [answer.text for answer in joined]


# ----- abandoned work stops --------------------------------------------------------------------------


def _forwards_after_leaving(app: App, inputs: list, started_when) -> tuple[int, int]:
    """Join, read the stream until `started_when(messages)`, close the connection. Returns
    (forwards run for it before the close, forwards run after it until the queue dropped it)."""
    session, address = uuid.uuid4().hex, next(_addresses)
    app.step_delay = 0.02
    before = app.forwards
    with visitor(address) as client:
        answer = app.join(client, "generate", inputs, session)
        assert answer.status_code == 200, answer.text
        event_id = answer.json()["event_id"]
        with listening(app, session, address) as messages:
            wait_for(lambda: started_when(messages) and app.forwards - before >= 5)
        at_close = app.forwards
    assert app.wait_until_gone([event_id], timeout=60), "the abandoned request was still queued or running"
    assert beam_turns_free(app.engine)
    return at_close - before, app.forwards - at_close


def test_an_abandoned_beam_search_stops_within_two_model_steps_of_its_client_leaving(app):
    ran, after = _forwards_after_leaving(
        app, generate_inputs("beam search", max_new_tokens=512, num_beams=8),
        lambda messages: any(m.get("msg") == "process_starts" for m in messages))
    print(f"\nbeam search (8 beams, 512 tokens): {ran} forwards before the client left, {after} after")
    assert after <= 2


def test_the_stop_button_stops_a_running_beam_search_within_two_model_steps(app):
    session, address = uuid.uuid4().hex, next(_addresses)
    app.step_delay = 0.02
    with visitor(address) as client:
        answer = app.join(client, "generate", generate_inputs("beam search", max_new_tokens=512, num_beams=8), session)
        event_id = answer.json()["event_id"]
        with listening(app, session, address) as messages:
            before = app.forwards
            wait_for(lambda: any(m.get("msg") == "process_starts" for m in messages) and app.forwards - before >= 5)
            # What the Stop button sends (its event cancels the generation).
            at_stop = app.forwards
            stopped = client.post(app.url + "gradio_api/cancel",
                                  json={"session_hash": session, "fn_index": app.fn["generate"], "event_id": event_id},
                                  timeout=60)
            assert stopped.status_code == 200
            assert app.wait_until_gone([event_id], timeout=60)
            assert beam_turns_free(app.engine)  # the beam search's thread has let go of its turn
    print(f"\nStop on a beam search: {app.forwards - at_stop} forwards after the cancel was sent")
    assert app.forwards - at_stop <= 2


def test_a_generate_request_nobody_reads_stops_once_its_stream_has_been_unread_for_the_grace(app, monkeypatch):
    monkeypatch.setattr(admission, "LISTENER_GRACE", 0.5)
    app.step_delay = 0.02
    with visitor() as client:
        # A REST visitor who reads its answer is not affected: all 64 tokens arrive.
        kind, value = app.call(client, "generate", generate_inputs("greedy", max_new_tokens=64))
        assert kind == "complete" and value[4]["samples"][0]["tokens"] and len(value[4]["samples"][0]["tokens"]) == 64
        before = app.forwards
        answer = app.join(client, "generate", generate_inputs("greedy", max_new_tokens=512))  # and never read
        assert answer.status_code == 200, answer.text
        assert app.wait_until_gone([answer.json()["event_id"]], timeout=60)
    ran = app.forwards - before
    print(f"\nunread 512-token request: {ran} forwards before it was stopped")
    assert ran < 100  # 0.5 s of 20 ms steps, not 512


def test_waiting_beam_searches_leave_generate_slots_to_a_greedy_request_and_stop_when_abandoned(app):
    app.step_delay = 0.01
    sessions, event_ids, streams = [], [], contextlib.ExitStack()
    with streams:
        for _ in range(4):  # 4 visitors x 2 beam searches of 8 beams and 512 tokens
            address = next(_addresses)
            with visitor(address) as client:
                for _ in range(2):
                    session = uuid.uuid4().hex
                    answer = app.join(client, "generate", generate_inputs("beam search", 512, 8), session)
                    assert answer.status_code == 200, answer.text
                    messages = streams.enter_context(listening(app, session, address))
                    sessions.append((session, messages))
                    event_ids.append(answer.json()["event_id"])
        # Two run, four wait for a turn, two are told so in a sentence.
        wait_for(lambda: sum(any(m.get("msg") == "process_completed" for m in msgs) for _, msgs in sessions) >= 2)
        refused = [m for _, msgs in sessions for m in msgs if m.get("msg") == "process_completed"]
        assert len(refused) == 2 and all("beam searches are already waiting" in json.dumps(m) for m in refused), refused
        # The two refused calls are answered and no longer counted (Gradio's queue may hold them a while longer,
        # see answered_events_kept). The wait covers only this thread seeing the answer a moment before the
        # server's loop thread, which writes it, has marked it sent.
        wait_for(lambda: sum(app.counted(e) for e in event_ids) <= 6, timeout=5)
        running = [e for e in event_ids if app.counted(e)]
        assert len(running) == 6

        started = time.perf_counter()
        kind, value = app.call(visitor(), "generate", generate_inputs("greedy", max_new_tokens=16))
        greedy_seconds = time.perf_counter() - started
        assert kind == "complete", value
        assert all(app.live(e) for e in running), "a beam search finished before the greedy request was served"
        print(f"\ngreedy 16 tokens beside 6 beam searches: {greedy_seconds:.2f} s")
    # Every stream is closed now: the running and the waiting beam searches all stop.
    at_close = app.forwards
    assert app.wait_until_gone(running, timeout=30)
    assert app.forwards - at_close <= 4  # the two running ones, at most two steps each
    assert app.engine.beam_turns.waiting == 0


# ----- the cancellation check itself, without the app -------------------------------------------------


def test_beam_search_asks_should_stop_before_every_model_call_and_gives_the_same_result_when_not_stopped(app):
    engine = app.engine
    request = GenerationRequest(prompt="Naloxone reverses the", mode="beam search", num_beams=4, max_new_tokens=24)
    alone = list(engine.generate(request))[-1].samples
    asked = []
    with_check = list(engine.generate(request, should_stop=lambda: asked.append(1) and False))[-1].samples
    assert [s.text for s in with_check] == [s.text for s in alone]
    assert [s.beam_score for s in with_check] == [s.beam_score for s in alone]
    assert len(asked) >= len(alone[0].token_ids)

    before = app.forwards
    stop_after = 5
    stream = engine.generate(request, should_stop=lambda: app.forwards - before >= stop_after)
    with pytest.raises(DecodingStopped):
        list(stream)
    assert app.forwards - before == stop_after


def test_a_batched_stream_ends_at_the_next_step_once_should_stop_says_yes(app):
    engine = app.engine
    batcher = engine.load("bundled", "generate").batcher
    flag = threading.Event()
    stream = engine.generate(GenerationRequest(prompt="We report", mode="greedy", max_new_tokens=200),
                             should_stop=flag.is_set)
    next(stream)
    flag.set()
    before = batcher.forwards
    with pytest.raises(DecodingStopped):
        for _ in stream:
            pass
    assert batcher.forwards - before <= 1


def test_a_beam_search_beyond_the_waiting_room_is_refused_with_a_sentence(app):
    engine = app.engine
    request = GenerationRequest(prompt="Naloxone reverses the", mode="beam search", num_beams=2, max_new_tokens=4)
    taken = [engine.beam_turns.semaphore.acquire(blocking=False) for _ in range(engine.limits.max_parallel_beam_searches)]
    saved, engine.beam_turns.max_waiting = engine.beam_turns.max_waiting, 0
    try:
        assert all(taken)
        with pytest.raises(InputError, match="beam searches are already waiting"):
            list(engine.generate(request))
    finally:
        engine.beam_turns.max_waiting = saved
        for _ in taken:
            engine.beam_turns.release()


def test_on_a_space_the_visitor_is_the_right_most_public_forwarded_address_so_a_forged_one_changes_nothing(monkeypatch):
    def scope(peer: str, forwarded: str | None) -> dict:
        headers = [(b"x-forwarded-for", forwarded.encode())] if forwarded else []
        return {"client": (peer, 5000), "headers": headers}

    monkeypatch.delenv("SPACE_ID", raising=False)
    assert admission.client_address(scope("127.0.0.2", "1.2.3.4")) == "127.0.0.2"  # no proxy to trust here
    monkeypatch.setenv("SPACE_ID", "someone/biogpt-studio")
    # The Space's proxy connects from a private address and appends the address it saw.
    assert admission.client_address(scope("10.16.3.80", "84.17.1.9")) == "84.17.1.9"
    assert admission.client_address(scope("10.16.3.80", "91.2.3.4, 84.17.1.9")) == "84.17.1.9"
    assert admission.client_address(scope("10.16.3.80", "84.17.1.9, 10.0.0.7")) == "84.17.1.9"
    assert admission.client_address(scope("10.16.3.80", None)) == "10.16.3.80"
    assert admission.client_address(scope("84.17.1.50", "91.2.3.4")) == "84.17.1.50"  # not via the proxy
