"""`biogpt train prompt`: fine-tuning in the BioGPT paper's format (Microsoft's
language_modeling_prompt task), so that a model trained here runs through the same path as
Microsoft's converted checkpoints (the Tasks tab, `biogpt evaluate`).

Each example is `</s> source learned1 .. learnedN target </s>` (LanguageModelPromptDataset's
default layout); the learned prompt tokens are new vocabulary entries whose embedding rows are
trained with the model. fairseq's loss covers the whole sequence (--loss-on all, Microsoft's);
--loss-on target counts only the answer, which a small model learns much faster from.
Validation picks the best step by loss; the test split is scored by generating answers and
reading them as Microsoft's scripts do (biogpt.paper_eval).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from ..model import BioGptForCausalLM
from ..ner import IGNORE, pad_batch
from ..paper_eval import Example, read_split, score
from ..paper_tasks import PromptFormat, get_task, input_ids, run_model
from .config import TrainConfig, TrainError
from .data import DataError, text_key, train_valid_test
from .tasks import Task, _bucketed_batches


class PromptTask(Task):
    """One paper task's examples as `</s> source prompt target </s>` rows; best step by validation loss."""

    name = "prompt"
    model_class = BioGptForCausalLM
    metric = "loss"
    greater_is_better = False

    def __init__(self, config: TrainConfig, tokenizer, log, max_positions: int):
        self.config, self.tokenizer = config, tokenizer
        self.spec = get_task(config.paper_task)
        if self.spec.name == "bc5cdr":
            raise TrainError("bc5cdr's targets need Microsoft's entity-id tables, absent here; train ddi, kd-dti, "
                             "pubmedqa or hoc")
        count = config.learned_prompt if config.learned_prompt is not None else self.spec.learned_prompt
        learned = [f"learned{i + 1}</w>" for i in range(count)]
        tokenizer.add_symbols(learned)
        self.prompt = PromptFormat(task=self.spec.name, learned_tokens=learned,
                                   max_source_positions=config.max_source_positions or self.spec.max_source_positions,
                                   source="biogpt-studio")

        def read(path: str) -> list[Example]:
            examples = read_split(self.spec.name, path)
            if self.spec.kind != "triples":  # answers and labels: the target sentence from the gold value
                from ..paper_tasks import answer_target

                for example in examples:
                    example.target = answer_target(self.spec.name, example.gold)
            return examples

        self.train, self.valid, self.test = train_valid_test(config, log, read, lambda e: text_key(e.source))
        if not self.train:
            raise DataError(config.train[0], None, "no training examples left")
        started = time.time()
        self.rows: dict[str, list[tuple[list[int], list[int]]]] = {}
        too_long = 0
        for split, examples in (("train", self.train), ("valid", self.valid), ("test", self.test)):
            rows = []
            for example in examples:
                prefix = input_ids(self.prompt, tokenizer, example.source)
                answer = tokenizer.encode(example.target)[1:] + [tokenizer.eos_token_id]
                ids = (prefix + answer)[:max_positions]
                too_long += len(prefix) + len(answer) > max_positions
                keep_prefix = config.loss_on == "all"
                labels = [i if keep_prefix or n >= len(prefix) else IGNORE for n, i in enumerate(ids)]
                rows.append((ids, labels))
            self.rows[split] = rows
        self.sizes = {"train_examples": len(self.train), "valid_examples": len(self.valid),
                      "test_examples": len(self.test), "cut_to_positions": too_long}
        log(f"{self.spec.name} in the paper's prompt format ({count} learned tokens, loss on {config.loss_on}): "
            f"tokenised in {time.time() - started:.1f}s; " + ", ".join(f"{k}={v:,}" for k, v in self.sizes.items()))

    def adapt_model(self, model) -> None:
        """New embedding rows for the learned prompt tokens, started at the mean embedding (plus a
        little seeded noise so they differ), as the vocabulary grew by them."""
        old = model.biogpt.embed_tokens.weight
        rows = len(self.tokenizer)
        if old.shape[0] >= rows:
            return
        generator = torch.Generator().manual_seed(self.config.seed)
        extra = old.detach().mean(0, keepdim=True) + 0.02 * torch.randn(rows - old.shape[0], old.shape[1],
                                                                          generator=generator).to(old.dtype)
        grown = torch.nn.Embedding(rows, old.shape[1], padding_idx=model.config.pad_token_id)
        grown.weight = torch.nn.Parameter(torch.cat([old.detach(), extra.to(old.device)]))
        model.biogpt.embed_tokens = grown
        model.config.vocab_size = rows
        if not model.config.tie_word_embeddings:
            raise TrainError("the prompt task grows the vocabulary and needs tied input/output embeddings")
        model.output_projection = torch.nn.Linear(old.shape[1], rows, bias=False)
        model.tie_weights()

    def studio_extra(self) -> dict[str, Any]:
        return {"task": "prompt", "prompt": self.prompt.to_dict(), "loss_on": self.config.loss_on}

    def num_train_items(self) -> int:
        return len(self.rows["train"])

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        generator = torch.Generator().manual_seed(self.config.seed * 1000 + epoch)
        return _bucketed_batches([len(ids) for ids, _ in self.rows["train"]], self.config.batch_size, generator)

    def _batch(self, rows: list[tuple[list[int], list[int]]]) -> dict:
        return pad_batch([ids for ids, _ in rows], self.tokenizer.pad_token_id, [labels for _, labels in rows])

    def make_batch(self, indices: list[int], device) -> tuple[dict, int]:
        rows = [self.rows["train"][i] for i in indices]
        batch = self._batch(rows)
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}, sum(len(ids) for ids, _ in rows)

    def has_split(self, split: str) -> bool:
        return bool(self.rows.get(split))

    @torch.no_grad()
    def evaluate(self, model, split: str, autocast) -> dict:
        rows, size = self.rows[split], self.config.eval_batch_size
        total, counted = 0.0, 0
        for start in range(0, len(rows), size):
            batch = self._batch(rows[start:start + size])
            labels = batch["labels"].to(model.device)
            with autocast():
                loss = model(input_ids=batch["input_ids"].to(model.device), labels=labels).loss.float().item()
            n = int((labels[:, 1:] != IGNORE).sum())
            total, counted = total + loss * n, counted + n
        metrics: dict[str, Any] = {"loss": total / max(1, counted)}
        if split == "test":  # the paper's score: generate each answer and read it as Microsoft's scripts do
            was_training = model.training
            model.eval()
            parsed = run_model(model, self.tokenizer, self.spec.name, [e.source for e in self.test],
                               self.config.answer_tokens, prompt=self.prompt)
            model.train(was_training)
            metrics.update(score(self.spec.name, parsed, self.test), max_new_tokens=self.config.answer_tokens)
        return metrics

    def sample_batches(self, n: int = 2):
        rows = self.rows["valid"][: 4 * n]
        return [{"input_ids": self._batch(rows[i:i + 4])["input_ids"]} for i in range(0, len(rows), 4)]

    def headline(self, metrics: dict) -> str:
        text = f"loss={metrics['loss']:.4f}"
        if "headline" in metrics:
            key = metrics["headline"]
            cap = metrics.get("max_new_tokens")
            text += (f" {self.spec.name} {key}={metrics[key]:.2f} on {metrics['examples']} test examples "
                     f"({metrics['failed']} unparsable; answers " + (f"capped at {cap} tokens" if cap else "uncapped")
                     + "; reproduce with `biogpt evaluate`)")
        return text
