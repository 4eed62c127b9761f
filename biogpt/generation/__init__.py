"""Decoding: greedy, sampling, beam search, penalties, stop rules and streaming.

Token for token the same as transformers' `generate` (5.x) on the same weights: the logits
processors run in the order transformers builds them, sampling draws with the same
`torch.multinomial` call (so a private generator seeded with `seed` gives what
`torch.manual_seed(seed)` gives transformers) and beam search is a port of its vectorised
implementation, down to the -1e9 sentinels that decide ties.

What differs is the plumbing, which is where the speed comes from: one preallocated KV cache
and one preallocated id buffer per request, a prefill that projects only the last position, a
decode step that feeds one token and builds no mask when nothing is padded, and no per-step
bookkeeping that the request did not ask for.

A branch: `forced_token_ids=[...]` (any entry point but beam search, which refuses it) emits
those tokens as the first new tokens, then decodes on with the same settings. Forced steps run
the model and the processors like any other (their probabilities are reported, each result says
which tokens were forced) and the sampler draws and discards at each of them (SAMPLER_RULE), so
forcing a run's own tokens with its seed reproduces it bit for bit, and a branch (a run's first
tokens, then another) is reproducible from its seed and forced tokens alone. Through a
DecodeBatcher too: forcing happens where tokens are chosen (SamplingRun.choose).

Three entry points:
  generate(model, input_ids, ...)            -> ids, like transformers
  generate_detailed(model, tokenizer, ...)   -> one GeneratedSequence per output (text, per-token
                                                log-probabilities, alternatives, finish reason)
  stream(model, tokenizer, prompt, ...)      -> one StreamEvent per new token

Probabilities reported (`logprob`, `alternatives`) are those of the distribution the decoder
actually chose from: the model's logits after every processor that was switched on (repetition
penalty, n-gram and bad-word bans, min_new_tokens, and for sampling temperature, top-k, top-p,
typical-p), renormalised with a softmax. With plain greedy decoding that is the model's own
distribution.

The text of a continuation is `tokenizer.decode(new_ids, skip_special_tokens=True)` of the new
tokens only (never the prompt), cut before the first stop string if one ended generation.

Where each part lives:
  settings.py    GenerationSettings and resolve_settings: generate()'s keywords, checked once
  processors.py  the logits processors and filters (pure functions), the sampler's generator
  text.py        ContinuationText: the growing text, stop strings, settled stream deltas
  run.py         prefill / decode_one, Step, SamplingRun (greedy and sampling), DecodingStopped
  beam.py        beam_search
  results.py     TokenChoice, GeneratedSequence, StreamEvent
  api.py         generate, generate_detailed, stream
This package never imports biogpt.model: the model's generate() imports it, one way only.
"""

from .api import generate, generate_detailed, stream
from .beam import BeamResult, beam_search
from .processors import (
    Processor,
    _top_p_among_few,
    apply_processors,
    build_processors,
    make_bad_words,
    no_repeat_ngram,
    repetition_penalty,
    suppress_eos,
    top_k_filter,
    top_k_top_p_filter,
    top_p_filter,
    typical_filter,
)
from .results import GeneratedSequence, StreamEvent, TokenChoice
from .run import DecodingStopped, SamplingRun, Step, decode_one, greedy_screen, prefill
from .settings import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_TOP_K,
    SAMPLER_RULE,
    FinishReason,
    GenerationSettings,
    resolve_settings,
)
from .text import ContinuationText, settled_delta, stop_string_hit

__all__ = [
    "DecodingStopped",
    "GeneratedSequence",
    "GenerationSettings",
    "SAMPLER_RULE",
    "StreamEvent",
    "TokenChoice",
    "generate",
    "generate_detailed",
    "resolve_settings",
    "stream",
]
