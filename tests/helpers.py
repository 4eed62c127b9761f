"""Shared test fixtures: perturbed random checkpoints saved by transformers, loaded by both sides."""

from __future__ import annotations

import json
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
BUNDLED_LM = REPO / "assets" / "models" / "biogpt-pubmed-small"

# Shapes the parity tests cover: a tiny one, an odd one, and the real microsoft/biogpt shape.
TINY = dict(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, max_position_embeddings=128)
ODD = dict(vocab_size=777, hidden_size=96, num_hidden_layers=5, num_attention_heads=3, intermediate_size=200, max_position_embeddings=96)
FULL = dict()  # transformers' BioGptConfig defaults are microsoft/biogpt's shape


def rss_mb(pid: int | str = "self") -> float:
    """Resident memory of a process (this one by default) in MB, as the kernel counts it."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def perturb_(model: torch.nn.Module, seed: int = 0, scale: float = 20.0) -> None:
    """A fresh random BioGPT is nearly constant; scale matrices and jitter norms and biases.

    Matrices x `scale` give varied greedy paths; embeddings stay small so LayerNorm inputs are sane.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if param.dim() == 2 and "embed" not in name:
                param.mul_(scale)
            elif param.dim() == 1:
                param.add_(0.1 * noise)


def hf_checkpoint(
    tmp_path: Path, shape: dict, head: str = "BioGptForCausalLM", seed: int = 0, scale: float = 20.0, **config_kwargs
) -> Path:
    """Build a perturbed transformers model of `shape`, save it, return the folder."""
    import transformers

    torch.manual_seed(seed)
    config = transformers.BioGptConfig(**shape, **config_kwargs)
    model = getattr(transformers, head)(config)
    perturb_(model, seed, scale)
    folder = tmp_path / f"{head}-{seed}"
    model.save_pretrained(folder)
    return folder


def load_hf(folder: Path, head: str = "BioGptForCausalLM"):
    """The oracle in fp32 (transformers 5 would keep a checkpoint's fp16), with eager attention
    so that attentions are returned."""
    import transformers

    return getattr(transformers, head).from_pretrained(folder, attn_implementation="eager", dtype=torch.float32).eval()


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.float() - b.float()).abs().max().item()


# Logits per decoded position, for the graphed-decoder tests and bench/bench_gpu.py alike.


def teacher_forced(decoder, sequence: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """A GraphedDecoder's logits for each new position of `sequence`, fed its tokens: [rows, new, vocab] fp32."""
    steps = [decoder.prefill(sequence[:, :prompt_length]).to(torch.float32, copy=True)]
    for t in range(prompt_length, sequence.shape[1] - 1):
        # A copy: decode() returns the graph's output buffer, which the next step overwrites.
        steps.append(decoder.decode(sequence[:, t].to(decoder.device)).to(torch.float32, copy=True))
    return torch.stack(steps, dim=1)


def incremental(model, sequence: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """The model's logits for each new position, decoding `sequence` token by token with its own cache, fp32."""
    out = model(sequence[:, :prompt_length], use_cache=True)
    steps = [out.logits[:, -1].float()]
    for t in range(prompt_length, sequence.shape[1] - 1):
        out = model(sequence[:, t:t + 1], past_key_values=out.past_key_values, use_cache=True)
        steps.append(out.logits[:, -1].float())
    return torch.stack(steps, dim=1)


# Issue 7's quality set on the bundled LM, for tests/test_quantize.py and bench/bench_quality.py alike.
QUALITY_PROMPTS, QUALITY_NEW_TOKENS = 20, 64


def quality_texts() -> tuple[list[str], list[str]]:
    """(prompts: the first 20 PubMed titles of the corpus, perplexity texts: 30 BC5CDR test abstracts)."""
    with open(DATA / "pubmed-corpus" / "pubmed_docs.jsonl", encoding="utf-8") as f:
        titles = [json.loads(line)["title"] for line, _ in zip(f, range(QUALITY_PROMPTS))]
    with open(DATA / "BC5CDR" / "ner_spans_test.jsonl", encoding="utf-8") as f:
        abstracts = [json.loads(line)["text"] for line, _ in zip(f, range(30))]
    return titles, abstracts


def greedy_continuation(model, ids: torch.Tensor) -> torch.Tensor:
    """The model's 64 greedy new tokens after `ids` ([1, prompt]), eos not allowed to end them early."""
    with torch.inference_mode():
        return model.generate(ids, max_new_tokens=QUALITY_NEW_TOKENS, min_new_tokens=QUALITY_NEW_TOKENS,
                              do_sample=False)[0, ids.shape[1]:]
