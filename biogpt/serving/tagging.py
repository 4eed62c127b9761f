"""The fine-tuned heads: named entities from a token-classification model, labels from a
sequence-classification model. Span reading itself lives in biogpt.ner, shared with training."""

from __future__ import annotations

import itertools
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from .registry import LoadedModel, require_trained_head
from .results import ClassificationResult, Entity, NerResult
from .validation import InputError, Limits, clean_text

NER_AGGREGATIONS = ("auto", "first", "last", "average", "max")


def check_aggregation(aggregation: str) -> None:
    if aggregation not in NER_AGGREGATIONS:
        raise InputError(f"Aggregation must be one of {', '.join(NER_AGGREGATIONS)}, got {aggregation!r}.")


def ner(loaded: LoadedModel, text: str, aggregation: str, limits: Limits) -> NerResult:
    """Chemical and Disease spans (whatever the checkpoint's BIO labels name) with confidences.

    The model tags pieces; a word's tag comes from its pieces by `aggregation` (biogpt.ner's
    word_probabilities); "auto" uses the piece the model was trained to tag (config.json says
    which). Words are Moses words and spans are character offsets, via the tokenizer's offsets.
    """
    return ner_compute(loaded, [ner_prepare(loaded, text, limits)], aggregation)[0]


@dataclass
class NerPrepared:
    """One document tokenized and checked, ready for the model (see ner_prepare)."""

    text: str
    document: Any  # biogpt.ner.NerEncoded
    seconds: float  # time tokenizing took


def ner_prepare(loaded: LoadedModel, text: str, limits: Limits) -> NerPrepared:
    """Tokenize and check one document: the CPU-only half of `ner`, which a batch job runs in a
    thread while the model computes the previous batch."""
    from ..ner import NerEncoded, split_words

    started = time.perf_counter()
    _entity_types(loaded)
    pieces, spans = loaded.tokenizer.tokenize_with_offsets(text)
    keep = [i for i, (s, e) in enumerate(spans) if e > s]  # literal special tokens carry no text
    pieces, spans = [pieces[i] for i in keep], [spans[i] for i in keep]
    if not pieces:
        raise InputError("The text has no words the tokenizer can read; type some words.")
    if len(pieces) > limits.max_document_tokens:
        raise InputError(
            f"The text has {len(pieces):,} tokens; the limit here is {limits.max_document_tokens:,}. Shorten it."
        )
    document = NerEncoded(list(loaded.tokenizer.convert_tokens_to_ids(pieces)), split_words(pieces, spans))
    return NerPrepared(text, document, time.perf_counter() - started)


def ner_compute(loaded: LoadedModel, prepared: list[NerPrepared], aggregation: str,
                batch_rows: int = 8) -> list[NerResult]:
    """The model half of `ner`, for many documents at once: their windows are sorted by length and
    run `batch_rows` at a time, right-padded (biogpt.ner.ner_piece_probabilities; a causal model's
    real tokens never see the padding after them, and their positions are 0..n-1 as alone)."""
    from ..ner import NerSettings, decode_entities, ner_piece_probabilities

    types = _entity_types(loaded)
    id2label = loaded.model.config.id2label or {}
    started = time.perf_counter()
    settings = NerSettings.from_config(loaded.model.config)
    strategy = settings.label_token if aggregation == "auto" else aggregation
    tokenizer = loaded.tokenizer
    probabilities, _ = ner_piece_probabilities(loaded.model, [p.document for p in prepared], settings,
                                               tokenizer.eos_token_id, tokenizer.pad_token_id, batch_rows)
    share = (time.perf_counter() - started) / len(prepared)  # a batch's time, shared evenly
    results = []
    for one, probs in zip(prepared, probabilities):
        text = one.text
        entities = [Entity(e["start"], e["end"], e["type"], text[e["start"]:e["end"]], e["score"])
                    for e in decode_entities(one.document, probs, id2label, strategy)]
        results.append(NerResult(
            text=text, entities=entities, entity_types=types, aggregation=strategy, model=loaded.describe(),
            settings={"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype, "aggregation": strategy,
                      "input": "doubled" if settings.doubled else "single", "window": settings.window},
            num_tokens=len(one.document.ids), elapsed=one.seconds + share,
        ))
    return results


def ner_many(loaded: LoadedModel, texts: Iterable[str], aggregation: str, limits: Limits, batch_docs: int = 32,
             batch_rows: int = 8) -> Iterator[NerResult | InputError]:
    """`ner` over many texts, in order: one result, or the InputError refusing that text, per text.

    Texts go `batch_docs` at a time through the model (their windows `batch_rows` at a time,
    sorted by length: `ner_compute`); the next batch is tokenized in a thread while this one
    computes. Equal to `ner` on each text within float rounding (tests/cli/test_corpus_cli.py).
    """
    def prepare(chunk: list[str]) -> list[NerPrepared | InputError]:
        prepared = []
        for text in chunk:
            try:
                prepared.append(ner_prepare(loaded, clean_text(text, "text", limits.max_document_chars), limits))
            except InputError as refusal:
                prepared.append(refusal)
        return prepared

    remaining = iter(texts)
    chunks = iter(lambda: list(itertools.islice(remaining, batch_docs)), [])  # until an empty chunk
    with ThreadPoolExecutor(1, thread_name_prefix="ner-tokenize") as tokenizing:
        pending = next((tokenizing.submit(prepare, chunk) for chunk in chunks), None)
        while pending is not None:
            prepared = pending.result()
            pending = next((tokenizing.submit(prepare, chunk) for chunk in chunks), None)
            ready = [p for p in prepared if not isinstance(p, InputError)]
            computed = iter(ner_compute(loaded, ready, aggregation, batch_rows) if ready else [])
            yield from (p if isinstance(p, InputError) else next(computed) for p in prepared)


def _entity_types(loaded: LoadedModel) -> list[str]:
    """The entity types the checkpoint's BIO labels name; refuses an untrained head or non-BIO labels."""
    require_trained_head(loaded, "NER", "bundled-ner")
    id2label = loaded.model.config.id2label or {}
    types = sorted({label.split("-", 1)[1] for label in id2label.values() if label[:2] in ("B-", "I-")})
    if not types:
        raise InputError(f"{loaded.name}'s labels ({', '.join(list(id2label.values())[:5])}) are not BIO tags, "
                         "so spans cannot be read from them.")
    return types


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
