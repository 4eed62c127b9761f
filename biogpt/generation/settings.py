"""generate()'s keywords, checked once: Hugging Face's names and defaults, and messages a user
understands when a value is wrong.

Each check is its own small function, run in a fixed order, so a request with several wrong
values is always told about the same one first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

FinishReason = str  # "length" | "eos" | "stop"

UNSET: Any = object()  # tells "not passed" from an explicit None (eos_token_id=None disables eos)

# transformers' GenerationConfig defaults, which BioGPT checkpoints do not override.
DEFAULT_MAX_NEW_TOKENS = 20
DEFAULT_TOP_K = 50

# What the sampler does at and after forced tokens (forced_token_ids), stated once for results and docs.
SAMPLER_RULE = (
    "Forced tokens are emitted first, never sampled; the sampler still draws at every forced step and "
    "discards the draw, so after the last forced token it continues from the same random state as the run "
    "the tokens came from (same seed): forcing a run's own tokens reproduces it, and a branch is "
    "reproducible from its seed, its forced tokens and its settings alone."
)


@dataclass
class GenerationSettings:
    max_new_tokens: int
    min_new_tokens: int = 0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = DEFAULT_TOP_K
    top_p: float = 1.0
    typical_p: float = 1.0
    repetition_penalty: float = 1.0
    no_repeat_ngram_size: int = 0
    bad_words_ids: list[list[int]] | None = None
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    num_return_sequences: int = 1
    eos_token_ids: list[int] = field(default_factory=list)
    pad_token_id: int = 1
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Emitted as the first new tokens of every row before decoding continues (a branch); counted
    # in max_new_tokens. See SAMPLER_RULE for what the sampler does meanwhile.
    forced_token_ids: list[int] = field(default_factory=list)


KNOWN_KEYS = {
    "max_new_tokens", "max_length", "min_new_tokens", "min_length", "do_sample", "temperature", "top_k",
    "top_p", "typical_p", "repetition_penalty", "no_repeat_ngram_size", "bad_words_ids", "num_beams",
    "length_penalty", "early_stopping", "num_return_sequences", "eos_token_id", "pad_token_id", "stop",
    "seed", "use_cache", "forced_token_ids",
}

Get = Callable[[str], Any]


def resolve_settings(config, prompt_length: int, **kwargs: Any) -> GenerationSettings:
    """Turn generate()'s keywords into checked settings, or raise ValueError saying what to change."""
    unknown = set(kwargs) - KNOWN_KEYS
    if unknown:
        raise TypeError(f"generate() got unexpected keyword argument(s): {', '.join(sorted(unknown))}.")
    get = kwargs.get
    if prompt_length < 1:
        raise ValueError("The prompt is empty: give at least one token to continue from.")
    max_new = _max_new_tokens(config, prompt_length, get)
    min_new = _min_new_tokens(prompt_length, get)
    sampling = _sampling_options(get)
    ngram = get("no_repeat_ngram_size") or 0
    _check_whole("no_repeat_ngram_size", ngram, 0)
    num_beams, num_return = _beam_counts(get, sampling["do_sample"])
    early_stopping = False if get("early_stopping") is None else get("early_stopping")
    if early_stopping not in (True, False, "never"):
        raise ValueError(f"early_stopping must be True, False or 'never', got {early_stopping!r}.")
    length_penalty = 1.0 if get("length_penalty") is None else float(get("length_penalty"))
    eos_ids = [int(t) for t in requested_eos_ids(config, kwargs)]
    pad = requested_pad_id(config, kwargs)
    if pad is None:  # transformers pads finished rows with the first eos then
        pad = eos_ids[0] if eos_ids else 0
    bad_words = _bad_words(config, get("bad_words_ids"))
    stop = _stop_strings(get("stop"))
    seed = get("seed")
    if seed is not None and (isinstance(seed, bool) or int(seed) != seed):
        raise ValueError(f"seed must be a whole number, got {seed!r}.")
    forced = _forced_tokens(config, get("forced_token_ids"), max_new, num_beams, eos_ids)
    return GenerationSettings(
        max_new_tokens=max_new, min_new_tokens=min_new, **sampling, no_repeat_ngram_size=int(ngram),
        bad_words_ids=bad_words, num_beams=num_beams, length_penalty=length_penalty,
        early_stopping=early_stopping, num_return_sequences=num_return, eos_token_ids=eos_ids,
        pad_token_id=int(pad), stop=stop, seed=None if seed is None else int(seed), forced_token_ids=forced,
    )


def requested_eos_ids(config, kwargs: dict[str, Any]) -> list:
    """eos_token_id as passed (one id, several, or None for none), else the config's, as a list."""
    eos = kwargs.get("eos_token_id", UNSET)
    if eos is UNSET:
        eos = config.eos_token_id
    return [] if eos is None else [eos] if isinstance(eos, int) else list(eos)


def requested_pad_id(config, kwargs: dict[str, Any]):
    """pad_token_id as passed (None included), else the config's."""
    pad = kwargs.get("pad_token_id", UNSET)
    return config.pad_token_id if pad is UNSET else pad


def _check_whole(name: str, value: Any, minimum: int, note: str = "") -> None:
    if isinstance(value, bool) or int(value) != value or value < minimum:
        raise ValueError(f"{name} must be a whole number of at least {minimum}{note}, got {value!r}.")


def _no_room(prompt_length: int, max_positions: int) -> ValueError:
    return ValueError(
        f"The prompt has {prompt_length} tokens and fills all {max_positions} positions this model "
        "can see, so there is no room for new tokens; shorten the prompt."
    )


def _max_new_tokens(config, prompt_length: int, get: Get) -> int:
    max_positions = config.max_position_embeddings
    room = max_positions - prompt_length
    max_new = get("max_new_tokens")
    if max_new is None and get("max_length") is not None:
        max_new = int(get("max_length")) - prompt_length  # transformers: max_length counts the prompt
        if max_new < 1:
            raise ValueError(
                f"max_length={get('max_length')} leaves no room after the {prompt_length}-token prompt; "
                "use max_new_tokens to say how many tokens to add."
            )
    if max_new is None:
        if room < 1:
            raise _no_room(prompt_length, max_positions)
        max_new = min(DEFAULT_MAX_NEW_TOKENS, room)  # transformers' default, capped like transformers
    _check_whole("max_new_tokens", max_new, 1)
    max_new = int(max_new)
    if prompt_length + max_new > max_positions:
        if room < 1:
            raise _no_room(prompt_length, max_positions)
        raise ValueError(
            f"The prompt has {prompt_length} tokens and {max_new} new tokens were asked for, but this model "
            f"sees at most {max_positions} positions; ask for at most {room} new tokens or shorten the prompt."
        )
    return max_new


def _min_new_tokens(prompt_length: int, get: Get) -> int:
    min_new = get("min_new_tokens")
    if min_new is None and get("min_length") is not None:
        min_new = max(int(get("min_length")) - prompt_length, 0)
    min_new = 0 if min_new is None else min_new
    _check_whole("min_new_tokens", min_new, 0)
    return int(min_new)


def _sampling_options(get: Get) -> dict[str, Any]:
    """do_sample and the warpers' settings (and the repetition penalty), as GenerationSettings fields."""
    do_sample = bool(get("do_sample") or False)
    temperature = 1.0 if get("temperature") is None else float(get("temperature"))
    top_k = DEFAULT_TOP_K if get("top_k") is None else get("top_k")
    top_p = 1.0 if get("top_p") is None else float(get("top_p"))
    typical_p = 1.0 if get("typical_p") is None else float(get("typical_p"))
    repetition_penalty = 1.0 if get("repetition_penalty") is None else float(get("repetition_penalty"))
    if do_sample and not temperature > 0:
        raise ValueError(
            f"temperature must be greater than 0 when sampling (got {temperature}); "
            "for deterministic output use do_sample=False instead."
        )
    _check_whole("top_k", top_k, 0, note=" (0 turns it off)")
    if not 0 < top_p <= 1:
        raise ValueError(f"top_p must be greater than 0 and at most 1 (1 turns it off), got {top_p}.")
    if not 0 < typical_p <= 1:
        raise ValueError(f"typical_p must be greater than 0 and at most 1 (1 turns it off), got {typical_p}.")
    if not repetition_penalty > 0:
        raise ValueError(
            f"repetition_penalty must be greater than 0 (1 turns it off, above 1 discourages repeats), "
            f"got {repetition_penalty}."
        )
    return dict(do_sample=do_sample, temperature=temperature, top_k=int(top_k), top_p=top_p,
                typical_p=typical_p, repetition_penalty=repetition_penalty)


def _beam_counts(get: Get, do_sample: bool) -> tuple[int, int]:
    """(num_beams, num_return_sequences), and whether the decoding asked for can give that many."""
    num_beams = 1 if get("num_beams") is None else get("num_beams")
    _check_whole("num_beams", num_beams, 1)
    num_return = 1 if get("num_return_sequences") is None else get("num_return_sequences")
    _check_whole("num_return_sequences", num_return, 1)
    problem = sequence_count_problem(num_beams, num_return, do_sample)
    if problem:
        raise ValueError(problem)
    return int(num_beams), int(num_return)


def sequence_count_problem(num_beams: int, num_return: int, do_sample: bool) -> str | None:
    """The one rule on how many sequences a decoding can return, as the sentence that explains
    it (None when the count is fine). generate()'s keywords and the Generate tab's controls are
    both checked here, so the sentence names the keyword beside the control's words."""
    if num_beams > 1 and num_return > num_beams:
        return (
            f"Beam search with {num_beams} beams can return at most {num_beams} sequences, not {num_return}; "
            "raise the beams (num_beams) or lower the number of sequences (num_return_sequences)."
        )
    if num_beams == 1 and not do_sample and num_return > 1:
        return (
            "Greedy decoding gives the same sequence every time, so it returns one; use sampling "
            "(do_sample=True) or beam search (num_beams > 1) for several different sequences."
        )
    return None


def _bad_words(config, bad_words) -> list[list[int]] | None:
    if bad_words is None:
        return None
    if not isinstance(bad_words, (list, tuple)) or not bad_words or not all(
        isinstance(word, (list, tuple)) and word for word in bad_words
    ):
        raise ValueError(
            "bad_words_ids must be a non-empty list of non-empty lists of token ids, e.g. [[42], [7, 9]]."
        )
    bad_words = [[int(t) for t in word] for word in bad_words]
    out_of_range = sorted({t for word in bad_words for t in word if not 0 <= t < config.vocab_size})
    if out_of_range:
        raise ValueError(
            f"bad_words_ids holds ids outside this model's vocabulary of {config.vocab_size}: {out_of_range}."
        )
    return bad_words


def _forced_tokens(config, forced, max_new: int, num_beams: int, eos_ids: list[int]) -> list[int]:
    """forced_token_ids checked: whole ids in the vocabulary, at most max_new_tokens of them, an
    end-of-sequence token only last, and no beam search (it would have to force every beam)."""
    if forced is None or (isinstance(forced, (list, tuple)) and not forced):
        return []
    if isinstance(forced, (str, bytes)) or not isinstance(forced, (list, tuple)) or any(
        isinstance(t, bool) or not isinstance(t, int) for t in forced
    ):
        raise ValueError("forced_token_ids must be a list of whole token ids, e.g. [1901, 7, 42].")
    out_of_range = sorted({t for t in forced if not 0 <= t < config.vocab_size})
    if out_of_range:
        raise ValueError(
            f"forced_token_ids holds ids outside this model's vocabulary of {config.vocab_size}: {out_of_range[:10]}."
        )
    if len(forced) > max_new:
        raise ValueError(
            f"{len(forced)} forced tokens do not fit in max_new_tokens={max_new}, which counts them; "
            f"force at most {max_new} or raise max_new_tokens."
        )
    if any(t in eos_ids for t in forced[:-1]):
        raise ValueError("An end-of-sequence token can only be the last forced token: the sequence ends there.")
    if num_beams > 1:
        raise ValueError(
            "Beam search cannot continue from forced tokens (it keeps and reranks several sequences); "
            "branch from greedy or sampling instead."
        )
    return [int(t) for t in forced]


def _stop_strings(stop) -> list[str]:
    stop = stop or []
    stop = [stop] if isinstance(stop, str) else list(stop)
    if any(not isinstance(s, str) or not s for s in stop):
        raise ValueError("Each stop string must be a non-empty string.")
    return stop
