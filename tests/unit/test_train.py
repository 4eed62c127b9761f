"""The training CLI (`python -m biogpt.train lm|ner|classify`): end to end on tiny models and data,
BIO alignment, strict span F1, bad data, resume, and the test-split guard.

Every run uses a 2-layer, 32-wide BioGPT with the real 42,384-token tokenizer, a few steps on
CPU: seconds each.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import biogpt
from biogpt import ner as N
from biogpt import train as T
from biogpt.tokenizer import BioGptTokenizer
from testkit import DATA, REPO
from tests.helpers import max_diff

TINY = ["--layers", "2", "--hidden", "32", "--heads", "2", "--intermediate", "64", "--max-positions", "96",
        "--device", "cpu", "--workers", "1", "--progress", "lines"]


@pytest.fixture(scope="module")
def tokenizer():
    return BioGptTokenizer.from_pretrained(REPO / "assets" / "tokenizers" / "biogpt")


# ------------------------------------------------------------------------------------------
# tiny data sets
# ------------------------------------------------------------------------------------------

NER_DOCS = [
    ("1", "Naloxone reverses the antihypertensive effect of clonidine.", [(0, 8, "Chemical"), (49, 58, "Chemical")]),
    ("2", "Cocaine-induced seizures were treated with diazepam in rats.",
     [(0, 7, "Chemical"), (16, 24, "Disease"), (43, 51, "Chemical")]),
    ("3", "Lithium toxicity caused renal failure and hypothyroidism.",
     [(0, 7, "Chemical"), (24, 37, "Disease"), (42, 56, "Disease")]),
    ("4", "Haloperidol induced tardive dyskinesia in two patients.", [(0, 11, "Chemical"), (20, 38, "Disease")]),
    ("5", "Acute renal failure after cisplatin therapy was reversible.", [(0, 19, "Disease"), (26, 35, "Chemical")]),
    ("6", "Heparin-induced thrombocytopenia is a serious complication.", [(0, 7, "Chemical"), (16, 32, "Disease")]),
    ("7", "We report hepatotoxicity associated with amiodarone.", [(10, 24, "Disease"), (41, 51, "Chemical")]),
    ("8", "Morphine and ketamine reduced pain after surgery.", [(0, 8, "Chemical"), (13, 21, "Chemical"), (30, 34, "Disease")]),
]


def write_ner(path, docs):
    with open(path, "w") as f:
        for pmid, text, entities in docs:
            ents = [{"start": s, "end": e, "type": t, "mention": text[s:e]} for s, e, t in entities]
            f.write(json.dumps({"pmid": pmid, "text": text, "entities": ents}) + "\n")
    return path


@pytest.fixture
def ner_files(tmp_path):
    return (write_ner(tmp_path / "ner_train.jsonl", NER_DOCS[:6]), write_ner(tmp_path / "ner_dev.jsonl", NER_DOCS[6:7]),
            write_ner(tmp_path / "ner_test.jsonl", NER_DOCS[7:]))


@pytest.fixture
def lm_files(tmp_path):
    jsonl = tmp_path / "docs.jsonl"
    with open(jsonl, "w") as f:
        for i, (_, text, _) in enumerate(NER_DOCS * 3):
            f.write(json.dumps({"id": str(i), "title": f"Study {i} &gt; review.", "abstract": text}) + "\n")
    txt = tmp_path / "sentences.txt"
    txt.write_text("\n".join(f"Sentence number {i} about aspirin and pain ." for i in range(30)) + "\n")
    test = tmp_path / "heldout_test.jsonl"
    test.write_text(json.dumps({"text": "Aspirin reduced fever in children."}) + "\n")
    return jsonl, txt, test


SINGLE = [("question: does aspirin help? context: it reduced pain in most patients", "yes"),
          ("question: does sugar cure cancer? context: no effect was seen", "no"),
          ("question: is the drug safe? context: results were mixed", "maybe")]
MULTI = [("Tumour cells evade apoptosis .", "resisting cell death"),
         ("Angiogenesis supports growth .", "inducing angiogenesis|sustaining proliferative signaling"),
         ("The weather was fine .", "empty"),
         ("Cells proliferate without limit .", "sustaining proliferative signaling")]


def write_tsv(path, rows, repeat=1):
    path.write_text("".join(f"{t} {i}\t{label}\n" for i in range(repeat) for t, label in rows))
    return path


# ------------------------------------------------------------------------------------------
# BIO alignment through the tokenizer's offsets
# ------------------------------------------------------------------------------------------


def words_of(tokenizer, text):
    (enc,) = N.encode_ner_documents(tokenizer, [text])
    return enc.words


def word_texts(text, words):
    return [text[w[2]:w[3]] for w in words]


def test_words_follow_moses_and_bpe(tokenizer):
    text = "alpha-methyldopa [3H]-naloxone R&D"
    words = words_of(tokenizer, text)
    # Moses splits "alpha-methyldopa" at the dash (aggressive dash splits), keeps "-naloxone" whole,
    # and the BPE pieces "methyl" + "dopa</w>" form one word.
    assert word_texts(text, words) == ["alpha", "-", "methyldopa", "[", "3H", "]", "-naloxone", "R", "&", "D"]
    methyldopa = words[2]
    assert methyldopa[1] - methyldopa[0] == 2  # two pieces


def test_bio_tags_hand_made(tokenizer):
    text = "Cocaine-induced acute renal failure and alpha-methyldopa, hepatitis C."
    entities = [(0, 7, "Chemical"), (16, 35, "Disease"), (40, 56, "Chemical"), (58, 69, "Disease")]
    words = words_of(tokenizer, text)
    tags = N.bio_tags(words, entities)
    got = list(zip(word_texts(text, words), tags))
    assert got == [
        ("Cocaine", "B-Chemical"), ("-", "O"), ("induced", "O"),
        ("acute", "B-Disease"), ("renal", "I-Disease"), ("failure", "I-Disease"), ("and", "O"),
        ("alpha", "B-Chemical"), ("-", "I-Chemical"), ("methyldopa", "I-Chemical"), (",", "O"),
        # Moses keeps "C." together: the entity ends inside a word and the word takes its tag.
        ("hepatitis", "B-Disease"), ("C.", "I-Disease"),
    ]
    spans = N.tags_to_spans(words, tags)
    assert spans[:3] == entities[:3]
    assert spans[3] == (58, 70, "Disease")  # not recoverable: ends mid-word ("C.")


def test_adjacent_entities_of_the_same_type_stay_apart(tokenizer):
    text = "Diazepam clonazepam lorazepam"
    entities = [(0, 8, "Chemical"), (9, 19, "Chemical"), (20, 29, "Chemical")]
    words = words_of(tokenizer, text)
    tags = N.bio_tags(words, entities)
    assert tags == ["B-Chemical"] * 3
    assert N.tags_to_spans(words, tags) == entities


def test_entity_inside_a_word_takes_the_word(tokenizer):
    text = "TNFalpha levels rose"
    words = words_of(tokenizer, text)
    tags = N.bio_tags(words, [(0, 3, "Chemical")])
    assert tags[0] == "B-Chemical" and tags[1:] == ["O", "O"]
    assert N.tags_to_spans(words, tags) == [(0, 8, "Chemical")]


def test_invalid_bio_sequences_decode_leniently():
    words = [(0, 1, 0, 3), (1, 2, 4, 7), (2, 3, 8, 11), (3, 4, 12, 15)]
    assert N.tags_to_spans(words, ["I-Disease", "I-Disease", "I-Chemical", "O"]) == [(0, 7, "Disease"), (8, 11, "Chemical")]
    assert N.tags_to_spans(words, ["B-Disease", "B-Disease", "O", "I-Disease"]) == [(0, 3, "Disease"), (4, 7, "Disease"),
                                                                                     (12, 15, "Disease")]
    assert N.tags_to_spans(words, ["LABEL_1", "LABEL_1", "O", "LABEL_2"]) == [(0, 7, "LABEL_1"), (12, 15, "LABEL_2")]


def test_label_piece_first_or_last(tokenizer):
    text = "methyldopa"
    (enc,) = N.encode_ner_documents(tokenizer, [text])
    (word,) = enc.words
    assert N.label_piece(word, "first") == 0 and N.label_piece(word, "last") == 1


# ------------------------------------------------------------------------------------------
# strict span F1 against hand computation; windows
# ------------------------------------------------------------------------------------------


def test_span_scores_by_hand():
    gold = [{(0, 5, "Chemical"), (10, 20, "Disease"), (30, 35, "Chemical")}, {(0, 4, "Disease")}]
    pred = [{(0, 5, "Chemical"), (10, 19, "Disease"), (30, 35, "Disease")}, {(0, 4, "Disease"), (6, 9, "Chemical")}]
    scores = N.span_scores(gold, pred, ["Chemical", "Disease"])
    # Chemical: tp 1 (0-5), fp 1 (6-9), fn 1 (30-35). Disease: tp 1 (0-4), fp 2 (10-19, 30-35 typed wrong), fn 1 (10-20).
    chem, dis = scores["per_type"]["Chemical"], scores["per_type"]["Disease"]
    assert (chem["tp"], chem["fp"], chem["fn"]) == (1, 1, 1)
    assert (dis["tp"], dis["fp"], dis["fn"]) == (1, 2, 1)
    assert chem["f1"] == pytest.approx(0.5)
    assert dis["precision"] == pytest.approx(1 / 3) and dis["recall"] == pytest.approx(0.5)
    assert dis["f1"] == pytest.approx(0.4)
    micro = scores["micro"]
    assert micro["precision"] == pytest.approx(2 / 5) and micro["recall"] == pytest.approx(2 / 4)
    assert micro["f1"] == pytest.approx(2 * 0.4 * 0.5 / 0.9)
    assert scores["macro_f1"] == pytest.approx(0.45)


def test_window_starts():
    assert N.window_starts(5, 10, 5) == [0]
    assert N.window_starts(25, 10, 5) == [0, 5, 10, 15]
    assert N.window_starts(23, 10, 5) == [0, 5, 10, 13]
    assert N.ner_row([7, 8], 2, doubled=True) == ([2, 7, 8, 2, 7, 8], 4)
    assert N.ner_row([7, 8], 2, doubled=False) == ([2, 7, 8], 1)


class OracleTagger(torch.nn.Module):
    """Answers each row with one-hot logits of its gold labels: checks windows, copies and decoding."""

    def __init__(self, rows, num_labels):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = biogpt.BioGptConfig(hidden_size=8, num_attention_heads=1, id2label={i: str(i) for i in range(num_labels)})
        self.answers = {tuple(r["ids"]): r["labels"] for r in rows}

    @property
    def device(self):
        return torch.device("cpu")

    def forward(self, input_ids):
        out = torch.zeros(*input_ids.shape, self.config.num_labels)
        for b, row in enumerate(input_ids.tolist()):
            while row and row[-1] == 1:
                row.pop()
            labels = self.answers[tuple(row)]
            for i, label in enumerate(labels):
                out[b, i, max(label, 0)] = 10.0
        return biogpt.ModelOutput(logits=out)


@pytest.mark.parametrize("doubled,label_token", [(False, "last"), (True, "first"), (True, "last")])
def test_gold_tags_through_windows_decode_to_gold_spans(tokenizer, doubled, label_token):
    texts = [t for _, t, _ in NER_DOCS]
    label2id = {"O": 0, "B-Chemical": 1, "I-Chemical": 2, "B-Disease": 3, "I-Disease": 4}
    docs = N.encode_ner_documents(tokenizer, texts)
    for enc, (_, _, entities) in zip(docs, NER_DOCS):
        enc.piece_labels = [N.IGNORE] * len(enc.ids)
        for word, tag in zip(enc.words, N.bio_tags(enc.words, entities)):
            enc.piece_labels[N.label_piece(word, label_token)] = label2id[tag]
    settings = N.NerSettings(doubled, label_token, window=5, stride=3)  # many small overlapping windows
    rows = N.window_rows(docs, settings, tokenizer.eos_token_id)
    assert len(rows) > 2 * len(docs)
    model = OracleTagger(rows, 5)
    probs, loss = N.ner_piece_probabilities(model, docs, settings, tokenizer.eos_token_id, tokenizer.pad_token_id, batch_size=5)
    id2label = {v: k for k, v in label2id.items()}
    predicted = [[(e["start"], e["end"], e["type"]) for e in N.decode_entities(d, p, id2label, label_token)]
                 for d, p in zip(docs, probs)]
    scores = N.span_scores([e for _, _, e in NER_DOCS], predicted)
    assert scores["micro"]["f1"] == 1.0


# ------------------------------------------------------------------------------------------
# splits and the test-data guard
# ------------------------------------------------------------------------------------------


def test_holdout_is_fixed_by_content_not_order():
    items = [f"document {i}" for i in range(200)]
    kept, held = T.split_holdout(items, items, 10)
    kept2, held2 = T.split_holdout(items[::-1], items[::-1], 10)
    assert set(held) == set(held2) and 5 < len(held) < 40 and len(kept) + len(held) == 200
    _, held_small = T.split_holdout(items[:3], items[:3], 1)
    assert len(held_small) == 1


def test_refuses_a_test_split_as_training_data(tmp_path, ner_files, capsys):
    train, _, test = ner_files
    with pytest.raises(SystemExit) as exit_info:
        T.main(["ner", "--train", str(train), str(test), "--out", str(tmp_path / "o"), *TINY])
    assert exit_info.value.code == 2
    assert "refusing to use a file named like a test split as training data" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        T.main(["ner", "--train", str(train), "--valid", str(test), "--out", str(tmp_path / "o"), *TINY])
    assert "as validation data" in capsys.readouterr().err


def test_training_rows_that_occur_in_test_are_dropped(tmp_path):
    train = write_tsv(tmp_path / "train.tsv", SINGLE, repeat=4)
    test = tmp_path / "test.tsv"
    test.write_text(train.read_text().splitlines()[0] + "\n")  # one training row is also a test row
    out = tmp_path / "out"
    summary = T.main(["classify", "--train", str(train), "--test", str(test), "--out", str(out), "--max-steps", "1",
                      "--batch-size", "4", *TINY])
    data = summary["data"]
    assert data["train_rows"] + data["valid_rows"] == 11 and data["test_rows"] == 1


# ------------------------------------------------------------------------------------------
# bad data: clear messages naming the file and the line
# ------------------------------------------------------------------------------------------


def test_bad_ner_data_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = json.dumps({"pmid": "1", "text": "Aspirin.",
                       "entities": [{"start": 0, "end": 7, "type": "Chemical", "mention": "Aspirin"}]})
    path.write_text(good + "\n" + json.dumps({"pmid": "2", "text": "Short.",
                                              "entities": [{"start": 2, "end": 40, "type": "Chemical"}]}) + "\n")
    with pytest.raises(T.DataError, match=r"bad.jsonl, line 2: entity span \[2, 40\) is out of range"):
        T.read_ner_documents(path)
    path.write_text(good + "\n" + json.dumps({"pmid": "2", "text": "Aspirin.",
                                              "entities": [{"start": 0, "end": 7, "type": "Chemical", "mention": "Asprin"}]})
                    + "\n")
    with pytest.raises(T.DataError, match=r"line 2: entity \[0, 7\) reads 'Aspirin' in the text, not 'Asprin'"):
        T.read_ner_documents(path)
    with pytest.raises(T.DataError, match=r"line 1: unknown entity type 'Chemical'"):
        T.read_ner_documents(path, types={"Disease"})
    path.write_text(good + "\n{not json\n")
    with pytest.raises(T.DataError, match=r"bad.jsonl, line 2: not valid JSON"):
        T.read_ner_documents(path)
    path.write_text("\n  \n")
    with pytest.raises(T.DataError, match=r"bad.jsonl: the file is empty"):
        T.read_ner_documents(path)


def test_bad_pubtator_names_line(tmp_path):
    path = tmp_path / "bad.PubTator.txt"
    path.write_text("1|t|Aspirin helps.\n1|a|It reduces pain.\n"
                    "1\t0\t7\tAspirin\tChemical\tD001241\n1\t20\t99\tpain\tDisease\tD010146\n")
    with pytest.raises(T.DataError, match=r"line 4: entity span \[20, 99\) is out of range"):
        T.read_ner_documents(path)
    path.write_text("1|t|Aspirin helps.\n1|a|It reduces pain.\n1\t0\t7\tAspirin\tChemical\tD001241\n1\tCID\tD001241\tD010146\n")
    (doc,) = T.read_ner_documents(path)
    assert doc.text == "Aspirin helps. It reduces pain." and doc.entities == [(0, 7, "Chemical")]


def test_pubtator_and_jsonl_agree():
    pubtator, jsonl = DATA / "BC5CDR" / "CDR_DevelopmentSet.PubTator.txt", DATA / "BC5CDR" / "ner_spans_valid.jsonl"
    if not pubtator.is_file():
        pytest.skip("../shared/data is not available")
    a, b = T.read_ner_documents(pubtator), T.read_ner_documents(jsonl)
    assert [(d.id, d.text, d.entities) for d in a] == [(d.id, d.text, d.entities) for d in b]


def test_bad_tsv_names_file_and_line(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("good text\tyes\n\nno tab on this line\n")
    with pytest.raises(T.DataError, match=r"train.tsv, line 3: expected 'text<TAB>label', found 1"):
        T.read_tsv(path)
    path.write_text("a\tb\tc\n")
    with pytest.raises(T.DataError, match=r"line 1: expected 'text<TAB>label', found 3"):
        T.read_tsv(path)
    path.write_text("text with a vertical tab \x0b and a form feed \x0c inside\tyes\n")
    assert T.read_tsv(path)[0].label == "yes"  # only "\n" ends a line


def test_unknown_label_in_test_names_file_and_line(tmp_path, capsys):
    train = write_tsv(tmp_path / "train.tsv", SINGLE, repeat=3)
    test = tmp_path / "test.tsv"
    test.write_text("fine row\tyes\nodd row\tperhaps\n")
    with pytest.raises(SystemExit) as exit_info:
        T.main(["classify", "--train", str(train), "--test", str(test), "--out", str(tmp_path / "o"), "--max-steps", "1", *TINY])
    assert exit_info.value.code == 2
    assert f"{test}, line 2: unknown label 'perhaps'" in capsys.readouterr().err


def test_empty_combined_with_a_label_is_an_error(tmp_path, capsys):
    train = write_tsv(tmp_path / "train.tsv", MULTI + [("Both .", "empty|inducing angiogenesis")])
    with pytest.raises(SystemExit):
        T.main(["classify", "--multi-label", "--train", str(train), "--out", str(tmp_path / "o"), *TINY])
    assert "line 5: 'empty' (no label) combined with others" in capsys.readouterr().err


def test_cli_exit_status_and_message_for_an_empty_file(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    result = subprocess.run([sys.executable, "-m", "biogpt.train", "lm", "--train", str(empty),
                             "--out", str(tmp_path / "o"), *TINY],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert f"error: {empty}: the file is empty" in result.stderr


# ------------------------------------------------------------------------------------------
# end to end: each task writes a folder that loads here and in transformers with equal logits
# ------------------------------------------------------------------------------------------


def assert_loads_both_ways(folder, head: str, ids: torch.Tensor):
    import transformers

    ours = getattr(biogpt, head).from_pretrained(folder)
    theirs = getattr(transformers, head).from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        assert max_diff(ours(ids).logits, theirs(ids).logits) <= 1e-5
    assert not ours.head_is_untrained
    return ours


def test_lm_end_to_end(tmp_path, lm_files, tokenizer):
    jsonl, txt, test = lm_files
    out = tmp_path / "lm"
    T.main(["lm", "--train", str(jsonl), str(txt), "--test", str(test), "--out", str(out), "--block-size", "32",
            "--batch-size", "4", "--max-steps", "4", "--eval-every", "2", "--lr", "3e-3", *TINY])
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "merges.txt", "metrics.json",
                                                      "model.safetensors", "tokenizer_config.json", "train_log.jsonl",
                                                      "vocab.json"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 4 and metrics["test"]["tokens"] > 0
    assert metrics["heldout_perplexity"] == metrics["valid"]["perplexity"] < 42384
    first_loss = json.loads((out / "train_log.jsonl").read_text().splitlines()[0])["loss"]
    assert first_loss == pytest.approx(10.65, abs=0.2)  # ln(42384): a fresh model knows nothing
    ids = torch.tensor([tokenizer.encode("Aspirin reduces pain and fever.")])
    model = assert_loads_both_ways(out, "BioGptForCausalLM", ids)
    assert model.config.extra["biogpt_studio"]["task"] == "lm"
    # the public helper measures what the trainer reported
    again = T.perplexity(model, tokenizer, ["Aspirin reduced fever in children."], block_size=32)
    assert again["perplexity"] == pytest.approx(metrics["test"]["perplexity"], rel=1e-5)
    assert BioGptTokenizer.from_pretrained(out).encode("Aspirin") == tokenizer.encode("Aspirin")
    card = (out / "README.md").read_text()
    assert "python -m biogpt.train lm --train" in card and "Test split" in card
    # the jsonl reader unescaped "&gt;"
    assert T.read_lm_documents(jsonl)[0].startswith("Study 0 > review.")


def test_ner_end_to_end_doubled_fp16(tmp_path, ner_files, tokenizer):
    train, dev, test = ner_files
    out = tmp_path / "ner"
    summary = T.main(["ner", "--train", str(train), "--valid", str(dev), "--test", str(test), "--train-on-dev", "--double-text",
                      "--valid-percent", "20", "--out", str(out), "--batch-size", "4", "--max-steps", "3", "--eval-every", "3",
                      "--save-dtype", "float16", "--lr", "1e-3", *TINY])
    assert summary["data"]["train_documents"] == 6  # 5 of train (one held out for validation) + the dev document
    assert summary["data"]["valid_documents"] == 1 and summary["data"]["test_documents"] == 1
    assert summary["fp16_check"]["within_tolerance"]
    assert set(summary["test"]["per_type"]) == {"Chemical", "Disease"}
    config = json.loads((out / "config.json").read_text())
    assert config["dtype"] == "float16"
    assert config["id2label"] == {"0": "O", "1": "B-Chemical", "2": "I-Chemical", "3": "B-Disease", "4": "I-Disease"}
    assert config["biogpt_studio"]["ner_input"] == "doubled" and config["biogpt_studio"]["ner_label_token"] == "last"
    ids = torch.tensor([tokenizer.encode("Naloxone reverses clonidine.")])
    model = assert_loads_both_ways(out, "BioGptForTokenClassification", ids)
    (found,) = N.predict_entities(model, tokenizer, [NER_DOCS[7][1]])
    for entity in found:
        assert NER_DOCS[7][1][entity["start"]:entity["end"]] == entity["text"] and entity["type"] in ("Chemical", "Disease")


def test_classify_single_label_end_to_end(tmp_path, tokenizer):
    train = write_tsv(tmp_path / "train.tsv", SINGLE, repeat=4)
    valid = write_tsv(tmp_path / "dev.tsv", SINGLE)
    test = write_tsv(tmp_path / "test.tsv", SINGLE[::-1], repeat=1)
    test.write_text(test.read_text().replace(" 0\t", " z\t"))
    out = tmp_path / "cls"
    summary = T.main(["classify", "--train", str(train), "--valid", str(valid), "--test", str(test), "--out", str(out),
                      "--batch-size", "4", "--max-steps", "3", "--labels", "yes,no,maybe", *TINY])
    assert summary["test"]["n"] == 3 and 0 <= summary["test"]["accuracy"] <= 1
    config = json.loads((out / "config.json").read_text())
    assert config["id2label"] == {"0": "yes", "1": "no", "2": "maybe"}
    assert config["problem_type"] == "single_label_classification"
    batch = tokenizer(["a short one", "a somewhat longer second input text"], padding=True, return_tensors="pt")
    assert_loads_both_ways(out, "BioGptForSequenceClassification", batch["input_ids"])


def test_classify_multi_label_end_to_end_from_an_lm(tmp_path, lm_files, tokenizer, capsys):
    jsonl, txt, _ = lm_files
    lm = tmp_path / "lm"
    T.main(["lm", "--train", str(jsonl), str(txt), "--out", str(lm), "--block-size", "16", "--batch-size", "2",
            "--grad-accum", "2", "--max-steps", "2", *TINY])
    assert "2 steps max" in capsys.readouterr().out
    train = write_tsv(tmp_path / "train.tsv", MULTI, repeat=5)
    test = write_tsv(tmp_path / "test.tsv", MULTI)
    test.write_text(test.read_text().replace(" 0\t", " t\t"))
    out = tmp_path / "hoc"
    summary = T.main(["classify", "--multi-label", "--init", str(lm), "--train", str(train), "--test", str(test),
                      "--out", str(out), "--batch-size", "4", "--max-steps", "3", "--device", "cpu", "--workers", "1"])
    assert "(new, untrained head)" in capsys.readouterr().out
    lm_weights = biogpt.BioGptForCausalLM.from_pretrained(lm).biogpt.layers[0].fc1.weight
    tuned = biogpt.BioGptForSequenceClassification.from_pretrained(out).biogpt.layers[0].fc1.weight
    # started from the LM (three small AdamW steps away from it), and did train
    assert not torch.equal(tuned, lm_weights) and max_diff(tuned, lm_weights) < 0.01
    config = json.loads((out / "config.json").read_text())
    assert "empty" not in config["id2label"].values() and len(config["id2label"]) == 3
    assert config["problem_type"] == "multi_label_classification"
    threshold = config["biogpt_studio"]["threshold"]
    assert 0 < threshold < 1 and summary["test"]["threshold"] == threshold == summary["valid"]["threshold"]
    ids = torch.tensor([tokenizer.encode("Cells divide .")])
    assert_loads_both_ways(out, "BioGptForSequenceClassification", ids)


def test_ner_on_a_slice_of_bc5cdr(tmp_path):
    folder = DATA / "BC5CDR"
    if not folder.is_dir():
        pytest.skip("../shared/data is not available")
    out = tmp_path / "bc5"
    summary = T.main(["ner", "--train", str(folder / "ner_spans_train.jsonl"), "--valid", str(folder / "ner_spans_valid.jsonl"),
                      "--test", str(folder / "ner_spans_test.jsonl"), "--limit-train", "4", "--limit-eval", "2",
                      "--out", str(out), "--batch-size", "2", "--max-steps", "2", "--max-length", "40", "--stride", "30", *TINY])
    assert summary["data"]["train_windows"] > 4  # abstracts are longer than one 40-piece window
    assert summary["test"]["documents"] == 2


# ------------------------------------------------------------------------------------------
# resume
# ------------------------------------------------------------------------------------------


def test_resume_continues_from_the_saved_step(tmp_path, lm_files):
    jsonl, txt, _ = lm_files
    common = ["lm", "--train", str(jsonl), str(txt), "--block-size", "32", "--batch-size", "4", "--max-steps", "5",
              "--eval-every", "100", "--seed", "3", "--keep-checkpoint", "--log-every", "1", *TINY]
    T.main([*common, "--out", str(tmp_path / "straight")])

    interrupted = tmp_path / "interrupted"
    result = T.main([*common, "--out", str(interrupted), "--stop-at-step", "3"])
    assert result == {"interrupted_at_step": 3}
    state = torch.load(interrupted / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert json.loads(state["counters"])["step"] == 3
    assert not (interrupted / "metrics.json").exists()
    summary = T.main([*common, "--out", str(interrupted), "--resume"])
    assert summary["steps"] == 5

    from safetensors.torch import load_file

    a = load_file(tmp_path / "straight" / "model.safetensors")
    b = load_file(interrupted / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    logged = [json.loads(line) for line in (interrupted / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3, 4, 5]  # the log continues after the resume
    straight = [json.loads(line) for line in (tmp_path / "straight" / "train_log.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in logged if "loss" in r] == [r["loss"] for r in straight if "loss" in r]


def test_lr_schedule():
    assert T.lr_factor(0, 10, 0.0, "cosine", 0.0) == pytest.approx(0.1)
    assert T.lr_factor(10, 10, 0.0, "cosine", 0.0) == pytest.approx(1.0)
    assert T.lr_factor(50, 10, 0.5, "cosine", 0.0) == pytest.approx(0.5)
    assert T.lr_factor(50, 10, 1.0, "cosine", 0.1) == pytest.approx(0.1)
    assert T.lr_factor(50, 10, 0.25, "linear", 0.0) == pytest.approx(0.75)
