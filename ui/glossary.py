"""The glossary every attention view links to: short, exact definitions, as data (no gradio here).

Each entry is one or two sentences about BioGPT as this app runs it; `glossary_markdown` is what
the page shows, `define` what a view's "?" shows for one term.
"""

from __future__ import annotations

import html

GLOSSARY: dict[str, str] = {
    "token": "A piece of text the model reads as one unit (a word or part of a word, from BioGPT's BPE vocabulary of "
             "42,384 pieces); every text starts with </s>.",
    "layer": "One decoder block: layer norm, self-attention, a residual add, layer norm, a two-layer MLP, a residual add. "
             "The bundled model has 4 layers, microsoft/biogpt 24.",
    "head": "One of the parallel attentions inside a layer, each with its own query, key and value projections of "
            "size d = hidden size / heads; their outputs are concatenated and projected back.",
    "query": "The vector q = W_Q x (per head) with which a token asks what to read; it is compared with every "
             "earlier token's key.",
    "key": "The vector k = W_K x (per head) a token offers to be found by; the score of query i on key j is "
           "q_i · k_j / sqrt(d).",
    "value": "The vector v = W_V x (per head) a token hands over when attended to; a head's output is the "
             "attention-weighted sum of the values.",
    "attention weight": "softmax over earlier keys of q · k / sqrt(d): how much of each earlier token's value a head "
                        "reads; each row of a heatmap sums to 1.",
    "causal mask": "A decoder may not read later tokens: their scores are set to minus infinity before the softmax, so "
                   "their weights are exactly 0 (the blank upper triangle of a heatmap).",
    "residual stream": "The vector each token carries from layer to layer: every attention and MLP block adds its "
                       "output to it instead of replacing it.",
    "layer norm": "Rescales a vector to mean 0 and variance 1, then applies a learned scale and shift; BioGPT applies "
                  "it before each block and once more at the end.",
    "logit": "The model's raw score for each vocabulary token as the next one: the final hidden state times the "
             "output matrix (the token embeddings), before the softmax.",
    "softmax": "Turns scores s into probabilities exp(s_i) / sum_j exp(s_j): positive, summing to 1, keeping the order "
               "of the scores.",
    "temperature": "Divides the logits before the softmax when sampling: below 1 sharpens the distribution, above 1 "
                   "flattens it; greedy decoding ignores it.",
    "top-k": "Sampling only among the k most probable next tokens (the rest get probability 0); 0 turns it off.",
    "top-p": "Sampling only among the fewest most probable tokens whose probabilities add up to at least p "
             "(nucleus sampling); 1 turns it off.",
    "beam": "Beam search keeps the `beams` most probable partial continuations at every step and returns the most "
            "probable finished ones; it does not sample.",
    "attention sink": "A token (here the first, </s>) on which many heads park most of their attention when nothing "
                      "else is relevant; its value is nearly empty, so this is a way to do little.",
    "previous-token head": "A head whose every token attends mostly to the token just before it; its score is the mean "
                           "weight on that token.",
    "induction head": "A head that, at a token seen before, attends to the token that followed it last time and so "
                      "helps repeat the sequence; measured on a repeated random token sequence.",
    "logit lens": "Reading each layer's residual stream through the final layer norm and output matrix, as if the "
                  "model stopped there: when does the final prediction appear?",
    "ablation": "Switching heads off (multiplying their attention by 0) and measuring how the next-token "
                "distribution changes, in KL divergence.",
}


def define(term: str) -> str:
    """The definition of `term` (case and surrounding spaces ignored), or a sentence saying there is none."""
    key = " ".join(str(term).lower().split())
    if key in GLOSSARY:
        return GLOSSARY[key]
    return f"{html.escape(str(term)[:40])!s} is not in the glossary; its terms are: {', '.join(GLOSSARY)}."


def glossary_markdown() -> str:
    """The whole glossary as a Markdown definition list (bold term, then its definition)."""
    return "\n".join(f"- **{term}**: {html.escape(text, quote=False)}" for term, text in GLOSSARY.items())
