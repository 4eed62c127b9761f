"""Microsoft's fairseq checkpoints (checkpoint.pt + dict.txt + bpecodes) read without fairseq.

A fairseq checkpoint is a pickle: besides the weights it holds the training run's argparse
Namespace (or an omegaconf config), numpy scalars and fairseq's metric meters. It is read with
torch's weights-only unpickler, whose allow-list is extended here by exactly those records:
argparse.Namespace, numpy's scalar and dtype rebuilders, and inert stand-ins (`InertRecord`)
registered under the names of omegaconf's and fairseq's own classes. Any other global is refused
with a message naming it, before anything it would call is called.

The fine-tuned checkpoints (RE-DDI-BioGPT, QA-PubMedQA-BioGPT, ...) were trained by Microsoft's
`language_modeling_prompt` task, which adds symbols to dict.txt at setup: `<seqsep>` when
`--prefix` was given, then the learned prompt `learned1 .. learnedN`. Their embedding rows lie
beyond dict.txt and are kept, with their names, in the converted vocabulary; the prompt's layout
is recorded as a `PromptFormat` (biogpt.paper_tasks) in config.json's "biogpt_studio" block.
"""

from __future__ import annotations

import argparse
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import STUDIO_KEY, BioGptConfig
from .paper_tasks import PromptFormat, task_from_data_path
from .tokenizer import BOS_TOKEN, EOS_TOKEN, PAD_TOKEN, UNK_TOKEN, WORD_END

CHECKPOINT_NAMES = ("checkpoint.pt", "checkpoint_avg.pt", "checkpoint_last.pt", "checkpoint_best.pt")
DICT_FILE = "dict.txt"
BPE_CODES_FILE = "bpecodes"
# fairseq's Dictionary starts with these four, in this order, before dict.txt's lines.
FAIRSEQ_SPECIALS = (BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)
# Rows fairseq adds to pad a dictionary to a multiple of 8 are named so.
PAD_SYMBOL = "madeupword{:04d}"


class FairseqCheckpointError(ValueError):
    """A fairseq folder or checkpoint this converter cannot read; the message says why."""


class InertRecord(dict):
    """What an allowed non-torch class in the pickle becomes: its constructor arguments, its
    state and its items, kept as data. Nothing of the original class runs."""

    record_name = "InertRecord"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __reduce__(self):  # pickling a record again keeps it data
        return (dict, (dict(self),))

    def __repr__(self) -> str:
        return f"<{self.record_name} (inert)>"

    def values_dict(self) -> dict:
        """The record's fields as a dict, wherever the pickle put them."""
        if isinstance(self.state, dict):
            content = self.state.get("_content", self.state)
            if isinstance(content, dict):
                return {k: unwrap(v) for k, v in content.items()}
        return {k: unwrap(v) for k, v in self.items()}


# omegaconf's containers and nodes, fairseq's metric meters and config enums, typing's markers:
# the records a fairseq checkpoint may hold besides tensors and plain containers.
INERT_NAMES = (
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata", "omegaconf.nodes.AnyNode", "omegaconf.nodes.StringNode", "omegaconf.nodes.IntegerNode",
    "omegaconf.nodes.FloatNode", "omegaconf.nodes.BooleanNode", "omegaconf.nodes.EnumNode", "omegaconf.nodes.ValueNode",
    "fairseq.logging.meters.AverageMeter", "fairseq.logging.meters.TimeMeter", "fairseq.logging.meters.StopwatchMeter",
    "fairseq.logging.meters.MetersDict", "fairseq.logging.meters.Meter", "fairseq.dataclass.constants.ChoiceEnum",
    "fairseq.dataclass.constants.StrEnum", "fairseq.data.dictionary.Dictionary", "typing.Any", "builtins.object",
)


def _inert_class(full_name: str) -> type:
    return type(full_name.rsplit(".", 1)[-1], (InertRecord,), {"record_name": full_name})


def _numpy_globals() -> list[tuple[Any, str]]:
    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed = [(scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
               (np.dtype, "numpy.dtype")]
    dtypes = getattr(np, "dtypes", None)
    if dtypes is not None:  # numpy >= 1.25 pickles a dtype through its class, e.g. numpy.dtypes.Float64DType
        allowed += [(getattr(dtypes, name), f"numpy.dtypes.{name}") for name in dir(dtypes) if name.endswith("DType")]
    return allowed


SAFE_GLOBALS: list[Any] = [
    (argparse.Namespace, "argparse.Namespace"),
    # omegaconf's metadata names plain types (object_type=dict, element_type=str ...): data, not code.
    *[(kind, f"builtins.{kind.__name__}") for kind in (dict, list, tuple, set, frozenset, str, int, float, bool)],
    *_numpy_globals(),
    *[(_inert_class(name), name) for name in INERT_NAMES],
]


def unwrap(value: Any) -> Any:
    """Plain Python values out of numpy scalars and inert omegaconf nodes."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, InertRecord):
        if isinstance(value.state, dict) and "_val" in value.state:
            return unwrap(value.state["_val"])
        return value.values_dict()
    return value


def safe_load(path: str | Path) -> Any:
    """Unpickle a fairseq checkpoint with the allow-list above; any other global is refused."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as error:  # torch raises UnpicklingError wrapped in its own explanation
        found = re.search(r"GLOBAL (\S+) was not an allowed global|unrecognized function (\S+)|"
                          r"GLOBAL (\S+) whose module", str(error))
        if found:
            name = next(g for g in found.groups() if g)
            raise FairseqCheckpointError(
                f"{path.name} refers to {name}, which is not on the allow-list of a fairseq checkpoint's records "
                "(tensors, plain containers, argparse.Namespace, numpy scalars, omegaconf and fairseq records); "
                "it was refused without running it."
            ) from None
        raise FairseqCheckpointError(f"{path.name} is not a readable fairseq checkpoint: {error}") from None


# ------------------------------------------------------------------------------------------------
# dict.txt and bpecodes
# ------------------------------------------------------------------------------------------------


def read_fairseq_dict(path: str | Path) -> list[str]:
    """dict.txt's symbols in order ("symbol count [#fairseq:overwrite]" a line), without the four
    specials fairseq puts first."""
    symbols: list[str] = []
    seen: set[str] = set()
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.rstrip().rsplit(" ", 2 if line.rstrip().endswith("#fairseq:overwrite") else 1)
        if len(parts) < 2 or not parts[1].lstrip("-").isdigit():
            raise FairseqCheckpointError(f"{Path(path).name} line {number} is not 'symbol count': {line[:60]!r}")
        symbol = parts[0]
        if symbol in seen and not line.rstrip().endswith("#fairseq:overwrite"):
            raise FairseqCheckpointError(f"{Path(path).name} line {number} repeats the symbol {symbol!r}")
        seen.add(symbol)
        symbols.append(symbol)
    return symbols


def vocab_token(symbol: str) -> str:
    """A fairseq symbol as the converted vocabulary names it: "pie@@" -> "pie", "ce" -> "ce</w>";
    the specials and `<seqsep>`-like markup stay as they are."""
    if symbol in FAIRSEQ_SPECIALS or (symbol.startswith("<") and symbol.endswith(">")):
        return symbol
    return symbol[:-2] if symbol.endswith("@@") else symbol + WORD_END


def read_bpe_merges(path: str | Path) -> list[str]:
    """bpecodes' pairs ("left right count" a line) as merges.txt lines, rank = line order."""
    merges = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if len(parts) < 2:
            if parts:
                raise FairseqCheckpointError(f"{Path(path).name} line {number} is not 'left right count': {line[:60]!r}")
            continue
        merges.append(f"{parts[0]} {parts[1]}")
    return merges


# ------------------------------------------------------------------------------------------------
# The checkpoint
# ------------------------------------------------------------------------------------------------


def _training_args(checkpoint: dict) -> dict[str, Any]:
    """The run's settings: `args` (older fairseq) or `cfg`'s model and task sections."""
    args = checkpoint.get("args")
    if args is not None:
        return {k: unwrap(v) for k, v in vars(args).items()} if isinstance(args, argparse.Namespace) else unwrap(args)
    cfg = unwrap(checkpoint.get("cfg")) or {}
    values: dict[str, Any] = {}
    for section in ("task", "model"):  # the model's settings win where both name one
        part = cfg.get(section) if isinstance(cfg, dict) else None
        if isinstance(part, argparse.Namespace):
            part = vars(part)
        if isinstance(part, InertRecord):
            part = part.values_dict()
        if isinstance(part, dict):
            values.update({k: unwrap(v) for k, v in part.items()})
    return values


@dataclass
class FairseqModel:
    """A fairseq folder read into our names: config, weights, vocabulary, merges, prompt."""

    config: BioGptConfig
    state: dict[str, torch.Tensor]
    vocab: dict[str, int]
    merges: list[str]
    prompt: PromptFormat


def find_checkpoint(folder: Path) -> Path:
    for name in CHECKPOINT_NAMES:
        if (folder / name).is_file():
            return folder / name
    found = sorted(folder.glob("*.pt"))
    if len(found) == 1:
        return found[0]
    raise FairseqCheckpointError(f"{folder.name} has no fairseq checkpoint: expected one of {', '.join(CHECKPOINT_NAMES)}.")


def is_fairseq_folder(folder: str | Path) -> bool:
    folder = Path(folder)
    return folder.is_dir() and (folder / DICT_FILE).is_file() and any(folder.glob("*.pt"))


def _extra_symbols(args: dict[str, Any], count: int) -> list[str]:
    """Names of the `count` embedding rows beyond dict.txt, in the order the prompt task added them."""
    named = []
    if args.get("prefix"):
        named.append(args.get("sep_token") or "<seqsep>")
    learned = int(args.get("learned_prompt") or 0)
    pattern = args.get("learned_prompt_pattern") or "learned"
    named += [f"{pattern}{i + 1}" for i in range(learned)]
    if len(named) > count:
        raise FairseqCheckpointError(
            f"the run's settings add {len(named)} symbols to dict.txt ({', '.join(named[:3])} ...) but the embedding "
            f"has only {count} rows beyond it")
    return named + [PAD_SYMBOL.format(i) for i in range(count - len(named))]


def read_fairseq_folder(folder: str | Path, task: str | None = None) -> FairseqModel:
    """Read checkpoint.pt, dict.txt and bpecodes of `folder` into our names (nothing is written)."""
    folder = Path(folder)
    for needed in (DICT_FILE, BPE_CODES_FILE):
        if not (folder / needed).is_file():
            raise FairseqCheckpointError(f"{folder.name} has no {needed}; a fairseq BioGPT folder holds checkpoint.pt, "
                                         "dict.txt and bpecodes.")
    checkpoint = safe_load(find_checkpoint(folder))
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise FairseqCheckpointError("the checkpoint has no 'model' dictionary of weights")
    weights = checkpoint["model"]
    args = _training_args(checkpoint)

    state: dict[str, torch.Tensor] = {}
    for name, tensor in weights.items():
        if not name.startswith("decoder.") or name.endswith(".version") or name.endswith("._float_tensor"):
            continue
        if name == "decoder.output_projection.weight":
            state["output_projection.weight"] = tensor
        else:
            state["biogpt." + name.removeprefix("decoder.")] = tensor
    needed = ("biogpt.embed_tokens.weight", "biogpt.embed_positions.weight", "biogpt.layer_norm.weight")
    lacking = [n.replace("biogpt.", "decoder.", 1) for n in needed if n not in state]
    if lacking:
        raise FairseqCheckpointError(f"the checkpoint lacks {', '.join(lacking)}: is it a BioGPT (transformer_lm) model?")

    rows, hidden = state["biogpt.embed_tokens.weight"].shape
    layers = 1 + max(int(n.split(".")[2]) for n in state if n.startswith("biogpt.layers."))
    heads = args.get("decoder_attention_heads")
    if heads is None:
        raise FairseqCheckpointError("the checkpoint's settings do not say decoder_attention_heads")
    tied = "output_projection.weight" not in state or torch.equal(state["output_projection.weight"],
                                                                  state["biogpt.embed_tokens.weight"])
    if tied:
        state.pop("output_projection.weight", None)
    config = BioGptConfig(
        vocab_size=rows, hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=int(heads),
        intermediate_size=state["biogpt.layers.0.fc1.weight"].shape[0],
        hidden_dropout_prob=float(args.get("dropout", 0.1)),
        attention_probs_dropout_prob=float(args.get("attention_dropout", 0.1)),
        activation_dropout=float(args.get("activation_dropout", 0.0)),
        max_position_embeddings=state["biogpt.embed_positions.weight"].shape[0] - 2,  # fairseq's padding_idx + 1
        scale_embedding=not args.get("no_scale_embedding", False),
        tie_word_embeddings=tied,
    )
    config.extra["architectures"] = ["BioGptForCausalLM"]
    if args.get("activation_fn", "gelu") != "gelu":
        raise FairseqCheckpointError(f"activation_fn {args['activation_fn']!r} is not BioGPT's gelu")

    symbols = list(FAIRSEQ_SPECIALS) + read_fairseq_dict(folder / DICT_FILE)
    if len(symbols) > rows:
        raise FairseqCheckpointError(f"dict.txt has {len(symbols)} symbols (with the 4 specials) but the embedding only "
                                     f"{rows} rows: are they from the same model?")
    symbols += _extra_symbols(args, rows - len(symbols))
    vocab = {vocab_token(symbol): index for index, symbol in enumerate(symbols)}
    if len(vocab) != rows:
        raise FairseqCheckpointError("two dictionary symbols map to the same vocabulary entry")
    learned = int(args.get("learned_prompt") or 0)
    pattern = args.get("learned_prompt_pattern") or "learned"
    prompt = PromptFormat(
        task=task or task_from_data_path(str(args.get("data") or "")),
        learned_tokens=[vocab_token(f"{pattern}{i + 1}") for i in range(learned)],
        manual_prompt=args.get("manual_prompt") or None,
        prefix=bool(args.get("prefix")),
        sep_token=(args.get("sep_token") or "<seqsep>") if args.get("prefix") else None,
        max_source_positions=int(args.get("max_source_positions") or 384),
        source="fairseq",
    )
    config.extra[STUDIO_KEY] = {"task": "prompt", "prompt": prompt.to_dict()}
    return FairseqModel(config, state, vocab, read_bpe_merges(folder / BPE_CODES_FILE), prompt)


def write_converted(model: FairseqModel, out: str | Path) -> Path:
    """A standard folder: config.json (with the prompt record), model.safetensors, vocab.json,
    merges.txt, tokenizer_config.json, loadable by our classes and by transformers'."""
    from safetensors.torch import save_file

    from .tokenizer import BioGptTokenizer

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.config.save(out)
    save_file({k: v.detach().contiguous().cpu() for k, v in model.state.items()}, out / "model.safetensors",
              metadata={"format": "pt"})
    (out / "vocab.json").write_text(json.dumps(model.vocab, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "merges.txt").write_text("".join(line + "\n" for line in model.merges), encoding="utf-8")
    BioGptTokenizer(out / "vocab.json", out / "merges.txt").save_pretrained(out)  # its tokenizer_config.json
    return out


def convert(folder: str | Path, out: str | Path, task: str | None = None) -> Path:
    """`biogpt convert`: a fairseq folder -> a standard folder."""
    return write_converted(read_fairseq_folder(folder, task), out)
