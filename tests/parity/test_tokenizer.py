"""biogpt.tokenizer against transformers' slow BioGptTokenizer (the oracle), plus offsets,
batching, bad input and speed.

The default tests use a fixed ~300-text subset of ../shared/data; `-m full` sweeps every text.
"""

from __future__ import annotations

import json
import pickle
import random
import re
import time
from functools import cache
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import transformers

from biogpt.tokenizer import BioGptTokenizer, bpe_merge

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data"
TOKENIZER_DIRS = {"biogpt": REPO / "assets/tokenizers/biogpt", "biogpt-large": REPO / "assets/tokenizers/biogpt-large"}
SPECIAL_TOKENS = {"<s>", "<pad>", "</s>", "<unk>"}

NASTY_TEXTS = [
    "COVID-19 is",
    "",
    "   \t\n  ",
    "1.5-2.0 mg/kg (n = 3) [ref 4] vs. 10,000 and 5,3 or 2,a; p<0.05, p>0.1 & q|r",
    "\"quoted\" 'single' it's John's don't can't O'Neil 5' UTR 3'-end ''twice''",
    "&amp; &lt; &gt; &apos; &quot; &#124; &#91; &#93; & < > ' \" | [ ]",
    "a </s> b<s>c<unk>  <pad></s></s><<s>></s</s>> <s/>",
    "</s>",
    "e.g. i.e. U.S.A. Dr. Smith et al. Fig. 2a. No. 5 pp. 3-4.",
    "well-known anti-TNF-alpha IL-6-mediated -- dash—em – en ‐ hyphen - alone a-",
    "... a...b .. x.. ..y ....",
    "DOTMULTI xDOTDOTMULTIy DOTDOT MULTI DOT.. DOTDOTDOTMULTI.",
    "e\u0301 cafe\u0301 na\u0308ive 😀 👩‍🔬 emoji ✓ °C µg ±5 ≥ 3 ½",
    "a\u00a0b\u2009c\u3000d\u202fe\u200bf\u2028g\x85h\x1ci",
    "ctrl\x01chars\x02 inside\x7f and \x00 nul \x1b[31m",
    "lone \ud800 surrogate \udfff",
    "α-synuclein β2-adrenergic γ-secretase Ω 中文 テスト",
    "$5 €3 £2 ¥1 5% #tag @user http://example.com/a-b?c=d&e=f user@example.org",
    "(((nested))) {braces} [[brackets]] <tag attr=\"x\">",
    "Question? Answer! Really?! Yes.",
    "x" * 300,
    "A" + "-B" * 50,
]

# Fragments the fuzz test strings are built from: every rule of Moses and of the offset mapping.
FUZZ_FRAGMENTS = [
    "a", "b", "Z", "1", "2", "e", "s", ".", "..", ",", "-", "--", "@", "@-@", "&", "&amp;", "amp;", "<", ">",
    "'", "\"", "|", "[", "]", "(", ")", "/", ":", ";", "?", "!", "%", "$", "€", "`", "``", " ", "  ", "\t",
    "\n", "\x01", "\x1c", "\x7f", "\x85", "\u00a0", "\u2028", "\u200b", "é", "e\u0301", "😀", "\ud800",
    "DOT", "MULTI", "DOTMULTI", "</s>", "<s>", "<unk>", "<pad>", "n't", "'s", "e.g.", "Dr.", "U.S.", "中文",
]


# ----- data and tokenizers -----


def _lines(path: Path) -> list[str]:
    # split("\n"), not splitlines(): one PubMedQA row holds a unicode line separator.
    return [line for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]


@cache
def data_sources() -> dict[str, list[str]]:
    """Every text in ../shared/data, by source."""
    docs = [json.loads(line) for line in _lines(DATA / "pubmed-corpus/pubmed_docs.jsonl")]
    return {
        "bc5cdr": [json.loads(line)["text"] for f in sorted((DATA / "BC5CDR").glob("ner_spans_*.jsonl")) for line in _lines(f)],
        "hoc": [line.split("\t")[0] for f in ("train.tsv", "test.tsv") for line in _lines(DATA / "HoC" / f)],
        "pubmedqa": [line.split("\t")[0]
                     for f in ("train.tsv", "valid.tsv", "test.tsv") for line in _lines(DATA / "PubMedQA" / f)],
        "ddi_kd_dti": [
            " ".join(filter(None, [doc.get("title"), doc["abstract"]]))
            for folder in ("DDI", "KD-DTI")
            for f in sorted((DATA / folder).glob("*.json"))
            for doc in json.loads(f.read_text(encoding="utf-8")).values()
        ],
        "pubmed_docs": [doc["title"] + " " + doc["abstract"] for doc in docs],
        "hoc_sentences": _lines(DATA / "pubmed-corpus/hoc_sentences.txt"),
        "ddi_drugbank": _lines(DATA / "pubmed-corpus/ddi_drugbank.txt"),
    }


@cache
def all_texts() -> list[str]:
    return list(dict.fromkeys(text for texts in data_sources().values() for text in texts))


@cache
def subset_texts(per_source: int = 43) -> list[str]:
    """~300 texts: evenly spaced picks from each source."""
    picked = []
    for texts in data_sources().values():
        step = max(len(texts) // per_source, 1)
        picked += texts[::step][:per_source]
    return picked


@cache
def ours(name: str) -> BioGptTokenizer:
    return BioGptTokenizer(TOKENIZER_DIRS[name] / "vocab.json", TOKENIZER_DIRS[name] / "merges.txt")


@cache
def oracle(name: str) -> transformers.BioGptTokenizer:
    folder = TOKENIZER_DIRS[name]
    return transformers.BioGptTokenizer(vocab_file=str(folder / "vocab.json"), merges_file=str(folder / "merges.txt"))


def assert_same_as_transformers(name: str, texts: list[str], compare_pieces: bool = True) -> None:
    """Same ids, same pieces (unless skipped to save time) and same decoded text both ways."""
    mine, theirs = ours(name), oracle(name)
    for text in texts:
        expected = theirs.encode(text)
        assert mine.encode(text) == expected, text
        if compare_pieces:
            assert mine.tokenize(text) == theirs.tokenize(text), text
        for skip in (False, True):
            assert mine.decode(expected, skip_special_tokens=skip) == theirs.decode(expected, skip_special_tokens=skip), text


# ----- offsets: the invariants every mapping must satisfy -----

_DELETED_BY_MOSES = re.compile("[" + "".join(chr(c) for c in range(32) if not chr(c).isspace()) + "]")
_MULTIDOT_MARKER = re.compile(r"(?:DOT)+MULTI")
_ENTITIES = {"&amp;": "&", "&#124;": "|", "&lt;": "<", "&gt;": ">", "&apos;": "'", "&quot;": '"', "&#91;": "[", "&#93;": "]"}
_ENTITY = re.compile("|".join(map(re.escape, _ENTITIES)))
ESCAPED_BY_MOSES = set(_ENTITIES.values())


def moses_view(surface: str) -> str:
    """The original text as Moses turns it into words: control characters gone, DOT..MULTI -> dots."""
    surface = _DELETED_BY_MOSES.sub("", surface)
    return _MULTIDOT_MARKER.sub(lambda m: "." * ((len(m.group()) - 5) // 3), surface)


def unescape(word: str) -> str:
    return "-" if word == "@-@" else _ENTITY.sub(lambda m: _ENTITIES[m.group()], word)


def assert_offsets_valid(tok: BioGptTokenizer, text: str) -> None:
    """Spans are non-empty and ordered, and overlap only by one escaped character that BPE cut in
    two; each word's span reads back as the word; unescaped pieces read back exactly; everything
    left uncovered is whitespace or a deleted control character."""
    pieces, spans = tok.tokenize_with_offsets(text)
    assert pieces == tok.tokenize(text)
    assert tok(text, return_offsets_mapping=True)["offset_mapping"] == [(0, 0)] + spans
    covered = [False] * len(text)
    previous_start = previous_end = 0
    word_pieces: list[str] = []
    word_spans: list[tuple[int, int]] = []
    for piece, (start, end) in zip(pieces, spans):
        assert 0 <= start < end <= len(text), (text, piece, start, end)
        assert start >= previous_start and end >= previous_end, (text, piece)
        if start < previous_end:
            assert previous_end - start == 1 and text[start] in ESCAPED_BY_MOSES, (text, piece)
        previous_start, previous_end = start, end
        covered[start:end] = [True] * (end - start)
        if piece in SPECIAL_TOKENS:
            assert text[start:end] == piece
            continue
        word_pieces.append(piece)
        word_spans.append((start, end))
        if piece.endswith("</w>"):
            word = "".join(word_pieces)[: -len("</w>")]
            surface = text[word_spans[0][0] : word_spans[-1][1]]
            assert moses_view(surface) == unescape(word), (text, word)
            if "&" not in word and word != "@-@" and not _MULTIDOT_MARKER.search(surface):
                for word_piece, (s, e) in zip(word_pieces, word_spans):
                    assert moses_view(text[s:e]) == word_piece.removesuffix("</w>"), (text, word_piece)
            word_pieces, word_spans = [], []
    assert not word_pieces
    for i, is_covered in enumerate(covered):
        assert is_covered or text[i].isspace() or _DELETED_BY_MOSES.match(text[i]), (text, i)


# ----- parity with transformers -----


def test_known_ids():
    assert ours("biogpt").encode("COVID-19 is") == [2, 4805, 9, 656, 21]


@pytest.mark.parametrize("name", TOKENIZER_DIRS)
def test_same_as_transformers_on_data_subset(name):
    texts = subset_texts()
    assert 280 <= len(texts) <= 320
    assert_same_as_transformers(name, texts)


@pytest.mark.parametrize("name", TOKENIZER_DIRS)
def test_same_as_transformers_on_nasty_texts(name):
    assert_same_as_transformers(name, NASTY_TEXTS)


def fuzz_texts(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choices(FUZZ_FRAGMENTS, k=rng.randint(1, 25))) for _ in range(count)]


def test_same_as_transformers_on_fuzz_texts():
    assert_same_as_transformers("biogpt", fuzz_texts(1500))


def test_decode_same_as_transformers_on_random_ids():
    mine, theirs = ours("biogpt"), oracle("biogpt")
    rng = random.Random(1)
    for _ in range(300):
        ids = [rng.choice([0, 1, 2, 3, rng.randrange(mine.vocab_size)]) for _ in range(rng.randint(0, 30))]
        for skip in (False, True):
            for clean in (None, True):
                assert mine.decode(ids, skip, clean) == theirs.decode(ids, skip_special_tokens=skip,
                                                                      clean_up_tokenization_spaces=clean)


def hf_bpe(word: str, ranks: dict) -> list[str]:
    """transformers' own bpe() on any merge table."""
    return transformers.BioGptTokenizer.bpe(SimpleNamespace(bpe_ranks=ranks, cache={}), word).split(" ")


@pytest.mark.parametrize("alphabet", ["ab", "aeinst", "etaoinshrdlu0123.-"])
def test_bpe_same_as_transformers_with_real_merges(alphabet):
    ranks = ours("biogpt").bpe_ranks
    rng = random.Random(alphabet)
    for _ in range(600):
        word = "".join(rng.choices(alphabet, k=rng.randint(1, 60)))
        assert bpe_merge(word, ranks) == hf_bpe(word, ranks), word


def random_merge_table(rng: random.Random, alphabet: str, count: int, shuffle_ranks: bool) -> dict:
    """Merges whose parts exist; shuffled ranks allow a merge to outrank the merges that build its parts."""
    inner, final = list(alphabet), [c + "</w>" for c in alphabet]
    merges: list[tuple[str, str]] = []
    while len(merges) < count:
        pair = (rng.choice(inner), rng.choice(inner + final))
        if pair not in merges:
            merges.append(pair)
            (final if pair[1].endswith("</w>") else inner).append(pair[0] + pair[1])
    if shuffle_ranks:
        rng.shuffle(merges)
    return {pair: rank for rank, pair in enumerate(merges)}


@pytest.mark.parametrize("shuffle_ranks", [False, True])
def test_bpe_same_as_transformers_with_synthetic_merges(shuffle_ranks):
    rng = random.Random(7)
    for _ in range(60):
        alphabet = rng.choice(["ab", "abc", "abcd"])
        ranks = random_merge_table(rng, alphabet, rng.randint(1, 40), shuffle_ranks)
        for _ in range(40):
            word = "".join(rng.choices(alphabet, k=rng.randint(1, 40)))
            assert bpe_merge(word, ranks) == hf_bpe(word, ranks), (word, ranks)


def test_bpe_finishes_a_round_before_lower_ranked_new_pairs():
    # (ab, a) outranks (a, b) but only exists after the (a, b) round, which merges both "ab"s first.
    ranks = {("ab", "a"): 0, ("a", "b"): 1}
    assert bpe_merge("ababc", ranks) == hf_bpe("ababc", ranks) == ["ab", "ab", "c</w>"]


# ----- offsets -----


@pytest.mark.parametrize("name", TOKENIZER_DIRS)
def test_offsets_on_data_subset_and_nasty_texts(name):
    for text in subset_texts() + NASTY_TEXTS:
        assert_offsets_valid(ours(name), text)


def test_offsets_on_fuzz_texts():
    for text in fuzz_texts(1500, seed=2):
        assert_offsets_valid(ours("biogpt"), text)


def test_offsets_of_escaped_and_split_characters():
    tok = ours("biogpt")
    text = 'a & b-c "d" x\x01y'
    pieces, spans = tok.tokenize_with_offsets(text)
    surfaces = {piece: text[s:e] for piece, (s, e) in zip(pieces, spans)}
    assert surfaces["&amp;</w>"] == "&"
    assert surfaces["@-@</w>"] == "-"
    assert surfaces["&quot;</w>"] == '"'
    assert surfaces["xy</w>"] == "x\x01y"
    assert tok("a </s> b", return_offsets_mapping=True)["offset_mapping"] == [(0, 0), (0, 1), (2, 6), (7, 8)]


def test_offsets_align_with_bc5cdr_entities():
    tok = ours("biogpt")
    docs = [json.loads(line) for line in _lines(DATA / "BC5CDR/ner_spans_test.jsonl")[:30]]
    aligned = total = 0
    for doc in docs:
        spans = tok(doc["text"], return_offsets_mapping=True)["offset_mapping"][1:]
        starts, ends = {s for s, _ in spans}, {e for _, e in spans}
        for entity in doc["entities"]:
            total += 1
            aligned += entity["start"] in starts and entity["end"] in ends
            piece_text = "".join(doc["text"][s:e] for s, e in spans if entity["start"] <= s and e <= entity["end"])
            assert piece_text.replace(" ", "") in entity["text"].replace(" ", "")
    assert total > 500 and aligned / total > 0.95


# ----- batches -----


BATCH = ["COVID-19 is", "The patient received 5 mg of aspirin daily .", "", "a </s> b"]


@pytest.mark.filterwarnings("ignore:`max_length` is ignored")  # transformers' note on padding=True + max_length
@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"padding": True},
        {"padding": "longest", "padding_side": "left"},
        {"padding": "max_length", "max_length": 14},
        {"truncation": True, "max_length": 4},
        {"max_length": 3},
        {"padding": True, "truncation": True, "max_length": 5},
        {"padding": True, "max_length": 5},
        {"truncation": "longest_first", "max_length": 1},
        {"add_special_tokens": False, "padding": True},
    ],
)
def test_call_same_as_transformers(kwargs):
    mine, theirs = ours("biogpt"), oracle("biogpt")
    assert dict(mine(BATCH, **kwargs)) == dict(theirs(BATCH, **kwargs))
    assert dict(mine(BATCH[1], **kwargs)) == dict(theirs(BATCH[1], **kwargs))
    if kwargs.get("padding") or len(set(map(len, theirs(BATCH, **kwargs)["input_ids"]))) == 1:
        expected = theirs(BATCH, return_tensors="pt", **kwargs)
        got = mine(BATCH, return_tensors="pt", **kwargs)
        assert got.input_ids.dtype == torch.long
        assert torch.equal(got.input_ids, expected["input_ids"]) and torch.equal(got.attention_mask, expected["attention_mask"])


def test_left_truncation_same_as_transformers():
    mine, theirs = BioGptTokenizer.from_pretrained("bundled", truncation_side="left"), oracle("biogpt")
    theirs.truncation_side = "left"
    try:
        assert dict(mine(BATCH, max_length=3)) == dict(theirs(BATCH, max_length=3))
    finally:
        theirs.truncation_side = "right"


def test_padding_and_offsets_together():
    tok = ours("biogpt")
    enc = tok(BATCH, padding=True, padding_side="left", return_offsets_mapping=True, return_tensors="pt")
    assert enc.offset_mapping.shape == (*enc.input_ids.shape, 2)
    pads = enc.attention_mask == 0
    assert (enc.input_ids[pads] == tok.pad_token_id).all() and (enc.offset_mapping[pads] == 0).all()
    assert (enc.input_ids[:, -1] != tok.pad_token_id).all()  # left padding: real tokens end every row
    single = tok(BATCH[1], return_offsets_mapping=True)
    assert single["offset_mapping"] == [tuple(span) for span in enc.offset_mapping[1, -len(single["input_ids"]) :].tolist()]
    with pytest.raises(ValueError):
        tok(BATCH, return_tensors="pt")  # ragged without padding


def test_model_max_length_and_truncation_default():
    tok = BioGptTokenizer.from_pretrained("bundled")
    assert tok.model_max_length == 1024
    ids = tok("word " * 3000, truncation=True)["input_ids"]
    assert len(ids) == 1024 and ids[0] == 2
    assert len(tok("word " * 10, padding="max_length")["input_ids"]) == 1024


def test_decode_accepts_tensors_and_batches():
    tok = ours("biogpt")
    ids = tok.encode("COVID-19 is")
    assert tok.decode(ids) == "</s>COVID-19 is"
    assert tok.decode(torch.tensor(ids), skip_special_tokens=True) == "COVID-19 is"
    batch = tok(["COVID-19 is", "a"], padding=True, return_tensors="pt").input_ids
    assert tok.batch_decode(batch, skip_special_tokens=True) == ["COVID-19 is", "a"]
    assert tok.decode(batch, skip_special_tokens=True) == ["COVID-19 is", "a"]
    assert tok.convert_ids_to_tokens(torch.tensor(ids)) == ["</s>", "COVID</w>", "@-@</w>", "19</w>", "is</w>"]
    assert tok.convert_ids_to_tokens(4805) == "COVID</w>"
    assert tok.convert_ids_to_tokens([2, 4805, 1], skip_special_tokens=True) == ["COVID</w>"]
    assert tok.convert_tokens_to_ids(["COVID</w>", "no-such-piece"]) == [4805, 3]


def test_special_token_properties():
    tok = ours("biogpt")
    assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, tok.unk_token_id, tok.sep_token_id) == (0, 1, 2, 3, 2)
    assert tok.all_special_ids == oracle("biogpt").all_special_ids
    assert tok.vocab_size == len(tok) == 42384 and ours("biogpt-large").vocab_size == 57717
    assert tok.encode("COVID-19 is", return_tensors="pt").shape == (1, 5)


# ----- bad input -----


def test_bad_input_does_not_crash():
    tok = ours("biogpt")
    assert tok.encode("") == [2] and tok.encode(" \n\t\u00a0") == [2]
    assert tok.encode("\ud800") == [2, 3]  # a lone surrogate is kept and is <unk>, as in transformers
    assert tok.decode(tok.encode("😀")) == "</s><unk>"
    assert tok.tokenize("a\x00\x01b") == ["ab</w>"]
    assert tok("", return_offsets_mapping=True) == {"input_ids": [2], "attention_mask": [1], "offset_mapping": [(0, 0)]}
    assert tok([], padding=True) == {"input_ids": [], "attention_mask": []}
    with pytest.raises(TypeError):
        tok([1, 2, 3])


def test_long_word_is_fast():
    rng = random.Random(3)
    word = "".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=200_000))
    tok = ours("biogpt")
    started = time.perf_counter()
    pieces = tok.tokenize(word)
    assert time.perf_counter() - started < 3.0
    assert "".join(pieces) == word + "</w>"
    assert len(tok(word, return_offsets_mapping=True)["offset_mapping"]) == len(pieces) + 1


def _seconds_to_encode(text: str) -> float:
    """Best of two runs (the machine is shared), each with a cold BPE cache."""
    times = []
    for _ in range(2):
        tok = BioGptTokenizer.from_pretrained("bundled")
        started = time.perf_counter()
        tok(text, return_offsets_mapping=True)
        times.append(time.perf_counter() - started)
    return min(times)


@pytest.mark.parametrize("kind", ["abstracts", "abbreviations"])
def test_one_megabyte_text_is_linear(kind):
    if kind == "abstracts":
        text = " ".join(all_texts())[:1_000_000]
    else:  # the words ending in "." that made sacremoses slow, and other Moses rules
        text = ("a.b. e.g. x-y &amp; (1,2) ... don't \"q\" Dr. Smith " * 25_000)[:1_000_000]
    half, full = _seconds_to_encode(text[:500_000]), _seconds_to_encode(text)
    assert full < 20 and full < 3 * half + 0.5, (half, full)


# ----- loading and saving -----


def test_save_pretrained_loads_in_transformers(tmp_path):
    mine = ours("biogpt-large")
    mine.save_pretrained(tmp_path / "ours")
    theirs = transformers.BioGptTokenizer.from_pretrained(tmp_path / "ours")
    assert theirs.model_max_length == 1024
    for text in subset_texts()[::10] + NASTY_TEXTS:
        assert theirs.encode(text) == mine.encode(text)
    oracle("biogpt-large").save_pretrained(tmp_path / "theirs")
    for file in ("vocab.json", "merges.txt"):
        assert (tmp_path / "ours" / file).read_bytes() == (tmp_path / "theirs" / file).read_bytes()
    again = BioGptTokenizer.from_pretrained(tmp_path / "ours")
    assert again.encode(NASTY_TEXTS[3]) == mine.encode(NASTY_TEXTS[3])


def test_from_pretrained_names(monkeypatch):
    assert BioGptTokenizer.from_pretrained("bundled").vocab_size == 42384
    assert BioGptTokenizer.from_pretrained("bundled-tokenizer-large").vocab_size == 57717
    assert BioGptTokenizer.from_pretrained(str(TOKENIZER_DIRS["biogpt"])).encode("COVID-19 is") == [2, 4805, 9, 656, 21]

    import biogpt.hub

    calls = []

    def fake_resolve(name_or_path, allow_patterns):
        calls.append((name_or_path, allow_patterns))
        return TOKENIZER_DIRS["biogpt"]

    monkeypatch.setattr(biogpt.hub, "resolve_model_dir", fake_resolve)
    tok = BioGptTokenizer.from_pretrained("microsoft/biogpt")
    assert tok.name_or_path == "microsoft/biogpt" and tok.model_max_length == 1024
    assert calls == [("microsoft/biogpt", ["vocab.json", "merges.txt", "tokenizer_config.json"])]


def test_pickles():
    tok = ours("biogpt")
    assert pickle.loads(pickle.dumps(tok)).encode(NASTY_TEXTS[3]) == tok.encode(NASTY_TEXTS[3])


# ----- the full sweep (CI) -----


@pytest.mark.full
@pytest.mark.parametrize("name", TOKENIZER_DIRS)
def test_full_sweep_same_as_transformers(name):
    texts = all_texts()
    assert len(texts) > 20_000
    assert_same_as_transformers(name, texts, compare_pieces=False)


@pytest.mark.full
def test_full_sweep_offsets():
    for text in all_texts():
        assert_offsets_valid(ours("biogpt"), text)
