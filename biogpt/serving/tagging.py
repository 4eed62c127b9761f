"""The fine-tuned heads: named entities from a token-classification model, labels from a
sequence-classification model. Span reading itself lives in biogpt.ner, shared with training."""

from __future__ import annotations

import time

import numpy as np

from .registry import LoadedModel, require_trained_head
from .results import ClassificationResult, Entity, NerResult
from .validation import InputError, Limits

NER_AGGREGATIONS = ("auto", "first", "last", "average", "max")


def ner(loaded: LoadedModel, text: str, aggregation: str, limits: Limits) -> NerResult:
    """Chemical and Disease spans (whatever the checkpoint's BIO labels name) with confidences.

    The model tags pieces; a word's tag comes from its pieces by `aggregation` (biogpt.ner's
    word_probabilities); "auto" uses the piece the model was trained to tag (config.json says
    which). Words are Moses words and spans are character offsets, via the tokenizer's offsets.
    """
    from ..ner import NerEncoded, NerSettings, decode_entities, ner_piece_probabilities, split_words

    require_trained_head(loaded, "NER", "bundled-ner")
    id2label = loaded.model.config.id2label or {}
    types = sorted({label.split("-", 1)[1] for label in id2label.values() if label[:2] in ("B-", "I-")})
    if not types:
        raise InputError(f"{loaded.name}'s labels ({', '.join(list(id2label.values())[:5])}) are not BIO tags, "
                         "so spans cannot be read from them.")
    started = time.perf_counter()
    pieces, spans = loaded.tokenizer.tokenize_with_offsets(text)
    keep = [i for i, (s, e) in enumerate(spans) if e > s]  # literal special tokens carry no text
    pieces, spans = [pieces[i] for i in keep], [spans[i] for i in keep]
    if not pieces:
        raise InputError("The text has no words the tokenizer can read; type some words.")
    if len(pieces) > limits.max_document_tokens:
        raise InputError(
            f"The text has {len(pieces):,} tokens; the limit here is {limits.max_document_tokens:,}. Shorten it."
        )
    settings = NerSettings.from_config(loaded.model.config)
    strategy = settings.label_token if aggregation == "auto" else aggregation
    document = NerEncoded(list(loaded.tokenizer.convert_tokens_to_ids(pieces)), split_words(pieces, spans))
    tokenizer = loaded.tokenizer
    probabilities, _ = ner_piece_probabilities(loaded.model, [document], settings, tokenizer.eos_token_id, tokenizer.pad_token_id)
    entities = [Entity(e["start"], e["end"], e["type"], text[e["start"]:e["end"]], e["score"])
                for e in decode_entities(document, probabilities[0], id2label, strategy)]
    return NerResult(
        text=text, entities=entities, entity_types=types, aggregation=strategy, model=loaded.describe(),
        settings={"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype, "aggregation": strategy,
                  "input": "doubled" if settings.doubled else "single", "window": settings.window},
        num_tokens=len(pieces), elapsed=time.perf_counter() - started,
    )


def classify(loaded: LoadedModel, text: str) -> ClassificationResult:
    """The checkpoint's own labels; multi-label checkpoints use the threshold in their config."""
    import torch

    require_trained_head(loaded, "classification", "bundled-hoc")
    ids = loaded.tokenizer.encode(text)
    if len(ids) > loaded.max_positions:
        raise InputError(f"The text has {len(ids):,} tokens but {loaded.name} reads at most {loaded.max_positions:,}; "
                         "shorten it.")
    started = time.perf_counter()
    with torch.inference_mode():
        logits = loaded.model(input_ids=torch.tensor([ids], device=loaded.model.device)).logits[0].float().cpu()
    config = loaded.model.config
    labels = ([config.id2label[i] for i in range(len(config.id2label))] if config.id2label
              else [f"LABEL_{i}" for i in range(logits.shape[0])])
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
