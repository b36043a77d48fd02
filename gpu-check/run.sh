#!/usr/bin/env bash
# The GPU check: run on a GPU machine from the folder `cargo xtask gpu-bundle` built
# (no Rust, no network needed). Usage: run.sh REPORT_DIR
#
# 1. the server's integration tests against the release server: the CUDA tests
#    (server/tests/cuda.rs), then the API, metrics, telemetry and worker tests;
# 2. check.py: inventory and telemetry against nvidia-smi, every built-in kernel verified,
#    a faulting, an endless and a broken custom kernel with the recovery after each, and the
#    figures against PyTorch on the same GPU. Writes gpu-check.json and gpu-check.md;
# 3. diag.py: `gpulab diag` levels 1, 2 and 3 (--duration 60s) on the GPU and one run with an
#    injected fault, level 1 compared with `nvidia-smi -q`. Writes diag.md and the JSONs.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
report="${1:?usage: run.sh REPORT_DIR}"
mkdir -p "$report"
export GPULAB_BIN="$here/gpulab"
status=0

# The CUDA tests (ignored where there is no GPU), then the API, metrics, telemetry, worker and peaks tests,
# which take their GPU branches here.
for suite in cuda gemm_dtypes api metrics telemetry workers peaks; do
  echo "== $suite tests"
  flags=()
  { [ "$suite" = cuda ] || [ "$suite" = gemm_dtypes ]; } && flags=(--include-ignored --test-threads=1)
  if timeout "${TESTS_TIMEOUT:-180}" "$here/$suite-tests" "${flags[@]}" 2>&1 | tee "$report/$suite-tests.log"; then
    echo "$suite tests: passed"
  else
    echo "$suite tests: FAILED"
    status=1
  fi
done

echo "== check.py"
PYTHONUNBUFFERED=1 timeout "${CHECK_TIMEOUT:-330}" python3 "$here/check.py" --gpulab "$GPULAB_BIN" --report "$report" || status=1

echo "== diag.py"
PYTHONUNBUFFERED=1 timeout "${DIAG_TIMEOUT:-330}" python3 "$here/diag.py" --gpulab "$GPULAB_BIN" --report "$report" || status=1
exit $status
