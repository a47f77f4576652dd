#!/usr/bin/env bash
# One command for a GPU machine: build for the local GPU, run every test, the
# GPU tests verbosely, the CUDA sanitizers and the benchmarks, then print a
# summary block to paste into bench/RESULTS.md. The whole output is also
# written to bench/results/<date>-gpu-check.txt.
#
#   scripts/gpu_check.sh            # build-gpu, all cores
#   BUILD_DIR=build-x JOBS=8 scripts/gpu_check.sh
#
# Every step runs under `timeout`; a step that fails or times out is reported
# and the script goes on. Target: under 8 minutes on an H100. It only reads the
# GPU's state (nvidia-smi queries): it never resets or reconfigures the GPU.
# Exit status: 0 all passed, 1 something failed, 2 no GPU on this machine.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

BUILD_DIR=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc)}
DATE=$(date -u +%Y-%m-%d)
LOG_DIR=bench/results
LOG="$LOG_DIR/$DATE-gpu-check.txt"

# --- no GPU: say so and stop --------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi missing or lists no GPU);" >&2
  echo "gpu_check: nothing to check here. Run scripts/test.sh for the CPU build and tests." >&2
  exit 2
fi

CUDA_BIN=""
if command -v nvcc >/dev/null 2>&1; then
  CUDA_BIN=$(dirname "$(command -v nvcc)")
elif [[ -x /usr/local/cuda/bin/nvcc ]]; then
  CUDA_BIN=/usr/local/cuda/bin
fi
SANITIZER=""
if command -v compute-sanitizer >/dev/null 2>&1; then
  SANITIZER=$(command -v compute-sanitizer)
elif [[ -n "$CUDA_BIN" && -x "$CUDA_BIN/compute-sanitizer" ]]; then
  SANITIZER="$CUDA_BIN/compute-sanitizer"
elif [[ -n "$CUDA_BIN" && -x "$CUDA_BIN/../compute-sanitizer/compute-sanitizer" ]]; then
  SANITIZER="$CUDA_BIN/../compute-sanitizer/compute-sanitizer"
fi

mkdir -p "$LOG_DIR"
exec > >(tee "$LOG") 2>&1

T0=$(date +%s)
declare -a STEP_NAMES=() STEP_RESULTS=()

# step NAME TIMEOUT_S CMD...: runs CMD under timeout, records PASS/FAIL/TIMEOUT
# in STEP_NAMES/STEP_RESULTS and returns CMD's status. With STEP_OUT=FILE the
# output also goes to FILE (never pipe `step` itself: a pipe runs it in a subshell).
step() {
  local name=$1 limit=$2
  shift 2
  echo
  echo "=== [$name] (timeout ${limit}s): $*"
  local t=$SECONDS rc
  if [[ -n "${STEP_OUT:-}" ]]; then
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$STEP_OUT"
    rc=${PIPESTATUS[0]}
  else
    timeout --kill-after=10 "$limit" "$@"
    rc=$?
  fi
  local result
  if [[ $rc -eq 0 ]]; then
    result=PASS
  elif [[ $rc -eq 124 || $rc -eq 137 ]]; then
    result=TIMEOUT
  else
    result="FAIL(rc=$rc)"
  fi
  echo "=== [$name] $result in $((SECONDS - t))s"
  STEP_NAMES+=("$name")
  STEP_RESULTS+=("$result")
  return "$rc"
}

# --- (a) versions -----------------------------------------------------------------
echo "=== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
nvidia-smi
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
if [[ -n "$CUDA_BIN" ]]; then "$CUDA_BIN/nvcc" --version; else echo "nvcc: not found"; fi
cmake --version | head -1
DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
NVCC_VER=$([[ -n "$CUDA_BIN" ]] && "$CUDA_BIN/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=""
if git status --porcelain 2>/dev/null | grep -q .; then DIRTY=" (uncommitted changes)"; fi

# --- (b) configure and build for this GPU -----------------------------------------------
CMAKE_ARGS=(-S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=native)
[[ -n "$CUDA_BIN" ]] && CMAKE_ARGS+=(-DCMAKE_CUDA_COMPILER="$CUDA_BIN/nvcc")
command -v ninja >/dev/null 2>&1 && [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]] && CMAKE_ARGS+=(-G Ninja)
BUILD_OK=0
if step configure 120 cmake "${CMAKE_ARGS[@]}" && step build 420 cmake --build "$BUILD_DIR" -j "$JOBS"; then
  BUILD_OK=1
fi

# --- (c) tests ------------------------------------------------------------------------------
CTEST_ALL="" CTEST_GPU=""
if [[ $BUILD_OK -eq 1 ]]; then
  STEP_OUT="$BUILD_DIR/gpu_check_ctest_all.txt" \
    step ctest-all 300 ctest --test-dir "$BUILD_DIR" --output-on-failure --timeout 120
  CTEST_ALL=$(grep -E 'tests passed|tests failed' "$BUILD_DIR/gpu_check_ctest_all.txt" | tail -1)
  STEP_OUT="$BUILD_DIR/gpu_check_ctest_gpu.txt" \
    step ctest-gpu 180 ctest --test-dir "$BUILD_DIR" -L gpu -V --timeout 120
  CTEST_GPU=$(grep -E 'tests passed|tests failed' "$BUILD_DIR/gpu_check_ctest_gpu.txt" | tail -1)
  if grep -q 'skipped .*no CUDA device' "$BUILD_DIR/gpu_check_ctest_gpu.txt"; then
    echo "WARNING: GPU tests skipped although nvidia-smi lists a GPU (driver/runtime mismatch?)"
    CTEST_GPU="$CTEST_GPU [GPU TESTS SKIPPED: no usable CUDA device]"
  fi
fi

# --- (d) sanitizers on the GPU tests ----------------------------------------------------------------
# sanitize TOOL TIMEOUT_S: runs the GPU tests under compute-sanitizer and sets
# SAN_RESULT to one line. A timeout is a skip (racecheck over cuDNN is slow).
sanitize() {
  local tool=$1 limit=$2 out="$BUILD_DIR/gpu_check_$1.txt" rc summary
  step "sanitizer-$tool" "$limit" "$SANITIZER" --tool "$tool" --error-exitcode 86 \
    "$BUILD_DIR/rz_tests" -ts=gpu > "$out" 2>&1
  rc=$?
  tail -40 "$out"
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out" | tail -1)
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    STEP_RESULTS[-1]="SKIPPED(timeout)"
    SAN_RESULT="skipped after ${limit}s (too slow under the sanitizer)"
  elif [[ $rc -eq 86 ]]; then
    SAN_RESULT="ERRORS: ${summary:-see $out}"
  elif [[ $rc -ne 0 ]]; then
    SAN_RESULT="tests failed under the sanitizer (rc=$rc); ${summary:-no summary}"
  else
    SAN_RESULT="clean; ${summary:-0 errors}"
  fi
}
SAN_MEM="not run" SAN_RACE="not run" SAN_RESULT=""
if [[ $BUILD_OK -eq 1 && -n "$SANITIZER" ]]; then
  sanitize memcheck 240
  SAN_MEM=$SAN_RESULT
  sanitize racecheck 150
  SAN_RACE=$SAN_RESULT
elif [[ -z "$SANITIZER" ]]; then
  SAN_MEM="compute-sanitizer not found" SAN_RACE="compute-sanitizer not found"
fi

# --- (e) benchmarks ------------------------------------------------------------------------------
# gemm_bench and model_bench always; any other *_bench only when it has a --gpu
# mode (the data benchmarks are CPU-only). A bench with --gpu runs in that mode.
declare -a BENCH_LINES=()
if [[ $BUILD_OK -eq 1 ]]; then
  for b in "$BUILD_DIR"/*_bench; do
    [[ -x "$b" ]] || continue
    name=$(basename "$b")
    args=()
    if grep -aq -- '--gpu' "$b"; then
      args=(--gpu)
    elif [[ "$name" != gemm_bench && "$name" != model_bench ]]; then
      echo "=== [$name] skipped: CPU-only benchmark (no --gpu mode)"
      continue
    fi
    STEP_OUT="$BUILD_DIR/gpu_check_$name.txt" step "$name${args[*]:+ ${args[*]}}" 120 "$b" "${args[@]}"
    BENCH_LINES+=("$name${args[*]:+ ${args[*]}}: ${STEP_RESULTS[-1]} (output in $LOG)")
  done
fi

# --- (f) summary ------------------------------------------------------------------------------------
FAILED=0
[[ $BUILD_OK -eq 1 ]] || FAILED=1
for r in "${STEP_RESULTS[@]}"; do [[ $r == PASS || $r == "SKIPPED(timeout)" ]] || FAILED=1; done

echo
echo "----- gpu_check summary (paste into bench/RESULTS.md) -----"
echo "## $DATE — GPU check, $DEVICE"
echo
echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname)"
echo "- commit: $COMMIT$DIRTY"
echo "- device: $DEVICE, driver $DRIVER, nvcc ${NVCC_VER:-?}, $JOBS build jobs"
echo "- build ($BUILD_DIR, Release, CUDA arch native): $([[ $BUILD_OK -eq 1 ]] && echo ok || echo FAILED)"
echo "- ctest (all): ${CTEST_ALL:-not run}"
echo "- ctest -L gpu: ${CTEST_GPU:-not run}"
echo "- compute-sanitizer memcheck: $SAN_MEM"
echo "- compute-sanitizer racecheck: $SAN_RACE"
for l in "${BENCH_LINES[@]}"; do echo "- bench $l"; done
echo "- steps:$(for i in "${!STEP_NAMES[@]}"; do printf ' %s=%s' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"; done)"
echo "- total time: $(( $(date +%s) - T0 ))s; full log: $LOG"
echo "- result: $([[ $FAILED -eq 0 ]] && echo PASS || echo FAIL)"
echo "-----------------------------------------------------------"
exit $FAILED
