"""Evaluation numbers: classification scores and thresholds, LM perplexity. (NER span scores
live in biogpt/ner.py, shared with the app.)"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from ..ner import precision_recall_f1
from .data import block_batches, pack_blocks


def classification_scores(gold: torch.Tensor, predicted: torch.Tensor, labels: list[str]) -> dict:
    """gold/predicted: [n, classes] 0/1 (one-hot for single-label). Accuracy is exact match."""
    gold, predicted = gold.bool(), predicted.bool()
    per_class = {}
    for c, name in enumerate(labels):
        tp = int((gold[:, c] & predicted[:, c]).sum())
        fp = int((~gold[:, c] & predicted[:, c]).sum())
        fn = int((gold[:, c] & ~predicted[:, c]).sum())
        per_class[name] = precision_recall_f1(tp, fp, fn)
    micro = precision_recall_f1(*(sum(s[k] for s in per_class.values()) for k in ("tp", "fp", "fn")))
    return {
        "accuracy": float((gold == predicted).all(-1).float().mean()) if len(gold) else 0.0,
        "micro_f1": micro["f1"],
        "micro_precision": micro["precision"],
        "micro_recall": micro["recall"],
        "macro_f1": sum(s["f1"] for s in per_class.values()) / max(len(per_class), 1),
        "per_class": per_class,
        "n": len(gold),
    }


def tune_threshold(gold: torch.Tensor, probs: torch.Tensor) -> float:
    """The sigmoid threshold (0.01 .. 0.99) with the best micro-F1 on these examples."""
    best, best_f1 = 0.5, -1.0
    gold = gold.bool()
    for step in range(1, 100):
        t = step / 100
        pred = probs >= t
        tp = int((gold & pred).sum())
        denominator = int(gold.sum()) + int(pred.sum())
        f1 = 2 * tp / denominator if denominator else 0.0
        if f1 > best_f1 + 1e-12:
            best, best_f1 = t, f1
    return best


@torch.no_grad()
def blocks_perplexity(model, batches, autocast=contextlib.nullcontext) -> dict:
    """exp(mean next-token loss) over blocks; each block's first token is context only."""
    total, count = 0.0, 0
    for ids in batches:
        ids = ids.to(model.device)
        with autocast():
            logits = model(input_ids=ids).logits
        total += F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]), ids[:, 1:].reshape(-1),
                                 reduction="sum").item()
        count += ids[:, 1:].numel()
    loss = total / max(count, 1)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": count}


def perplexity(model, tokenizer, texts: list[str], block_size: int = 512, batch_size: int = 8) -> dict:
    """Held-out perplexity of a causal LM on `texts`, measured exactly as `train lm` does: each text
    encoded with its leading "</s>", all concatenated and cut into `block_size` blocks."""
    was_training = model.training
    model.eval()
    blocks = pack_blocks([tokenizer.encode(t) for t in texts], block_size, keep_tail=True)
    result = blocks_perplexity(model, block_batches(blocks, batch_size))
    model.train(was_training)
    return result
