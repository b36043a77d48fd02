#!/usr/bin/env bash
# The GPU check: run on a GPU machine from the folder `cargo xtask gpu-bundle` built
# (no Rust, no network needed). Usage: run.sh REPORT_DIR
#
# 1. the CUDA integration tests (server/tests/cuda.rs) against the release server;
# 2. check.py: inventory and telemetry against nvidia-smi, every built-in kernel verified,
#    a faulting, an endless and a broken custom kernel with the recovery after each, and the
#    figures against PyTorch on the same GPU. Writes gpu-check.json and gpu-check.md.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
report="${1:?usage: run.sh REPORT_DIR}"
mkdir -p "$report"
export GPULAB_BIN="$here/gpulab"
status=0

echo "== CUDA integration tests"
if timeout "${CUDA_TESTS_TIMEOUT:-180}" "$here/cuda-tests" --include-ignored --test-threads=1 2>&1 | tee "$report/cuda-tests.log"; then
  echo "cuda tests: passed"
else
  echo "cuda tests: FAILED"
  status=1
fi

echo "== check.py"
PYTHONUNBUFFERED=1 timeout "${CHECK_TIMEOUT:-270}" python3 "$here/check.py" --gpulab "$GPULAB_BIN" --report "$report" || status=1
exit $status
