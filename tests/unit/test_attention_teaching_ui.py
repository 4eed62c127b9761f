"""The Attention tab's teaching parts that need no browser: lessons (measured on the bundled model),
the glossary, shareable links and the offline report."""

from __future__ import annotations

import dataclasses
import re
import sys
from html.parser import HTMLParser
from urllib.parse import parse_qsl

import numpy as np
import plotly.graph_objects as go
import pytest

from biogpt.serving import Engine
from biogpt.serving.requests import GenerationRequest
from ui import glossary, lessons, links, report

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(1)> & \"quotes\" 'x' </pre>"
# The Attention tab's controls as its Controls dataclass lists them (phase 2 passes asdict(Controls())).
ATTENTION_DEFAULTS = {"view": "Heatmap", "model": None, "layer": 1, "head": 1, "aggregate": "head", "hide_sink": False,
                      "min_weight": 0.0, "start": 0, "statistic": "entropy", "token": "", "heads_off": ""}
GENERATE_DEFAULTS = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                     for f in dataclasses.fields(GenerationRequest) if f.name != "prompt"}
DEFAULTS = {"attention": ATTENTION_DEFAULTS, "generate": GENERATE_DEFAULTS}


@pytest.fixture(scope="module")
def engine(bundled_models) -> Engine:
    return Engine(device="cpu", dtype="float32")


# ----- modules stay free of gradio -------------------------------------------------------------


def test_the_teaching_modules_do_not_import_gradio():
    import subprocess

    code = "import sys, ui.lessons, ui.glossary, ui.links, ui.report; print('gradio' in sys.modules)"
    # ui/__init__ builds the app (gradio); load the four files directly, as phase 2's tab will not need to.
    loader = "import sys, types; sys.modules['ui'] = types.ModuleType('ui'); sys.modules['ui'].__path__ = ['ui']; " + code
    out = subprocess.run([sys.executable, "-c", loader], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----- lessons ------------------------------------------------------------------------------------


def test_every_lesson_opens_a_view_with_three_or_four_sentences_and_one_question(engine):
    assert len(lessons.LESSONS) == 6
    for lesson in lessons.LESSONS:
        prepared = lessons.prepare(engine, lesson.key)
        assert prepared.view in ("Heatmap", "Overview", "Logit lens", "Ablation")
        assert 3 <= lessons.sentence_count(prepared.explanation) <= 4, (lesson.key, prepared.explanation)
        assert lesson.question.endswith("?") and lesson.question.count("?") <= 2
        assert set(prepared.settings) <= set(ATTENTION_DEFAULTS), lesson.key  # only the tab's own controls
        assert prepared.settings["model"] == "bundled"
    with pytest.raises(ValueError, match="no lesson 'quantum'"):
        lessons.prepare(engine, "quantum")


def test_the_formula_lesson_prints_the_real_row(engine):
    prepared = lessons.prepare(engine, "formula")
    analysis = engine.analyze(lessons.FORMULA_TEXT)
    position = analysis.find_token("clonidine")
    row = engine.attention_row(analysis, 0, 0, position)
    assert [r["weight"] for r in prepared.table] == [round(float(w), 4) for w in row.weights[: position + 1]]
    np.testing.assert_allclose([r["weight"] for r in prepared.table], analysis.attentions[0, 0, position, : position + 1],
                               atol=2e-3)  # the model's own (float16) attention row
    top = int(np.argmax(row.weights))
    assert f"{row.weights[top]:.3f}, goes to {analysis.tokens[top]!r}" in " ".join(prepared.explanation)
    assert f"d = {row.head_dim}" in prepared.explanation[1]


class ClearHeads:
    """The real engine, except that its head roles show one clear head of each kind (as a model that has them)."""

    def __init__(self, engine):
        self.engine = engine

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def head_roles(self, model=None):
        roles = self.engine.head_roles(model)
        scores = {role: values.copy() for role, values in roles.scores.items()}
        scores["previous"][2, 3] = 0.9
        scores["induction"][3, 6] = 0.8
        return dataclasses.replace(roles, scores=scores)


def test_head_lessons_open_the_best_head_and_never_pretend(engine):
    roles = engine.head_roles()
    for key in ("previous", "induction"):
        prepared = lessons.prepare(engine, key)
        layer, head, score = roles.ranking(key)[0]
        assert (prepared.settings["layer"], prepared.settings["head"]) == (layer + 1, head + 1)
        said = " ".join(prepared.explanation)
        if roles.clear_example(key) is None:  # the bundled model: scores shown, no head claimed
            assert "The bundled model has no clear" in said and f"scores only {score:.2f}" in said
        assert prepared.table[0]["head"] == f"{layer + 1}.{head + 1}"
    clear = lessons.prepare(ClearHeads(engine), "previous")
    assert (clear.settings["layer"], clear.settings["head"]) == (3, 4)
    assert "head 3.4 is one: its previous-token score is 0.90" in " ".join(clear.explanation)
    assert "no clear" not in " ".join(clear.explanation)
    induction = lessons.prepare(ClearHeads(engine), "induction")
    assert (induction.settings["layer"], induction.settings["head"]) == (4, 7)


# ----- glossary ---------------------------------------------------------------------------------


def test_the_glossary_defines_the_issues_terms_shortly():
    for term in ("query", "key", "value", "head", "layer", "residual stream", "layer norm", "logit", "softmax",
                 "temperature", "top-k", "top-p", "beam"):
        assert term in glossary.GLOSSARY and glossary.define(f"  {term.upper()} ") == glossary.GLOSSARY[term]
    for text in glossary.GLOSSARY.values():
        assert len(text) <= 240 and lessons.sentence_count([text]) <= 2
    assert "&lt;b&gt;" in glossary.define("<b>nope</b>") and "is not in the glossary" in glossary.define("<b>nope</b>")
    assert glossary.glossary_markdown().count("\n- **") == len(glossary.GLOSSARY) - 1


# ----- links ------------------------------------------------------------------------------------


def test_a_link_round_trips_the_state_and_holds_only_what_changed():
    settings = {**ATTENTION_DEFAULTS, "view": "Token links", "layer": 3, "head": 7, "hide_sink": True, "min_weight": 0.05,
                "token": "clonidine"}
    query = links.encode_state("attention", HOSTILE, settings, ATTENTION_DEFAULTS)
    keys = [key for key, _ in parse_qsl(query)]
    assert keys == ["tab", "text", "view", "layer", "head", "hide_sink", "min_weight", "token"]  # nothing unchanged
    state = links.decode_state("?" + query, DEFAULTS)
    assert state.tab == "attention" and state.text == HOSTILE and state.ignored == []
    assert state.settings == {"view": "Token links", "layer": 3, "head": 7, "hide_sink": True, "min_weight": 0.05,
                              "token": "clonidine"}
    assert links.encode_state("attention", "cells", ATTENTION_DEFAULTS, ATTENTION_DEFAULTS) == "tab=attention&text=cells"
    generate = {**GENERATE_DEFAULTS, "mode": "beam search", "num_beams": 6, "stop": [".", "a,b"], "seed": 42}
    state = links.decode_state(links.encode_state("generate", "Aspirin", generate, GENERATE_DEFAULTS), DEFAULTS)
    assert state.settings == {"mode": "beam search", "num_beams": 6, "stop": [".", "a,b"], "seed": "42"}
    with pytest.raises(ValueError, match="not a setting of the attention tab"):
        links.encode_state("attention", "x", {"session": "abc"}, ATTENTION_DEFAULTS)


def test_long_texts_are_compressed_up_to_a_stated_limit_then_refused():
    words = "the patient received aspirin and the patient received ibuprofen daily ".split()
    long_text = " ".join(words[i % len(words)] for i in range(2_000))  # ~15,000 characters, compressible
    query = links.encode_state("attention", long_text, {}, ATTENTION_DEFAULTS)
    assert "z=" in query and "text=" not in query and len(query) <= links.MAX_QUERY_CHARS
    assert links.decode_state(query, DEFAULTS).text == long_text
    random_text = "".join(chr(c) for c in np.random.default_rng(0).integers(0x4E00, 0x9FFF, 8_000))
    with pytest.raises(ValueError, match="too long for a link.*at most 6,000"):
        links.encode_state("attention", random_text, {}, ATTENTION_DEFAULTS)


def test_hostile_links_are_refused_with_a_sentence():
    import base64
    import zlib

    bomb = base64.urlsafe_b64encode(zlib.compress(b"a" * 2_000_000, 9)).decode().rstrip("=")
    with pytest.raises(ValueError, match="longer than 20,000 characters"):
        links.decode_state(f"tab=attention&z={bomb}", DEFAULTS)
    with pytest.raises(ValueError, match="damaged"):
        links.decode_state("tab=attention&z=%%%notbase64", DEFAULTS)
    with pytest.raises(ValueError, match="names no tab"):
        links.decode_state("tab=admin&text=x", DEFAULTS)
    with pytest.raises(ValueError, match="layer must be a whole number, not 'ten'"):
        links.decode_state("tab=attention&text=x&layer=ten", DEFAULTS)
    with pytest.raises(ValueError, match="min_weight must be a number"):
        links.decode_state("tab=attention&text=x&min_weight=nan", DEFAULTS)
    with pytest.raises(ValueError, match="hide_sink must be yes/no"):
        links.decode_state("tab=attention&text=x&hide_sink=maybe", DEFAULTS)
    with pytest.raises(ValueError, match="at most 6,000"):
        links.decode_state("tab=attention&text=" + "a" * 7_000, DEFAULTS)
    state = links.decode_state("tab=attention&text=x&utm_source=mail&layer=2", DEFAULTS)
    assert state.settings == {"layer": 2} and state.ignored == ["utm_source"]


# ----- report -----------------------------------------------------------------------------------


class Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.tags, self.scripts, self._in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "script":
            self._in_script = True
            self.scripts.append("")

    def handle_endtag(self, tag):
        if tag == "script":
            self._in_script = False

    def handle_data(self, data):
        if self._in_script:
            self.scripts[-1] += data


def test_the_report_is_self_contained_offline_and_escapes_what_visitors_typed():
    from plotly.offline import get_plotlyjs

    heatmap = go.Figure(go.Heatmap(z=[[1, 0], [0.4, 0.6]], x=["</script>", "b"], y=["a", "b"]))
    html = report.build_report(
        "Attention: " + HOSTILE, HOSTILE, {"layer": 3, "token": HOSTILE},
        [report.ReportSection("Heatmap", ["Row i shows what token i reads. " + HOSTILE], heatmap),
         report.ReportSection("Head roles", ["Scores."], table=[{"head": "1.1", "note": HOSTILE, "score": 0.123456}])],
    )
    parser = Tags()
    parser.feed(html)
    tags = [tag for tag, _ in parser.tags]
    # Only the scripts the report writes: plotly.js, the plot config, the SVG button, one per figure.
    assert tags.count("script") == 4 and "img" not in tags and "link" not in tags and "iframe" not in tags
    assert parser.scripts[0] == get_plotlyjs() and len(parser.scripts[0]) > 3_000_000  # plotly.js inlined
    for tag, attrs in parser.tags:
        for name in ("src", "href", "action", "data"):
            assert name not in attrs, (tag, attrs)  # nothing is fetched from anywhere
    csp = next(attrs for tag, attrs in parser.tags if tag == "meta" and attrs.get("http-equiv"))
    assert csp["content"].startswith("default-src 'none'")
    outside_plotly = html.replace(parser.scripts[0], "")
    assert not re.search(r"https?://", outside_plotly)
    # Escaped wherever it appears: the title twice, the text, a setting, an explanation, a table cell.
    assert HOSTILE not in html and html.count("&lt;script&gt;alert(1)&lt;/script&gt;") == 6
    figure_script = parser.scripts[3]
    assert "\\u003c/script\\u003e" in figure_script and "</script>" not in figure_script
    assert "Plotly.newPlot('plot-0'" in figure_script and "format: 'svg'" in parser.scripts[2]
    assert "0.1235" in html  # table numbers rounded for reading
