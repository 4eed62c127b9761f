"""The cached core behind BioGPT Studio: models loaded once, then generate, NER and classify.

The UI talks only to `Engine`; it gets back plain dataclasses of strings, floats and numpy
arrays, so a tab (or a test, or a script) never touches torch. Nothing here imports gradio
or plotly, and nothing heavy happens at import time: torch and the tokenizer are imported
when the first model loads, which keeps the app's cold start short.

Sharing between users. A model is loaded once and kept in a small LRU; a per-model lock
makes concurrent first requests wait for one load instead of loading twice. After that,
requests use the model concurrently without a lock: inference never mutates the module
(eval mode, no grad), and every request owns its generation state (KV cache, sampler).

Every public method checks its input first and raises `InputError` (a ValueError) with one
sentence a visitor can act on: too long, empty, unknown model, absurd setting. Lengths are
never cut silently.
"""

from __future__ import annotations

import ast
import hashlib
import json
import math
import os
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from ..devices import resolve_device

ProgressCallback = Callable[[float, str], None]

# --------------------------------------------------------------------------------------------
# Which models a visitor may pick
# --------------------------------------------------------------------------------------------

TASKS = ("generate", "ner", "classify")
HUB_MODELS = ("microsoft/biogpt", "microsoft/BioGPT-Large", "microsoft/BioGPT-Large-PubMedQA")
BUNDLED_FOR_TASK = {"generate": "bundled", "ner": "bundled-ner", "classify": "bundled-hoc"}
MODEL_DESCRIPTIONS = {
    "bundled": "bundled: small BioGPT trained here on PubMed",
    "bundled-ner": "bundled-ner: small BioGPT fine-tuned for Chemical/Disease NER (BC5CDR)",
    "bundled-hoc": "bundled-hoc: small BioGPT fine-tuned for Hallmarks of Cancer (HoC)",
    "microsoft/biogpt": "microsoft/biogpt (347M)",
    "microsoft/BioGPT-Large": "microsoft/BioGPT-Large (1.5B)",
    "microsoft/BioGPT-Large-PubMedQA": "microsoft/BioGPT-Large-PubMedQA (1.5B)",
}
# Tokenizers shipped with the project, chosen by vocabulary size when a checkpoint has none.
TOKENIZER_BY_VOCAB = {42384: "bundled-tokenizer", 57717: "bundled-tokenizer-large"}

PUBMEDQA_ANSWERS = ("yes", "no", "maybe")
# BioGPT's PubMedQA fine-tuning target (microsoft/BioGPT, examples/QA-PubMedQA/rebuild_data.py).
PUBMEDQA_LEAD = "the answer to the question given the context is"
ZERO_SHOT_TEMPLATE = "{text} This text is about {label}."
# A guide only, for caps stated in characters: BioGPT's tokens average about 5 characters of
# PubMed text (4.8 on the bundled examples); the caps themselves are counted in tokens.
CHARS_PER_TOKEN = 5
MAX_TEXT_PLACEHOLDERS = 4  # {text} in a zero-shot template; one is the rule, a few leave room for style
NER_AGGREGATIONS = ("auto", "first", "last", "average", "max")
DECODING_MODES = ("greedy", "sampling", "beam search")


class InputError(ValueError):
    """A request the engine will not run; the message says what to change, in one sentence."""


class UntrainedHeadError(InputError):
    """The checkpoint has no trained weights for the task's head: its outputs would be noise."""


@dataclass(frozen=True)
class Limits:
    """Caps that keep one visitor from holding the server; each is reported, never applied silently."""

    max_prompt_chars: int = 6_000
    max_document_chars: int = 20_000  # NER reads long texts in windows
    max_classify_chars: int = 6_000
    max_document_tokens: int = 4_096
    max_new_tokens: int = 512
    max_return_sequences: int = 4
    max_beams: int = 8
    max_stop_strings: int = 4
    max_stop_chars: int = 40
    max_candidate_labels: int = 20
    max_label_chars: int = 100
    max_temperature: float = 10.0
    max_repetition_penalty: float = 10.0
    max_no_repeat_ngram: int = 20
    # Beam searches are not merged by the batcher; more than this many at once wait their turn.
    max_parallel_beam_searches: int = 2
    # Beam searches waiting for one of those turns (more are refused with a sentence); the
    # Generate tab keeps its own slots for streams beside them (see ui/generate_tab.py).
    max_waiting_beam_searches: int = 4


_SURROGATES = re.compile("[\ud800-\udfff]")


def clean_text(text: Any, what: str, max_chars: int, allow_empty: bool = False) -> str:
    """The text a request may use: a string, not too long, no lone surrogates.

    A browser can send lone UTF-16 surrogates ("\\ud800"), which no encoder accepts; each
    becomes U+FFFD, one character for one, so character offsets into the text stay valid.
    """
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise InputError(f"The {what} must be text, not {type(text).__name__}.")
    if len(text) > max_chars:
        raise InputError(
            f"The {what} has {len(text):,} characters; the limit here is {max_chars:,}. Shorten it and try again."
        )
    text = _SURROGATES.sub("\ufffd", text)
    if not allow_empty and not text.strip():
        raise InputError(f"The {what} is empty: type or paste some text first.")
    return text


def _number(value: Any, name: str, low: float, high: float, whole: bool = False) -> float | int:
    """A finite number in [low, high]; sliders send floats, so 3.0 is a fine whole number."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        try:
            value = float(value) if isinstance(value, str) else None
        except ValueError:
            value = None
        if value is None:
            raise InputError(f"{name} must be a number.")
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{name} must be a number.") from None
    if not math.isfinite(value):
        raise InputError(f"{name} must be a finite number, got {value}.")
    if whole and value != int(value):
        raise InputError(f"{name} must be a whole number, got {value}.")
    if not low <= value <= high:
        span = f"{int(low)} and {int(high)}" if whole else f"{low:g} and {high:g}"
        raise InputError(f"{name} must be between {span}, got {value:g}.")
    return int(value) if whole else value


# --------------------------------------------------------------------------------------------
# Results: plain data for the UI
# --------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """A model ready to answer, with what the UI should say about it."""

    name: str
    task: str
    model: Any  # a BioGpt* torch module in eval mode
    tokenizer: Any
    device: str
    dtype: str
    head_is_untrained: bool
    load_seconds: float
    num_parameters: int
    studio: dict[str, Any] = field(default_factory=dict)  # config.json's "biogpt_studio" block
    quantization: str | None = None  # from_pretrained's quantize= mode, e.g. "int8"
    batcher: Any = None  # a biogpt.batching.DecodeBatcher for language models when batching is on
    weight_bytes: int = 0  # what its weights hold in memory, as counted against the engine's budget
    note: str = ""  # a warning the UI shows with every result (e.g. a dtype that is slow on this CPU)
    _surfaces: dict[int, str] = field(default_factory=dict, repr=False)

    @property
    def max_positions(self) -> int:
        return int(self.model.config.max_position_embeddings)

    def describe(self) -> str:
        weights = f" · {self.quantization} weights" if self.quantization else ""
        note = " (emulated on this CPU: slow)" if self.note else ""
        return f"{self.name} · {self.device} · {self.dtype}{note}{weights}"

    def surface(self, token_id: int) -> str:
        """How one token reads in decoded text (Moses escapes undone, word-end marker dropped)."""
        text = self._surfaces.get(token_id)
        if text is None:
            text = self.tokenizer.decode([token_id], skip_special_tokens=True).strip()
            self._surfaces[token_id] = text
        return text


@dataclass
class GeneratedText:
    """One continuation, token by token, with how sure the decoder was of each token."""

    text: str
    token_ids: np.ndarray  # int64 [n]
    token_texts: list[str]  # each token's slice of `text` ("" for tokens that print nothing); joined == text
    probabilities: np.ndarray  # float32 [n]: probability of each chosen token under the decoding distribution
    alternatives: list[list[tuple[str, float]]]  # top candidates at each step, best first
    finish_reason: str | None = None  # "length" | "eos" | "stop"; None while streaming
    beam_score: float | None = None


@dataclass
class GenerationResult:
    """What one Generate request produced so far (streaming) or in the end."""

    prompt: str
    samples: list[GeneratedText]
    settings: dict[str, Any]  # everything needed to reproduce it, seed included
    model: str  # "name · device · dtype"
    finished: bool
    elapsed: float  # seconds since the request started decoding
    first_token_seconds: float | None
    new_tokens: int

    @property
    def tokens_per_second(self) -> float:
        decoding = self.elapsed - (self.first_token_seconds or 0.0)
        if self.new_tokens > 1 and decoding > 0:
            return (self.new_tokens - 1) / decoding
        return self.new_tokens / self.elapsed if self.elapsed > 0 else 0.0


@dataclass
class AnswerResult:
    """PubMedQA: yes / no / maybe scored by the language model."""

    prompt: str
    answers: list[str]
    probabilities: np.ndarray  # float32 [3], softmax of the log-likelihoods over the three answers
    log_likelihoods: np.ndarray  # float32 [3]
    model: str
    settings: dict[str, Any]

    @property
    def best(self) -> str:
        return self.answers[int(np.argmax(self.probabilities))]


@dataclass
class Entity:
    start: int  # character offsets into the text (Python string indices)
    end: int
    type: str
    text: str
    score: float  # mean confidence of the entity's words


@dataclass
class NerResult:
    text: str
    entities: list[Entity]
    entity_types: list[str]
    aggregation: str  # the strategy used ("auto" resolved)
    model: str
    settings: dict[str, Any]
    num_tokens: int
    elapsed: float


@dataclass
class ClassificationResult:
    text: str
    labels: list[str]
    probabilities: np.ndarray  # float32 [labels]
    predicted: list[str]  # above the threshold (multi-label) or the arg-max
    mode: str  # "supervised" | "zero-shot"
    multi_label: bool
    threshold: float | None  # multi-label only
    model: str
    settings: dict[str, Any]
    scores: np.ndarray | None = None  # zero-shot: the log-likelihood each label got
    elapsed: float = 0.0


# --------------------------------------------------------------------------------------------
# Generation requests
# --------------------------------------------------------------------------------------------


@dataclass
class GenerationRequest:
    """The Generate tab's controls, in Hugging Face's names; `mode` picks the decoding method."""

    prompt: str
    model: str = "bundled"
    max_new_tokens: int = 64
    mode: str = "sampling"
    temperature: float = 0.8
    top_k: int = 50
    top_p: float = 0.9
    typical_p: float = 1.0
    repetition_penalty: float = 1.2
    no_repeat_ngram_size: int = 3
    num_beams: int = 4
    num_return_sequences: int = 1
    seed: int | None = None  # None or -1: draw one (and report it); else 0 to MAX_SEED
    stop: list[str] = field(default_factory=list)

    def decoding_kwargs(self, limits: Limits) -> dict[str, Any]:
        """Checked keywords for biogpt.generation, only those the mode uses."""
        if self.mode not in DECODING_MODES:
            raise InputError(f"The decoding mode must be one of {', '.join(DECODING_MODES)}, got {self.mode!r}.")
        kwargs: dict[str, Any] = {
            "max_new_tokens": _number(self.max_new_tokens, "Max new tokens", 1, limits.max_new_tokens, whole=True),
            "repetition_penalty": _number(self.repetition_penalty, "Repetition penalty", 0.01, limits.max_repetition_penalty),
            "no_repeat_ngram_size": _number(self.no_repeat_ngram_size, "No-repeat n-gram size", 0, limits.max_no_repeat_ngram, whole=True),
        }
        returns = _number(self.num_return_sequences, "Number of sequences", 1, limits.max_return_sequences, whole=True)
        if self.mode == "sampling":
            kwargs.update(
                do_sample=True,
                temperature=_number(self.temperature, "Temperature", 0.01, limits.max_temperature),
                top_k=_number(self.top_k, "Top-k", 0, 100_000, whole=True),
                top_p=_number(self.top_p, "Top-p", 0.01, 1.0),
                typical_p=_number(self.typical_p, "Typical-p", 0.01, 1.0),
                num_return_sequences=returns,
            )
        elif self.mode == "beam search":
            beams = _number(self.num_beams, "Beams", 1, limits.max_beams, whole=True)
            if returns > beams:
                raise InputError(f"Beam search with {beams} beams can return at most {beams} sequences; raise Beams or lower the number of sequences.")
            kwargs.update(do_sample=False, num_beams=beams, num_return_sequences=returns)
        else:
            if returns > 1:
                raise InputError("Greedy decoding gives the same text every time; use sampling or beam search for several sequences.")
            kwargs.update(do_sample=False)
        stops = [s for s in (self.stop or []) if s]
        if len(stops) > limits.max_stop_strings:
            raise InputError(f"At most {limits.max_stop_strings} stop strings are allowed, got {len(stops)}.")
        if any(len(s) > limits.max_stop_chars for s in stops):
            raise InputError(f"Each stop string may have at most {limits.max_stop_chars} characters.")
        if stops:
            kwargs["stop"] = [_SURROGATES.sub("\ufffd", s) for s in stops]
        return kwargs


def parse_stop_strings(text: str | None) -> list[str]:
    r"""Comma-separated stop strings; "\n" stands for a newline, "\," for a literal comma."""
    if not text:
        return []
    parts = re.split(r"(?<!\\),", text)
    return [p.replace("\\,", ",").replace("\\n", "\n").strip(" ") for p in parts if p.strip(" ")]


def align_tokens(text: str, surfaces: list[str]) -> list[str]:
    """Cut `text` into one slice per token so the slices join back to `text` exactly.

    Decoding undoes Moses tokenisation (spaces around punctuation go, escapes are unescaped),
    so a token's own surface form is found in the text from where the previous one ended; the
    whitespace before it joins its slice. A token not found there (a special token, or one cut
    off by a stop string) gets "".
    """
    slices: list[str] = []
    position = 0
    for surface in surfaces:
        found = text.find(surface, position) if surface else -1
        # Only whitespace may lie between two tokens' texts; anything else means "not this token".
        if found < 0 or text[position:found].strip():
            slices.append("")
            continue
        end = found + len(surface)
        slices.append(text[position:end])
        position = end
    if position < len(text):
        # Rare: detokenisation changed a character. Keep the text whole on the last visible token.
        last = max((i for i, s in enumerate(slices) if s), default=len(slices) - 1)
        if last >= 0:
            slices[last] += text[position:]
    return slices


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = np.exp(values - values.max())
    return (shifted / shifted.sum()).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The engine
# --------------------------------------------------------------------------------------------


# Weight quantization at load (biogpt.quantize): int8/int4 on the CPU, bitsandbytes 8bit/4bit on CUDA.
QUANTIZE_MODES = (None, "int8", "int4", "8bit", "4bit")


class Engine:
    """Loads models on demand (LRU, one load per model) and answers the app's requests."""

    def __init__(
        self,
        default_model: str = "bundled",
        device: str = "auto",
        dtype: str = "auto",
        allowed_models: list[str] | tuple[str, ...] = (),
        max_loaded_models: int = 4,
        limits: Limits | None = None,
        quantize: str | None = None,
        batching: bool = True,
        model_memory_gb: float | None = None,
        analysis_cache_bytes: int | None = None,
    ) -> None:
        """`model_memory_gb` bounds the bytes of the loaded models' weights together (default:
        half the machine's RAM, or of the GPU's memory); `analysis_cache_bytes` bounds the
        Attention tab's cached analyses (default: interpret.DEFAULT_CACHE_BYTES)."""
        if device not in ("auto", "cpu", "cuda", "mps") and not str(device).startswith("cuda:"):
            raise ValueError(f"Unknown device {device!r}; use auto, cpu, cuda or mps.")
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"Unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16.")
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"Unknown quantize mode {quantize!r}; use none, {', '.join(m for m in QUANTIZE_MODES if m)}.")
        self.quantize = quantize
        # Concurrent greedy/sampling requests on one language model share each decoding forward.
        self.batching = bool(batching)
        self.default_model = str(default_model)
        self.requested_device = device
        self.requested_dtype = dtype
        self.limits = limits or Limits()
        self.max_loaded_models = max(1, int(max_loaded_models))
        if model_memory_gb is not None and not (isinstance(model_memory_gb, (int, float)) and 0 < model_memory_gb < math.inf):
            raise ValueError(f"The model memory budget must be a positive number of GB, got {model_memory_gb!r}.")
        self._model_memory = None if model_memory_gb is None else int(model_memory_gb * 2**30)
        self._reserved_bytes = 0  # weights of models being loaded right now, already made room for
        self.analysis_cache_bytes = analysis_cache_bytes
        # The operator's models come first after the bundled ones; nothing else can be loaded.
        extra = [self.default_model, *map(str, allowed_models)]
        self.operator_models = [m for m in dict.fromkeys(extra) if m not in BUNDLED_FOR_TASK.values() and m not in HUB_MODELS]
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._registry_lock = threading.Lock()
        self._load_locks: dict[tuple[str, str], threading.Lock] = {}
        self._tokenizers: dict[str, Any] = {}
        self._device: str | None = None
        self._dtype: str | None = None
        self._beam_searches = threading.Semaphore(self.limits.max_parallel_beam_searches)
        self._beam_waiting = 0
        self._beam_waiting_lock = threading.Lock()

    # ----- models ---------------------------------------------------------------------------

    def model_choices(self, task: str) -> list[str]:
        """What a visitor may pick for `task`: its bundled model, the hub models, the operator's."""
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}.")
        first = [self.default_model] if task == "generate" else []
        return list(dict.fromkeys([*first, BUNDLED_FOR_TASK[task], *self.operator_models, *HUB_MODELS]))

    def default_choice(self, task: str) -> str:
        return self.default_model if task == "generate" else BUNDLED_FOR_TASK[task]

    @staticmethod
    def describe_choice(name: str) -> str:
        return MODEL_DESCRIPTIONS.get(name, name)

    @property
    def device(self) -> str:
        if self._device is None:
            self._device = resolve_device(self.requested_device)
        return self._device

    @property
    def dtype(self) -> str:
        if self._dtype is None:
            self._dtype = _resolve_dtype(self.requested_dtype, self.device)
            if self.dtype_note:
                import logging

                logging.getLogger(__name__).warning("%s", self.dtype_note)
        return self._dtype

    @property
    def dtype_note(self) -> str:
        """A warning to show beside the dtype when it runs badly here ("" when it does not).

        bf16 stays allowed on CPUs without bf16 instructions (a user may insist), but it is
        emulated there and prefills about 5x slower than float32, so the header and every result say so.
        """
        from ..cpu import fast_bf16

        if self._dtype == "bfloat16" and self.device == "cpu" and not fast_bf16():
            return ("bfloat16 is emulated on this CPU (no AVX-512): it reads prompts about 5x "
                    "slower than float32, so --dtype float32 is faster here.")
        return ""

    @property
    def quantization_note(self) -> str:
        """Which kernels the quantized weights run here, e.g. "fbgemm, 7-bit activations (checked
        on this CPU)"; "" without CPU quantization."""
        from ..quantize import kernel_note

        return kernel_note(self.quantize) if self.device == "cpu" else ""

    @property
    def model_memory_bytes(self) -> int:
        """The bytes all loaded models' weights may take together."""
        if self._model_memory is None:
            self._model_memory = _default_model_memory(self.device)
        return self._model_memory

    def loaded_bytes(self) -> int:
        """Bytes of weights the loaded models hold (as counted for the memory budget)."""
        with self._registry_lock:
            return sum(m.weight_bytes for m in self._models.values())

    def loaded_models(self) -> list[str]:
        with self._registry_lock:
            return [f"{name} ({task})" for name, task in self._models]

    def load(self, name: str, task: str, progress: ProgressCallback | None = None) -> LoadedModel:
        """The model `name` with `task`'s head, loading it on first use (once, however many ask)."""
        if task not in TASKS:
            raise ValueError(f"Unknown task {task!r}.")
        name = str(name or "").strip()
        if name not in self.model_choices(task):
            raise InputError(
                f"{name[:80]!r} is not one of the models this server offers; pick one of: "
                + ", ".join(self.model_choices(task)) + "."
            )
        key = (name, task)
        with self._registry_lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
            lock = self._load_locks.setdefault(key, threading.Lock())
        with lock:
            with self._registry_lock:
                if key in self._models:  # another request loaded it while this one waited
                    self._models.move_to_end(key)
                    return self._models[key]
            need = self._weights_needed(name, task, progress)
            self._make_room(name, need)
            try:
                loaded = self._load(name, task, progress)
            finally:
                with self._registry_lock:
                    self._reserved_bytes -= need
            loaded.weight_bytes = max(need, _module_bytes(loaded.model))
            with self._registry_lock:
                self._models[key] = loaded
                self._evict(keep=1)
            return loaded

    def _weights_needed(self, name: str, task: str, progress: ProgressCallback | None) -> int:
        """The bytes the checkpoint's weights will take here, from its config.json alone."""
        import torch

        from ..config import BioGptConfig
        from ..loading import resolve_model_dir, weight_bytes_estimate

        (progress or (lambda fraction, message: None))(0.02, f"Reading the configuration of {name}")
        config_file = resolve_model_dir(name, ["config.json"]) / "config.json"  # hub models: only this file so far
        if not config_file.is_file():
            return 0  # not a checkpoint: loading it says so
        try:
            config = BioGptConfig.from_dict(json.loads(config_file.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError) as error:
            raise InputError(f"{name}'s config.json cannot be read ({type(error).__name__}), so the model cannot be loaded.") from None
        head = {"generate": "lm", "ner": "token", "classify": "sequence"}[task]
        return weight_bytes_estimate(config, head, getattr(torch, self.dtype), self.quantize)

    def _make_room(self, name: str, need: int) -> None:
        """Refuse a model that alone exceeds the memory budget; else drop least recently used
        models until it fits beside the others (and beside loads in progress)."""
        budget = self.model_memory_bytes
        if need > budget:
            raise InputError(
                f"{name} needs about {need / 2**30:.1f} GB for its weights in {self.quantize or self.dtype}, more than "
                f"this server's model memory of {budget / 2**30:.1f} GB; pick a smaller model (the operator can raise --model-memory-gb)."
            )
        with self._registry_lock:
            self._reserved_bytes += need
            self._evict(keep=0)

    def _evict(self, keep: int) -> None:
        """Drop least recently used models (never the `keep` newest) while the count or the bytes
        are over their bounds. Call with the registry lock held."""
        def over() -> bool:
            held = sum(m.weight_bytes for m in self._models.values()) + self._reserved_bytes
            return len(self._models) > self.max_loaded_models or held > self.model_memory_bytes

        while len(self._models) > keep and over():
            _, evicted = self._models.popitem(last=False)  # requests holding it finish normally
            if evicted.batcher is not None:
                evicted.batcher.close()

    def preload(self, names_and_tasks: list[tuple[str, str]]) -> threading.Thread:
        """Load models in a background thread so the first visitor does not wait; errors are logged."""

        def work() -> None:
            import logging

            batchers = []
            for name, task in names_and_tasks:
                try:
                    loaded = self.load(name, task)
                    if loaded.batcher is not None:
                        batchers.append(loaded.batcher)
                except Exception as error:  # a missing optional model must not stop the app
                    logging.getLogger(__name__).warning("Could not preload %s (%s): %s", name, task, error)
            for batcher in batchers:  # once every model is ready: a few short forwards each
                batcher.calibrate()

        thread = threading.Thread(target=work, name="biogpt-preload", daemon=True)
        thread.start()
        return thread

    def _load(self, name: str, task: str, progress: ProgressCallback | None) -> LoadedModel:
        import torch

        from .. import model as modeling
        from ..loading import resolve_model_dir

        report = progress or (lambda fraction, message: None)
        started = time.perf_counter()
        report(0.05, f"Finding {name} (the first use of a hub model downloads it)")
        folder = resolve_model_dir(
            name,
            ["config.json", "model.safetensors", "model.safetensors.index.json", "model-*.safetensors",
             "pytorch_model.bin", "pytorch_model.bin.index.json", "pytorch_model-*.bin",
             "vocab.json", "merges.txt", "tokenizer_config.json"],
        )
        report(0.6, f"Loading {name} onto {self.device} in {self.dtype}")
        cls = {"generate": modeling.BioGptForCausalLM, "ner": modeling.BioGptForTokenClassification,
               "classify": modeling.BioGptForSequenceClassification}[task]
        model = cls.from_pretrained(folder, dtype=getattr(torch, self.dtype), device=self.device, quantize=self.quantize)
        model.eval()
        report(0.9, f"Loading the tokenizer of {name}")
        tokenizer = self._tokenizer_for(folder, model.config.vocab_size)
        batcher = None
        if task == "generate" and self.batching:
            from ..batching import DecodeBatcher

            batcher = DecodeBatcher(model)
        return LoadedModel(
            name=name, task=task, model=model, tokenizer=tokenizer, device=self.device, dtype=self.dtype,
            head_is_untrained=bool(getattr(model, "head_is_untrained", False)),
            load_seconds=time.perf_counter() - started,
            num_parameters=sum(p.numel() for p in model.parameters()),
            studio=dict(model.config.extra.get("biogpt_studio") or {}),
            quantization=model.quantization,
            batcher=batcher,
            note=self.dtype_note,
        )

    def _tokenizer_for(self, folder: Path, vocab_size: int):
        """The checkpoint's own tokenizer files, else the bundled one of the same vocabulary size.

        Tokenizers are shared between models with identical files (the bundled models all carry
        a copy of the same one).
        """
        from ..loading import shown_name
        from ..tokenizer import BioGptTokenizer

        if (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file():
            digest = hashlib.sha1((folder / "vocab.json").read_bytes() + (folder / "merges.txt").read_bytes()).hexdigest()
            source: str | Path = folder
        elif vocab_size in TOKENIZER_BY_VOCAB:
            digest = source = TOKENIZER_BY_VOCAB[vocab_size]
        else:
            raise InputError(f"{shown_name(folder)} has no tokenizer files (vocab.json, merges.txt) and no bundled tokenizer has {vocab_size} tokens.")
        with self._registry_lock:
            tokenizer = self._tokenizers.get(digest)
        if tokenizer is None:
            tokenizer = BioGptTokenizer.from_pretrained(source)
            with self._registry_lock:
                tokenizer = self._tokenizers.setdefault(digest, tokenizer)
        return tokenizer

    def _require_trained_head(self, loaded: LoadedModel, what: str, suggestion: str) -> None:
        if loaded.head_is_untrained:
            raise UntrainedHeadError(
                f"{loaded.name} has no trained {what} head (it is a base language model), so its output "
                f"would be random noise; pick {suggestion} or a checkpoint fine-tuned for this task."
            )

    # ----- generate -------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, progress: ProgressCallback | None = None,
                 should_stop: Callable[[], bool] | None = None) -> Iterator[GenerationResult]:
        """Yield the growing result token by token (one sequence, greedy or sampling), or once
        at the end (several sequences or beam search, which cannot show partial text).

        Closing the iterator stops decoding (the UI's Stop button). With batching on, greedy and
        sampling requests on the same model are decoded together between steps (biogpt.batching);
        each gets exactly what it would get alone. Beam searches run on their own, a few at a time.
        `should_stop` (e.g. "the visitor's connection closed") is asked before every model call and
        while waiting for a turn; when it says yes, biogpt.generation.DecodingStopped is raised.
        """
        prompt = clean_text(request.prompt, "prompt", self.limits.max_prompt_chars)
        kwargs = request.decoding_kwargs(self.limits)
        seed = None
        if kwargs.get("do_sample"):
            seed = _seed(request.seed)
            kwargs["seed"] = seed
        loaded = self.load(request.model, "generate", progress)
        ids = loaded.tokenizer.encode(prompt)
        self._check_room(loaded, len(ids), kwargs["max_new_tokens"])
        settings = {"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype, "mode": request.mode,
                    **{k: v for k, v in kwargs.items() if k != "do_sample"}, "seed": seed}
        if kwargs.get("num_beams", 1) == 1 and kwargs.get("num_return_sequences", 1) == 1:
            return self._stream_one(loaded, prompt, ids, kwargs, settings, should_stop)
        return self._generate_batch(loaded, prompt, ids, kwargs, settings, should_stop)

    def _check_room(self, loaded: LoadedModel, prompt_tokens: int, max_new_tokens: int) -> None:
        room = loaded.max_positions - prompt_tokens
        if max_new_tokens > room:
            if room < 1:
                raise InputError(
                    f"The prompt has {prompt_tokens:,} tokens and fills all {loaded.max_positions:,} positions "
                    f"{loaded.name} can read; shorten it."
                )
            raise InputError(
                f"The prompt has {prompt_tokens:,} tokens, so at most {room:,} new tokens fit in the "
                f"{loaded.max_positions:,} positions {loaded.name} can read; lower Max new tokens or shorten the prompt."
            )

    def _stream_one(self, loaded, prompt, ids, kwargs, settings, should_stop=None) -> Iterator[GenerationResult]:
        from ..generation import stream

        try:
            events = stream(loaded.model, loaded.tokenizer, [ids], batcher=loaded.batcher, should_stop=should_stop, **kwargs)
        except ValueError as error:
            raise InputError(str(error)) from None
        return self._stream_results(loaded, prompt, events, settings)

    def _stream_results(self, loaded, prompt, events, settings) -> Iterator[GenerationResult]:
        started = time.perf_counter()
        first_token = None
        text = ""
        token_ids: list[int] = []
        probabilities: list[float] = []
        alternatives: list[list[tuple[str, float]]] = []
        try:
            for event in events:
                if first_token is None:
                    first_token = time.perf_counter() - started
                text += event.text
                token_ids.append(event.token_id)
                probabilities.append(math.exp(event.logprob))
                alternatives.append([(c.token, c.probability) for c in event.alternatives])
                sample = self._sample(loaded, text, token_ids, probabilities, alternatives, event.finish_reason)
                yield GenerationResult(
                    prompt=prompt, samples=[sample], settings=settings, model=loaded.describe(),
                    finished=event.finish_reason is not None, elapsed=time.perf_counter() - started,
                    first_token_seconds=first_token, new_tokens=len(token_ids),
                )
        finally:
            events.close()

    def _generate_batch(self, loaded, prompt, ids, kwargs, settings, should_stop=None) -> Iterator[GenerationResult]:
        from ..generation import generate_detailed

        beam_search = kwargs.get("num_beams", 1) > 1
        started = time.perf_counter()
        try:
            if beam_search:
                self._take_beam_turn(should_stop)
                try:
                    started = time.perf_counter()
                    sequences = generate_detailed(loaded.model, loaded.tokenizer, [ids], should_stop=should_stop, **kwargs)
                finally:
                    self._beam_searches.release()
            else:
                sequences = generate_detailed(loaded.model, loaded.tokenizer, [ids], batcher=loaded.batcher,
                                              should_stop=should_stop, **kwargs)
        except ValueError as error:
            raise InputError(str(error)) from None
        elapsed = time.perf_counter() - started
        samples = [
            self._sample(loaded, s.text, s.token_ids, [math.exp(v) for v in s.token_logprobs],
                         [[(c.token, c.probability) for c in step] for step in s.alternatives],
                         s.finish_reason, s.beam_score)
            for s in sequences
        ]
        yield GenerationResult(
            prompt=prompt, samples=samples, settings=settings, model=loaded.describe(), finished=True,
            elapsed=elapsed, first_token_seconds=None, new_tokens=sum(len(s.token_ids) for s in samples),
        )

    def _take_beam_turn(self, should_stop: Callable[[], bool] | None = None) -> None:
        """Take one of the max_parallel_beam_searches turns (the caller releases it). At most
        limits.max_waiting_beam_searches wait for one (more are refused); a waiting one whose reader
        leaves gives up its place at once."""
        from ..generation import DecodingStopped

        if not self._beam_searches.acquire(blocking=False):
            with self._beam_waiting_lock:
                if self._beam_waiting >= self.limits.max_waiting_beam_searches:
                    raise InputError(
                        f"{self._beam_waiting} beam searches are already waiting for their turn; try again in a "
                        "minute, or use greedy or sampling, which are served together."
                    )
                self._beam_waiting += 1
            try:
                while not self._beam_searches.acquire(timeout=0.05):
                    if should_stop is not None and should_stop():
                        raise DecodingStopped()
            finally:
                with self._beam_waiting_lock:
                    self._beam_waiting -= 1

    def _sample(self, loaded, text, token_ids, probabilities, alternatives, finish_reason, beam_score=None) -> GeneratedText:
        return GeneratedText(
            text=text,
            token_ids=np.asarray(token_ids, dtype=np.int64),
            token_texts=align_tokens(text, [loaded.surface(i) for i in token_ids]),
            probabilities=np.asarray(probabilities, dtype=np.float32),
            alternatives=list(alternatives),
            finish_reason=finish_reason,
            beam_score=beam_score,
        )

    def answer_pubmedqa(self, question: str, context: str, model: str = "bundled", long_answer: str = "",
                        progress: ProgressCallback | None = None) -> AnswerResult:
        """Score "yes", "no" and "maybe" as BioGPT's PubMedQA fine-tuning phrased the answer.

        The prompt is `question: ... context: ...` (plus ` answer: ...` when a long answer is
        given, as in the reasoning-free setting), ended with a full stop, then "the answer to
        the question given the context is"; each answer's probability is the softmax of the
        log-likelihoods the model gives " yes.", " no." and " maybe." after it.
        """
        question = clean_text(question, "question", self.limits.max_prompt_chars).strip()
        context = clean_text(context, "context", self.limits.max_prompt_chars).strip()
        long_answer = clean_text(long_answer, "long answer", self.limits.max_prompt_chars, allow_empty=True).strip()
        source = f"question: {question} context: {context}" + (f" answer: {long_answer}" if long_answer else "")
        if not source.endswith("."):
            source += "."
        prompt = f"{source} {PUBMEDQA_LEAD}"
        loaded = self.load(model, "generate", progress)
        scores, _ = self._score_continuations(loaded, prompt, [f" {a}." for a in PUBMEDQA_ANSWERS])
        return AnswerResult(
            prompt=prompt, answers=list(PUBMEDQA_ANSWERS), probabilities=_softmax(scores),
            log_likelihoods=scores.astype(np.float32), model=loaded.describe(),
            settings={"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype,
                      "scoring": "log-likelihood of ' yes.' / ' no.' / ' maybe.' after the prompt, softmax over the three"},
        )

    def _score_continuations(self, loaded: LoadedModel, prefix: str, continuations: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """Log-likelihood of each continuation after `prefix`, and its token count.

        The prefix runs once; its KV cache is copied for every candidate, which scores all of
        them in one batched call. Tokenisation is not additive (Moses and BPE look at whole
        words), so the shared part is the longest run of ids common to every candidate.
        """
        import torch
        import torch.nn.functional as F

        tokenizer, model = loaded.tokenizer, loaded.model
        full = [tokenizer.encode(prefix + c) for c in continuations]
        prefix_ids = tokenizer.encode(prefix)
        shared = min(_common_prefix_length(prefix_ids, f) for f in full)
        shared = max(1, min(shared, min(len(f) for f in full) - 1))  # every candidate keeps >= 1 token to score
        longest = max(len(f) for f in full)
        if longest > loaded.max_positions:
            raise InputError(
                f"The text needs {longest:,} tokens but {loaded.name} reads at most {loaded.max_positions:,}; shorten it."
            )
        tails = [f[shared:] for f in full]
        width = max(len(t) for t in tails)
        pad = tokenizer.pad_token_id
        with torch.inference_mode():
            device = model.device
            head = model.biogpt(torch.tensor([full[0][:shared]], device=device), use_cache=True)
            first = F.log_softmax(model.output_projection(head.last_hidden_state[:, -1]).float(), dim=-1)[0]
            cache = head.past_key_values
            cache.reorder(torch.zeros(len(tails), dtype=torch.long, device=device))
            # Right padding needs no mask: a causal model never lets a real token see the pads after it.
            batch = torch.tensor([t + [pad] * (width - len(t)) for t in tails], device=device)
            hidden = model.biogpt(batch, past_key_values=cache, use_cache=True).last_hidden_state
            rows, cols, targets = [], [], []
            for i, t in enumerate(tails):
                for j in range(1, len(t)):
                    rows.append(i)
                    cols.append(j - 1)
                    targets.append(t[j])
            totals = torch.tensor([float(first[t[0]]) for t in tails])
            if targets:
                picked = model.output_projection(hidden[rows, cols])
                logprobs = F.log_softmax(picked.float(), dim=-1)
                token_scores = logprobs[torch.arange(len(targets)), torch.tensor(targets, device=device)].cpu()
                totals.index_add_(0, torch.tensor(rows), token_scores)
        return totals.numpy().astype(np.float64), np.asarray([len(t) for t in tails])

    # ----- NER ------------------------------------------------------------------------------

    def ner(self, text: str, model: str = "bundled-ner", aggregation: str = "auto",
            progress: ProgressCallback | None = None) -> NerResult:
        """Chemical and Disease spans (whatever the checkpoint's BIO labels name) with confidences.

        The model tags pieces; a word's tag comes from its pieces by `aggregation`: "first" or
        "last" piece, "average" of the pieces' probabilities, or the piece with the "max"
        probability; "auto" uses the piece the model was trained to tag (config.json says which).
        Words are Moses words and spans are character offsets, via the tokenizer's offsets.
        """
        from ..ner import NerEncoded, NerSettings, ner_piece_probabilities, split_words, tags_to_spans

        text = clean_text(text, "text", self.limits.max_document_chars)
        if aggregation not in NER_AGGREGATIONS:
            raise InputError(f"Aggregation must be one of {', '.join(NER_AGGREGATIONS)}, got {aggregation!r}.")
        loaded = self.load(model, "ner", progress)
        self._require_trained_head(loaded, "NER", "bundled-ner")
        id2label = loaded.model.config.id2label or {}
        types = sorted({label.split("-", 1)[1] for label in id2label.values() if label[:2] in ("B-", "I-")})
        if not types:
            raise InputError(f"{loaded.name}'s labels ({', '.join(list(id2label.values())[:5])}) are not BIO tags, so spans cannot be read from them.")
        started = time.perf_counter()
        pieces, spans = loaded.tokenizer.tokenize_with_offsets(text)
        keep = [i for i, (s, e) in enumerate(spans) if e > s]  # literal special tokens carry no text
        pieces, spans = [pieces[i] for i in keep], [spans[i] for i in keep]
        if not pieces:
            raise InputError("The text has no words the tokenizer can read; type some words.")
        if len(pieces) > self.limits.max_document_tokens:
            raise InputError(
                f"The text has {len(pieces):,} tokens; the limit here is {self.limits.max_document_tokens:,}. Shorten it."
            )
        settings = NerSettings.from_config(loaded.model.config)
        strategy = settings.label_token if aggregation == "auto" else aggregation
        document = NerEncoded(list(loaded.tokenizer.convert_tokens_to_ids(pieces)), split_words(pieces, spans))
        tokenizer = loaded.tokenizer
        probabilities, _ = ner_piece_probabilities(loaded.model, [document], settings, tokenizer.eos_token_id, tokenizer.pad_token_id)
        piece_probs = probabilities[0].numpy()
        word_probs = np.stack([_aggregate(piece_probs[first:end], strategy) for first, end, _, _ in document.words])
        tags = [id2label[int(i)] for i in word_probs.argmax(-1)]
        confidences = word_probs.max(-1)
        entities = []
        for start, end, kind in tags_to_spans(document.words, tags):
            inside = [confidences[i] for i, w in enumerate(document.words) if w[2] >= start and w[3] <= end]
            entities.append(Entity(start, end, kind, text[start:end], float(np.mean(inside))))
        return NerResult(
            text=text, entities=entities, entity_types=types, aggregation=strategy, model=loaded.describe(),
            settings={"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype, "aggregation": strategy,
                      "input": "doubled" if settings.doubled else "single", "window": settings.window},
            num_tokens=len(pieces), elapsed=time.perf_counter() - started,
        )

    # ----- classify -------------------------------------------------------------------------

    def classify(self, text: str, model: str = "bundled-hoc", progress: ProgressCallback | None = None) -> ClassificationResult:
        """The checkpoint's own labels; multi-label checkpoints use the threshold in their config."""
        import torch

        text = clean_text(text, "text", self.limits.max_classify_chars)
        loaded = self.load(model, "classify", progress)
        self._require_trained_head(loaded, "classification", "bundled-hoc")
        ids = loaded.tokenizer.encode(text)
        if len(ids) > loaded.max_positions:
            raise InputError(f"The text has {len(ids):,} tokens but {loaded.name} reads at most {loaded.max_positions:,}; shorten it.")
        started = time.perf_counter()
        with torch.inference_mode():
            logits = loaded.model(input_ids=torch.tensor([ids], device=loaded.model.device)).logits[0].float().cpu()
        config = loaded.model.config
        labels = [config.id2label[i] for i in range(len(config.id2label))] if config.id2label else [f"LABEL_{i}" for i in range(logits.shape[0])]
        multi = bool(loaded.studio.get("multi_label")) or config.problem_type == "multi_label_classification"
        if multi:
            probabilities = torch.sigmoid(logits).numpy().astype(np.float32)
            threshold = float(loaded.studio.get("threshold", 0.5))
            predicted = [label for label, p in zip(labels, probabilities) if p >= threshold]
        else:
            probabilities = torch.softmax(logits, -1).numpy().astype(np.float32)
            threshold = None
            predicted = [labels[int(np.argmax(probabilities))]]
        return ClassificationResult(
            text=text, labels=labels, probabilities=probabilities, predicted=predicted, mode="supervised",
            multi_label=multi, threshold=threshold, model=loaded.describe(),
            settings={"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype,
                      "multi_label": multi, "threshold": threshold},
            elapsed=time.perf_counter() - started,
        )

    def zero_shot(self, text: str, labels: list[str] | str, template: str = ZERO_SHOT_TEMPLATE,
                  model: str = "bundled", normalize: bool = True,
                  progress: ProgressCallback | None = None) -> ClassificationResult:
        """Score each candidate label by the language model's log-likelihood of the template.

        The template holds "{text}" and "{label}"; the part before "{label}" is shared, and each
        label is scored by the log-likelihood of the rest (label and what follows), averaged per
        token when `normalize` (so long labels are not penalised for their length). The
        probabilities are a softmax over the candidates: relative, never absolute.
        """
        text = clean_text(text, "text", self.limits.max_classify_chars)
        template = clean_text(template, "template", 500)
        if "{label}" not in template or "{text}" not in template:
            raise InputError("The template must contain both {text} and {label}, e.g. '{text} This text is about {label}.'")
        if template.index("{text}") > template.index("{label}"):
            raise InputError("In the template, {text} must come before {label}: the label is scored given the text.")
        # Each {text} copies the whole text into every candidate's prompt; a template that repeats
        # it many times cost seconds of tokenising before the token cap refused it.
        repeats = template.count("{text}")
        if repeats > MAX_TEXT_PLACEHOLDERS:
            raise InputError(f"The template uses {{text}} {repeats} times; at most {MAX_TEXT_PLACEHOLDERS} are allowed, as each copy of the text is scored again.")
        labels = _candidate_labels(labels, self.limits)
        if len(labels) < 2:
            raise InputError("Give at least two candidate labels, separated by commas.")
        if len(labels) > self.limits.max_candidate_labels:
            raise InputError(f"At most {self.limits.max_candidate_labels} candidate labels are allowed, got {len(labels)}.")
        if any(len(label) > self.limits.max_label_chars for label in labels):
            raise InputError(f"Each label may have at most {self.limits.max_label_chars} characters.")
        loaded = self.load(model, "generate", progress)
        self._check_zero_shot_size(loaded, text, template, labels)
        started = time.perf_counter()
        before, after = template.split("{label}", 1)
        # str.replace, not str.format: braces in a visitor's text must stay text.
        prefix = before.replace("{text}", text).rstrip(" ")
        gap = " " if before.endswith(" ") else ""
        totals, counts = self._score_continuations(
            loaded, prefix, [gap + label + after.replace("{text}", text) for label in labels]
        )
        scores = totals / counts if normalize else totals
        probabilities = _softmax(scores)
        return ClassificationResult(
            text=text, labels=labels, probabilities=probabilities, predicted=[labels[int(np.argmax(probabilities))]],
            mode="zero-shot", multi_label=False, threshold=None, model=loaded.describe(),
            settings={"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype, "template": template,
                      "score": "mean log-likelihood per token" if normalize else "total log-likelihood"},
            scores=scores.astype(np.float32), elapsed=time.perf_counter() - started,
        )

    def _check_zero_shot_size(self, loaded: LoadedModel, text: str, template: str, labels: list[str]) -> None:
        """Refuse before any candidate is built when the filled template cannot fit the model.

        The estimate adds the pieces' token counts (tokenising each once); tokenisation is nearly
        additive, and the slack of a few tokens per piece keeps borderline prompts for the exact
        check in `_score_continuations`.
        """
        count = lambda piece: len(loaded.tokenizer.encode(piece, add_special_tokens=False)) if piece.strip() else 0  # noqa: E731
        repeats = template.count("{text}")
        frame = template.replace("{text}", " ").replace("{label}", " ", 1)
        estimate = repeats * count(text) + count(frame) + max(count(label) for label in labels)
        slack = 4 * (repeats + 2)
        if estimate - slack > loaded.max_positions:
            raise InputError(
                f"The filled template needs about {estimate:,} tokens but {loaded.name} reads at most "
                f"{loaded.max_positions:,}; shorten the text or the template."
            )

    # ----- attention (issue 6) ---------------------------------------------------------------
    # One forward with attentions and hidden states per (model, text), kept in a byte-bounded
    # cache; every view is derived from it in biogpt.interpret. These methods only delegate.

    @property
    def interpreter(self):
        if getattr(self, "_interpreter", None) is None:
            from ..interpret import Interpreter

            sizes = {} if self.analysis_cache_bytes is None else {"max_bytes": int(self.analysis_cache_bytes)}
            self._interpreter = Interpreter(lambda name: self.load(name, "generate"), self.default_choice("generate"), **sizes)
        return self._interpreter

    def analyze(self, text: str, model: str | None = None):
        """The cached `interpret.Analysis` of `text` (runs the model only on a cache miss).

        What the model can read is its positions, in tokens; a text over the character guard is
        refused with that token cap too, so the two limits never disagree in what they say.
        """
        model = model or self.default_choice("generate")
        if isinstance(text, str) and len(text) > self.limits.max_document_chars:
            positions = self.load(model, "generate").max_positions
            raise InputError(
                f"The text has {len(text):,} characters; {model} reads at most {positions:,} tokens "
                f"(about {positions * CHARS_PER_TOKEN:,} characters of English text), so shorten it."
            )
        text = clean_text(text, "text", self.limits.max_document_chars)
        try:
            return self.interpreter.analyze(text, model)
        except ValueError as error:  # interpret's refusals are sentences for the visitor
            raise InputError(str(error)) from None

    def cached_analysis(self, text: str, model: str | None = None):
        """The analysis if it is cached, else None; never runs the model."""
        try:
            text = clean_text(text, "text", self.limits.max_document_chars)
        except InputError:
            return None
        return self.interpreter.cached_analysis(text, model or self.default_choice("generate"))

    def logit_lens(self, analysis, k: int = 5):
        return self.interpreter.logit_lens(analysis, k)

    def watch_tokens(self, analysis, position: int, words: list[str]):
        return self.interpreter.watch_tokens(analysis, position, words)

    def ablate(self, analysis, heads, k: int = 8, continue_tokens: int = 0):
        return self.interpreter.ablate(analysis, heads, k, continue_tokens)

    def trace_generation(self, analysis, max_new_tokens: int = 20):
        return self.interpreter.trace_generation(analysis, max_new_tokens)

    # ----- end of attention ----------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


# Half of the memory: the rest is for the OS, activations, KV caches and cached analyses.
MODEL_MEMORY_SHARE = 0.5


def _default_model_memory(device: str) -> int:
    """Bytes of weights to keep loaded: a share of the GPU's memory, or of the machine's RAM."""
    if device.startswith("cuda"):
        import torch

        return int(MODEL_MEMORY_SHARE * torch.cuda.get_device_properties(torch.device(device)).total_memory)
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            total = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemTotal:"))
    except (OSError, StopIteration, ValueError):  # not Linux: fall back to what sysconf reports
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            total = 16 * 2**30
    return int(MODEL_MEMORY_SHARE * total)


def _module_bytes(module: Any) -> int:
    """Bytes of a module's parameters and buffers, each storage once (tied weights count once)."""
    storages: dict[int, int] = {}
    for tensor in [*module.parameters(), *module.buffers()]:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def _resolve_dtype(requested: str, device: str) -> str:
    """"auto" is what runs well on the device: float32 on CPU (half precision is slow there),
    bfloat16 on GPUs that have it, else float16."""
    if requested != "auto":
        return requested
    if device.startswith("cuda"):
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    if device == "mps":
        return "float16"
    return "float32"


# torch's CPU generator (mt19937) keeps only the low 32 bits of a seed: 0, 2**32 and 2**40 draw
# the same numbers. So seeds are exactly the 32-bit range, where every seed gives its own stream
# on every device (CUDA's Philox would take 64 bits, but then a seed would mean two things).
MAX_SEED = 2**32 - 1
_SEED_RANGE = f"a whole number from 0 to {MAX_SEED:,} (or -1 for a random one)"


def _seed(requested: Any) -> int:
    """The seed to use: `requested` exactly, or a fresh one for None, "" and -1; anything that
    cannot be that seed exactly (1.5, 2**53 + 1 as a float, 2**32) is refused, never rounded."""
    if requested is None or (isinstance(requested, str) and not requested.strip()):
        return secrets.randbelow(MAX_SEED + 1)
    value = requested
    if isinstance(value, str):
        text = value.strip()
        if len(text) > 24:  # also keeps int() away from huge digit strings
            raise InputError(f"The seed must be {_SEED_RANGE}; {text[:12]}… is not.")
        try:
            value = int(text)
        except ValueError:
            try:
                value = float(text)
            except ValueError:
                raise InputError(f"The seed must be {_SEED_RANGE}, got {text!r}.") from None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"The seed must be {_SEED_RANGE}, not {type(requested).__name__}.")
    if isinstance(value, (float, np.floating)):
        if not math.isfinite(value) or not float(value).is_integer():
            raise InputError(f"The seed must be {_SEED_RANGE}, got {float(value)!r}.")
        if abs(value) > 2**53:  # a float this large stands for many integers: which seed was meant is lost
            raise InputError(f"The seed {float(value):.0f} arrived as a rounded decimal number; send {_SEED_RANGE} as an integer.")
    value = int(value)
    if value == -1:
        return secrets.randbelow(MAX_SEED + 1)
    if not 0 <= value <= MAX_SEED:
        shown = f"{value:,}" if len(str(abs(value))) <= 30 else f"a {len(str(abs(value))):,}-digit number"
        raise InputError(f"The seed must be {_SEED_RANGE}, got {shown}.")
    return value


def _candidate_labels(labels: Any, limits: Limits) -> list[str]:
    """Zero-shot candidates from a comma/newline-separated string or a list of strings.

    A REST client that sends a JSON list to the text box gets its Python spelling ("['a', 'b']");
    that is read back as the list it was, not split into the labels "['a'" and "'b']".
    """
    if isinstance(labels, str):
        text = labels.strip()
        most = limits.max_candidate_labels * (limits.max_label_chars + 6)  # quotes, comma, space
        if len(text) > most:
            raise InputError(f"The candidate labels have {len(text):,} characters; at most {most:,} are read.")
        parsed = None
        if text.startswith("[") and text.endswith("]"):
            try:
                parsed = ast.literal_eval(text)
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                parsed = None
        if isinstance(parsed, list) and all(isinstance(label, str) for label in parsed):
            labels = parsed
        else:
            labels = [part.strip() for part in re.split(r"[,\n]", labels)]
    elif isinstance(labels, (list, tuple)):
        strange = next((label for label in labels if not isinstance(label, str)), None)
        if strange is not None:
            raise InputError(f"Each candidate label must be text, not {type(strange).__name__}.")
    else:
        raise InputError(f"The candidate labels must be text separated by commas or a list of texts, not {type(labels).__name__}.")
    return list(dict.fromkeys(_SURROGATES.sub("\ufffd", label.strip()) for label in labels if label and label.strip()))


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _aggregate(piece_probs: np.ndarray, strategy: str) -> np.ndarray:
    """One word's label probabilities from its pieces' ([pieces, labels])."""
    if strategy == "first":
        return piece_probs[0]
    if strategy == "last":
        return piece_probs[-1]
    if strategy == "average":
        return piece_probs.mean(0)
    return piece_probs[int(piece_probs.max(-1).argmax())]  # "max": the most confident piece decides


__all__ = [
    "AnswerResult", "ClassificationResult", "Engine", "Entity", "GeneratedText", "GenerationRequest",
    "GenerationResult", "InputError", "Limits", "LoadedModel", "NerResult", "UntrainedHeadError",
    "align_tokens", "clean_text", "parse_stop_strings",
]
