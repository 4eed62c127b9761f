"""Random BioGPT weights that behave like trained ones, and per-position logits of a decoding,
for the parity tests and the benchmarks alike."""

from __future__ import annotations

import torch


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
