"""The attention formula on one real row: the numbers one head computes for one query token.

    scores_j  = q . k_j / sqrt(d)        for every key j (d = the head's dimension)
    masked_j  = scores_j, or -inf for j after the query (the causal mask: no peeking ahead)
    weights   = softmax(masked)          (what the heatmap shows, one row of it)
    output    = sum_j weights_j v_j      (what the head adds, before the output projection)

q, k and v are the head's slices of the query, key and value projections of the layer's input
after its layer norm (BioGPT normalises before attention). The layer's input comes from a float32
forward of the text up to that layer, so the weights are the model's own to float32 precision.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .analysis import Analysis


@dataclass
class AttentionRow:
    """One head's attention of one query token, every step of the formula (module docstring)."""

    layer: int  # 0-based
    head: int
    position: int  # the query token
    tokens: list[str]  # every token of the text; keys are tokens[: position + 1]
    head_dim: int
    query: np.ndarray  # [d] float32
    keys: np.ndarray  # [T, d] every token's key (keys after `position` are masked)
    values: np.ndarray  # [T, d]
    scores: np.ndarray  # [T] q . k_j / sqrt(d), before the mask
    weights: np.ndarray  # [T] softmax after the mask: 0 after `position`
    output: np.ndarray  # [d] sum_j weights_j v_j

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.head_dim)

    @property
    def masked(self) -> int:
        """How many keys the causal mask hides from this query."""
        return len(self.tokens) - self.position - 1


def attention_row(model, analysis: Analysis, layer: int, head: int, position: int) -> AttentionRow:
    """Compute one row of one head from the model's weights (see the module docstring)."""
    config = model.config
    if not (0 <= layer < config.num_hidden_layers and 0 <= head < config.num_attention_heads):
        raise ValueError(f"This model has {config.num_hidden_layers} layers and {config.num_attention_heads} heads a layer.")
    if not 0 <= position < analysis.length:
        raise ValueError(f"Token {position} is not a position of this text (0 to {analysis.length - 1}).")
    input_ids = torch.from_numpy(analysis.token_ids).view(1, -1).to(model.device)
    block = model.biogpt.layers[layer]
    attention = block.self_attn
    d = attention.head_dim
    span = slice(head * d, (head + 1) * d)
    with torch.inference_mode():
        # Hidden states[layer] is the input of that layer; float32 whatever the model's dtype.
        hidden = model.biogpt(input_ids, output_hidden_states=True, use_cache=False).hidden_states[layer][0]
        normed = block.self_attn_layer_norm(hidden).float()

        def project(linear: torch.nn.Linear) -> torch.Tensor:
            weight, bias = linear.weight.float()[span], linear.bias.float()[span]
            return normed @ weight.T + bias

        keys, values = project(attention.k_proj), project(attention.v_proj)
        query = project(attention.q_proj)[position]
        scores = keys @ query / math.sqrt(d)
        visible = torch.arange(len(scores), device=scores.device) <= position
        weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), -1)
        output = weights @ values
    as_numpy = lambda tensor: tensor.cpu().numpy().astype(np.float32)  # noqa: E731
    return AttentionRow(
        layer=layer, head=head, position=position, tokens=list(analysis.tokens), head_dim=d, query=as_numpy(query),
        keys=as_numpy(keys), values=as_numpy(values), scores=as_numpy(scores), weights=as_numpy(weights),
        output=as_numpy(output),
    )
