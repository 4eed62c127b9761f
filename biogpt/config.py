"""BioGptConfig: the model's hyper-parameters, read from and written to Hugging Face's config.json."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


STUDIO_KEY = "biogpt_studio"  # our own block in config.json (transformers keeps unknown keys)

@dataclass
class BioGptConfig:
    """Same keys and defaults as transformers' BioGptConfig (the microsoft/biogpt shape)."""

    vocab_size: int = 42384
    hidden_size: int = 1024
    num_hidden_layers: int = 24
    num_attention_heads: int = 16
    intermediate_size: int = 4096
    hidden_act: str = "gelu"
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    activation_dropout: float = 0.0
    layerdrop: float = 0.0
    max_position_embeddings: int = 1024
    initializer_range: float = 0.02
    # Stored for compatibility only: transformers builds nn.LayerNorm without passing it, so the
    # eps actually applied is PyTorch's default 1e-5 (see LAYER_NORM_EPS in model.py).
    layer_norm_eps: float = 1e-12
    scale_embedding: bool = True
    use_cache: bool = True
    tie_word_embeddings: bool = True
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    classifier_dropout: float | None = None
    problem_type: str | None = None
    id2label: dict[int, str] | None = None
    # Keys we do not interpret (architectures, dtype, task_specific_params, ...) survive a round trip.
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be a multiple of num_attention_heads "
                f"({self.num_attention_heads})."
            )
        if self.hidden_act not in ("gelu",):
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; BioGPT uses 'gelu'.")
        if self.id2label is not None:
            self.id2label = {int(k): str(v) for k, v in self.id2label.items()}

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def num_labels(self) -> int:
        return len(self.id2label) if self.id2label else 2

    @property
    def label2id(self) -> dict[str, int]:
        return {label: i for i, label in (self.id2label or {}).items()}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "BioGptConfig":
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        kwargs = {k: v for k, v in values.items() if k in known}
        extra = {k: v for k, v in values.items() if k not in known and k not in ("label2id", "num_labels")}
        if kwargs.get("id2label") is None and "num_labels" in values:
            kwargs["id2label"] = {i: f"LABEL_{i}" for i in range(int(values["num_labels"]))}
        if isinstance(kwargs.get("eos_token_id"), list):  # transformers allows a list; BioGPT has one
            kwargs["eos_token_id"] = kwargs["eos_token_id"][0]
        return cls(**kwargs, extra=extra)

    @classmethod
    def from_json_file(cls, path: str | Path) -> "BioGptConfig":
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    def to_dict(self) -> dict[str, Any]:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        values = {**self.extra, **values, "model_type": "biogpt"}
        if self.id2label is not None:
            values["id2label"] = {str(k): v for k, v in self.id2label.items()}
            values["label2id"] = self.label2id
        else:
            del values["id2label"]
        return values

    def save(self, directory: str | Path) -> None:
        with open(Path(directory) / "config.json", "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")
