#!/usr/bin/env bash
# The prepared GPU run: correctness against the fp32 CPU reference, then decode speed and weight
# bandwidth for the microsoft/biogpt and BioGPT-Large shapes (bench/bench_gpu.py says what and how).
#
#   bash bench/gpu.sh [more bench_gpu.py flags, e.g. --only base]
#
# Writes gpu-bench.txt (what was printed) and gpu-bench.json to $OUT if set, else bench/results/.
# Under 8 minutes in all: bench_gpu.py keeps to its --budget, and `timeout` ends it 50 s later
# whatever happens (the JSON is rewritten after every section, so a cut-off run still reports).
# Nothing is installed when a Python with torch is there already; transformers and bitsandbytes
# are optional (their parts are reported as skipped without them).
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 TRANSFORMERS_VERBOSITY=error

# The first Python whose torch sees a GPU; failing that, the first with torch (bench_gpu.py then
# runs its CPU smoke test).
PY=""
for candidate in ${PYTHON:-} python3 python .venv/bin/python; do
  command -v "$candidate" >/dev/null 2>&1 || continue
  if "$candidate" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    PY=$candidate; break
  fi
  if [ -z "$PY" ] && "$candidate" -c "import torch" 2>/dev/null; then PY=$candidate; fi
done
if [ -z "$PY" ]; then
  echo "No Python with torch here: installing torch==2.13.0 (the CUDA build on Linux; needs the package registry)."
  python3 -m pip install --quiet torch==2.13.0 || { echo "Could not install torch."; exit 1; }
  PY=python3
fi

RESULTS=${OUT:-bench/results}
mkdir -p "$RESULTS"
echo "# bench/gpu.sh with $PY ($(command -v "$PY")), results in $RESULTS"
timeout -k 10 460 "$PY" bench/bench_gpu.py --budget 400 --json "$RESULTS/gpu-bench.json" "$@" 2>&1 \
  | tee "$RESULTS/gpu-bench.txt"
status=${PIPESTATUS[0]}
[ "$status" = 124 ] && echo "bench_gpu.py was stopped by the time limit; gpu-bench.json has what it finished." \
  | tee -a "$RESULTS/gpu-bench.txt"
exit "$status"
