"""BioGPT on plain PyTorch: the decoder and the three task heads.

The KV caches, and the one call attention makes on them, are in biogpt.kv_cache; the linear
layers go through biogpt.row_invariant, which only the decode batcher switches to oneDNN.

Numerically this is transformers' BioGPT (the module and weight names are the same, so
checkpoints load both ways): token embeddings scaled by sqrt(d), learned positions looked up at
position + 2, pre-LayerNorm decoder layers with erf GELU, and a final LayerNorm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .config import BioGptConfig
from .kv_cache import Cache, KVCache
from .row_invariant import linear

# transformers builds every nn.LayerNorm without passing config.layer_norm_eps (1e-12), so the
# eps it really applies is PyTorch's default. Using 1e-12 would change low-variance activations.
LAYER_NORM_EPS = 1e-5
# fairseq reserved the first two position slots (padding_idx + 1), so position p uses row p + 2.
POSITION_OFFSET = 2


@dataclass
class ModelOutput:
    """What every forward returns; fields a model does not produce stay None."""

    logits: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    last_hidden_state: torch.Tensor | None = None
    past_key_values: "KVCache | None" = None
    # Embedding output, then one entry per layer; the last one is after the final LayerNorm.
    hidden_states: tuple[torch.Tensor, ...] | None = None
    # One [batch, heads, query, key] tensor per layer.
    attentions: tuple[torch.Tensor, ...] | None = None


class BioGptAttention(nn.Module):
    def __init__(self, config: BioGptConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        dim = config.hidden_size
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None,
        is_causal: bool,
        cache: Cache | None,
        layer: int,
        head_mask: torch.Tensor | None,
        output_attentions: bool,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, dim = x.shape
        split = (batch, length, self.num_heads, self.head_dim)
        q = linear(self.q_proj, x).view(split).transpose(1, 2)
        k = linear(self.k_proj, x).view(split).transpose(1, 2)
        v = linear(self.v_proj, x).view(split).transpose(1, 2)
        attention = partial(self.attention, bias=bias, is_causal=is_causal, head_mask=head_mask,
                            output_attentions=output_attentions)
        out, weights = attention(q, k, v) if cache is None else cache.attend(layer, q, k, v, attention)
        out = out.transpose(1, 2).reshape(batch, length, dim)
        return linear(self.out_proj, out), weights

    def attention(self, q, k, v, bias, is_causal, head_mask, output_attentions):
        """Attention of q over the keys and values k, v: (output, weights if output_attentions)."""
        dropout = self.dropout if self.training else 0.0
        weights = None
        if output_attentions:
            # Eager path, written as transformers writes it so the weights match to the last bit.
            scores = torch.matmul(q, k.transpose(2, 3)) * self.scaling
            if bias is not None:
                scores = scores + bias
            weights = F.softmax(scores, dim=-1)
            if head_mask is not None:
                weights = weights * head_mask.view(1, -1, 1, 1)
            out = torch.matmul(F.dropout(weights, p=dropout, training=self.training), v)
        else:
            out = F.scaled_dot_product_attention(
                q, k, v, attn_mask=bias, dropout_p=dropout, is_causal=is_causal, scale=self.scaling
            )
            if head_mask is not None:
                # Scaling a head's probabilities scales its output by the same factor: P @ V is linear in P.
                out = out * head_mask.view(1, -1, 1, 1)
        return out, weights


class BioGptDecoderLayer(nn.Module):
    def __init__(self, config: BioGptConfig):
        super().__init__()
        self.self_attn = BioGptAttention(config)
        self.self_attn_layer_norm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=LAYER_NORM_EPS)
        self.dropout = config.hidden_dropout_prob
        self.activation_dropout = config.activation_dropout

    def forward(self, x, bias, is_causal, cache, layer, head_mask, output_attentions):
        attended, weights = self.self_attn(
            self.self_attn_layer_norm(x), bias, is_causal, cache, layer, head_mask, output_attentions
        )
        x = x + F.dropout(attended, p=self.dropout, training=self.training)
        hidden = F.gelu(linear(self.fc1, self.final_layer_norm(x)))
        hidden = F.dropout(hidden, p=self.activation_dropout, training=self.training)
        x = x + F.dropout(linear(self.fc2, hidden), p=self.dropout, training=self.training)
        return x, weights


class BioGptPreTrainedModel(nn.Module):
    """Shared plumbing: weight init, loading, saving. Subclasses define the network."""

    def __init__(self, config: BioGptConfig):
        super().__init__()
        self.config = config
        # Set by from_pretrained when the checkpoint had no weights for the task head, so the UI
        # can say "this head is untrained" instead of showing random labels.
        self.head_is_untrained = False
        # The quantize= mode of from_pretrained ("int8", "4bit", ...), None for full-precision weights.
        self.quantization: str | None = None

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def init_weights(self) -> None:
        for module in self.modules():
            self._init_module(module)
        self.tie_weights()

    def _init_module(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if module.padding_idx is not None:
                with torch.no_grad():
                    module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        """Heads whose output layer shares the token embedding re-point it here."""

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any):
        """Load from a local folder or a Hugging Face hub id; see loading.load_pretrained."""
        from .loading import load_pretrained

        return load_pretrained(cls, name_or_path, **kwargs)

    def save_pretrained(self, directory: str | Path) -> None:
        from .loading import save_pretrained

        save_pretrained(self, directory)


class BioGptModel(BioGptPreTrainedModel):
    def __init__(self, config: BioGptConfig):
        super().__init__(config)
        dim = config.hidden_size
        self.embed_scale = math.sqrt(dim) if config.scale_embedding else 1.0
        self.embed_tokens = nn.Embedding(config.vocab_size, dim, padding_idx=config.pad_token_id)
        self.embed_positions = nn.Embedding(config.max_position_embeddings + POSITION_OFFSET, dim)
        self.layers = nn.ModuleList(BioGptDecoderLayer(config) for _ in range(config.num_hidden_layers))
        self.layer_norm = nn.LayerNorm(dim, eps=LAYER_NORM_EPS)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        past_key_values: Cache | tuple | None = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        inputs_embeds: torch.Tensor | None = None,
    ) -> ModelOutput:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Pass exactly one of input_ids and inputs_embeds.")
        if inputs_embeds is None:
            inputs_embeds = self.embed_tokens(input_ids) * self.embed_scale
        batch, length = inputs_embeds.shape[:2]

        if use_cache is None:
            use_cache = past_key_values is not None or (self.config.use_cache and not self.training)
        cache = past_key_values
        if isinstance(cache, tuple):
            cache = KVCache.from_legacy(cache)
        if use_cache and cache is None:
            cache = KVCache(len(self.layers))
        past = cache.length if cache is not None else 0

        if past + length > self.config.max_position_embeddings:
            raise ValueError(
                f"The input needs {past + length} positions but this model has only "
                f"{self.config.max_position_embeddings}; shorten the text."
            )
        if position_ids is None:
            position_ids = positions_from_mask(attention_mask, past, length, inputs_embeds.device)
        hidden = inputs_embeds + self.embed_positions(position_ids + POSITION_OFFSET)
        hidden = F.dropout(hidden, p=self.config.hidden_dropout_prob, training=self.training)

        bias, is_causal = attention_bias(attention_mask, past, length, hidden.dtype, hidden.device, output_attentions)
        head_mask = expand_head_mask(head_mask, len(self.layers), self.config.num_attention_heads, hidden.dtype)

        all_hidden: list[torch.Tensor] = []
        all_attentions: list[torch.Tensor] = []
        for index, layer in enumerate(self.layers):
            if output_hidden_states:
                all_hidden.append(hidden)
            if self.training and self.config.layerdrop > 0 and torch.rand([]) < self.config.layerdrop:
                continue
            hidden, weights = layer(
                hidden, bias, is_causal, cache, index,
                None if head_mask is None else head_mask[index], output_attentions,
            )
            if output_attentions:
                all_attentions.append(weights)
        if cache is not None:
            cache.advance(length)
        hidden = self.layer_norm(hidden)
        if output_hidden_states:
            # transformers reports the final LayerNorm's output in place of the last layer's raw output.
            all_hidden.append(hidden)
        return ModelOutput(
            last_hidden_state=hidden,
            past_key_values=cache if use_cache else None,
            hidden_states=tuple(all_hidden) if output_hidden_states else None,
            attentions=tuple(all_attentions) if output_attentions else None,
        )


def positions_from_mask(
    attention_mask: torch.Tensor | None, past: int, length: int, device: torch.device
) -> torch.Tensor:
    """Positions of the new tokens: counted over real tokens only, so left padding shifts nothing.

    Padding slots get position 1 as in transformers' generate; their outputs are never used.
    """
    if attention_mask is None:
        return torch.arange(past, past + length, device=device).unsqueeze(0)
    mask = attention_mask.long()
    positions = mask.cumsum(-1) - 1
    positions = positions.masked_fill(mask == 0, 1)
    return positions[:, -length:]


def attention_bias(
    attention_mask: torch.Tensor | None,
    past: int,
    length: int,
    dtype: torch.dtype,
    device: torch.device,
    need_weights: bool,
) -> tuple[torch.Tensor | None, bool]:
    """An additive [batch, 1, query, key] mask, or None plus a flag for SDPA's built-in causal mask.

    The common cases need no mask tensor: a prompt without padding uses `is_causal`, and one
    new token after a cache of real tokens may attend to everything. Masked slots get the dtype's
    minimum (not -inf) like transformers, so a row with no visible key stays finite.
    """
    has_padding = attention_mask is not None and not bool(attention_mask.all())
    if not (has_padding or need_weights or (past > 0 and length > 1)):
        return None, length > 1
    total = past + length
    query_pos = torch.arange(past, total, device=device).view(-1, 1)
    visible = torch.arange(total, device=device).view(1, -1) <= query_pos  # [query, key]
    visible = visible.view(1, 1, length, total)
    if attention_mask is not None:
        visible = visible & attention_mask[:, None, None, -total:].bool()
    bias = torch.zeros(visible.shape, dtype=dtype, device=device)
    return bias.masked_fill(~visible, torch.finfo(dtype).min), False


def expand_head_mask(
    head_mask: torch.Tensor | None, num_layers: int, num_heads: int, dtype: torch.dtype
) -> torch.Tensor | None:
    """Accept transformers 4.x shapes: [heads] for every layer, or [layers, heads]."""
    if head_mask is None:
        return None
    head_mask = torch.as_tensor(head_mask, dtype=dtype)
    if head_mask.dim() == 1:
        head_mask = head_mask.expand(num_layers, -1)
    if tuple(head_mask.shape) != (num_layers, num_heads):
        raise ValueError(f"head_mask must have shape [{num_heads}] or [{num_layers}, {num_heads}], got {list(head_mask.shape)}.")
    return head_mask


class BioGptForCausalLM(BioGptPreTrainedModel):
    def __init__(self, config: BioGptConfig):
        super().__init__(config)
        self.biogpt = BioGptModel(config)
        self.output_projection = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.tie_weights()

    def tie_weights(self) -> None:
        if self.config.tie_word_embeddings:
            self.output_projection.weight = self.biogpt.embed_tokens.weight

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        logits_to_keep: int = 0,
        **kwargs: Any,
    ) -> ModelOutput:
        """`logits_to_keep=n` projects only the last n positions (generation needs one)."""
        out = self.biogpt(input_ids, attention_mask=attention_mask, **kwargs)
        hidden = out.last_hidden_state
        if logits_to_keep:
            hidden = hidden[:, -logits_to_keep:]
        out.logits = linear(self.output_projection, hidden)
        if labels is not None:
            # Predict token t+1 from position t; the loss is computed in fp32 as transformers does.
            out.loss = F.cross_entropy(
                out.logits[:, :-1].float().reshape(-1, out.logits.shape[-1]),
                labels[:, 1:].reshape(-1).to(out.logits.device),
                ignore_index=-100,
            )
        return out

    def generate(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None, **kwargs: Any):
        from .generation import generate

        return generate(self, input_ids, attention_mask=attention_mask, **kwargs)


class BioGptForTokenClassification(BioGptPreTrainedModel):
    def __init__(self, config: BioGptConfig):
        super().__init__(config)
        self.biogpt = BioGptModel(config)
        dropout = config.classifier_dropout if config.classifier_dropout is not None else config.hidden_dropout_prob
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ModelOutput:
        out = self.biogpt(input_ids, attention_mask=attention_mask, **kwargs)
        out.logits = self.classifier(self.dropout(out.last_hidden_state))
        if labels is not None:
            flat_labels = labels.reshape(-1)
            if attention_mask is not None:
                flat_labels = flat_labels.masked_fill(attention_mask.reshape(-1) != 1, -100)
            out.loss = F.cross_entropy(out.logits.reshape(-1, out.logits.shape[-1]), flat_labels, ignore_index=-100)
        return out


class BioGptForSequenceClassification(BioGptPreTrainedModel):
    def __init__(self, config: BioGptConfig):
        super().__init__(config)
        self.biogpt = BioGptModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> ModelOutput:
        out = self.biogpt(input_ids, attention_mask=attention_mask, **kwargs)
        hidden = out.last_hidden_state
        batch, length = hidden.shape[:2]
        # Pool at the rightmost non-pad token, which works for left and right padding alike.
        if input_ids is not None and self.config.pad_token_id is not None:
            not_pad = (input_ids != self.config.pad_token_id).int()
            last = (torch.arange(length, device=hidden.device, dtype=torch.int32) * not_pad).argmax(-1)
        else:
            if batch != 1 and self.config.pad_token_id is None:
                raise ValueError("Batches larger than one need a pad_token_id to find each row's last token.")
            last = torch.full((batch,), length - 1, device=hidden.device)
        out.logits = self.score(hidden[torch.arange(batch, device=hidden.device), last])
        if labels is not None:
            out.loss = sequence_classification_loss(out.logits, labels, self.config)
        return out


def sequence_classification_loss(logits: torch.Tensor, labels: torch.Tensor, config: BioGptConfig) -> torch.Tensor:
    """transformers' rule: regression for one label, cross-entropy for integer labels, else BCE."""
    problem = config.problem_type
    if problem is None:
        if config.num_labels == 1:
            problem = "regression"
        elif labels.dtype in (torch.long, torch.int):
            problem = "single_label_classification"
        else:
            problem = "multi_label_classification"
    if problem == "regression":
        if config.num_labels == 1:
            return F.mse_loss(logits.squeeze(), labels.squeeze())
        return F.mse_loss(logits, labels)
    if problem == "single_label_classification":
        return F.cross_entropy(logits.view(-1, config.num_labels), labels.view(-1))
    if problem == "multi_label_classification":
        return F.binary_cross_entropy_with_logits(logits, labels)
    raise ValueError(f"Unknown problem_type {problem!r}.")
