"""The BioGPT paper's fine-tuned tasks, as Microsoft's scripts define them (microsoft/BioGPT,
examples/*/rebuild_data.py, postprocess.py, hard_match_evaluation.py; src/language_model_prompt_dataset.py).

Per task: how a document becomes the model's source text, the target sentence it was trained to
write, how a generation is parsed back into structure, and the decoding of Microsoft's inference
(inference.py: beam 1, i.e. greedy, up to the model's 1,024 positions). The input a fine-tuned
model sees is `</s> source learned1 .. learnedN` (LanguageModelPromptDataset's default layout,
source then prompt; with --prefix: `</s> prompt source <seqsep>`), and it writes the target.

Parsing follows postprocess.py: strip the echoed prompt, drop the final ".", split the answer into
sentences, match each against the task's pattern. Unlike postprocess.py, a sentence that does not
match, or a relation word outside the task's set, is kept and reported as malformed, never dropped.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

# --------------------------------------------------------------------------------------------
# The prompt's layout
# --------------------------------------------------------------------------------------------


@dataclass
class PromptFormat:
    """How a fine-tuned model's input is laid out; kept in config.json ("biogpt_studio": {"prompt": ...})."""

    task: str | None = None  # one of TASKS, when known
    learned_tokens: list[str] = field(default_factory=list)  # vocabulary entries, e.g. "learned1</w>"
    manual_prompt: str | None = None
    prefix: bool = False
    sep_token: str | None = None
    max_source_positions: int = 384  # source tokens kept (the last becomes "..."), as the dataset truncates
    source: str = "fairseq"  # "fairseq" (converted) or "biogpt-studio" (trained here)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PromptFormat:
        known = {k: v for k, v in values.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def input_ids(prompt: PromptFormat, tokenizer, source: str) -> list[int]:
    """The ids Microsoft's model saw before its answer: `</s> source prompt` (or, with --prefix,
    `</s> prompt source <seqsep>`), the source cut to max_source_positions with "..." last."""
    encoded = tokenizer.encode(source)  # starts with </s>, as fairseq's generation does
    start, body = encoded[:1], encoded[1:]
    limit = prompt.max_source_positions
    if len(body) > limit:
        body = body[:limit - 1] + [tokenizer.convert_tokens_to_ids("...</w>")]
    if prompt.manual_prompt:
        prompt_ids = tokenizer.encode(prompt.manual_prompt)[1:]
    else:
        prompt_ids = [tokenizer.convert_tokens_to_ids(t) for t in prompt.learned_tokens]
        unknown = [t for t, i in zip(prompt.learned_tokens, prompt_ids) if i == tokenizer.unk_token_id]
        if unknown:
            raise ValueError(f"the tokenizer lacks the learned prompt tokens {unknown[:3]}")
    if prompt.prefix:
        return start + prompt_ids + body + [tokenizer.convert_tokens_to_ids(prompt.sep_token)]
    return start + body + prompt_ids


# --------------------------------------------------------------------------------------------
# Tasks
# --------------------------------------------------------------------------------------------

DDI_RELATIONS = ("effect", "mechanism", "advise", "int")
# KD-DTI's interaction types (valid and test splits, lower-cased).
KD_DTI_RELATIONS = (
    "activator", "adduct", "agonist", "allosteric modulator", "antagonist", "antibody", "bind", "binder", "binding",
    "blocker", "chaperone", "chelator", "cleavage", "cofactor", "cross-linking/alkylation", "disruption",
    "downregulator", "enhancer", "inactivator", "inducer", "inhibitor", "intercalation", "inverse agonist", "ligand",
    "modulator", "multitarget", "negative modulator", "opener", "other", "other/unknown", "partial agonist",
    "partial antagonist", "positive allosteric modulator", "potentiator", "product of", "regulator", "stimulator",
    "substrate", "suppressor", "unknown", "weak inhibitor",
)
HOC_LABELS = (
    "tumor promoting inflammation", "inducing angiogenesis", "evading growth suppressors", "resisting cell death",
    "cellular energetics", "empty", "genomic instability and mutation", "sustaining proliferative signaling",
    "avoiding immune destruction", "activating invasion and metastasis", "enabling replicative immortality",
)
PUBMEDQA_ANSWERS = ("yes", "no", "maybe")
# Microsoft's postprocess.py strips the first of these it finds (the echoed prompt, or a lead-in).
ECHO_PREFIXES = (r"(learned[0-9]+ )+", "we can conclude that", "we have that", "in conclusion,")
BC5CDR_ECHO_PREFIXES = (r"(learned[0-9]+ )+", "in conclusion ,", "we can conclude that", "we have that")


@dataclass(frozen=True)
class PaperTask:
    name: str
    title: str
    kind: str  # "triples" | "answer" | "labels"
    columns: tuple[str, ...]  # a triple's fields, in the order the parser returns them
    relations: tuple[str, ...]  # the known relation words / answers / labels
    learned_prompt: int  # Microsoft's --learned-prompt
    max_source_positions: int  # Microsoft's --max-source-positions
    paper_score: str  # the paper's number, as a sentence
    checkpoint: str  # Microsoft's checkpoint name


TASKS: dict[str, PaperTask] = {
    "bc5cdr": PaperTask("bc5cdr", "BC5CDR chemical-induced disease", "triples", ("chemical", "disease"), (), 9, 640,
                        "44.98 F1 (official BioCreative id-level metric, not reproduced here)", "RE-BC5CDR-BioGPT"),
    "ddi": PaperTask("ddi", "DDI drug-drug interaction", "triples", ("drug", "target", "interaction"), DDI_RELATIONS, 9,
                     640, "40.76 F1", "RE-DDI-BioGPT"),
    "kd-dti": PaperTask("kd-dti", "KD-DTI drug-target interaction", "triples", ("drug", "target", "interaction"),
                        KD_DTI_RELATIONS, 9, 640, "38.42 F1", "RE-DTI-BioGPT"),
    "pubmedqa": PaperTask("pubmedqa", "PubMedQA yes/no/maybe", "answer", ("answer",), PUBMEDQA_ANSWERS, 9, 900,
                          "78.2 accuracy", "QA-PubMedQA-BioGPT"),
    "hoc": PaperTask("hoc", "HoC hallmarks of cancer", "labels", ("label",), HOC_LABELS, 1, 900, "85.12 micro F1",
                     "DC-HoC-BioGPT"),
}

# Folder names in Microsoft's data paths (args.data of a checkpoint, e.g. ../../data/DDI/relis-bin).
_DATA_FOLDERS = {"BC5CDR": "bc5cdr", "DDI": "ddi", "KD-DTI": "kd-dti", "PubMedQA": "pubmedqa", "HoC": "hoc"}


def task_from_data_path(path: str) -> str | None:
    parts = re.split(r"[\\/]", path)
    return next((_DATA_FOLDERS[p] for p in reversed(parts) if p in _DATA_FOLDERS), None)


def get_task(name: str) -> PaperTask:
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; expected one of {', '.join(TASKS)}.")
    return TASKS[name]


# --------------------------------------------------------------------------------------------
# Source and target text (rebuild_data.py)
# --------------------------------------------------------------------------------------------


def document_text(task: str, title: str, abstract: str) -> str:
    """The source text of a document: DDI uses the abstract alone; KD-DTI and BC5CDR join title and
    abstract with ". " (or " " after punctuation). Relation extraction sources are lower-cased."""
    if task in ("ddi",):
        return abstract.strip().replace("\n", " ").lower()
    if task in ("kd-dti", "bc5cdr"):
        joined = f"{title} {abstract}" if re.search(r"\W$", title) else f"{title}. {abstract}"
        return joined.lower()
    raise ValueError(f"{task} has no title/abstract documents")


def hoc_source(sentence: str) -> str:
    sentence = sentence.strip()
    return sentence if sentence.endswith(".") else sentence + "."


def pubmedqa_source(question: str, context: str) -> str:
    context = re.sub(r"\s+", " ", context.replace("\n", " "))
    return f"question: {question.strip()} context: {context.strip()} "


def relation_target(triples: list[dict], text: str) -> str:
    """DDI / KD-DTI's target: "the interaction between d and t is r; ...", triples in the order
    Microsoft sorts them (by where the drug's name, as written, occurs in the lower-cased text)."""
    ordered = sorted(triples, key=lambda t: text.find(t["drug"]))
    parts = [f"the interaction between {t['drug'].lower()} and {t['target'].lower()} is {t['interaction'].lower()}"
             for t in ordered]
    return "; ".join(parts) + "."


def answer_target(task: str, value: str) -> str:
    lead = "the type of this document is " if task == "hoc" else "the answer to the question given the context is "
    return lead + value + "."


# --------------------------------------------------------------------------------------------
# Parsing a generation (postprocess.py)
# --------------------------------------------------------------------------------------------


@dataclass
class ParsedOutput:
    """A generation read into structure. `items` are triples (dicts of the task's columns),
    or one answer, or labels; `malformed` holds every piece that could not be read, with why."""

    task: str
    text: str
    items: list[dict[str, str]]
    malformed: list[dict[str, str]]

    @property
    def failed(self) -> bool:
        """Nothing could be read (Microsoft's scripts then record "failed")."""
        return not self.items


def _strip_echo(line: str, prefixes: tuple[str, ...]) -> str:
    for pattern in prefixes:
        if re.search(pattern, line) is not None:
            return re.split(pattern, line)[-1].strip()
    return line


def _without_final_period(text: str) -> str:
    text = text.strip()
    return text[:-1] if text.endswith(".") else text


_DDI_SENTENCE = re.compile(r"the interaction between (.*) and (.*) is (.*)")
_BC5CDR_SENTENCE = re.compile(r"the relation between (.*) and (.*) exists")
_ANSWER = re.compile(r"the answer to the question given the context is(.*)")
_HOC = re.compile(r"the type of this document is(.*)")


def parse_generation(task: str, text: str) -> ParsedOutput:
    """Parse the text a fine-tuned model wrote (with or without the echoed source and prompt)."""
    spec = get_task(task)
    line = _without_final_period(text)
    items: list[dict[str, str]] = []
    malformed: list[dict[str, str]] = []
    if spec.kind == "triples":
        line = _strip_echo(line, BC5CDR_ECHO_PREFIXES if task == "bc5cdr" else ECHO_PREFIXES)
        sentences = line.split(";") if task == "bc5cdr" else line.split("; ")
        for sentence in sentences:
            if not sentence.strip():
                continue
            if task == "bc5cdr":
                found = _BC5CDR_SENTENCE.match(sentence.strip())
                if found:
                    items.append({"chemical": found.group(1).strip(), "disease": found.group(2).strip()})
                    continue
            else:
                found = _DDI_SENTENCE.match(sentence)
                if found:
                    triple = {"drug": found.group(1).strip(), "target": found.group(2).strip(),
                              "interaction": found.group(3).strip()}
                    items.append(triple)
                    if spec.relations and triple["interaction"].lower() not in spec.relations:
                        malformed.append({"text": sentence.strip(),
                                          "reason": f"unknown relation word {triple['interaction']!r}"})
                    continue
            malformed.append({"text": sentence.strip(), "reason": "not a relation sentence (partial or other wording)"})
        return ParsedOutput(task, text, items, malformed)

    line = _strip_echo(line, ECHO_PREFIXES)
    found = (_HOC if spec.kind == "labels" else _ANSWER).search(line)
    if not found:
        return ParsedOutput(task, text, [], [{"text": line, "reason": "the answer sentence is missing"}])
    value = found.group(1).strip()
    if spec.kind == "answer":
        if value not in spec.relations:
            malformed.append({"text": value, "reason": f"not one of {'/'.join(spec.relations)}"})
        return ParsedOutput(task, text, [{"answer": value}], malformed)
    for label in (w.strip() for w in value.split("|")):
        items.append({"label": label})
        if label not in spec.relations:
            malformed.append({"text": label, "reason": "not a HoC hallmark"})
    return ParsedOutput(task, text, items, malformed)


def as_rows(parsed: ParsedOutput) -> list[list[str]]:
    """The table a person reads: one row per item in the task's columns, then each malformed piece."""
    columns = get_task(parsed.task).columns
    rows = [[item.get(c, "") for c in columns] + ["ok"] for item in parsed.items]
    rows += [[m["text"]] + [""] * (len(columns) - 1) + [f"malformed: {m['reason']}"] for m in parsed.malformed]
    return rows


# --------------------------------------------------------------------------------------------
# Running a fine-tuned model (Microsoft's inference.py: beam 1, up to the model's positions)
# --------------------------------------------------------------------------------------------


def prompt_format_of(model) -> PromptFormat:
    """The prompt record a converted or trained model carries in config.json; ValueError if none."""
    studio = model.config.extra.get("biogpt_studio") or {}
    if "prompt" not in studio:
        raise ValueError("this model has no prompt record: it is not a fine-tuned paper-task model "
                         "(convert Microsoft's checkpoint with `biogpt convert`, or train one with `biogpt train prompt`)")
    return PromptFormat.from_dict(studio["prompt"])


def decoding_settings(model, prompt_length: int, max_new_tokens: int | None = None) -> dict[str, Any]:
    """Greedy (beam 1) until </s> or the model's last position, as inference.py decodes;
    `max_new_tokens` caps it lower (recorded wherever it is used)."""
    room = model.config.max_position_embeddings - prompt_length
    limit = room if max_new_tokens is None else min(room, max_new_tokens)
    return {"do_sample": False, "num_beams": 1, "max_new_tokens": max(1, limit)}


def run_model(model, tokenizer, task: str, sources: list[str], max_new_tokens: int | None = None,
              batch_size: int = 8, prompt: PromptFormat | None = None) -> list[ParsedOutput]:
    """Each source through the fine-tuned model, parsed; batches are left-padded (positions follow
    the mask, so each row decodes as it would alone). `prompt` defaults to the model's record."""
    import torch

    from .generation import generate

    prompt = prompt or prompt_format_of(model)
    encoded = [input_ids(prompt, tokenizer, source) for source in sources]
    outputs: list[ParsedOutput] = []
    pad = tokenizer.pad_token_id
    for start in range(0, len(encoded), batch_size):
        rows = encoded[start:start + batch_size]
        longest = max(map(len, rows))
        if longest >= model.config.max_position_embeddings:
            raise ValueError(f"an input of {longest} tokens leaves no room to answer in {model.config.max_position_embeddings} "
                             "positions; lower max_source_positions")
        ids = torch.tensor([[pad] * (longest - len(r)) + r for r in rows])
        mask = torch.tensor([[0] * (longest - len(r)) + [1] * len(r) for r in rows])
        settings = decoding_settings(model, longest, max_new_tokens)
        with torch.inference_mode():
            result = generate(model, ids, attention_mask=mask, pad_token_id=pad, **settings)
        for row in result[:, longest:].tolist():
            text = tokenizer.decode([i for i in row if i != pad], skip_special_tokens=True)
            outputs.append(parse_generation(task, text))
    return outputs
