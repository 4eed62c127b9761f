"""The tasks, lm / ner / classify (and prompt, in prompt_task.py): each reads its data, makes batches, evaluates, and says
what config.json must record for inference. The loop (loop.py) knows only the Task interface."""

from __future__ import annotations

import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..model import BioGptForCausalLM, BioGptForSequenceClassification, BioGptForTokenClassification
from ..ner import (
    IGNORE,
    NerSettings,
    bio_tags,
    decode_entities,
    encode_ner_documents,
    label_piece,
    ner_piece_probabilities,
    pad_batch,
    span_scores,
    tags_to_spans,
    window_rows,
)
from ..tokenizer import tokenize_all
from .config import TrainConfig, TrainError
from .data import (
    DataError,
    TsvRow,
    block_batches,
    pack_blocks,
    read_lm_documents,
    read_ner_documents,
    read_tsv,
    text_key,
    train_valid_test,
)
from .metrics import blocks_perplexity, classification_scores, tune_threshold


def _bucketed_batches(lengths: list[int], batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """Shuffled batches of similar lengths (less padding): sort within chunks of 50 batches."""
    order = torch.randperm(len(lengths), generator=generator).tolist()
    chunk = batch_size * 50
    batches = []
    for c in range(0, len(order), chunk):
        part = sorted(order[c:c + chunk], key=lambda i: lengths[i])
        batches += [part[i:i + batch_size] for i in range(0, len(part), batch_size)]
    permutation = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[i] for i in permutation]


class Task:
    """What the loop asks of a task: batches of training items, evaluation on a split, the metric
    that picks the best model, and the settings config.json must keep for inference."""

    name = ""
    model_class: type = BioGptForCausalLM
    metric = "loss"
    greater_is_better = False

    def headline(self, metrics: dict) -> str:
        return f"{self.metric}={metrics.get(self.metric, float('nan')):.4f}"

    def model_overrides(self) -> dict[str, Any]:
        return {}

    def studio_extra(self) -> dict[str, Any]:
        return {"task": self.name}

    def on_best(self, metrics: dict) -> None:
        """Called when `metrics` (validation) is the best so far; e.g. keep its threshold."""

    def to_device(self, device) -> None:
        """Move data the task keeps as tensors to `device`; tasks that pad batches on the fly keep none."""

    def adapt_model(self, model) -> None:
        """Change the freshly built or loaded model before training (e.g. grow its vocabulary)."""


class LmTask(Task):
    """A causal LM on documents packed into --block-size blocks; judged by held-out perplexity."""

    name = "lm"
    model_class = BioGptForCausalLM
    metric = "perplexity"
    greater_is_better = False

    def __init__(self, config: TrainConfig, tokenizer, log):
        self.config, self.tokenizer = config, tokenizer
        train_docs, valid_docs, test_docs = train_valid_test(config, log, read_lm_documents, text_key)
        if not train_docs:
            raise DataError(config.train[0], None, "no training documents left")
        started = time.time()
        encoded = tokenize_all(tokenizer, train_docs + valid_docs + test_docs, workers=config.workers)
        train_ids = encoded[:len(train_docs)]
        valid_ids = encoded[len(train_docs):len(train_docs) + len(valid_docs)]
        test_ids = encoded[len(train_docs) + len(valid_docs):]
        # Documents in a fixed shuffled order (seeded), then one stream cut into blocks.
        order = torch.randperm(len(train_ids), generator=torch.Generator().manual_seed(config.seed)).tolist()
        self.block = config.block_size
        self.train_blocks = self._pack([train_ids[i] for i in order], keep_tail=False)
        if len(self.train_blocks) == 0:
            raise DataError(config.train[0], None, f"fewer training tokens than one block of {self.block}; lower --block-size")
        self.valid_blocks = self._pack(valid_ids, keep_tail=True)
        self.test_blocks = self._pack(test_ids, keep_tail=True) if test_ids else None
        self.sizes = {
            "train_documents": len(train_docs), "valid_documents": len(valid_docs), "test_documents": len(test_docs),
            "train_tokens": sum(map(len, train_ids)), "valid_tokens": sum(map(len, valid_ids)),
            "test_tokens": sum(map(len, test_ids)), "train_blocks": len(self.train_blocks),
        }
        log(f"tokenised {sum(map(len, encoded)):,} tokens in {time.time() - started:.1f}s; "
            + ", ".join(f"{k}={v:,}" for k, v in self.sizes.items()))

    def _pack(self, documents: list[list[int]], keep_tail: bool) -> list[torch.Tensor] | torch.Tensor:
        return pack_blocks(documents, self.block, keep_tail)

    def to_device(self, device) -> None:
        self.train_blocks = self.train_blocks.to(device)

    def num_train_items(self) -> int:
        return len(self.train_blocks)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        order = torch.randperm(len(self.train_blocks), generator=generator).tolist()
        size = self.config.batch_size
        return [order[i:i + size] for i in range(0, len(order), size)]

    def make_batch(self, indices: list[int], device) -> tuple[dict, int]:
        ids = self.train_blocks[torch.tensor(indices, device=self.train_blocks.device)].to(device, non_blocking=True)
        return {"input_ids": ids, "labels": ids}, ids.numel()

    def eval_batches(self, split: str):
        return block_batches(self.valid_blocks if split == "valid" else self.test_blocks, self.config.eval_batch_size)

    def has_split(self, split: str) -> bool:
        return bool(self.valid_blocks) if split == "valid" else bool(self.test_blocks)

    def evaluate(self, model, split: str, autocast) -> dict:
        return blocks_perplexity(model, self.eval_batches(split), autocast)

    def sample_batches(self, n: int = 2):
        return [{"input_ids": ids[:4, :256]} for ids in list(self.eval_batches("valid"))[:n]]

    def studio_extra(self) -> dict[str, Any]:
        return {"task": "lm", "block_size": self.block, "document_start": "</s>"}

    def headline(self, metrics: dict) -> str:
        return f"perplexity={metrics['perplexity']:.2f} loss={metrics['loss']:.4f}"



class NerTask(Task):
    """BIO tagging per word over token windows; judged by strict span micro-F1 (biogpt/ner.py)."""

    name = "ner"
    model_class = BioGptForTokenClassification
    metric = "micro_f1"
    greater_is_better = True

    def __init__(self, config: TrainConfig, tokenizer, log, max_positions: int):
        self.config, self.tokenizer = config, tokenizer
        types = set(config.entity_types.split(",")) if config.entity_types else None
        if types is None:  # the types of the training files; any other type elsewhere is an error
            types = {e[2] for path in config.train for d in read_ner_documents(path) for e in d.entities}
            if not types:
                raise DataError(config.train[0], None, "no entities in the training data")
        self.types = sorted(types)
        labels = ["O"] + [f"{p}-{t}" for t in self.types for p in ("B", "I")]
        self.id2label = dict(enumerate(labels))
        self.label2id = {v: k for k, v in self.id2label.items()}
        read = lambda path: read_ner_documents(path, types)  # noqa: E731
        self.train, self.valid, self.test = train_valid_test(config, log, read, lambda d: text_key(d.text))
        if not self.train:
            raise DataError(config.train[0], None, "no training documents left")
        limit = (max_positions - 2) // 2 if config.double_text else max_positions - 1
        window = min(config.max_length or limit, limit)
        self.settings = NerSettings(config.double_text, config.label_token, window,
                                    min(config.stride or max(1, window // 2), window))
        started = time.time()
        everything = self.train + self.valid + self.test
        encoded = encode_ner_documents(tokenizer, [d.text for d in everything], workers=config.workers)
        unreachable = 0
        for doc, enc in zip(everything, encoded):
            tags = bio_tags(enc.words, doc.entities)
            enc.piece_labels = [IGNORE] * len(enc.ids)
            for word, tag in zip(enc.words, tags):
                enc.piece_labels[label_piece(word, config.label_token)] = self.label2id[tag]
            unreachable += len(set(doc.entities) - set(tags_to_spans(enc.words, tags)))
        n_train, n_valid = len(self.train), len(self.valid)
        self.enc = {"train": encoded[:n_train], "valid": encoded[n_train:n_train + n_valid], "test": encoded[n_train + n_valid:]}
        self.docs = {"train": self.train, "valid": self.valid, "test": self.test}
        self.rows = window_rows(self.enc["train"], self.settings, tokenizer.eos_token_id)
        entity_count = sum(len(d.entities) for d in everything)
        self.sizes = {
            "train_documents": n_train, "valid_documents": n_valid, "test_documents": len(self.test),
            "train_windows": len(self.rows), "train_entities": sum(len(d.entities) for d in self.train),
            "entities_not_on_word_boundaries": unreachable,
        }
        log(f"tokenised {len(everything)} documents in {time.time() - started:.1f}s; "
            + ", ".join(f"{k}={v:,}" for k, v in self.sizes.items())
            + f" (of {entity_count:,} entities: a word-level tagger cannot recover those)")

    def model_overrides(self) -> dict[str, Any]:
        return {"id2label": self.id2label, "problem_type": None}

    def studio_extra(self) -> dict[str, Any]:
        return self.settings.to_extra()

    def num_train_items(self) -> int:
        return len(self.rows)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        return _bucketed_batches([len(r["ids"]) for r in self.rows], self.config.batch_size, generator)

    def make_batch(self, indices: list[int], device) -> tuple[dict, int]:
        rows = [self.rows[i] for i in indices]
        batch = pad_batch([r["ids"] for r in rows], self.tokenizer.pad_token_id, [r["labels"] for r in rows])
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}, sum(len(r["ids"]) for r in rows)

    def has_split(self, split: str) -> bool:
        return bool(self.docs[split])

    def evaluate(self, model, split: str, autocast) -> dict:
        docs, enc = self.docs[split], self.enc[split]
        probs, loss = ner_piece_probabilities(model, enc, self.settings, self.tokenizer.eos_token_id,
                                              self.tokenizer.pad_token_id, self.config.eval_batch_size, autocast)
        predicted = [[(e["start"], e["end"], e["type"]) for e in decode_entities(d, p, self.id2label, self.settings.label_token)]
                     for d, p in zip(enc, probs)]
        scores = span_scores([d.entities for d in docs], predicted, self.types)
        return {"loss": loss, "micro_f1": scores["micro"]["f1"], "micro_precision": scores["micro"]["precision"],
                "micro_recall": scores["micro"]["recall"], "macro_f1": scores["macro_f1"],
                "per_type": scores["per_type"], "documents": len(docs)}

    def sample_batches(self, n: int = 2):
        rows = window_rows(self.enc["valid"][:8], self.settings, self.tokenizer.eos_token_id)
        return [pad_batch([r["ids"] for r in rows[i:i + 4]], self.tokenizer.pad_token_id)
                for i in range(0, min(len(rows), 4 * n), 4)]

    def headline(self, metrics: dict) -> str:
        per = " ".join(f"{k}={v['f1']:.4f}" for k, v in metrics["per_type"].items())
        return f"micro_f1={metrics['micro_f1']:.4f} (P={metrics['micro_precision']:.4f} R={metrics['micro_recall']:.4f}) {per}"


class ClassifyTask(Task):
    """Sequence classification from TSV rows, single- or multi-label (sigmoid, tuned threshold)."""

    name = "classify"
    model_class = BioGptForSequenceClassification
    greater_is_better = True

    def __init__(self, config: TrainConfig, tokenizer, log, max_positions: int):
        self.config, self.tokenizer = config, tokenizer
        self.multi = config.multi_label
        self.metric = "micro_f1" if self.multi else "accuracy"
        self.threshold = 0.5
        if config.labels:
            names = [x.strip() for x in config.labels.split(",") if x.strip()]
        else:  # the labels of the training files (before any hold-out or --limit-train)
            names = sorted({name for path in config.train for r in read_tsv(path) for name in self._split_label(r)})
        self.train, self.valid, self.test = train_valid_test(config, log, read_tsv, lambda r: text_key(r.text))
        if not self.train:
            raise DataError(config.train[0], None, "no training rows left")
        if not names:
            raise DataError(config.train[0], None, "no labels found (every row is the empty label?)")
        self.labels = names
        self.label2id = {n: i for i, n in enumerate(names)}
        self.max_length = min(config.max_length or max_positions, max_positions)
        started = time.time()
        everything = self.train + self.valid + self.test
        encoded = tokenize_all(tokenizer, [r.text for r in everything], workers=config.workers)
        truncated = sum(len(ids) > self.max_length for ids in encoded)
        self.ids = [ids[: self.max_length] for ids in encoded]
        self.targets = [self._target(r) for r in everything]
        n_train, n_valid = len(self.train), len(self.valid)
        self.split_index = {"train": range(0, n_train), "valid": range(n_train, n_train + n_valid),
                            "test": range(n_train + n_valid, len(everything))}
        self.sizes = {"train_rows": n_train, "valid_rows": n_valid, "test_rows": len(self.test),
                      "truncated_rows": truncated, "labels": len(names)}
        log(f"tokenised {len(everything)} rows in {time.time() - started:.1f}s; "
            + ", ".join(f"{k}={v:,}" for k, v in self.sizes.items()) + f"; labels: {names}")

    def _split_label(self, row: TsvRow) -> list[str]:
        if not self.multi:
            return [row.label]
        parts = [p.strip() for p in row.label.split(self.config.label_sep)]
        if any(not p for p in parts):
            raise DataError(row.path, row.line, f"empty label in {row.label!r}")
        if self.config.empty_label in parts:
            if len(parts) > 1:
                raise DataError(row.path, row.line, f"{self.config.empty_label!r} (no label) combined with others: {row.label!r}")
            return []
        return parts

    def _target(self, row: TsvRow):
        names = self._split_label(row)
        unknown = [n for n in names if n not in self.label2id]
        if unknown:
            raise DataError(row.path, row.line, f"unknown label {unknown[0]!r}; the labels are {self.labels}")
        if not self.multi:
            return self.label2id[names[0]]
        vector = [0.0] * len(self.labels)
        for n in names:
            vector[self.label2id[n]] = 1.0
        return vector

    def model_overrides(self) -> dict[str, Any]:
        problem = "multi_label_classification" if self.multi else "single_label_classification"
        return {"id2label": dict(enumerate(self.labels)), "problem_type": problem}

    def studio_extra(self) -> dict[str, Any]:
        extra = {"task": "classify", "multi_label": self.multi, "max_length": self.max_length,
                 "input": "tokenizer(text): '</s>' + text, right-padded, pooled at the last token"}
        if self.multi:
            extra.update(threshold=self.threshold, empty_label=self.config.empty_label)
        return extra

    def on_best(self, metrics: dict) -> None:
        if self.multi:
            self.threshold = metrics["threshold"]

    def num_train_items(self) -> int:
        return len(self.train)

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        return _bucketed_batches([len(self.ids[i]) for i in self.split_index["train"]], self.config.batch_size, generator)

    def _batch(self, rows: list[int]) -> dict:
        batch = pad_batch([self.ids[i] for i in rows], self.tokenizer.pad_token_id)
        targets = [self.targets[i] for i in rows]
        batch["labels"] = torch.tensor(targets, dtype=torch.float if self.multi else torch.long)
        return batch

    def make_batch(self, indices: list[int], device) -> tuple[dict, int]:
        rows = [self.split_index["train"][i] for i in indices]
        batch = self._batch(rows)
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}, sum(len(self.ids[i]) for i in rows)

    def has_split(self, split: str) -> bool:
        return len(self.split_index[split]) > 0

    @torch.no_grad()
    def evaluate(self, model, split: str, autocast) -> dict:
        rows = sorted(self.split_index[split], key=lambda i: len(self.ids[i]))
        logits_all, gold_all = [], []
        for b in range(0, len(rows), self.config.eval_batch_size):
            batch = self._batch(rows[b:b + self.config.eval_batch_size])
            with autocast():
                logits_all.append(model(input_ids=batch["input_ids"].to(model.device)).logits.float().cpu())
            gold_all.append(batch["labels"])
        logits, gold = torch.cat(logits_all), torch.cat(gold_all)
        if self.multi:
            loss = F.binary_cross_entropy_with_logits(logits, gold).item()
            probs = logits.sigmoid()
            threshold = tune_threshold(gold, probs) if split == "valid" else self.threshold
            scores = classification_scores(gold, probs >= threshold, self.labels)
            scores.update(threshold=threshold, loss=loss)
            if split == "valid":
                scores["micro_f1_at_0.5"] = classification_scores(gold, probs >= 0.5, self.labels)["micro_f1"]
            return scores
        loss = F.cross_entropy(logits, gold).item()
        one_hot = lambda x: F.one_hot(x, len(self.labels))  # noqa: E731
        scores = classification_scores(one_hot(gold), one_hot(logits.argmax(-1)), self.labels)
        scores["loss"] = loss
        return scores

    def sample_batches(self, n: int = 2):
        rows = list(self.split_index["valid"])[: 4 * n]
        return [{"input_ids": self._batch(rows[i:i + 4])["input_ids"]} for i in range(0, len(rows), 4)]

    def headline(self, metrics: dict) -> str:
        text = f"accuracy={metrics['accuracy']:.4f} macro_f1={metrics['macro_f1']:.4f} micro_f1={metrics['micro_f1']:.4f}"
        return text + (f" threshold={metrics['threshold']:.2f}" if self.multi else "")


# --------------------------------------------------------------------------------------------
# Model, optimizer, schedule
# --------------------------------------------------------------------------------------------


def make_task(config: TrainConfig, tokenizer, log: Callable[[str], None], max_positions: int) -> Task:
    """Read and tokenise the task's data; refuse settings the model cannot hold or no validation."""
    if config.task == "lm":
        task: Task = LmTask(config, tokenizer, log)
        if config.block_size > max_positions:
            raise TrainError(f"--block-size {config.block_size} exceeds the model's {max_positions} positions")
    elif config.task == "ner":
        task = NerTask(config, tokenizer, log, max_positions)
    elif config.task == "prompt":
        from .prompt_task import PromptTask  # it builds on this module's Task

        task = PromptTask(config, tokenizer, log, max_positions)
    else:
        task = ClassifyTask(config, tokenizer, log, max_positions)
    if not task.has_split("valid"):
        raise TrainError("the validation split is empty; give --valid or more training data")
    return task
