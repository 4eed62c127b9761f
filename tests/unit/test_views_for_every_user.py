"""Issue 15 without a browser: alternatives as a visitor reads them, one number format, the demo
model named beside its results, PubMedQA drawn by log-likelihood, exports named for what they hold."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np

from biogpt.generation.results import TokenChoice
from biogpt.serving import AnswerResult
from biogpt.serving.generating import ALTERNATIVES_SHOWN, listed_alternatives
from biogpt.serving.registry import ModelRegistry
from ui import plots, views


class FakeLoaded:
    """What listed_alternatives reads of a loaded model: its special ids and how a token reads."""

    def __init__(self, surfaces: dict[int, str], special: list[int]):
        self.tokenizer = SimpleNamespace(all_special_ids=special)
        self.surfaces = surfaces

    def surface(self, token_id: int) -> str:
        return self.surfaces[token_id]


def test_special_tokens_without_real_probability_and_repeated_surfaces_are_not_listed():
    loaded = FakeLoaded({10: "the", 11: "the", 12: "a", 13: "an", 14: "this", 15: "that", 16: "its"}, special=[0, 1, 3])
    choices = [TokenChoice(10, "the</w>", 0.5), TokenChoice(11, "the", 0.2), TokenChoice(1, "<pad>", 0.0),
               TokenChoice(3, "<unk>", 0.0001), TokenChoice(12, "a", 0.1), TokenChoice(0, "<s>", 0.05),
               TokenChoice(13, "an", 0.05), TokenChoice(14, "this", 0.04), TokenChoice(15, "that", 0.03)]
    listed = listed_alternatives(loaded, choices)
    assert listed == [("the", 0.5), ("a", 0.1), ("<s>", 0.05), ("an", 0.05), ("this", 0.04)]
    assert len(listed) == ALTERNATIVES_SHOWN


def answer(log_likelihoods, model="bundled") -> AnswerResult:
    values = np.asarray(log_likelihoods, dtype=np.float32)
    probabilities = np.exp(values - values.max())
    return AnswerResult(prompt="p", answers=["yes", "no", "maybe"], probabilities=probabilities / probabilities.sum(),
                        log_likelihoods=values, model=f"{model} · cpu · float32", settings={"model": model})


def test_pubmedqa_is_drawn_by_log_likelihood_with_the_gold_answer_marked_and_the_demo_named():
    result = answer([-19.96, -13.59, -19.21])
    figure = plots.answer_chart(result, gold="yes")
    bar = figure.data[0]
    assert list(bar.y) == ["yes (gold)", "no", "maybe"]
    assert [round(float(b) + float(x), 2) for b, x in zip([bar.base] * 3, bar.x)] == [-19.96, -13.59, -19.21]
    assert not any(text.endswith("%") for text in bar.text)
    assert "not trained for PubMedQA" in figure.layout.title.text
    trained = plots.answer_chart(answer([-1.0, -1.1, -3.0], model="microsoft/BioGPT-Large-PubMedQA"))
    assert "not trained" not in trained.layout.title.text
    info = views.answer_info(result, gold="yes")
    assert "model's answer: **no**" in info and "gold answer: **yes** (disagrees)" in info
    assert "Demo model" in info and "not factual" in info
    assert "Demo model" not in views.answer_info(answer([-1.0, -1.1, -3.0], model="microsoft/biogpt"))


def test_every_probability_reads_as_one_percentage_format():
    assert views.percent(0.0624) == "6.2%"
    assert "'levels' 59.4%" in views._alternatives_text([("levels", 0.5941)])


def test_exports_are_named_for_task_model_and_time():
    name = views.export_name("ner", "/some/where/my model!", ".csv", when=0)
    assert re.fullmatch(r"ner-my-model-\d{4}-\d\d-\d\dT\d{6}\.csv", name), name
    first = views.write_export("a,b\n1,2\n", ".csv", "classify", "bundled-hoc")
    assert re.search(r"classify-bundled-hoc-\d{4}-\d\d-\d\dT\d{6}\.csv$", first)
    assert views.write_export("a,b\n1,2\n", ".csv", "classify", "bundled-hoc") == first  # same content, one file


def test_the_picker_says_what_each_model_is():
    assert "demo 4-layer" in ModelRegistry.describe_choice("bundled")
    assert "published" in ModelRegistry.describe_choice("microsoft/biogpt")
    assert "Hugging Face Hub" in ModelRegistry.describe_choice("someone/biogpt-finetune")
    assert "local checkpoint" in ModelRegistry.describe_choice("/models/mine")


def test_logit_lens_cell_text_is_cut_to_what_a_cell_holds_and_dropped_when_nothing_fits():
    from ui import attention_plots

    def lens(width: int):
        labels = np.full((3, width, 1), "immunosuppressive", dtype=object)
        return attention_plots.logit_lens_figure(np.full((3, width, 1), 0.5, np.float32), labels,
                                                 [f"t{i}" for i in range(width)], first=0, total=width)

    cell_px = attention_plots.LENS_PLOT_PX / 16
    texts = [text for row in lens(16).data[0].text for text in row]
    assert texts and all(len(text) * attention_plots.CHAR_PX <= cell_px for text in texts), texts
    assert texts[0].startswith("immu") and texts[0].endswith("…")
    assert lens(120).data[0].texttemplate is None  # 5 px cells: colour and hover only
