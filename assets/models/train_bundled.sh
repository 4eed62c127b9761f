#!/usr/bin/env bash
# The exact recipe for the three bundled models:
#   biogpt-pubmed-small      causal LM from scratch on ../shared/data/pubmed-corpus
#   biogpt-pubmed-small-ner  Chemical/Disease NER from that LM (BC5CDR train+dev, test for the card)
#   biogpt-pubmed-small-hoc  HoC multi-label classifier from that LM
#
# Usage (from anywhere):  assets/models/train_bundled.sh [DATA_DIR] [OUT_DIR]
#   DATA_DIR  the data folder (BC5CDR/, HoC/, pubmed-corpus/); default $DATA or ../shared/data
#   OUT_DIR   where the three model folders go; default $OUT or assets/models
# Knobs (environment): DEVICE (cuda), PYTHON (python), WORKERS (8, tokenisation processes),
#   LM_MINUTES (3.3), NER_MINUTES (1.4), HOC_MINUTES (1.0): training-loop budgets per stage;
#   WORK (resumable checkpoints, outside OUT_DIR; default a temporary folder);
#   EXTRA_ARGS (appended to every stage, e.g. "--limit-train 100 --limit-eval 10" for a smoke run).
#
# Sized for one H100 and about 8 minutes wall in all. Each stage writes its best validation
# model to OUT_DIR as soon as it improves (fp16 safetensors + tokenizer + a provisional model
# card), so even a stage killed by its hard time limit leaves a usable model. A finished stage
# adds metrics.json, train_log.jsonl and the final card (test-split metrics, wall time, machine).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
# Paths relative to the repository (the stages run there), so the model cards show short paths.
DATA="$(realpath -m --relative-to="$REPO" "${1:-${DATA:-$REPO/../shared/data}}")"
OUT="$(realpath -m --relative-to="$REPO" "${2:-${OUT:-$REPO/assets/models}}")"
DEVICE="${DEVICE:-cuda}"
PYTHON="${PYTHON:-python}"
WORKERS="${WORKERS:-8}"
LM_MINUTES="${LM_MINUTES:-3.3}"
NER_MINUTES="${NER_MINUTES:-1.4}"
HOC_MINUTES="${HOC_MINUTES:-1.0}"
WORK="${WORK:-$(mktemp -d)}"
export PYTHONUNBUFFERED=1
cd "$REPO"

for f in pubmed-corpus/pubmed_docs.jsonl pubmed-corpus/hoc_sentences.txt pubmed-corpus/ddi_drugbank.txt \
         BC5CDR/ner_spans_train.jsonl BC5CDR/ner_spans_valid.jsonl BC5CDR/ner_spans_test.jsonl \
         HoC/train.tsv HoC/test.tsv; do
  [[ -s "$DATA/$f" ]] || { echo "error: $DATA/$f is missing or empty" >&2; exit 1; }
done
mkdir -p "$OUT" "$WORK"
echo "=== train_bundled.sh: data $DATA -> $OUT (checkpoints in $WORK), device $DEVICE"
echo "=== budgets (training loop): LM ${LM_MINUTES} min, NER ${NER_MINUTES} min, HoC ${HOC_MINUTES} min"
"$PYTHON" - <<'EOF'
import torch
print("=== torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "")
EOF

TOTAL_START=$SECONDS
# stage NAME OUT_FOLDER BUDGET_MINUTES GRACE_SECONDS -- train arguments...
# The hard limit is the budget plus a grace for tokenisation, the final test evaluation and
# saving. At the limit `timeout` sends SIGTERM: training stops, the best model is saved and
# evaluated; 60 s later it sends SIGKILL (the best model saved so far stays on disk).
stage() {
  local name="$1" folder="$2" minutes="$3" grace="$4"; shift 5
  local limit rc=0 start=$SECONDS
  limit=$("$PYTHON" -c "print(int($minutes * 60 + $grace))")
  echo
  echo "=== [$name] start $(date -u +%H:%M:%S) UTC: budget ${minutes} min, hard limit ${limit} s -> $folder"
  timeout -s TERM -k 60 "$limit" "$PYTHON" -m biogpt.train "$@" --out "$folder" --max-minutes "$minutes" || rc=$?
  echo "=== [$name] exit $rc after $((SECONDS - start)) s"
  if [[ $rc -ne 0 ]]; then
    if [[ -s "$folder/model.safetensors" ]]; then
      echo "=== [$name] WARNING: did not finish cleanly (exit $rc); keeping the best model saved so far in $folder"
    else
      echo "=== [$name] FAILED with no model; stopping." >&2
      exit "$rc"
    fi
  fi
}

read -r -a EXTRA <<< "${EXTRA_ARGS:-}"
COMMON=(--device "$DEVICE" --bf16 --save-dtype float16 --workers "$WORKERS" --seed 0 --progress lines ${EXTRA[@]+"${EXTRA[@]}"})

# 1. The base LM: 4 layers, hidden 256, 8 heads, FFN 1024, full 42,384 vocabulary, 1,024 positions.
#    ~2.5 M tokens; 3% of documents (by hash) held out for validation perplexity, BC5CDR test
#    abstracts (not in the corpus) for the card's test perplexity. Packed 512-token blocks.
stage LM "$OUT/biogpt-pubmed-small" "$LM_MINUTES" 100 -- lm \
  --train "$DATA/pubmed-corpus/pubmed_docs.jsonl" "$DATA/pubmed-corpus/hoc_sentences.txt" "$DATA/pubmed-corpus/ddi_drugbank.txt" \
  --test "$DATA/BC5CDR/ner_spans_test.jsonl" \
  --layers 4 --hidden 256 --heads 8 --intermediate 1024 --max-positions 1024 --dropout 0.1 \
  --block-size 512 --batch-size 32 --eval-batch-size 32 --lr 1e-3 --weight-decay 0.1 --warmup-steps 300 \
  --epochs 20 --patience 4 --valid-percent 3 --save-every 1500 --checkpoint-dir "$WORK/lm" "${COMMON[@]}"

LM="$OUT/biogpt-pubmed-small"
[[ -s "$LM/model.safetensors" ]] || { echo "error: no LM at $LM" >&2; exit 1; }

# 2. NER: BIO on Moses words, label on each word's last piece, text fed twice (labels on the
#    second copy), BC5CDR train + dev with 10% of train held out for early stopping.
stage NER "$OUT/biogpt-pubmed-small-ner" "$NER_MINUTES" 60 -- ner \
  --init "$LM" \
  --train "$DATA/BC5CDR/ner_spans_train.jsonl" --valid "$DATA/BC5CDR/ner_spans_valid.jsonl" \
  --test "$DATA/BC5CDR/ner_spans_test.jsonl" --train-on-dev --valid-percent 10 \
  --double-text --label-token last --dropout 0.1 --freeze-embeddings \
  --batch-size 16 --eval-batch-size 32 --lr 3e-4 --warmup-steps 60 --epochs 20 --patience 6 \
  --save-every -1 --checkpoint-dir "$WORK/ner" "${COMMON[@]}"

# 3. HoC: multi-label (10 hallmarks; "empty" = no label), sigmoid threshold tuned on 10% of
#    train held out (HoC has no separate validation split).
stage HoC "$OUT/biogpt-pubmed-small-hoc" "$HOC_MINUTES" 50 -- classify \
  --init "$LM" --multi-label \
  --train "$DATA/HoC/train.tsv" --test "$DATA/HoC/test.tsv" --valid-percent 10 \
  --dropout 0.1 --max-length 256 --freeze-embeddings \
  --batch-size 32 --eval-batch-size 64 --lr 2e-4 --warmup-steps 100 --epochs 12 --patience 4 \
  --save-every -1 --checkpoint-dir "$WORK/hoc" "${COMMON[@]}"

echo
echo "=== all stages done in $((SECONDS - TOTAL_START)) s"
for m in biogpt-pubmed-small biogpt-pubmed-small-ner biogpt-pubmed-small-hoc; do
  ls -la "$OUT/$m"
done
du -ch "$OUT"/biogpt-pubmed-small*/model.safetensors | tail -1
"$PYTHON" - "$OUT" <<'EOF'
import json, sys
from pathlib import Path
for name in ("biogpt-pubmed-small", "biogpt-pubmed-small-ner", "biogpt-pubmed-small-hoc"):
    path = Path(sys.argv[1]) / name / "metrics.json"
    if not path.is_file():
        print(f"{name}: no metrics.json (stage did not finish)")
        continue
    m = json.loads(path.read_text())
    test, fp16 = m.get("test", {}), m.get("fp16_check", {})
    keys = ("perplexity", "micro_f1", "micro_precision", "micro_recall", "macro_f1", "accuracy", "threshold")
    print(name, {k: round(test[k], 4) for k in keys if k in test}, "| valid",
          {k: round(m["valid"][k], 4) for k in keys if k in m["valid"]},
          f"| fp16 max|dlogit| {fp16.get('max_abs_logit_diff', float('nan')):.2e}", "| steps", m["steps"],
          "| stop:", m["stop_reason"], f"| wall {m['wall_s']}s")
EOF
