"""A deterministic fine-tuned DDI model for the Tasks tab's tests: whatever the source, after its
last learned prompt token it writes ANSWER greedily (a one-layer BioGPT whose attention and
feed-forward outputs are zero, so each next token depends only on the current one, and whose
output layer maps each answer token to the next). Real config, tokenizer and prompt record, so it
goes through the same loading, input building and parsing as a converted Microsoft checkpoint."""

from __future__ import annotations

from pathlib import Path

import torch

import biogpt
from biogpt.config import STUDIO_KEY, BioGptConfig
from biogpt.paper_tasks import PromptFormat

ANSWER = "the interaction between aspirin and warfarin is effect; ketoconazole."
LEARNED = [f"learned{i}</w>" for i in range(1, 10)]


def build_scripted_ddi_model(folder: Path, answer: str = ANSWER) -> Path:
    tokenizer = biogpt.BioGptTokenizer.from_pretrained("bundled-tokenizer")
    learned_ids = tokenizer.add_symbols(LEARNED)
    chain = [learned_ids[-1], *tokenizer.encode(answer)[1:], tokenizer.eos_token_id]
    successors = dict(zip(chain, chain[1:]))
    assert len(successors) == len(chain) - 1, "each token of the answer must occur once"
    dim = 128
    config = BioGptConfig(vocab_size=len(tokenizer), hidden_size=dim, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=64, tie_word_embeddings=False)
    model = biogpt.BioGptForCausalLM(config)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.biogpt.embed_tokens.weight.copy_(torch.randn(len(tokenizer), dim, generator=generator))
        for norm in (model.biogpt.layers[0].self_attn_layer_norm, model.biogpt.layers[0].final_layer_norm,
                     model.biogpt.layer_norm):
            norm.weight.fill_(1.0)
        embedded = model.biogpt.embed_tokens.weight
        for current, following in successors.items():
            normalised = torch.nn.functional.layer_norm(embedded[current], (dim,))
            model.output_projection.weight[following] += 10 * normalised
    prompt = PromptFormat(task="ddi", learned_tokens=LEARNED, max_source_positions=640, source="biogpt-studio")
    model.config.extra[STUDIO_KEY] = {"task": "prompt", "prompt": prompt.to_dict()}
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
