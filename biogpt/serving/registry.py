"""Which models a visitor may pick, and each loaded once: a registry of models kept in an LRU
bounded by count and by the bytes of their weights.

A per-model lock (biogpt.lru) makes concurrent first requests wait for one load instead of
loading twice. After that, requests use the model concurrently without a lock: inference
never mutates the module (eval mode, no grad), and every request owns its generation state
(KV cache, sampler). Nothing heavy happens at import time: torch and the tokenizer are
imported when the first model loads, which keeps the app's cold start short.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..devices import resolve_device
from ..lru import BuildOnceLRU
from .validation import InputError, UntrainedHeadError

ProgressCallback = Callable[[float, str], None]

TASKS = ("generate", "ner", "classify")
HUB_MODELS = ("microsoft/biogpt", "microsoft/BioGPT-Large", "microsoft/BioGPT-Large-PubMedQA")
BUNDLED_FOR_TASK = {"generate": "bundled", "ner": "bundled-ner", "classify": "bundled-hoc"}
# How the model picker and the header name each model: the bundled ones as the small demos they are.
MODEL_DESCRIPTIONS = {
    "bundled": "bundled: demo 4-layer BioGPT trained here for minutes (its text is not factual)",
    "bundled-ner": "bundled-ner: demo 4-layer BioGPT fine-tuned for Chemical/Disease NER (BC5CDR)",
    "bundled-hoc": "bundled-hoc: demo 4-layer BioGPT fine-tuned for Hallmarks of Cancer (HoC)",
    "microsoft/biogpt": "microsoft/biogpt: Microsoft's published BioGPT (347M parameters)",
    "microsoft/BioGPT-Large": "microsoft/BioGPT-Large: Microsoft's published BioGPT-Large (1.5B)",
    "microsoft/BioGPT-Large-PubMedQA": "microsoft/BioGPT-Large-PubMedQA: published, fine-tuned for PubMedQA (1.5B)",
}
# Tokenizers shipped with the project, chosen by vocabulary size when a checkpoint has none.
TOKENIZER_BY_VOCAB = {42384: "bundled-tokenizer", 57717: "bundled-tokenizer-large"}
# Weight quantization at load (biogpt.quantize): int8/int4 on the CPU, bitsandbytes 8bit/4bit on CUDA.
QUANTIZE_MODES = (None, "int8", "int4", "8bit", "4bit")
HEADS = {"generate": "lm", "ner": "token", "classify": "sequence"}


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


class ModelRegistry:
    """Loads models on demand (LRU, one load per model) within a count and a memory budget."""

    def __init__(
        self,
        default_model: str = "bundled",
        device: str = "auto",
        dtype: str = "auto",
        allowed_models: list[str] | tuple[str, ...] = (),
        max_loaded_models: int = 4,
        quantize: str | None = None,
        batching: bool = True,
        model_memory_gb: float | None = None,
    ) -> None:
        """`model_memory_gb` bounds the bytes of the loaded models' weights together (default:
        half the machine's RAM, or of the GPU's memory)."""
        if device not in ("auto", "cpu", "cuda", "mps") and not str(device).startswith("cuda:"):
            raise ValueError(f"Unknown device {device!r}; use auto, cpu, cuda or mps.")
        if dtype not in ("auto", "float32", "float16", "bfloat16"):
            raise ValueError(f"Unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16.")
        if quantize not in QUANTIZE_MODES:
            raise ValueError(f"Unknown quantize mode {quantize!r}; use none, {', '.join(m for m in QUANTIZE_MODES if m)}.")
        if model_memory_gb is not None and not (isinstance(model_memory_gb, (int, float)) and 0 < model_memory_gb < math.inf):
            raise ValueError(f"The model memory budget must be a positive number of GB, got {model_memory_gb!r}.")
        self.quantize = quantize
        # Concurrent greedy/sampling requests on one language model share each decoding forward.
        self.batching = bool(batching)
        self.default_model = str(default_model)
        self.requested_device = device
        self.requested_dtype = dtype
        self.max_loaded_models = max(1, int(max_loaded_models))
        self._model_memory = None if model_memory_gb is None else int(model_memory_gb * 2**30)
        # The operator's models come first after the bundled ones; nothing else can be loaded.
        extra = [self.default_model, *map(str, allowed_models)]
        self.operator_models = [m for m in dict.fromkeys(extra) if m not in BUNDLED_FOR_TASK.values() and m not in HUB_MODELS]
        self._models: BuildOnceLRU[LoadedModel] = BuildOnceLRU(
            max_entries=self.max_loaded_models,
            max_bytes=lambda: self.model_memory_bytes,
            size=lambda loaded: loaded.weight_bytes,
            on_evict=_close_batcher,  # requests holding an evicted model finish normally
        )
        self._tokenizers: dict[str, Any] = {}
        self._tokenizers_lock = threading.Lock()
        self._device: str | None = None
        self._dtype: str | None = None

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
        """What the picker shows for a model: what it is, not only its name."""
        if name in MODEL_DESCRIPTIONS:
            return MODEL_DESCRIPTIONS[name]
        return f"{name}: a checkpoint from the Hugging Face Hub" if "/" in name and not name.startswith(("/", ".")) \
            else f"{name}: a local checkpoint"

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
        return self._models.nbytes

    def loaded_models(self) -> list[str]:
        return [f"{name} ({task})" for name, task in self._models.keys()]

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

        def build() -> LoadedModel:
            need = self._weights_needed(name, task, progress)
            self._refuse_oversized(name, need)
            with self._models.reserve(need):  # drops least recently used models until it fits
                loaded = self._load(name, task, progress)
            loaded.weight_bytes = max(need, _module_bytes(loaded.model))
            return loaded

        return self._models.get_or_build((name, task), build)

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
            raise InputError(f"{name}'s config.json cannot be read ({type(error).__name__}), "
                             "so the model cannot be loaded.") from None
        return weight_bytes_estimate(config, HEADS[task], getattr(torch, self.dtype), self.quantize)

    def _refuse_oversized(self, name: str, need: int) -> None:
        """A model whose weights alone exceed the memory budget is refused, never loaded."""
        budget = self.model_memory_bytes
        if need > budget:
            raise InputError(
                f"{name} needs about {need / 2**30:.1f} GB for its weights in {self.quantize or self.dtype}, more than "
                f"this server's model memory of {budget / 2**30:.1f} GB; pick a smaller model "
                "(the operator can raise --model-memory-gb)."
            )

    def preload(self, names_and_tasks: list[tuple[str, str]]) -> threading.Thread:
        """Load models in a background thread so the first visitor does not wait; errors are logged."""

        def work() -> None:
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
        cls = {"lm": modeling.BioGptForCausalLM, "token": modeling.BioGptForTokenClassification,
               "sequence": modeling.BioGptForSequenceClassification}[HEADS[task]]
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
            raise InputError(f"{shown_name(folder)} has no tokenizer files (vocab.json, merges.txt) "
                             f"and no bundled tokenizer has {vocab_size} tokens.")
        with self._tokenizers_lock:
            tokenizer = self._tokenizers.get(digest)
        if tokenizer is None:
            tokenizer = BioGptTokenizer.from_pretrained(source)
            with self._tokenizers_lock:
                tokenizer = self._tokenizers.setdefault(digest, tokenizer)
        return tokenizer


def require_trained_head(loaded: LoadedModel, what: str, suggestion: str) -> None:
    """Refuse a base language model where a task needs a fine-tuned head: its output would be noise."""
    if loaded.head_is_untrained:
        raise UntrainedHeadError(
            f"{loaded.name} has no trained {what} head (it is a base language model), so its output "
            f"would be random noise; pick {suggestion} or a checkpoint fine-tuned for this task."
        )


def _close_batcher(loaded: LoadedModel) -> None:
    if loaded.batcher is not None:
        loaded.batcher.close()


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
