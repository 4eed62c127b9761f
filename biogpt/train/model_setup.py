"""Before training: the tokenizer, the model's number of positions, and the model itself (a new
one from flags or a config.json, or a checkpoint with the task's head)."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..config import STUDIO_KEY, BioGptConfig
from ..hub import BUNDLED_NAMES
from .config import TrainConfig, TrainError
from .tasks import Task

DEFAULT_TOKENIZER = BUNDLED_NAMES["bundled-tokenizer"]


def load_tokenizer(config: TrainConfig):
    """--tokenizer, else --init's own tokenizer files, else the bundled BioGPT tokenizer."""
    from ..tokenizer import BioGptTokenizer

    source = config.tokenizer
    if source is None and config.init and (Path(config.init) / "vocab.json").is_file():
        source = config.init
    return BioGptTokenizer.from_pretrained(source or DEFAULT_TOKENIZER)


def model_max_positions(config: TrainConfig) -> int:
    """Known before the model is built, since the data's windows and blocks depend on it."""
    if config.max_positions is not None:
        return config.max_positions
    if config.init:
        from ..loading import resolve_model_dir

        folder = resolve_model_dir(config.init, ["config.json"])
        return BioGptConfig.from_json_file(folder / "config.json").max_position_embeddings
    if config.config_json:
        return BioGptConfig.from_json_file(config.config_json).max_position_embeddings
    return BioGptConfig().max_position_embeddings


def build_model(config: TrainConfig, task: Task, tokenizer, log: Callable[[str], None]):
    """The task's model class, from --init or new; the vocabulary must cover the tokenizer."""
    overrides = dict(task.model_overrides())
    if config.dropout is not None:
        overrides.update(hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout)
    if config.classifier_dropout is not None:
        overrides["classifier_dropout"] = config.classifier_dropout
    vocab = len(tokenizer)
    if config.init:
        model = task.model_class.from_pretrained(config.init, **overrides)
        task.adapt_model(model)
        if model.config.vocab_size < vocab:
            raise TrainError(f"the tokenizer has {vocab} tokens but {config.init} only {model.config.vocab_size}")
        log(f"initialised from {config.init}" + (" (new, untrained head)" if model.head_is_untrained else ""))
    else:
        values = BioGptConfig.from_json_file(config.config_json).to_dict() if config.config_json else {"vocab_size": vocab}
        values.pop("model_type", None)
        for flag, key in (("layers", "num_hidden_layers"), ("hidden", "hidden_size"), ("heads", "num_attention_heads"),
                          ("intermediate", "intermediate_size"), ("max_positions", "max_position_embeddings")):
            if getattr(config, flag) is not None:
                values[key] = getattr(config, flag)
        if config.dropout is None:
            overrides.setdefault("hidden_dropout_prob", values.get("hidden_dropout_prob", 0.1))
        values.update(overrides)
        values["extra"] = {}
        model_config = BioGptConfig(**{k: v for k, v in values.items() if k in BioGptConfig.__dataclass_fields__})
        if model_config.vocab_size < vocab:
            raise TrainError(f"vocab_size {model_config.vocab_size} is smaller than the tokenizer's {vocab}")
        model = task.model_class(model_config)
        model.init_weights()
        task.adapt_model(model)
        log(f"new model from scratch: {model_config.num_hidden_layers} layers, hidden {model_config.hidden_size}, "
            f"{model_config.num_attention_heads} heads, intermediate {model_config.intermediate_size}, "
            f"vocab {model_config.vocab_size}, max positions {model_config.max_position_embeddings}")
    if config.freeze_embeddings:
        # Fine-tuning on a few thousand documents overfits; the 10.8 M token embeddings are most
        # of a small model's weights. Frozen, they also stay byte-identical to the base LM's.
        model.biogpt.embed_tokens.weight.requires_grad_(False)
        log("token embeddings frozen")
    model.config.extra.pop(STUDIO_KEY, None)
    return model
