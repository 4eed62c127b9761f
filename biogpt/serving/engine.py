"""`Engine`: the one object the app, the CLI and scripts talk to.

It is the model registry (biogpt.serving.registry: which models, each loaded once) plus one
method per request kind. Each method checks its input first (biogpt.serving.validation: one
sentence a visitor can act on, as InputError), loads the model, then hands the work to its
module: generating, scoring (PubMedQA, zero-shot), tagging (NER, classify), or
biogpt.interpret for the Attention tab. It returns plain dataclasses (biogpt.serving.results),
so callers never touch torch. Nothing here imports gradio or plotly.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator

from . import generating, scoring, tagging
from .registry import ModelRegistry, ProgressCallback
from .requests import ForcedPrefix, GenerationRequest
from .results import AnswerResult, ClassificationResult, GenerationResult, NerResult
from .validation import CHARS_PER_TOKEN, InputError, Limits, clean_text, resolve_seed


class Engine(ModelRegistry):
    """Loads models on demand (ModelRegistry) and answers the app's requests."""

    def __init__(self, default_model: str = "bundled", device: str = "auto", dtype: str = "auto",
                 allowed_models: list[str] | tuple[str, ...] = (), max_loaded_models: int = 4,
                 limits: Limits | None = None, quantize: str | None = None, batching: bool = True,
                 model_memory_gb: float | None = None, analysis_cache_bytes: int | None = None) -> None:
        """See ModelRegistry for the models' arguments; `limits` caps every request;
        `analysis_cache_bytes` bounds the Attention tab's cached analyses (default:
        interpret.DEFAULT_CACHE_BYTES)."""
        super().__init__(default_model, device, dtype, allowed_models, max_loaded_models, quantize, batching,
                         model_memory_gb)
        self.limits = limits or Limits()
        self.beam_turns = generating.BeamTurns(self.limits.max_parallel_beam_searches,
                                               self.limits.max_waiting_beam_searches)
        self.analysis_cache_bytes = analysis_cache_bytes
        self._interpreter = None

    # ----- generate -------------------------------------------------------------------------

    def generate(self, request: GenerationRequest, progress: ProgressCallback | None = None,
                 should_stop: Callable[[], bool] | None = None,
                 forced: ForcedPrefix | None = None) -> Iterator[GenerationResult]:
        """Yield the growing result token by token (one sequence, greedy or sampling), or once
        at the end (several sequences or beam search, which cannot show partial text).

        Closing the iterator stops decoding (the UI's Stop button). With batching on, greedy and
        sampling requests on the same model are decoded together between steps (biogpt.batching);
        each gets exactly what it would get alone. Beam searches run on their own, a few at a time.
        `should_stop` (e.g. "the visitor's connection closed") is asked before every model call and
        while waiting for a turn; when it says yes, biogpt.generation.DecodingStopped is raised.

        `forced` makes a branch: its tokens are the first new ones (same seed and settings as the
        run they come from: forcing a run's own tokens reproduces it). The result's settings then
        hold `forced_token_ids` and the `sampler_rule`, enough to reproduce the branch alone.
        """
        prompt = clean_text(request.prompt, "prompt", self.limits.max_prompt_chars)
        kwargs = request.decoding_kwargs(self.limits)
        seed = None
        if kwargs.get("do_sample"):
            seed = kwargs["seed"] = resolve_seed(request.seed)
        loaded = self.load(request.model, "generate", progress)
        ids = loaded.tokenizer.encode(prompt)
        generating.check_room(loaded, len(ids), kwargs["max_new_tokens"])
        if forced is not None:
            forced_ids = forced.resolve(loaded.tokenizer, loaded.model.config.vocab_size, kwargs["max_new_tokens"],
                                        request.mode, self.limits)
            if forced_ids:
                kwargs["forced_token_ids"] = forced_ids
        settings = {"model": loaded.name, "device": loaded.device, "dtype": loaded.dtype, "mode": request.mode,
                    **{k: v for k, v in kwargs.items() if k != "do_sample"}, "seed": seed}
        if "forced_token_ids" in kwargs:
            from ..generation import SAMPLER_RULE

            settings["sampler_rule"] = SAMPLER_RULE
        return generating.results(loaded, prompt, ids, kwargs, settings, self.beam_turns, should_stop)

    # ----- scoring with the language model ----------------------------------------------------

    def answer_pubmedqa(self, question: str, context: str, model: str = "bundled", long_answer: str = "",
                        progress: ProgressCallback | None = None) -> AnswerResult:
        """Score "yes", "no" and "maybe" as BioGPT's PubMedQA fine-tuning phrased the answer."""
        question = clean_text(question, "question", self.limits.max_prompt_chars).strip()
        context = clean_text(context, "context", self.limits.max_prompt_chars).strip()
        long_answer = clean_text(long_answer, "long answer", self.limits.max_prompt_chars, allow_empty=True).strip()
        prompt = scoring.pubmedqa_prompt(question, context, long_answer)
        return scoring.answer_pubmedqa(self.load(model, "generate", progress), prompt)

    def zero_shot(self, text: str, labels: list[str] | str, template: str = scoring.ZERO_SHOT_TEMPLATE,
                  model: str = "bundled", normalize: bool = True,
                  progress: ProgressCallback | None = None) -> ClassificationResult:
        """Each candidate label scored by the log-likelihood of `template` filled with the text and
        the label ("{text}" before "{label}"); see biogpt.serving.scoring.zero_shot."""
        text = clean_text(text, "text", self.limits.max_classify_chars)
        template = scoring.zero_shot_template(template)
        labels = scoring.zero_shot_labels(labels, self.limits)
        return scoring.zero_shot(self.load(model, "generate", progress), text, labels, template, normalize)

    # ----- fine-tuned heads -----------------------------------------------------------------

    def ner(self, text: str, model: str = "bundled-ner", aggregation: str = "auto",
            progress: ProgressCallback | None = None) -> NerResult:
        """Entity spans with confidences; `aggregation` says how a word's tag is read from its
        pieces ("auto": as the model was trained). See biogpt.serving.tagging.ner."""
        text = clean_text(text, "text", self.limits.max_document_chars)
        tagging.check_aggregation(aggregation)
        return tagging.ner(self.load(model, "ner", progress), text, aggregation, self.limits)

    def ner_many(self, texts: Iterable[str], model: str = "bundled-ner", aggregation: str = "auto",
                 batch_docs: int = 32, batch_rows: int = 8) -> Iterator[NerResult | InputError]:
        """`ner` over many texts, in order: one result, or the InputError refusing that text, per
        text; batched (biogpt.serving.tagging.ner_many) and equal to calling `ner` on each."""
        tagging.check_aggregation(aggregation)
        return tagging.ner_many(self.load(model, "ner"), texts, aggregation, self.limits, batch_docs, batch_rows)

    def classify(self, text: str, model: str = "bundled-hoc", progress: ProgressCallback | None = None) -> ClassificationResult:
        """The checkpoint's own labels; multi-label checkpoints use the threshold in their config."""
        text = clean_text(text, "text", self.limits.max_classify_chars)
        return tagging.classify(self.load(model, "classify", progress), text)

    # ----- the paper's fine-tuned tasks (Tasks tab; biogpt.serving.paper_tasks) -------------------
    # Microsoft's fine-tuned checkpoints (converted with `biogpt convert`) and models trained with
    # `biogpt train prompt` are the operator's models; the visitor picks one and a task.

    @staticmethod
    def paper_task_choices() -> list[tuple[str, str]]:
        """(title, name) of the BioGPT paper's tasks: relation extraction, PubMedQA, HoC."""
        from ..paper_tasks import TASKS

        return [(spec.title, name) for name, spec in TASKS.items()]

    def paper_task(self, task: str, text: str, model: str, question: str = "",
                   progress: ProgressCallback | None = None):
        """A fine-tuned paper-task model's answer, parsed into triples, an answer or labels
        (biogpt.serving.paper_tasks.PaperTaskResult); malformed pieces are reported with it."""
        from ..paper_tasks import TASKS
        from . import paper_tasks

        if task not in TASKS:
            raise InputError(f"Task must be one of {', '.join(TASKS)}, got {task!r}.")
        text = clean_text(text, "text", self.limits.max_document_chars)
        question = clean_text(question, "question", self.limits.max_prompt_chars, allow_empty=True)
        if task == "pubmedqa" and not question.strip():
            raise InputError("PubMedQA needs a question as well as the context.")
        return paper_tasks.run(self.load(model, "generate", progress), task, text, question, self.limits.max_new_tokens)

    # ----- attention ----------------------------------------------------------------------------
    # One forward with attentions and hidden states per (model, text), kept in a byte-bounded
    # cache; every view is derived from it in biogpt.interpret.

    @property
    def interpreter(self):
        """The Attention tab's side of the engine (biogpt.interpret.Interpreter), made on first use."""
        if self._interpreter is None:
            from ..interpret import Interpreter

            sizes = {} if self.analysis_cache_bytes is None else {"max_bytes": int(self.analysis_cache_bytes)}
            self._interpreter = Interpreter(lambda name: self.load(name, "generate"), self.default_choice("generate"), **sizes)
        return self._interpreter

    def analyze(self, text: str, model: str | None = None):
        """The cached `interpret.Analysis` of `text` (runs the model only on a cache miss).

        What the model can read is its positions, in tokens; a text over the character guard is
        refused with that token cap too, so the two limits never disagree in what they say.
        """
        model = model or self.default_choice("generate")
        if isinstance(text, str) and len(text) > self.limits.max_document_chars:
            positions = self.load(model, "generate").max_positions
            raise InputError(
                f"The text has {len(text):,} characters; {model} reads at most {positions:,} tokens "
                f"(about {positions * CHARS_PER_TOKEN:,} characters of English text), so shorten it."
            )
        text = clean_text(text, "text", self.limits.max_document_chars)
        try:
            return self.interpreter.analyze(text, model)
        except ValueError as error:  # interpret's refusals are sentences for the visitor
            raise InputError(str(error)) from None

    def cached_analysis(self, text: str, model: str | None = None):
        """The analysis if it is cached, else None; never runs the model."""
        try:
            text = clean_text(text, "text", self.limits.max_document_chars)
        except InputError:
            return None
        return self.interpreter.cached_analysis(text, model or self.default_choice("generate"))

    def logit_lens(self, analysis, k: int = 5):
        return self.interpreter.logit_lens(analysis, k)

    def watch_tokens(self, analysis, position: int, words: list[str]):
        return self.interpreter.watch_tokens(analysis, position, words)

    def ablate(self, analysis, heads, k: int = 8, continue_tokens: int = 0):
        return self.interpreter.ablate(analysis, heads, k, continue_tokens)

    def trace_generation(self, analysis, max_new_tokens: int = 20):
        return self.interpreter.trace_generation(analysis, max_new_tokens)

    def attribute(self, text: str, position: int, method: str = "integrated_gradients", target: str | int | None = None,
                  contrast: str | int | None = None, steps: int = 32, baseline_text: str = "", occlusion: str = "remove",
                  model: str | None = None):
        """Which tokens of `text` drove the token at `position` (`interpret.Attribution`: token and
        word scores, the IG completeness gap, attention rollout beside it). `position` indexes the
        analysed tokens (0 is the leading </s>; len(tokens) is the token after the text); `target`
        and `contrast` (a word or an id) ask "why this token (rather than that one)"; a
        `baseline_text` for integrated gradients must have as many tokens as the text."""
        analysis = self.analyze(text, model)
        baseline_text = clean_text(baseline_text, "baseline text", self.limits.max_document_chars, allow_empty=True)
        for name, word in (("target", target), ("contrast", contrast)):
            if isinstance(word, str) and len(word) > self.limits.max_label_chars:
                raise InputError(f"The {name} word may have at most {self.limits.max_label_chars} characters.")
        try:
            return self.interpreter.attribute(analysis, position, method, target, contrast, steps, baseline_text.strip(),
                                              occlusion)
        except ValueError as error:
            raise InputError(str(error)) from None

    # ----- attention: head roles, side by side, the formula (issue 16) ------------------------------

    def head_roles(self, model: str | None = None):
        """Every head's role scores (`interpret.HeadRoles`) on the model's own probe, once per model."""
        model = model or self.default_choice("generate")
        self.load(model, "generate")  # an unknown or forbidden model is refused with its sentence
        return self.interpreter.head_roles(model)

    def compare(self, text: str, other_text: str = "", model: str | None = None, other_model: str = "",
                heads_off: str = ""):
        """Two analyses side by side (`interpret.Comparison`): `text` against `other_text` on one model,
        on `model` against `other_model`, or with and without the heads of `heads_off` ("3.5, 4.*",
        1-based). Exactly one of the three is given; each side is cached like any analysis."""
        other_text, other_model, heads_off = (value.strip() if isinstance(value, str) else value
                                              for value in (other_text, other_model, heads_off))
        given = [name for name, value in (("a second text", other_text), ("a second model", other_model),
                                          ("heads to switch off", heads_off)) if value]
        if not given:
            raise InputError("Give a second text, a second model or heads to switch off to compare with.")
        if len(given) > 1:
            raise InputError(f"Compare one thing at a time: {' and '.join(given)} were both given.")
        model = model or self.default_choice("generate")
        first = self.analyze(text, model)  # checks the text and caches the first side
        if other_text:
            return self.interpreter.compare_texts(first.text, self.analyze(other_text, model).text, model)
        if other_model:
            return self.interpreter.compare_models(first.text, model, self.analyze(first.text, other_model).model_id)
        try:
            heads = first.parse_heads(heads_off)
        except ValueError as error:
            raise InputError(str(error)) from None
        if not heads:
            raise InputError("Name at least one head to switch off, as layer.head (e.g. 3.5 or 4.*).")
        return self.interpreter.compare_ablation(first.text, heads, model)

    def attention_row(self, analysis, layer: int, head: int, position: int):
        """The attention formula on one real row (`interpret.AttentionRow`); 0-based layer and head."""
        try:
            return self.interpreter.attention_row(analysis, layer, head, position)
        except ValueError as error:
            raise InputError(str(error)) from None


__all__ = ["Engine"]
