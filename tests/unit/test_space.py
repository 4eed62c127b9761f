"""A Space sets everything by environment variables, and on ZeroGPU the engine's model work runs
inside `spaces.GPU` (here a stand-in for the decorator, on the CPU)."""

from __future__ import annotations

import inspect
import sys
import types

import pytest

import app
from biogpt.hub import BUNDLED_NAMES
from biogpt.serving import Engine, GenerationRequest
from biogpt.serving.zerogpu import BASE_SECONDS, generation_seconds


def test_environment_variables_reach_the_engine_and_the_queue(monkeypatch):
    folder = str(BUNDLED_NAMES["bundled"])
    for name, value in {"MODEL": folder, "ALLOW_MODEL": "someone/biogpt-tuned, ./here", "QUANTIZE": "int8",
                        "DEVICE": "cpu", "MAX_LOADED_MODELS": "3", "MODEL_MEMORY_GB": "1.5", "NO_BATCHING": "1",
                        "QUEUE_SIZE": "5", "CONCURRENCY": "1", "VISITOR_REQUESTS": "3", "NO_PRELOAD": "true"}.items():
        monkeypatch.setenv(f"BIOGPT_STUDIO_{name}", value)
    args = app.parse_args([])
    assert (args.queue_size, args.concurrency, args.visitor_requests, args.no_preload) == (5, 1, 3, True)
    assert app.parse_args(["--queue-size", "9"]).queue_size == 9  # a flag wins over its variable
    engine, demo = app.build(args)
    assert engine.default_model == folder and engine.quantize == "int8" and engine.requested_device == "cpu"
    assert engine.max_loaded_models == 3 and engine.model_memory_bytes == int(1.5 * 2**30) and not engine.batching
    assert engine.operator_models == [folder, "someone/biogpt-tuned", "./here"]
    assert (demo.admission.limits.waiting_per_tab, demo.admission.limits.per_visitor) == (5, 3)
    assert "generate" not in vars(engine)  # no spaces package here: the engine is not wrapped


@pytest.mark.parametrize("name, value, message", [
    ("QUANTIZE", "int9", "BIOGPT_STUDIO_QUANTIZE='int9': choose one of none, int8"),
    ("QUEUE_SIZE", "many", "BIOGPT_STUDIO_QUEUE_SIZE='many' is not a valid int"),
    ("NO_PRELOAD", "perhaps", "BIOGPT_STUDIO_NO_PRELOAD='perhaps': use 1 or 0"),
])
def test_a_bad_environment_variable_is_named(monkeypatch, capsys, name, value, message):
    monkeypatch.setenv(f"BIOGPT_STUDIO_{name}", value)
    with pytest.raises(SystemExit):
        app.parse_args([])
    assert message in capsys.readouterr().err


class StandInSpaces(types.ModuleType):
    """`spaces` as ZeroGPU provides it, on the CPU: GPU(duration=...) records each call's duration
    and whether work is running inside a decorated call."""

    def __init__(self) -> None:
        super().__init__("spaces")
        self.calls: list[tuple[str, int]] = []
        self.inside = 0

    def GPU(self, duration=60):  # noqa: N802 (spaces' name)
        def decorate(function):
            def seconds(*args, **kwargs):
                return duration(*args, **kwargs) if callable(duration) else duration

            if inspect.isgeneratorfunction(function):
                def run_generator(*args, **kwargs):
                    self.calls.append((function.__name__, seconds(*args, **kwargs)))
                    self.inside += 1
                    try:
                        yield from function(*args, **kwargs)
                    finally:
                        self.inside -= 1
                return run_generator

            def run(*args, **kwargs):
                self.calls.append((function.__name__, seconds(*args, **kwargs)))
                self.inside += 1
                try:
                    return function(*args, **kwargs)
                finally:
                    self.inside -= 1
            return run

        return decorate


def test_on_zero_gpu_model_work_runs_inside_spaces_gpu(monkeypatch, one_thread):
    spaces = StandInSpaces()
    monkeypatch.setitem(sys.modules, "spaces", spaces)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: object() if name == "spaces" else None)
    engine, _ = app.build(app.parse_args(["--no-preload"]))
    assert not engine.batching  # no batcher thread: it would decode outside the GPU call
    forwards_inside = []
    for name, task in (("bundled", "generate"), ("bundled-ner", "ner"), ("bundled-hoc", "classify")):
        engine.load(name, task).model.register_forward_pre_hook(lambda *_: forwards_inside.append(spaces.inside > 0))
    request = GenerationRequest("COVID-19 is", max_new_tokens=12, mode="greedy")
    *_, generated = engine.generate(request)
    entities = engine.ner("Famotidine-associated delirium.").entities
    engine.classify("Tumour cells evade apoptosis.")
    engine.answer_pubmedqa("Is it?", "It is.")
    assert forwards_inside and all(forwards_inside), "every forward ran inside a spaces.GPU call"
    assert [name for name, _ in spaces.calls] == ["generate_on_gpu", "ner", "classify", "answer_pubmedqa"]
    assert spaces.calls[0][1] == generation_seconds(request) == BASE_SECONDS + 0  # 12 tokens: under a second more
    assert all(seconds == BASE_SECONDS for _, seconds in spaces.calls[1:])
    assert generation_seconds(GenerationRequest("x", max_new_tokens=512, mode="beam search", num_beams=4)) == 120
    # The same answers as without the decorator.
    plain = Engine(batching=False)
    *_, alone = plain.generate(request)
    assert generated.samples[0].text == alone.samples[0].text
    assert [(e.start, e.end, e.type) for e in entities] == [(e.start, e.end, e.type) for e in
                                                            plain.ner("Famotidine-associated delirium.").entities]


def test_help_names_each_flags_variable(capsys):
    with pytest.raises(SystemExit):
        app.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())
    for variable in ("MODEL", "ALLOW_MODEL", "QUANTIZE", "DEVICE", "QUEUE_SIZE", "MODEL_MEMORY_GB", "NO_PRELOAD"):
        assert f"[env BIOGPT_STUDIO_{variable}]" in shown
