"""BioGPT's tokenizer: Moses word splitting, then byte-pair encoding (BPE).

A re-implementation of transformers' slow `BioGptTokenizer` that needs only sacremoses: for the
same vocab.json and merges.txt it gives the same ids and the same decoded text (the tests check
every text in ../shared/data against transformers). It adds what the slow Hugging Face tokenizer
lacks: character offsets into the original text, and a BPE that stays fast on absurdly long words.

`encode(text)` runs four steps:
1. split the text on literal special tokens ("</s>", "<unk>", ...), as Hugging Face does;
2. Moses-tokenise each remaining part (English rules, aggressive dash splits and XML escaping:
   "a-b & c" -> ["a", "@-@", "b", "&amp;", "c"]);
3. BPE each Moses word into vocabulary pieces; a word's last piece ends in "</w>";
4. look the pieces up in vocab.json and put "</s>" (id 2) in front: BioGPT starts every
   sequence with "</s>", not "<s>" (a fairseq habit).
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import sacremoses

VOCAB_FILE = "vocab.json"
MERGES_FILE = "merges.txt"
CONFIG_FILE = "tokenizer_config.json"

BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN = "<s>", "<pad>", "</s>", "<unk>"
WORD_END = "</w>"

# Literal special tokens in the text become their own ids, never Moses input (Hugging Face
# splits on them the same way). None is a prefix or part of another, so leftmost match is enough.
_SPECIAL_TOKEN_RE = re.compile("|".join(re.escape(t) for t in (BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN)))

# The BPE cache holds short words only: a long word rarely repeats and would pin its memory.
_CACHE_MAX_ENTRIES = 100_000
_CACHE_MAX_WORD_LEN = 100

# What Moses does to characters, needed to map its words back onto the original text:
# - control characters that are not whitespace are deleted (Python's \s includes \x1c-\x1f);
_DELETED_CHARS_RE = re.compile("[" + "".join(chr(c) for c in range(32) if not chr(c).isspace()) + "]")
# - whitespace (any unicode space) only separates words;
_WHITESPACE_RE = re.compile(r"\s*")
# - eight characters are XML-escaped;
XML_ESCAPES = {
    "&amp;": "&", "&#124;": "|", "&lt;": "<", "&gt;": ">",
    "&apos;": "'", "&quot;": '"', "&#91;": "[", "&#93;": "]",
}
_XML_ESCAPE_RE = re.compile("|".join(re.escape(e) for e in XML_ESCAPES))
# - "a-b" becomes "a @-@ b": the word "@-@" stands for the one original "-";
DASH_WORD = "@-@"
# - runs of dots are hidden as "DOT...DOTMULTI" while Moses works and restored at the end, so a
#   literal "DOTMULTI" (or "DOTDOTMULTI") in the text comes back as "." (or "..").
_MULTIDOT_MARKER_RE = re.compile(r"(?:DOT)+MULTI")


class BatchEncoding(dict):
    """What `tokenizer(...)` returns: a dict whose keys also read as attributes (`enc.input_ids`)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def to(self, device: Any) -> BatchEncoding:
        """Move the tensors to `device` (e.g. `inputs.to(model.device)`), as Hugging Face allows."""
        return BatchEncoding({k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()})


class _MosesTokenizer(sacremoses.MosesTokenizer):
    """sacremoses' tokenizer with two helpers made fast; same answers.

    For each word ending in a period sacremoses builds a set of every lower-case (or alphabetic)
    character in Unicode, 0.1-0.6 ms a call: 1 MB of "e.g. a.b. ..." would take minutes.
    """

    def __init__(self, lang: str = "en") -> None:
        super().__init__(lang=lang)
        self._lower_chars = frozenset(self.IsLower)
        self._alpha_chars = frozenset(self.IsAlpha)

    def islower(self, text: str) -> bool:
        return all(ch in self._lower_chars for ch in text)

    def isanyalpha(self, text: str) -> bool:
        return any(ch in self._alpha_chars for ch in text)


def bpe_merge(word: str, ranks: Mapping[tuple[str, str], int]) -> list[str]:
    """Split one Moses word into BPE pieces, exactly as transformers' `BioGptTokenizer.bpe` does.

    transformers repeats rounds: find the adjacent pair with the lowest rank, merge all its
    occurrences left to right, start again. That is quadratic in the word length. Here the
    symbols form a linked list and a heap holds (rank, position) for every adjacent pair that has
    a rank, so each merge costs O(log n). One round = popping every entry of the lowest rank in
    position order. A merge inside a round can create a pair of an even lower rank; transformers
    sees that pair only in the next round, so it is held back until the round ends (with merges
    (a,b) then (ab,a) ranked lower, "ababc" gives [ab, ab, c</w>], not [aba, b, c</w>]).
    Heap entries can go stale when a neighbour merges; they are skipped when popped.
    """
    symbols = list(word)
    symbols[-1] += WORD_END
    count = len(symbols)
    next_of = list(range(1, count + 1))
    next_of[-1] = -1
    prev_of = list(range(-1, count - 1))

    heap = []
    for i in range(count - 1):
        rank = ranks.get((symbols[i], symbols[i + 1]))
        if rank is not None:
            heap.append((rank, i))
    heapq.heapify(heap)

    while heap:
        round_rank = heap[0][0]
        held_back = []
        while heap and heap[0][0] == round_rank:
            _, left = heapq.heappop(heap)
            right = next_of[left]
            # Stale: `left` was merged away (its symbol is "") or its pair changed since the push.
            if right == -1 or ranks.get((symbols[left], symbols[right])) != round_rank:
                continue
            symbols[left] += symbols[right]
            symbols[right] = ""
            after = next_of[right]
            next_of[left] = after
            if after != -1:
                prev_of[after] = left
            for a, b in ((prev_of[left], left), (left, after)):
                if a == -1 or b == -1:
                    continue
                rank = ranks.get((symbols[a], symbols[b]))
                if rank is None:
                    continue
                if rank < round_rank:
                    held_back.append((rank, a))
                else:
                    heapq.heappush(heap, (rank, a))
        for entry in held_back:
            heapq.heappush(heap, entry)
    return [s for s in symbols if s]


def _read_vocab(path: Path) -> dict[str, int]:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _read_merges(path: Path) -> dict[tuple[str, str], int]:
    """Rank = line number. A line is "left right [count]"; parsed exactly as transformers does,
    including dropping whatever follows the last newline."""
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")[:-1]
    return {tuple(line.split()[:2]): rank for rank, line in enumerate(lines)}


def _without_deleted_chars(text: str) -> tuple[str, list[int] | None]:
    """The text as Moses sees it after deleting control characters, and where each of its
    characters sits in `text` (None when nothing was deleted)."""
    if not _DELETED_CHARS_RE.search(text):
        return text, None
    kept = [i for i, ch in enumerate(text) if not _DELETED_CHARS_RE.match(ch)]
    return "".join(text[i] for i in kept), kept


def _align_word(word: str, text: str, pos: int) -> tuple[Sequence[int], Sequence[int], int]:
    """Find Moses word `word` in `text` at `pos` (after any whitespace).

    Returns, for each character of `word`, the start and end of the text span it came from, and
    the position just after the word. An escaped character ("&amp;") or the "@-@" of a split
    dash maps all its characters to the one original character.
    """
    pos = _WHITESPACE_RE.match(text, pos).end()
    if "&" not in word and text.startswith(word, pos):  # the common case: the word is verbatim
        end = pos + len(word)
        return range(pos, end), range(pos + 1, end + 1), end
    if word == DASH_WORD and text.startswith("-", pos):
        return [pos] * 3, [pos + 1] * 3, pos + 1
    starts: list[int] = []
    ends: list[int] = []
    i = 0
    while i < len(word):
        escape = _XML_ESCAPE_RE.match(word, i)
        width, char = (len(escape.group()), XML_ESCAPES[escape.group()]) if escape else (1, word[i])
        if text.startswith(char, pos):
            starts += [pos] * width
            ends += [pos + 1] * width
            pos += 1
        elif char == "." and (marker := _MULTIDOT_MARKER_RE.match(text, pos)):
            # Moses turned "DOT" * k + "MULTI" into k dots: one "DOT" each, the last takes "MULTI".
            width = (len(marker.group()) - len("MULTI")) // len("DOT")
            starts += range(pos, pos + 3 * width, 3)
            ends += [*range(pos + 3, pos + 3 * width, 3), marker.end()]
            pos = marker.end()
        else:
            raise RuntimeError(f"cannot align Moses word {word!r} with the text at {pos}: {text[pos:pos + 20]!r}")
        i += width
    return starts, ends, pos


class BioGptTokenizer:
    """Moses + BPE tokenizer with the transformers API (`encode`, `decode`, `__call__`, ...)."""

    model_input_names = ["input_ids", "attention_mask"]

    def __init__(
        self,
        vocab_file: str | Path,
        merges_file: str | Path,
        model_max_length: int = 1024,
        padding_side: str = "right",
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,
    ) -> None:
        self.encoder = _read_vocab(Path(vocab_file))
        self.decoder = {i: token for token, i in self.encoder.items()}
        self.bpe_ranks = _read_merges(Path(merges_file))
        missing = [t for t in (BOS_TOKEN, PAD_TOKEN, EOS_TOKEN, UNK_TOKEN) if t not in self.encoder]
        if missing:
            raise ValueError(f"{vocab_file} lacks the special tokens {missing}")
        if padding_side not in ("right", "left") or truncation_side not in ("right", "left"):
            raise ValueError("padding_side and truncation_side must be 'right' or 'left'")
        self.model_max_length = model_max_length
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = clean_up_tokenization_spaces
        self.name_or_path = str(Path(vocab_file).parent)
        self._moses = _MosesTokenizer(lang="en")
        self._detokenizer = sacremoses.MosesDetokenizer(lang="en")
        self._bpe_cache: dict[str, list[str]] = {}

    # ----- loading and saving -----

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> BioGptTokenizer:
        """Load from a local folder, a bundled name ("bundled", "bundled-tokenizer",
        "bundled-tokenizer-large", ...: see biogpt.hub), or a Hugging Face hub id."""
        from .hub import resolve_model_dir

        name = str(name_or_path)
        folder = resolve_model_dir(name, allow_patterns=[VOCAB_FILE, MERGES_FILE, CONFIG_FILE])
        if not (folder / VOCAB_FILE).is_file():
            from .fairseq import is_fairseq_folder

            if is_fairseq_folder(folder):
                return cls._from_fairseq(folder, name, **kwargs)
        config_path = folder / CONFIG_FILE
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        for key in ("model_max_length", "padding_side", "truncation_side", "clean_up_tokenization_spaces"):
            if key in config:
                kwargs.setdefault(key, config[key])
        tokenizer = cls(folder / VOCAB_FILE, folder / MERGES_FILE, **kwargs)
        tokenizer.name_or_path = name
        return tokenizer

    @classmethod
    def _from_fairseq(cls, folder: Path, name: str, **kwargs: Any) -> BioGptTokenizer:
        """Microsoft's dict.txt + bpecodes (+ the checkpoint, for the symbols its task added), as
        `biogpt convert` would write them."""
        import tempfile

        from .fairseq import read_fairseq_folder

        converted = read_fairseq_folder(folder)
        with tempfile.TemporaryDirectory() as scratch:
            vocab_path, merges_path = Path(scratch) / VOCAB_FILE, Path(scratch) / MERGES_FILE
            vocab_path.write_text(json.dumps(converted.vocab, ensure_ascii=False), encoding="utf-8")
            merges_path.write_text("".join(line + "\n" for line in converted.merges), encoding="utf-8")
            tokenizer = cls(vocab_path, merges_path, **kwargs)
        tokenizer.name_or_path = name
        return tokenizer

    def add_symbols(self, tokens: Sequence[str]) -> list[int]:
        """Append whole-token entries to the vocabulary (as fairseq's Dictionary.add_symbol does for a
        task's learned prompt tokens); ones already present keep their id. Returns the ids."""
        for token in tokens:
            if token not in self.encoder:
                self.encoder[token] = len(self.encoder)
                self.decoder[self.encoder[token]] = token
        return [self.encoder[token] for token in tokens]

    def save_pretrained(self, save_directory: str | Path) -> tuple[str, str, str]:
        """Write vocab.json, merges.txt and tokenizer_config.json in the layout transformers writes."""
        folder = Path(save_directory)
        folder.mkdir(parents=True, exist_ok=True)
        vocab_path, merges_path, config_path = folder / VOCAB_FILE, folder / MERGES_FILE, folder / CONFIG_FILE
        vocab_path.write_text(json.dumps(self.encoder, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
        merges = sorted(self.bpe_ranks.items(), key=lambda item: item[1])
        merges_path.write_text("".join(" ".join(pair) + "\n" for pair, _ in merges), encoding="utf-8")
        config = {
            "tokenizer_class": "BioGptTokenizer",
            "bos_token": BOS_TOKEN,
            "eos_token": EOS_TOKEN,
            "sep_token": EOS_TOKEN,
            "unk_token": UNK_TOKEN,
            "pad_token": PAD_TOKEN,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
        }
        config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        return str(vocab_path), str(merges_path), str(config_path)

    # ----- vocabulary -----

    @property
    def vocab_size(self) -> int:
        return len(self.encoder)

    def __len__(self) -> int:
        return len(self.encoder)

    def get_vocab(self) -> dict[str, int]:
        return dict(self.encoder)

    bos_token = BOS_TOKEN
    eos_token = EOS_TOKEN
    sep_token = EOS_TOKEN  # BioGPT separates (and starts) sequences with "</s>"
    unk_token = UNK_TOKEN
    pad_token = PAD_TOKEN

    @property
    def bos_token_id(self) -> int:
        return self.encoder[BOS_TOKEN]

    @property
    def eos_token_id(self) -> int:
        return self.encoder[EOS_TOKEN]

    @property
    def sep_token_id(self) -> int:
        return self.encoder[EOS_TOKEN]

    @property
    def unk_token_id(self) -> int:
        return self.encoder[UNK_TOKEN]

    @property
    def pad_token_id(self) -> int:
        return self.encoder[PAD_TOKEN]

    @property
    def all_special_tokens(self) -> list[str]:
        return [BOS_TOKEN, EOS_TOKEN, UNK_TOKEN, PAD_TOKEN]  # Hugging Face's order

    @property
    def all_special_ids(self) -> list[int]:
        return [self.encoder[t] for t in self.all_special_tokens]

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        unk = self.unk_token_id
        if isinstance(tokens, str):
            return self.encoder.get(tokens, unk)
        return [self.encoder.get(t, unk) for t in tokens]

    def convert_ids_to_tokens(self, ids: Any, skip_special_tokens: bool = False) -> str | list[str]:
        """Ids (int, list or 1-D tensor) to vocabulary strings; unknown ids read as "<unk>"."""
        ids = _to_python(ids)
        if isinstance(ids, int):
            return self.decoder.get(ids, UNK_TOKEN)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self.decoder.get(int(i), UNK_TOKEN) for i in ids if int(i) not in skip]

    # ----- text to tokens -----

    def bpe(self, word: str) -> list[str]:
        """BPE pieces of one Moses word (cached; do not modify the returned list)."""
        pieces = self._bpe_cache.get(word)
        if pieces is None:
            pieces = bpe_merge(word, self.bpe_ranks)
            if len(word) <= _CACHE_MAX_WORD_LEN:
                if len(self._bpe_cache) >= _CACHE_MAX_ENTRIES:
                    self._bpe_cache.clear()  # simplest bound; refilling is cheap
                self._bpe_cache[word] = pieces
        return pieces

    def _moses_words(self, text: str) -> list[str]:
        return self._moses.tokenize(text, aggressive_dash_splits=True, return_str=False, escape=True)

    def tokenize(self, text: str) -> list[str]:
        """Text to vocabulary pieces, e.g. "COVID-19 is" -> ["COVID</w>", "@-@</w>", "19</w>", "is</w>"]."""
        pieces: list[str] = []
        for start, end, is_special in _split_on_special_tokens(text):
            if is_special:
                pieces.append(text[start:end])
            else:
                for word in self._moses_words(text[start:end]):
                    pieces.extend(self.bpe(word))
        return pieces

    def tokenize_with_offsets(self, text: str) -> tuple[list[str], list[tuple[int, int]]]:
        """`tokenize(text)` plus, for each piece, the [start, end) span of `text` it came from.

        A literal special token ("</s>") maps to its own span. A piece that holds part of an
        escaped character ("&apos;" for "'") covers all of that character, so when BPE cuts an
        escape in two, both pieces' spans include it: spans then overlap by that one character.
        """
        pieces: list[str] = []
        spans: list[tuple[int, int]] = []
        for start, end, is_special in _split_on_special_tokens(text):
            if is_special:
                pieces.append(text[start:end])
                spans.append((start, end))
                continue
            part = text[start:end]
            visible, positions = _without_deleted_chars(part)
            pos = 0
            for word in self._moses_words(part):
                char_starts, char_ends, pos = _align_word(word, visible, pos)
                i = 0
                word_pieces = self.bpe(word)
                for k, piece in enumerate(word_pieces):
                    j = i + len(piece) - (len(WORD_END) if k == len(word_pieces) - 1 else 0)
                    first, last = char_starts[i], char_ends[j - 1]
                    if positions is not None:  # back to positions in `part`, deleted chars included
                        first, last = positions[first], positions[last - 1] + 1
                    pieces.append(piece)
                    spans.append((start + first, start + last))
                    i = j
        return pieces, spans

    # ----- ids and batches -----

    def encode(
        self,
        text: str,
        add_special_tokens: bool = True,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        return_tensors: str | None = None,
    ) -> Any:
        """Ids of one text, with the leading "</s>" (id 2) unless add_special_tokens=False."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes one string, got {type(text).__name__}")
        encoding = self(
            text, add_special_tokens=add_special_tokens, truncation=truncation,
            max_length=max_length, return_tensors=return_tensors,
        )
        return encoding["input_ids"]

    def __call__(
        self,
        text: str | Sequence[str],
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
        return_offsets_mapping: bool = False,
    ) -> BatchEncoding:
        """Encode one text or a batch, with Hugging Face's meaning for every argument.

        padding: False | True/"longest" | "max_length" (to max_length, default model_max_length).
        truncation: True/"longest_first"/"only_first" keep the first max_length ids (counting the
        "</s>"); max_length alone also truncates. return_tensors: None, "pt" or "np".
        A single string gives flat lists (a batch of one with tensors); a list gives lists of lists.
        """
        is_batch = not isinstance(text, str)
        texts = list(text) if is_batch else [text]
        if not all(isinstance(t, str) for t in texts):
            raise TypeError("text must be a string or a list of strings")
        pad_to, truncate_to = self._padding_and_truncation(padding, truncation, max_length)

        rows = [self._encode_row(t, add_special_tokens, truncate_to, return_offsets_mapping) for t in texts]
        if pad_to == "longest":
            pad_to = max((len(ids) for ids, _ in rows), default=0)
        side = padding_side or self.padding_side
        if side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {side!r}")

        columns: dict[str, list] = {"input_ids": [], "attention_mask": [], "offset_mapping": []}
        for ids, spans in rows:
            missing = max(pad_to - len(ids), 0) if pad_to is not None else 0
            columns["input_ids"].append(_pad(ids, [self.pad_token_id] * missing, side))
            columns["attention_mask"].append(_pad([1] * len(ids), [0] * missing, side))
            if return_offsets_mapping:
                columns["offset_mapping"].append(_pad(spans, [(0, 0)] * missing, side))
        if not return_attention_mask:
            del columns["attention_mask"]
        if not return_offsets_mapping:
            del columns["offset_mapping"]

        if return_tensors is not None:
            return BatchEncoding({key: _as_tensor(value, return_tensors) for key, value in columns.items()})
        if not is_batch:
            return BatchEncoding({key: value[0] for key, value in columns.items()})
        return BatchEncoding(columns)

    def _padding_and_truncation(
        self, padding: bool | str, truncation: bool | str | None, max_length: int | None
    ) -> tuple[int | str | None, int | None]:
        """Hugging Face's rules -> (pad to: None | "longest" | a length, truncate to: None | a length)."""
        if max_length is not None and padding is False and truncation is None:
            truncation = True  # Hugging Face: max_length on its own means "truncate to it"
        limit = max_length if max_length is not None else self.model_max_length

        if padding in (False, "do_not_pad"):
            pad_to = None
        elif padding in (True, "longest"):
            pad_to = "longest"
        elif padding == "max_length":
            pad_to = limit
        else:
            raise ValueError(f"padding must be False, True, 'longest' or 'max_length', got {padding!r}")

        if truncation in (None, False, "do_not_truncate"):
            truncate_to = None
        elif truncation in (True, "longest_first", "only_first"):
            truncate_to = limit
        else:
            raise ValueError(f"truncation must be a bool, 'longest_first' or 'only_first', got {truncation!r}")
        return pad_to, truncate_to

    def _encode_row(
        self, text: str, add_special_tokens: bool, truncate_to: int | None, with_offsets: bool
    ) -> tuple[list[int], list[tuple[int, int]]]:
        if with_offsets:
            pieces, spans = self.tokenize_with_offsets(text)
        else:
            pieces, spans = self.tokenize(text), []
        ids = self.convert_tokens_to_ids(pieces)
        reserved = 1 if add_special_tokens else 0
        if truncate_to is not None and len(ids) + reserved > truncate_to:
            keep = max(truncate_to - reserved, 0)
            kept = slice(0, keep) if self.truncation_side == "right" else slice(len(ids) - keep, None)
            ids, spans = ids[kept], spans[kept]
        if add_special_tokens:
            ids, spans = [self.eos_token_id] + ids, [(0, 0)] + spans
        return ids, spans

    # ----- ids to text -----

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Join BPE pieces into words, then undo Moses (unescape, re-attach punctuation)."""
        words = "".join(t.replace(" ", "").replace(WORD_END, " ") for t in tokens).split()
        return self._detokenizer.detokenize(words)

    def decode(
        self, token_ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str | list[str]:
        """Ids (int, list, 1-D tensor) to text; a list of lists or a 2-D tensor gives a list of texts.

        Special tokens stay in the text unless skipped, glued to the next word as transformers
        does: decode(encode("COVID-19 is")) == "</s>COVID-19 is".
        """
        token_ids = _to_python(token_ids)
        if isinstance(token_ids, list) and token_ids and isinstance(token_ids[0], list):
            return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in token_ids]
        tokens = self.convert_ids_to_tokens(token_ids, skip_special_tokens=skip_special_tokens)
        text = self.convert_tokens_to_string([tokens] if isinstance(tokens, str) else tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return _clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(
        self, sequences: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        sequences = _to_python(sequences)
        if sequences and not isinstance(sequences[0], list):
            sequences = [sequences]  # one flat sequence: Hugging Face decodes it as a batch of one
        return [self.decode(ids, skip_special_tokens, clean_up_tokenization_spaces) for ids in sequences]

    def __repr__(self) -> str:
        return (
            f"BioGptTokenizer(name_or_path={self.name_or_path!r}, vocab_size={self.vocab_size}, "
            f"model_max_length={self.model_max_length}, padding_side={self.padding_side!r})"
        )


def _split_on_special_tokens(text: str) -> list[tuple[int, int, bool]]:
    """[start, end) parts of `text`, each flagged whether it is a literal special token."""
    parts = []
    pos = 0
    for match in _SPECIAL_TOKEN_RE.finditer(text):
        if match.start() > pos:
            parts.append((pos, match.start(), False))
        parts.append((match.start(), match.end(), True))
        pos = match.end()
    if pos < len(text):
        parts.append((pos, len(text), False))
    return parts


def _pad(values: list, padding: list, side: str) -> list:
    return values + padding if side == "right" else padding + values


def _to_python(ids: Any) -> Any:
    """Tensors and arrays to (nested) lists of ints; lists and ints pass through."""
    return ids.tolist() if hasattr(ids, "tolist") else ids


def _as_tensor(rows: list[list], kind: str) -> Any:
    if len({len(row) for row in rows}) > 1:
        raise ValueError("sequences have different lengths; pass padding=True to return tensors")
    if kind == "pt":
        import torch

        return torch.tensor(rows, dtype=torch.long)
    if kind == "np":
        import numpy as np

        return np.array(rows, dtype=np.int64)
    raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {kind!r}")


def _clean_up_tokenization(text: str) -> str:
    """Hugging Face's optional post-decoding clean-up (off by default for BioGPT)."""
    for before, after in ((" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"),
                          (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")):
        text = text.replace(before, after)
    return text


# --------------------------------------------------------------------------------------------
# Many texts at once (optionally in worker processes: sacremoses is pure Python)
# --------------------------------------------------------------------------------------------

_WORKER_TOKENIZER = None


def _encode_one(job: tuple[str, bool]):
    text, with_offsets = job
    tokenizer = _WORKER_TOKENIZER
    if not with_offsets:
        return list(tokenizer.encode(text))
    if hasattr(tokenizer, "tokenize_with_offsets"):
        pieces, spans = tokenizer.tokenize_with_offsets(text)
        ids = list(tokenizer.convert_tokens_to_ids(pieces))
    else:
        encoded = tokenizer(text, return_offsets_mapping=True)
        ids, spans = list(encoded["input_ids"]), [tuple(s) for s in encoded["offset_mapping"]]
        pieces = tokenizer.convert_ids_to_tokens(ids)
    keep = [i for i, (start, end) in enumerate(spans) if end > start]  # drop "</s>" and other zero-width specials
    return [ids[i] for i in keep], [pieces[i] for i in keep], [tuple(spans[i]) for i in keep]


def tokenize_all(tokenizer, texts: list[str], with_offsets: bool = False, workers: int = 1) -> list:
    """encode(text) for each text (with the leading "</s>"), or (ids, pieces, spans) without specials."""
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer
    jobs = [(t, with_offsets) for t in texts]
    if workers > 1 and len(texts) >= 200:
        import multiprocessing

        try:
            context = multiprocessing.get_context("fork")
        except ValueError:
            context = None
        if context is not None:
            with context.Pool(workers) as pool:
                return pool.map(_encode_one, jobs, chunksize=max(1, len(jobs) // (workers * 8)))
    return [_encode_one(job) for job in jobs]
