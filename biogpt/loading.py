"""From a name to a ready model: hub id | local folder | bundled name -> files -> weights.

Only safe formats are read: safetensors (parsed here, one tensor at a time, so converting the
dtype costs one tensor of extra memory rather than a second copy of the model),
`pytorch_model.bin` through `torch.load(weights_only=True)`, and a fairseq folder (checkpoint.pt,
dict.txt, bpecodes) through biogpt.fairseq's allow-listed unpickler.
"""

from __future__ import annotations

import json
import logging
import mmap
import os
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from .config import BioGptConfig
from .hub import BUNDLED_NAMES, ModelNotAvailableError, resolve_model_dir  # noqa: F401 (re-exported)

logger = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
SAFETENSORS_FILE = "model.safetensors"
SAFETENSORS_INDEX = "model.safetensors.index.json"
TORCH_FILE = "pytorch_model.bin"
TORCH_INDEX = "pytorch_model.bin.index.json"
# Weights that belong to one task head; a checkpoint of one task may carry another's.
HEAD_PREFIXES = ("output_projection.", "classifier.", "score.")

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def shown_name(path: Path) -> str:
    """A checkpoint file or folder as a visitor may see it: the model's name, never the server's
    directory layout (a hub snapshot's folder is named after its repository, not its commit)."""
    path = Path(path)
    for part in reversed(path.parts):
        if part.startswith("models--"):  # HF cache: .../models--org--name/snapshots/<commit>/<file>
            repo = part.removeprefix("models--").replace("--", "/")
            return f"{repo}/{path.name}" if path.suffix else repo
    return f"{path.parent.name}/{path.name}" if path.suffix and path.parent.name else path.name


def weight_files(folder: Path) -> list[Path]:
    """The checkpoint's weight files, safetensors preferred, shards in index order."""
    for single, index in ((SAFETENSORS_FILE, SAFETENSORS_INDEX), (TORCH_FILE, TORCH_INDEX)):
        if (folder / single).is_file():
            return [folder / single]
        if (folder / index).is_file():
            with open(folder / index, encoding="utf-8") as f:
                shards = sorted(set(json.load(f)["weight_map"].values()))
            return [folder / shard for shard in shards]
    raise ModelNotAvailableError(
        f"{shown_name(folder)} has no weights: expected {SAFETENSORS_FILE}, sharded safetensors or {TORCH_FILE}."
    )


def read_safetensors(path: Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu") -> dict[str, torch.Tensor]:
    """Read a .safetensors file into tensors that own their memory, converted to `dtype`.

    The file is memory-mapped; each tensor is copied (and converted) out of the mapping, whose
    pages are then released, so the peak is the loaded weights plus a tensor per thread. The
    copies run on torch's threads: page faults, not arithmetic, bound this, and they overlap.
    """
    with open(path, "rb") as f:
        (header_size,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(header_size))
        header.pop("__metadata__", None)
        data_start = 8 + header_size
        file_size = os.fstat(f.fileno()).st_size
        if header and data_start + max(info["data_offsets"][1] for info in header.values()) > file_size:
            raise ValueError(f"{shown_name(path)} is truncated: its header describes more data than the file holds.")
        if not header:
            return {}
        mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    data = torch.frombuffer(mapping, dtype=torch.uint8)

    def copy_out(item: tuple[str, dict]) -> tuple[str, torch.Tensor]:
        name, info = item
        begin, end = (data_start + offset for offset in info["data_offsets"])
        # F821 below: `del data` runs only once the pool is done, which pyflakes cannot see.
        stored = data[begin:end].view(SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"])  # noqa: F821
        target = dtype if dtype is not None and stored.is_floating_point() else stored.dtype
        tensor = stored.to(device=device, dtype=target, copy=True)
        # The mapping is private and never written, so a dropped page shared with a neighbour
        # that another thread is reading is simply read from the file again.
        page_start = begin - begin % mmap.PAGESIZE
        mapping.madvise(mmap.MADV_DONTNEED, page_start, end - page_start)
        return name, tensor

    in_file_order = sorted(header.items(), key=lambda item: item[1]["data_offsets"][0])
    try:
        with ThreadPoolExecutor(max(1, torch.get_num_threads())) as pool:
            return dict(pool.map(copy_out, in_file_order))
    finally:
        del data
        mapping.close()


def read_state_dict(
    folder: Path, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    state: dict[str, torch.Tensor] = {}
    for path in weight_files(folder):
        if path.suffix == ".safetensors":
            state.update(read_safetensors(path, dtype, device))
        else:
            loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            for name, tensor in loaded.items():
                if dtype is not None and tensor.is_floating_point():
                    tensor = tensor.to(dtype)
                state[name] = tensor.to(device)
    return state


# Bytes a weight takes once quantized at load (scales and packing add a little, left out: this
# is a lower bound, so a model is never refused for memory it would not use).
QUANTIZED_BYTES = {"int8": 1.0, "8bit": 1.0, "int4": 0.5, "4bit": 0.5}


def weight_bytes_estimate(config: BioGptConfig, head: str, dtype: torch.dtype, quantize: str | None = None) -> int:
    """Bytes the weights of `config` take in memory with `head` ("lm", "token" or "sequence"),
    counted from the architecture (exact for our modules), before a byte is loaded."""
    h, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    embeddings = config.vocab_size * h + (config.max_position_embeddings + 2) * h  # positions carry BioGPT's +2 offset
    linear = layers * (4 * h * h + 2 * h * inner)
    small = layers * (4 * h + inner + h + 4 * h) + 2 * h  # biases and layer norms
    labels = config.num_labels
    heads = {"lm": 0 if config.tie_word_embeddings else config.vocab_size * h,
             "token": h * labels + labels, "sequence": h * labels}
    size = torch.empty((), dtype=dtype).element_size()
    linear_size = QUANTIZED_BYTES.get(quantize or "", size)
    return int((embeddings + small + heads[head]) * size + linear * linear_size)


def _resolve_dtype(dtype: Any, config: BioGptConfig) -> torch.dtype | None:
    """None keeps the stored dtype ("auto"); strings like "bfloat16" are accepted."""
    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        return None
    try:
        resolved = getattr(torch, str(dtype).removeprefix("torch."))
    except AttributeError:
        resolved = None
    if not isinstance(resolved, torch.dtype) or not resolved.is_floating_point:
        raise ValueError(f"Unknown dtype {dtype!r}; use float32, float16, bfloat16 or auto.")
    return resolved


def _match_keys(state: dict[str, torch.Tensor], expected: set[str], has_base_prefix: bool) -> dict[str, torch.Tensor]:
    """Rename checkpoint keys to the model's: add or strip the `biogpt.` prefix, drop other heads."""
    matched = {}
    unexpected = []
    for name, tensor in state.items():
        candidates = [name]
        if has_base_prefix and not name.startswith("biogpt.") and not name.startswith(HEAD_PREFIXES):
            candidates.append("biogpt." + name)  # a bare BioGptModel checkpoint under a head
        if not has_base_prefix and name.startswith("biogpt."):
            candidates.append(name.removeprefix("biogpt."))  # a head checkpoint loaded as BioGptModel
        target = next((c for c in candidates if c in expected), None)
        if target is not None:
            matched[target] = tensor
        elif name.startswith(HEAD_PREFIXES):
            logger.info("Ignoring %s: it belongs to another task head.", name)
        else:
            unexpected.append(name)
    if unexpected:
        raise ValueError(
            f"The checkpoint has weights this BioGPT configuration does not: {', '.join(sorted(unexpected)[:10])}"
            + (" ..." if len(unexpected) > 10 else "")
            + ". Is config.json from the same checkpoint?"
        )
    return matched


def load_pretrained(
    cls,
    name_or_path: str | Path,
    dtype: Any = None,
    device: str | torch.device = "cpu",
    config: BioGptConfig | None = None,
    torch_dtype: Any = None,
    quantize: str | None = None,
    **config_overrides: Any,
):
    """Build `cls` from a checkpoint without a second copy of the weights in memory.

    The model is built without initialising its placeholders and the loaded tensors are
    assigned to it. Head weights the checkpoint lacks are initialised, logged, and flagged on the model as
    `head_is_untrained`. Keys that fit no BioGPT model, missing base weights and wrong shapes
    raise an error naming them. `config_overrides` (e.g. `id2label=`) update config.json's values.
    `quantize` ("int8" or "int4" on the CPU, "8bit" or "4bit" on CUDA; see biogpt.quantize)
    swaps the Linear layers for quantized ones after loading, one layer at a time; the mode is
    recorded in `model.quantization` (None when not quantized).
    """
    if quantize is not None:
        from .quantize import CUDA_MODES, check_mode

        check_mode(quantize, device)
        if quantize in CUDA_MODES and dtype is None and torch_dtype is None:
            dtype = torch.float16  # what bitsandbytes computes in; transformers loads it so too
    # bitsandbytes quantizes each layer on its way to the GPU: the full-precision weights stay on the CPU.
    load_device = "cpu" if quantize is not None else device
    folder = resolve_model_dir(
        name_or_path,
        [CONFIG_FILE, SAFETENSORS_FILE, SAFETENSORS_INDEX, "model-*.safetensors", TORCH_FILE, TORCH_INDEX, "pytorch_model-*.bin"],
    )
    fairseq_state = None
    if not (folder / CONFIG_FILE).is_file():
        from .fairseq import is_fairseq_folder, read_fairseq_folder

        if is_fairseq_folder(folder):  # Microsoft's checkpoint.pt + dict.txt + bpecodes, mapped to our names
            converted = read_fairseq_folder(folder)
            fairseq_state = converted.state
            if config is None:
                config = BioGptConfig.from_dict({**converted.config.to_dict(), **config_overrides})
    if config is None:
        if not (folder / CONFIG_FILE).is_file():
            raise ModelNotAvailableError(f"{shown_name(folder)} has no {CONFIG_FILE}; it is not a BioGPT checkpoint folder.")
        with open(folder / CONFIG_FILE, encoding="utf-8") as f:
            values = json.load(f)
        config = BioGptConfig.from_dict({**values, **config_overrides})
    target_dtype = _resolve_dtype(torch_dtype if dtype is None else dtype, config)

    with uninitialised_parameters():
        model = cls(config)
    expected_shapes = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if fairseq_state is None:
        state = read_state_dict(folder, target_dtype, load_device)
    else:
        state = {name: tensor.to(device=load_device, dtype=target_dtype if tensor.is_floating_point() and target_dtype
                                 else tensor.dtype) for name, tensor in fairseq_state.items()}
        del fairseq_state
    state = _match_keys(state, set(expected_shapes), has_base_prefix=hasattr(model, "biogpt"))

    wrong = [f"{n} {tuple(t.shape)} (expected {expected_shapes[n]})"
             for n, t in state.items() if tuple(t.shape) != expected_shapes[n]]
    if wrong:
        raise ValueError("Weights of the wrong shape: " + "; ".join(wrong) + ". Is config.json from the same checkpoint?")

    tied = {"output_projection.weight"} if config.tie_word_embeddings and hasattr(model, "output_projection") else set()
    missing = set(expected_shapes) - set(state) - tied
    missing_base = sorted(n for n in missing if not n.startswith(HEAD_PREFIXES))
    if missing_base:
        raise ValueError(f"The checkpoint lacks weights of the model itself: {', '.join(missing_base[:10])}.")

    model.load_state_dict(state, strict=False, assign=True)
    if missing:
        _initialise_missing(model, missing, target_dtype or next(iter(state.values())).dtype, load_device)
        model.head_is_untrained = True
        logger.warning(
            "%s has no trained weights for %s in %s: they were initialised at random, so its outputs mean nothing "
            "until it is fine-tuned.", cls.__name__, ", ".join(sorted(missing)), name_or_path,
        )
    model.tie_weights()
    if quantize is not None:
        del state  # so each full-precision weight is freed as soon as its layer is quantized
        from .quantize import quantize_model

        quantize_model(model, quantize, device)
    return model.eval()


_BUILD_LOCK = threading.Lock()


@contextmanager
def uninitialised_parameters():
    """Build modules without random init: every value is about to be replaced by loaded weights.

    torch.empty does not touch its pages, so the placeholders cost neither time nor memory until
    load_state_dict(assign=True) swaps them out. (Meta-device construction would do the same but
    pulls in torch._dynamo and sympy on first use: two seconds of cold start.) The patch is
    process-wide, so builds take a lock; nothing else in this project builds layers concurrently.
    """
    classes = (torch.nn.Linear, torch.nn.Embedding, torch.nn.LayerNorm)
    with _BUILD_LOCK:
        saved = {cls: cls.reset_parameters for cls in classes}
        for cls in classes:
            cls.reset_parameters = lambda self: None
        try:
            yield
        finally:
            for cls, reset in saved.items():
                cls.reset_parameters = reset


def _initialise_missing(model: torch.nn.Module, missing: set[str], dtype: torch.dtype, device: str | torch.device) -> None:
    for module_name, module in model.named_modules():
        names = [n for n, _ in module.named_parameters(recurse=False) if f"{module_name}.{n}".lstrip(".") in missing]
        if not names:
            continue
        for name in names:
            shape = getattr(module, name).shape
            setattr(module, name, torch.nn.Parameter(torch.empty(shape, dtype=dtype, device=device)))
        model._init_module(module)


def save_pretrained(model, directory: str | Path) -> None:
    """Write config.json + model.safetensors in the layout transformers writes (tied weights once)."""
    from safetensors.torch import save_file

    if model.quantization:
        raise ValueError(
            f"This model was quantized at load (quantize={model.quantization!r}) and is not saved: its weights are "
            "rounded and packed for one kernel. Save the original checkpoint instead, and quantize again when loading it."
        )
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    config = model.config
    config.extra["architectures"] = [type(model).__name__]
    config.extra["dtype"] = str(model.dtype).removeprefix("torch.")
    config.save(directory)
    state = model.state_dict()
    if config.tie_word_embeddings:
        state.pop("output_projection.weight", None)
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()}, directory / SAFETENSORS_FILE,
              metadata={"format": "pt"})
