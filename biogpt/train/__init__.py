"""Pretraining and fine-tuning: `python -m biogpt.train lm|ner|classify ...`.

    # a causal LM from scratch (or --init CHECKPOINT to continue), packed 512-token blocks
    python -m biogpt.train lm --train docs.jsonl notes.txt --layers 4 --hidden 256 --heads 8 \
        --intermediate 1024 --out runs/lm
    # Chemical/Disease NER (BIO) on BC5CDR, strict span F1 on the test split
    python -m biogpt.train ner --init runs/lm --train BC5CDR/ner_spans_train.jsonl \
        --valid BC5CDR/ner_spans_valid.jsonl --test BC5CDR/ner_spans_test.jsonl --out runs/ner
    # sequence classification from `text<TAB>label` TSV; --multi-label for `a|b` labels (HoC)
    python -m biogpt.train classify --init runs/lm --multi-label --train HoC/train.tsv \
        --test HoC/test.tsv --out runs/hoc

The output folder is a `save_pretrained` checkpoint (config.json with id2label, model.safetensors)
that loads here and in transformers, plus the tokenizer files, metrics.json, train_log.jsonl
and a model card (README.md). The best model on the validation split is written there every
time it improves, so an interrupted run still leaves a usable model.

Decisions worth knowing (each is also recorded in config.json under "biogpt_studio" where
inference needs it):

* Splits. Validation is the --valid file or, without one, a fixed share of the training
  documents chosen by a hash of their text (--valid-percent), so the split never depends on
  file order or seed. Only --test is ever used for the final numbers. A training or
  validation file whose name contains "test" is refused, and training/validation examples
  whose text also occurs in the --test data are dropped: test data cannot leak by construction.
* LM data: a .jsonl line gives `title + " " + abstract` (or `text`), HTML entities unescaped
  (some PubMed abstracts hold "&gt;"); a .txt line is one document. Every document starts with
  "</s>" as in BioGPT; documents are concatenated and cut into --block-size blocks. Perplexity
  is exp(mean token loss) over the held-out blocks.
* NER: BIO tags per Moses word (a word ends at a BPE piece ending in "</w>" or at whitespace);
  a word that overlaps an entity takes its type (B on the entity's first word). One piece per
  word carries the label, the others are -100: by default the word's LAST piece, since in a
  causal model only the last piece has seen the whole word (--label-token first is the usual
  encoder recipe). Predictions are decoded back to character spans through the tokenizer's
  offsets. Long documents are cut into windows of --max-length pieces with --stride; each
  piece takes its prediction from the window where it sits most centrally. --double-text feeds
  "</s> window </s> window" and labels only the second copy, so every labelled piece has seen
  its right context (the app must build the same input: see `predict_entities`).
  Evaluation is strict: exact (start, end, type) character spans, per type and micro.
  (Reading, decoding and scoring live in biogpt/ner.py, which the app's engine shares.)
* Classification: right padding (the model pools at the last non-pad token). Multi-label
  rows `a|b` become 0/1 vectors; the --empty-label ("empty" for HoC) means "none of them", i.e.
  the all-zeros vector, not a class of its own. The sigmoid threshold is tuned on validation
  for micro-F1 and stored in config.json.
* Optimisation: AdamW (no weight decay on biases and norms), linear warmup then cosine or
  linear decay, gradient clipping, bf16 autocast on request. With --max-minutes the schedule
  runs on whichever is further along, steps or the time budget, so the learning rate has
  decayed when the budget ends. Early stopping (--patience) keeps the best validation model.
* Checkpoints: the resumable state (weights as safetensors, optimizer and counters through
  torch.save, read back with weights_only=True) goes to --checkpoint-dir every --save-every
  steps; --resume continues at the saved step with the same batch order.

Where things are (`ls biogpt/train/`): config.py (TrainConfig, TrainError), data.py (readers,
splits, LM blocks), metrics.py, tasks.py (lm / ner / classify), model_setup.py (tokenizer and
model), optim.py, loop.py (Trainer), checkpoints.py, final.py (stored-weights check and final
numbers), card.py (model card), run.py (one run end to end), cli.py (flags, exit statuses).
"""

# The names `biogpt.train` offered as one module stay importable from here.
from ..devices import device_description
# The NER helpers this module used to import from biogpt.ner stay reachable here too (model cards
# name `biogpt.train.predict_entities`); their home is biogpt/ner.py.
from ..ner import (IGNORE, NerSettings, bio_tags, decode_entities, encode_ner_documents, label_piece,
                   ner_piece_probabilities, pad_batch, precision_recall_f1, predict_entities, span_scores,
                   tags_to_spans, window_rows)
from .card import DATA_PROVENANCE, write_model_card
from .checkpoints import (CHECKPOINT_BEST, CHECKPOINT_STATE, CHECKPOINT_WEIGHTS, CheckpointFolder, load_state,
                          load_tensors, save_model_folder, save_tensors)
from .cli import build_parser, main
from .config import TASK_DEFAULTS, TrainConfig, TrainError
from .data import (DataError, NerDocument, TsvRow, block_batches, pack_blocks, read_lm_documents, read_ner_documents,
                   read_tsv, refuse_test_file, split_holdout, stable_fraction, text_key, train_valid_test)
from .final import finish, storage_check
from .loop import Progress, Trainer
from .metrics import blocks_perplexity, classification_scores, perplexity, tune_threshold
from .model_setup import DEFAULT_TOKENIZER, build_model, load_tokenizer, model_max_positions
from .optim import lr_factor, make_optimizer
from .run import run_training
from .run import training_device as resolve_device  # the trainer's device rule (CUDA or CPU)
from .tasks import ClassifyTask, LmTask, NerTask, Task, make_task
