"""The model card (README.md in the output folder): architecture, how to read the model, data and
licences, the exact command, metrics and limitations."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import STUDIO_KEY
from .tasks import Task

# Which sources a data file name points to, for the card's licence section.
DATA_PROVENANCE = [
    ("BC5CDR", "BioCreative V CDR corpus (Li et al., 2016; NCBI), 1,500 PubMed abstracts with Chemical and Disease "
               "mentions, 500/500/500 train/dev/test. Public-domain notice in `BC5CDR/CDR_README.txt`; cite the corpus."),
    ("HoC", "Hallmarks of Cancer corpus (Baker et al., 2016), sentence level, 10 hallmarks, as prepared in the "
            "microsoft/BioGPT repository (MIT; the corpus keeps its own terms). The original valid file equals test, "
            "so validation is held out of train."),
    ("PubMedQA", "PubMedQA PQA-L expert-labelled questions (Jin et al., 2019), as prepared in the microsoft/BioGPT "
                 "repository; the dataset keeps its own terms."),
    ("pubmed_docs", "PubMed titles and abstracts (3,834 deduplicated documents from BC5CDR train+dev, KD-DTI, DDI "
                    "MedLine and PubMedQA train+valid; test splits removed), from the microsoft/BioGPT repository's "
                    "`data/`. Abstracts are NLM/PubMed records; each corpus keeps its own terms."),
    ("hoc_sentences", "HoC sentences not in HoC test (Moses-tokenised), from the microsoft/BioGPT repository."),
    ("ddi_drugbank", "DrugBank drug-label texts from the DDI-2013 corpus (not PubMed), from the microsoft/BioGPT "
                     "repository; the corpus keeps its own terms."),
]


def write_model_card(out: Path, task: Task, model, info: dict) -> None:
    """`info` is the run's record (Trainer.card_info): status, files, steps, metrics, command."""
    config = model.config
    params = sum(p.numel() for p in model.parameters())
    files = info["data_files"]
    sources = sorted({text for key, text in DATA_PROVENANCE if any(key in f for f in files)})
    title = {"lm": "causal language model", "ner": "Chemical/Disease NER (BIO)", "classify": "sequence classifier",
             "prompt": "paper-task generator (learned-prompt format)"}[task.name]
    lines = [
        f"# {out.name}: a small BioGPT {title} trained with BioGPT Studio",
        "",
        f"Status: **{info['status']}**.",
        "",
        "## Architecture",
        "",
        f"BioGPT (pre-LayerNorm transformer decoder, learned positions with the +2 offset, Moses + BPE tokenizer), "
        f"`{type(model).__name__}`: {config.num_hidden_layers} layers, hidden size {config.hidden_size}, "
        f"{config.num_attention_heads} heads, intermediate size {config.intermediate_size}, vocabulary {config.vocab_size:,}, "
        f"{config.max_position_embeddings} positions, dropout {config.hidden_dropout_prob}; {params / 1e6:.1f} M parameters. "
        f"Weights stored as {info['save_dtype']} safetensors. Loads with `biogpt.{type(model).__name__}.from_pretrained(folder)` "
        f"and with transformers' class of the same name.",
    ]
    if config.id2label and task.name != "lm":
        lines += ["", "Labels: " + ", ".join(f"`{v}`" for _, v in sorted(config.id2label.items())) + "."]
    extra = config.extra.get(STUDIO_KEY, {})
    if task.name == "ner":
        lines += ["", "How to read it (also in config.json, `biogpt_studio`): BIO tags per Moses word, read at the word's "
                  f"**{extra.get('ner_label_token')}** BPE piece; input "
                  + ("`</s> text </s> text` with the tags read on the second copy" if extra.get("ner_input") == "doubled"
                     else "`</s> text`")
                  + f"; windows of {extra.get('ner_window')} pieces, stride {extra.get('ner_stride')}. "
                  "`biogpt.train.predict_entities(model, tokenizer, texts)` does all of this."]
    if task.name == "prompt":
        prompt = extra["prompt"]
        lines += ["", f"Input (also in config.json, `biogpt_studio.prompt`): `</s> source "
                  f"{' '.join(t.removesuffix('</w>') for t in prompt['learned_tokens'])}`, then the model writes the "
                  f"{prompt['task']} answer sentence, as Microsoft's fine-tuned checkpoints do; the Tasks tab and "
                  "`biogpt evaluate` run it."]
    if task.name == "classify" and extra.get("multi_label"):
        lines += ["", f"Multi-label: sigmoid per label, threshold {extra.get('threshold')} (tuned on validation for micro-F1); "
                  f"`{extra.get('empty_label')}` in the data means no label (all zeros)."]
    lines += ["", "## Data and licences", ""]
    lines += [f"- {s}" for s in sources] or ["- (files below)"]
    roles = [("Training", info["train_files"]), ("Validation", info["valid_files"]),
             ("Test (final evaluation only)", info["test_files"])]
    lines += [""] + [f"{role} files: " + ", ".join(f"`{f}`" for f in paths) + "." for role, paths in roles if paths]
    if not info["valid_files"]:
        lines.append(f"Validation: {info['valid_percent']}% of the training examples, chosen by a hash of their text.")
    elif info.get("train_on_dev"):
        lines.append(f"The validation files were trained on too (--train-on-dev); early stopping used "
                     f"{info['valid_percent']}% of the training examples, chosen by a hash of their text.")
    lines += ["",
              "Tokenizer: the BioGPT vocabulary and BPE merges from microsoft/BioGPT (MIT licence).",
              "", "## Training", "",
              f"- Initialised from: {info['init']}",
              "- Data sizes: " + ", ".join(f"{k} {v:,}" for k, v in task.sizes.items()),
              f"- Steps: {info['steps']} ({info['epochs_done']:.2f} epochs), best validation at step {info['best_step']}; "
              f"stopped because: {info['stop_reason']}",
              f"- Wall time: {info['wall_s'] / 60:.1f} min (training loop {info['train_s'] / 60:.1f} min) "
              f"on {info['device_name']}, torch {torch.__version__}",
              "", "Exact command:", "", "```", info["command"], "```",
              "", "## Metrics", ""]
    for split in ("valid", "test"):
        metrics = info["metrics"].get(split)
        if metrics:
            label = "Test split (final, never trained on)" if split == "test" else "Validation split (used for early stopping)"
            lines.append(f"- {label}: {task.headline(metrics)}")
    if task.name == "ner" and info["metrics"].get("test"):
        lines += ["", "| type | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        test = info["metrics"]["test"]
        for kind, s in test["per_type"].items():
            lines.append(f"| {kind} | {s['precision']:.4f} | {s['recall']:.4f} | {s['f1']:.4f} | {s['support']} |")
        lines.append(f"| micro | {test['micro_precision']:.4f} | {test['micro_recall']:.4f} | {test['micro_f1']:.4f} | |")
        lines.append("\nStrict: a predicted entity counts only with the exact character start, end and type.")
    check = info["metrics"].get("fp16_check")
    if check:
        values = [f"{k.split('_', 1)[1]} {v:.4f}" for k, v in check.items() if k.startswith("valid_")]
        lines.append(f"\nStored-weights check ({check['stored_dtype']} against the fp32 weights, fp32 compute): max |logit "
                     f"difference| {check['max_abs_logit_diff']:.2e}, mean {check['mean_abs_logit_diff']:.1e}, largest logit "
                     f"{check['max_abs_logit']:.1f} (tolerance {check['tolerance']:g}: "
                     f"{'within' if check['within_tolerance'] else 'ABOVE'}); validation " + ", ".join(values) + ".")
    lines += ["", "## Limitations", "",
              "A small model trained for minutes on a few MB of text: a demonstration of the architecture and the "
              "pipeline, not a research-grade model. Do not use its outputs for medical decisions."]
    notes = {
        "lm": "More text (the full PubMed corpus BioGPT used), a wider/deeper model and longer training lower perplexity.",
        "ner": "A better pretrained base (e.g. microsoft/biogpt), a CRF or span decoder, and ensembling would raise F1.",
        "classify": "A better pretrained base (e.g. microsoft/biogpt) and per-label thresholds would raise F1.",
        "prompt": "Microsoft fine-tuned the 347 M-parameter BioGPT for 100 epochs; a bigger base, all of the training "
                  "split and longer training would raise F1.",
    }
    lines += ["", "What would raise the numbers: " + notes[task.name], ""]
    (out / "README.md").write_text("\n".join(lines), encoding="utf-8")
