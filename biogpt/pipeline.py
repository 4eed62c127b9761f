"""`pipeline()` for notebooks and scripts: transformers' call shapes and output keys, over our engine.

    from biogpt.pipeline import pipeline
    ner = pipeline("token-classification")            # the bundled NER model
    ner("Famotidine-associated delirium.")            # [{"entity_group", "score", "word", "start", "end"}, ...]
    pipeline("text-generation")("COVID-19 is", max_new_tokens=20)   # [{"generated_text": ...}]
    pipeline("text-classification")(["...", "..."])  # [{"label", "score"}, ...]
    pipeline("zero-shot-classification")("...", candidate_labels=["a", "b"])  # {"sequence", "labels", "scores"}

A single text gives what transformers gives for one; a list gives a list with one such answer per
text. Everything runs through biogpt.serving.Engine (Limits.local(): a script is not held to the
web app's caps), so answers equal the app's. Token classification returns entity spans
(aggregation "simple", "first", "average" or "max"); transformers' per-piece "none" has no
counterpart, as the engine reads words, not pieces.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .serving import Engine, GenerationRequest, Limits

TASKS = {
    "text-generation": ("bundled", "generate"),
    "token-classification": ("bundled-ner", "ner"),
    "ner": ("bundled-ner", "ner"),
    "text-classification": ("bundled-hoc", "classify"),
    "zero-shot-classification": ("bundled", "generate"),
}
# transformers' aggregation_strategy -> the engine's word aggregation.
AGGREGATIONS = {"simple": "auto", "first": "first", "average": "average", "max": "max"}


def pipeline(task: str, model: str | None = None, device: str = "auto", dtype: str = "auto",
             engine: Engine | None = None, **defaults: Any) -> Pipeline:
    """A callable for `task` (text-generation, token-classification/ner, text-classification,
    zero-shot-classification) on `model` (default: the bundled model for the task); `defaults`
    are call keywords applied to every call (e.g. aggregation_strategy, max_new_tokens)."""
    if task not in TASKS:
        raise ValueError(f"Unknown task {task!r}; use one of {', '.join(TASKS)}.")
    default_model, _ = TASKS[task]
    model = model or default_model
    if engine is None:
        engine = Engine(default_model=model, device=device, dtype=dtype, allowed_models=[model], limits=Limits.local(),
                        batching=False)
    return Pipeline(task, model, engine, defaults)


class Pipeline:
    def __init__(self, task: str, model: str, engine: Engine, defaults: dict[str, Any]) -> None:
        self.task, self.model, self.engine, self.defaults = task, model, engine, defaults

    def __call__(self, inputs: str | list[str], *args: Any, **kwargs: Any) -> Any:
        kwargs = {**self.defaults, **kwargs}
        if self.task == "zero-shot-classification" and args:
            kwargs.setdefault("candidate_labels", args[0])
        if self.task == "text-classification" and "top_k" not in kwargs:
            # transformers' default: the best label, as [{"label", "score"}] for one text and one
            # {"label", "score"} per text for a list; an explicit top_k gives a list per text.
            best = [self._one(text, top_k=1)[0] for text in ([inputs] if isinstance(inputs, str) else inputs)]
            return best
        if isinstance(inputs, str):
            return self._one(inputs, **kwargs)
        return [self._one(text, **kwargs) for text in inputs]

    def _one(self, text: str, **kwargs: Any) -> Any:
        return getattr(self, "_" + self.task.replace("-", "_"))(text, **kwargs)

    def _text_generation(self, text: str, max_new_tokens: int = 50, do_sample: bool = False, num_beams: int = 1,
                         num_return_sequences: int = 1, return_full_text: bool = True, temperature: float = 1.0,
                         top_k: int = 50, top_p: float = 1.0, repetition_penalty: float = 1.0,
                         no_repeat_ngram_size: int = 0, seed: int | None = None) -> list[dict[str, str]]:
        """[{"generated_text"}] per sequence; greedy unless do_sample or num_beams > 1 (transformers' defaults)."""
        mode = "sampling" if do_sample else "beam search" if num_beams > 1 else "greedy"
        request = GenerationRequest(prompt=text, model=self.model, max_new_tokens=max_new_tokens, mode=mode,
                                    temperature=temperature, top_k=top_k, top_p=top_p,
                                    repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size,
                                    num_beams=num_beams, num_return_sequences=num_return_sequences, seed=seed)
        *_, result = self.engine.generate(request)
        prefix = text if return_full_text else ""
        return [{"generated_text": prefix + sample.text} for sample in result.samples]

    def _token_classification(self, text: str, aggregation_strategy: str = "simple") -> list[dict[str, Any]]:
        if aggregation_strategy not in AGGREGATIONS:
            raise ValueError(f"aggregation_strategy must be one of {', '.join(AGGREGATIONS)}: the engine returns entity "
                             f"spans of words, not pieces; got {aggregation_strategy!r}.")
        result = self.engine.ner(text, self.model, AGGREGATIONS[aggregation_strategy])
        return [{"entity_group": e.type, "score": np.float32(e.score), "word": e.text, "start": e.start, "end": e.end}
                for e in result.entities]

    _ner = _token_classification

    def _text_classification(self, text: str, top_k: int | None = 1) -> list[dict[str, Any]]:
        """The top_k labels as {"label", "score"}, best first (top_k=None: every label)."""
        result = self.engine.classify(text, self.model)
        ranked = sorted(zip(result.labels, result.probabilities), key=lambda pair: -pair[1])
        scored = [{"label": label, "score": float(p)} for label, p in ranked]
        return scored if top_k is None else scored[:top_k]

    def _zero_shot_classification(self, text: str, candidate_labels: list[str] | str = (),
                                  hypothesis_template: str | None = None) -> dict[str, Any]:
        """{"sequence", "labels", "scores"}, best first. The engine's template holds {text} and
        {label}; transformers' hypothesis ("This example is {}.") is put after the text."""
        template = None
        if hypothesis_template:
            template = "{text} " + hypothesis_template.replace("{}", "{label}")
        result = self.engine.zero_shot(text, candidate_labels, *(template,) if template else (), model=self.model)
        order = np.argsort(-result.probabilities, kind="stable")
        return {"sequence": text, "labels": [result.labels[i] for i in order],
                "scores": [float(result.probabilities[i]) for i in order]}
