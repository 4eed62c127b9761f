#!/usr/bin/env bash
# Everything a lent GPU machine should run, as one command: the CUDA tests (which CPU-only
# machines skip), then bench/gpu.sh. Under 9 minutes: the tests get at most 150 s, the bench
# its --budget (330 s here unless given) and 60 s more at most.
#
#   bash bench/device_check.sh [more bench_gpu.py flags]
#
# Writes cuda-tests.txt, gpu-bench.txt and gpu-bench.json to $OUT if set, else bench/results/.
# Python packages the machine lacks (there: bitsandbytes and sacremoses) travel as wheels in
# .whl/, installed here into /tmp/site. On this project's device tool, prepare once with
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#     --implementation cp --platform manylinux_2_24_x86_64 -d .whl bitsandbytes==0.50.2 sacremoses==0.2.0
# and, since the tree that travels must stay under 64 MiB, move the bundled models out for the
# call (no check here reads them): mv assets/models /tmp/bundled-models, and back afterwards.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1  # a test run cut off by its time limit still leaves what it printed
RESULTS=${OUT:-bench/results}
mkdir -p "$RESULTS"

if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

# Every test with "cuda" in its name, and the compiled step's (which compiles on the CPU too).
timeout -k 5 150 python3 -m pytest -q -rP --show-capture=stdout -p no:cacheprovider \
  tests/unit/test_graphed.py tests/parity/test_model_parity.py tests/unit/test_quantize.py tests/unit/test_batching.py \
  -k "cuda or compiled" 2>&1 | tee "$RESULTS/cuda-tests.txt" | tail -40

bash bench/gpu.sh --budget 330 "$@"
