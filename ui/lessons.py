"""Guided lessons for the Attention tab, as data, and the numbers each needs measured on the model.

A lesson is a prepared text, model, view and settings (the Attention tab's control names, layer
and head 1-based as on screen), a few sentences and one question for students. `prepare` runs
what the lesson needs through the Engine and returns its settings and explanation with the
measured numbers: the formula lesson prints one real row of attention; the head-type lessons open
the head that scores highest for its role and, where the model has no clear head of that type,
say so and show the scores instead of pretending. No gradio here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from biogpt.interpret import ROLES

FORMULA_TEXT = "Naloxone reverses the antihypertensive effect of clonidine."
SINK_TEXT = ("Metformin lowers hepatic glucose production and improves insulin sensitivity in patients with "
             "type 2 diabetes.")
# Twelve unrelated words in a random order, then the same twelve again: the induction probe in words.
INDUCTION_TEXT = ("granule orbit tundra violin kestrel saffron lumen quartz ferry nimbus cobalt walnut "
                  "granule orbit tundra violin kestrel saffron lumen quartz ferry nimbus cobalt walnut")
LENS_TEXT = "The most common cause of community-acquired pneumonia is Streptococcus"


@dataclass(frozen=True)
class Lesson:
    key: str
    title: str
    text: str
    view: str  # one of the Attention tab's views
    settings: dict[str, Any]  # Attention tab controls (1-based layer and head)
    sentences: tuple[str, ...]  # what the lesson says before the measured numbers
    question: str
    model: str = "bundled"


@dataclass
class PreparedLesson:
    """A lesson with its measured numbers: open `view` with `settings` on `text`."""

    lesson: Lesson
    settings: dict[str, Any]
    explanation: list[str]  # 3-4 sentences, the measured ones included
    table: list[dict[str, Any]] = field(default_factory=list)  # numbers to show beside the view

    @property
    def text(self) -> str:
        return self.lesson.text

    @property
    def view(self) -> str:
        return self.lesson.view


LESSONS: tuple[Lesson, ...] = (
    Lesson(
        "formula", "1. The attention formula on one real row", FORMULA_TEXT, "Heatmap",
        {"layer": 1, "head": 1, "token": "clonidine"},
        ("Each head scores every earlier token j by q · k_j / sqrt(d), hides later tokens with the causal mask, "
         "and turns the scores into weights with a softmax.",),
        "Which earlier token gets the largest weight, and is it also the one with the largest score? Why must it be?",
    ),
    Lesson(
        "sink", "2. The first-token sink", SINK_TEXT, "Overview", {"statistic": "first"},
        ("In many trained transformers, heads put much of their attention on the first token, </s>, whatever the "
         "text says.",
         "Its value carries almost nothing, so attending there is how a head does little."),
        "Hide the first token in the heatmap: which heads still show a clear pattern?",
    ),
    Lesson(
        "previous", "3. Previous-token heads", SINK_TEXT, "Heatmap", {},
        ("A previous-token head makes every token attend to the one just before it: a diagonal just below the main one.",),
        "What could a later layer do with a copy of the previous token in each position?",
    ),
    Lesson(
        "induction", "4. Induction heads on a repeated random sequence", INDUCTION_TEXT, "Heatmap", {},
        ("In the second copy of a random sequence, an induction head looks at the token that followed the current "
         "token's first occurrence, and so predicts the repeat.",),
        "Why does an induction head need a previous-token head in an earlier layer?",
    ),
    Lesson(
        "lens", "5. The logit lens", LENS_TEXT, "Logit lens", {},
        ("The logit lens reads each layer's residual stream through the final layer norm and the output matrix, "
         "as if the model stopped there.",
         "Its last row is the model's own prediction; the earlier rows show what each layer would have said."),
        "At which layer does the final prediction first appear, and what did earlier layers guess instead?",
    ),
    Lesson(
        "ablation", "6. Ablation: switching heads off", FORMULA_TEXT, "Ablation", {},
        ("Switching a head off multiplies its attention by zero; how much the next-token distribution moves "
         "(in KL divergence) says how much the prediction relied on it.",
         "A head can look busy in a heatmap and still matter little, or the reverse."),
        "Does switching off the head that attends most to </s> change the prediction much? Why or why not?",
    ),
)
LESSONS_BY_KEY = {lesson.key: lesson for lesson in LESSONS}


def sentence_count(sentences: list[str]) -> int:
    """Sentences in a list of strings: ends of sentences, not decimal points."""
    return sum(len(re.findall(r"[.!?](?=\s|$)", s)) for s in sentences)


def _head(layer: int, head: int) -> str:
    return f"{layer + 1}.{head + 1}"


def _role_sentences(roles, role: str, model: str) -> tuple[tuple[int, int], list[str]]:
    """The head to open for `role` and what to say about it, honest when there is no clear one."""
    name = ROLES[role][0].lower()
    ranked = roles.ranking(role)
    (layer, head, best), (_, _, runner_up) = ranked[0], ranked[1]
    shown = "The bundled model" if model == "bundled" else model
    if roles.clear_example(role):
        return (layer, head), [f"Measured on the model's own probe, head {_head(layer, head)} is one: its {name} is "
                               f"{best:.2f}, against {runner_up:.2f} for the next head."]
    return (layer, head), [
        f"{shown} has no clear {ROLES[role][0].split(' score')[0].lower()} head: the best, {_head(layer, head)}, scores "
        f"only {best:.2f} (the next {runner_up:.2f}), so this lesson shows the scores instead of pretending.",
        "The table beside the view lists every head's score on a repeated random token sequence.",
    ]


def _role_table(roles, role: str, most: int = 8) -> list[dict[str, Any]]:
    return [{"head": _head(layer, head), ROLES[role][0]: round(score, 4)} for layer, head, score in roles.ranking(role)[:most]]


def prepare(engine, key: str) -> PreparedLesson:
    """The lesson `key` with its measured numbers (see the module docstring); runs through the Engine."""
    if key not in LESSONS_BY_KEY:
        raise ValueError(f"There is no lesson {key!r}; the lessons are {', '.join(LESSONS_BY_KEY)}.")
    lesson = LESSONS_BY_KEY[key]
    settings = {"view": lesson.view, "model": lesson.model, **lesson.settings}
    explanation, table = list(lesson.sentences), []
    if key in ("previous", "induction"):
        roles = engine.head_roles(lesson.model)
        (layer, head), said = _role_sentences(roles, key, lesson.model)
        settings.update(layer=layer + 1, head=head + 1)
        explanation += said
        table = _role_table(roles, key)
        if len(said) == 1:
            explanation.append("Compare its heatmap with a head of low score.")
        return PreparedLesson(lesson, settings, explanation, table)
    analysis = engine.analyze(lesson.text, lesson.model)
    if key == "formula":
        position = analysis.find_token(lesson.settings["token"])
        row = engine.attention_row(analysis, lesson.settings["layer"] - 1, lesson.settings["head"] - 1, position)
        keys = range(position + 1)
        top = max(keys, key=lambda j: row.weights[j])
        explanation += [
            f"Here the query is {analysis.tokens[position]!r} (token {position}) in head {_head(row.layer, row.head)}, "
            f"d = {row.head_dim}, so the dot products are divided by {row.head_dim ** 0.5:.2f}; the mask hides "
            f"{row.masked} later token{'s' if row.masked != 1 else ''}.",
            f"The largest weight, {row.weights[top]:.3f}, goes to {analysis.tokens[top]!r} (scaled score "
            f"{row.scores[top]:.2f}), and the head's output is the sum of the values weighted so.",
        ]
        table = [{"key": f"{j} {analysis.tokens[j]}", "q·k": round(float(row.scores[j] * row.head_dim ** 0.5), 3),
                  "q·k/√d": round(float(row.scores[j]), 3), "weight": round(float(row.weights[j]), 4)} for j in keys]
    elif key == "sink":
        first = analysis.head_statistics()["first"]
        heavy = int((first > 0.5).sum())
        layer, head = (int(i) for i in divmod(int(first.argmax()), analysis.num_heads))
        explanation.append(f"Measured on this text: {heavy} of {first.size} heads put more than half their attention on "
                           f"</s>; the most is head {_head(layer, head)} with {first.max():.2f}, the mean {first.mean():.2f}.")
    elif key == "lens":
        lens = engine.logit_lens(analysis)
        final = int(lens.ids[-1, -1, 0])
        layer = next(i for i in range(lens.ids.shape[0]) if int(lens.ids[i, -1, 0]) == final)
        where = "the embeddings" if layer == 0 else f"layer {layer}"
        explanation.append(f"After the last token the model predicts {str(lens.labels[-1, -1, 0])!r}; read through "
                           f"the lens it is first the top guess at {where} of {lens.ids.shape[0] - 1}.")
        settings["start"] = max(0, analysis.length - 16)
    elif key == "ablation":
        sink = analysis.head_statistics()["first"]
        layer, head = (int(i) for i in divmod(int(sink.argmax()), analysis.num_heads))
        ablation = engine.ablate(analysis, [(layer, head)])
        before, after = ablation.labels[0], ablation.labels[int(ablation.after.argmax())]
        change = f"the top token stays {before!r}" if before == after else f"the top token goes from {before!r} to {after!r}"
        explanation.append(f"Switching off head {_head(layer, head)}, the one most on </s> here, moves the next-token "
                           f"distribution by KL {ablation.kl:.3f} nats; {change}.")
        settings["heads_off"] = _head(layer, head)
    return PreparedLesson(lesson, settings, explanation, table)
