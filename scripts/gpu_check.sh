#!/usr/bin/env bash
# One command for a GPU machine: build for the local GPU, run every test, the
# GPU tests verbosely, the CUDA sanitizers and the GPU benchmarks (per-op
# kernels, the convolution and fused-kernel benches when built, the training
# step through the engine in bf16 and fp32, and the same step in PyTorch/timm
# when torch and timm import), then print a summary block to paste into
# bench/RESULTS.md. The whole output is also written to
# bench/results/<date>-gpu-check.txt, the benchmarks' JSON next to it.
#
#   scripts/gpu_check.sh            # build-gpu, all cores
#   BUILD_DIR=build-x JOBS=8 scripts/gpu_check.sh
#   BUDGET_S=900 scripts/gpu_check.sh   # allow more than the default 450 s
#
# Time budget. Every step runs under `timeout` with its own cap, and also
# never past a deadline of BUDGET_S seconds (default 450, so the whole check,
# summary and kill grace periods included, stays under 8 minutes on an H100):
# a step gets min(cap, time left - the time reserved for the more important
# steps after it); a step left with less than its minimum is SKIPPED(out of
# time), and a benchmark that the deadline cut short is CUT (what it printed
# is kept). Priority: build, GPU tests, the other tests, memcheck, the per-op
# and kernel benchmarks, the bf16 training step, PyTorch (which runs before it
# so its JSON can be compared; torch.compile is the first thing cut), racecheck,
# the fp32 step. The reservations use rough expectations for an H100 (section
# (d); no GPU run has measured them yet): the build alone may take 2-3 minutes
# on 16 cores and torch.compile of seresnet152d minutes more, so on a slow
# day the last steps are skipped; a larger BUDGET_S gives them time.
#
# A step that fails or times out is reported and the script goes on. It only
# reads the GPU's state (nvidia-smi queries): it never resets or reconfigures
# the GPU. Exit status: 0 all passed (or no GPU here: one line says so), 1
# something failed.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1

BUILD_DIR=${BUILD_DIR:-build-gpu}
JOBS=${JOBS:-$(nproc)}
BUDGET_S=${BUDGET_S:-450}
DATE=$(date -u +%Y-%m-%d)
LOG_DIR=bench/results
LOG="$LOG_DIR/$DATE-gpu-check.txt"

# --- no GPU: say so and stop --------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi missing or lists none); nothing to check (scripts/test.sh runs the CPU build and tests)"
  exit 0
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
DEADLINE=$((T0 + BUDGET_S))
declare -a STEP_NAMES=() STEP_RESULTS=()

# remaining: seconds left before the deadline.
remaining() { echo $((DEADLINE - $(date +%s))); }

# budget CAP MIN [RESERVE]: sets LIMIT = min(CAP, remaining - RESERVE) and
# returns 0, or returns 1 when that is below MIN (the step should be skipped).
budget() {
  local cap=$1 min=$2 reserve=${3:-0} left
  left=$(($(remaining) - reserve))
  LIMIT=$((cap < left ? cap : left))
  [[ $LIMIT -ge $min ]]
}

# skip NAME REASON: records a step that did not run.
skip() {
  echo
  echo "=== [$1] SKIPPED: $2"
  STEP_NAMES+=("$1")
  STEP_RESULTS+=("SKIPPED($2)")
}

# step NAME TIMEOUT_S CMD...: runs CMD under timeout, records PASS/FAIL/TIMEOUT
# in STEP_NAMES/STEP_RESULTS and returns CMD's status. With STEP_OUT=FILE the
# output also goes to FILE (never pipe `step` itself: a pipe runs it in a subshell).
step() {
  local name=$1 limit=$2
  shift 2
  echo
  echo "=== [$name] (timeout ${limit}s, $(remaining)s of the budget left): $*"
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
echo "=== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), budget ${BUDGET_S}s"
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

# The local GPU's architecture (compute_cap "9.0" -> 90); CMake's "native"
# (nvcc -arch=native) when the driver does not report it.
CUDA_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
[[ "$CUDA_ARCH" =~ ^[0-9]+$ ]] || CUDA_ARCH=native

# --- (b) configure and build for this GPU -----------------------------------------------
CMAKE_ARGS=(-S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH")
[[ -n "$CUDA_BIN" ]] && CMAKE_ARGS+=(-DCMAKE_CUDA_COMPILER="$CUDA_BIN/nvcc")
command -v ninja >/dev/null 2>&1 && [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]] && CMAKE_ARGS+=(-G Ninja)
BUILD_OK=0
if step configure 90 cmake "${CMAKE_ARGS[@]}"; then
  budget 330 60 && step build "$LIMIT" cmake --build "$BUILD_DIR" -j "$JOBS" && BUILD_OK=1
fi
RZ_TESTS="$BUILD_DIR/rz_tests"

# --- (c) tests ------------------------------------------------------------------------------
# The GPU tests first (the reason this script exists), one at a time and
# verbosely; then every other test in parallel (the CPU suite is OpenMP-heavy:
# two threads per test process keep the cores from being oversubscribed).
CTEST_CPU="" CTEST_GPU=""
if [[ $BUILD_OK -eq 1 ]]; then
  if budget 150 30; then
    STEP_OUT="$BUILD_DIR/gpu_check_ctest_gpu.txt" \
      step ctest-gpu "$LIMIT" ctest --test-dir "$BUILD_DIR" -L gpu -V --timeout 120
    CTEST_GPU=$(grep -E 'tests passed|tests failed' "$BUILD_DIR/gpu_check_ctest_gpu.txt" | tail -1)
    CTEST_GPU=${CTEST_GPU:-${STEP_RESULTS[-1]}}
    if grep -q 'skipped .*no CUDA device' "$BUILD_DIR/gpu_check_ctest_gpu.txt"; then
      echo "WARNING: GPU tests skipped although nvidia-smi lists a GPU (driver/runtime mismatch?)"
      CTEST_GPU="$CTEST_GPU [GPU TESTS SKIPPED: no usable CUDA device]"
    fi
  else
    skip ctest-gpu "out of time"
  fi
  if budget 120 30; then
    STEP_OUT="$BUILD_DIR/gpu_check_ctest_cpu.txt" OMP_NUM_THREADS=2 \
      step ctest-other "$LIMIT" ctest --test-dir "$BUILD_DIR" -LE gpu -j "$(( JOBS > 2 ? JOBS / 2 : 1 ))" \
      --output-on-failure --timeout 120
    CTEST_CPU=$(grep -E 'tests passed|tests failed' "$BUILD_DIR/gpu_check_ctest_cpu.txt" | tail -1)
    CTEST_CPU=${CTEST_CPU:-${STEP_RESULTS[-1]}}
  else
    skip ctest-other "out of time"
  fi
fi

# --- (d) what the later steps typically need (s), for the reservations -------------------
# Estimates for an H100, not measurements; a kernel benchmark that is not
# built reserves nothing.
NEED_OPS=25 NEED_BF16=60 NEED_RACE=35 NEED_CONV=0 NEED_FUSED=0
[[ -x "$BUILD_DIR/conv_bench" ]] && NEED_CONV=20
[[ -x "$BUILD_DIR/fused_bench" ]] && NEED_FUSED=20

# --- (e) sanitizers on the GPU tests ----------------------------------------------------------------
# sanitize TOOL CAP RESERVE DOCTEST_ARGS...: runs GPU tests under compute-sanitizer
# and sets SAN_RESULT to one line. A timeout is a skip (the sanitizers slow
# kernels down 10-100x). The tests that mostly run cuDNN/cuBLAS kernels and
# the > 2^31-element indexing test are left out: the sanitizers are for our
# kernels and the front-ends' launches.
SAN_EXCLUDE='*cuDNN*,*gemm_cublas*,*2^31*'
sanitize() {
  local tool=$1 cap=$2 reserve=$3 out="$BUILD_DIR/gpu_check_$1.txt" rc summary
  shift 3
  if ! budget "$cap" 30 "$reserve"; then
    skip "sanitizer-$tool" "out of time"
    SAN_RESULT="skipped (out of time)"
    return
  fi
  # RZ_GPU_TEST_SUBSET: the all-shape conv sweeps run every third
  # seresnet152d shape (tests/gpu/gpu_conv_cases.h), so they finish in time.
  RZ_GPU_TEST_SUBSET=1 step "sanitizer-$tool" "$LIMIT" "$SANITIZER" --tool "$tool" \
    --error-exitcode 86 "$RZ_TESTS" "$@" > "$out" 2>&1
  rc=$?
  tail -40 "$out"
  summary=$(grep -E 'ERROR SUMMARY|RACECHECK SUMMARY' "$out" | tail -1)
  if [[ $rc -eq 124 || $rc -eq 137 ]]; then
    STEP_RESULTS[-1]="SKIPPED(timeout)"
    SAN_RESULT="skipped after ${LIMIT}s (too slow under the sanitizer)"
  elif [[ $rc -eq 86 ]]; then
    SAN_RESULT="ERRORS: ${summary:-see $out}"
  elif [[ $rc -ne 0 ]]; then
    SAN_RESULT="tests failed under the sanitizer (rc=$rc); ${summary:-no summary}"
  else
    SAN_RESULT="clean; ${summary:-0 errors}"
  fi
}
SAN_MEM="not run" SAN_RACE="not run" SAN_RESULT=""
if [[ -z "$SANITIZER" ]]; then
  SAN_MEM="compute-sanitizer not found" SAN_RACE="compute-sanitizer not found"
elif [[ $BUILD_OK -eq 1 ]]; then
  sanitize memcheck 75 $((NEED_OPS + NEED_CONV + NEED_FUSED + NEED_BF16)) -ts=gpu -tce="$SAN_EXCLUDE"
  SAN_MEM=$SAN_RESULT
fi

# --- (f) benchmarks ------------------------------------------------------------------------------
# The GPU benchmarks only (gemm_bench, model_bench and the data benchmarks are
# CPU programs). Each one's output is kept in $BUILD_DIR/gpu_check_<name>.txt
# and in the log; those with --json also write a file next to the log.
declare -a BENCH_LINES=()
OPS_JSON="$LOG_DIR/$DATE-ops_gpu_bench.jsonl"
TORCH_JSON="$LOG_DIR/$DATE-pytorch-train_step.json"
NATIVE_JSON="$LOG_DIR/$DATE-train_step_bench-bf16.json"
NATIVE_FP32_JSON="$LOG_DIR/$DATE-train_step_bench-fp32.json"
rm -f "$OPS_JSON" "$TORCH_JSON" "$NATIVE_JSON" "$NATIVE_FP32_JSON"

# bench NAME CAP MIN RESERVE CMD...: one benchmark step; records a summary line
# with the lines of its output that match $KEY_RE (its key numbers). A timeout
# caused by the deadline (the limit was below CAP) is CUT, not a failure.
bench() {
  local name=$1 cap=$2 min=$3 reserve=$4 out="$BUILD_DIR/gpu_check_$1.txt" keys
  shift 4
  if ! budget "$cap" "$min" "$reserve"; then
    skip "$name" "out of time"
    BENCH_LINES+=("$name: skipped (out of time)")
    return
  fi
  STEP_OUT="$out" step "$name" "$LIMIT" "$@"
  if [[ ${STEP_RESULTS[-1]} == TIMEOUT && $LIMIT -lt $cap ]]; then
    STEP_RESULTS[-1]="CUT(deadline, ${LIMIT}s)"
  fi
  keys=$(grep -E "(${KEY_RE:-summary|result})|no (usable )?CUDA device" "$out" 2>/dev/null | head -12 |
    sed 's/^/    /')
  BENCH_LINES+=("$name: ${STEP_RESULTS[-1]}${keys:+$'\n'$keys}")
}

if [[ $BUILD_OK -eq 1 ]]; then
  KEY_RE='^ops_gpu_bench summary' \
    bench ops_gpu_bench 60 20 $((NEED_CONV + NEED_FUSED + NEED_BF16)) \
    "$BUILD_DIR/ops_gpu_bench" --json "$OPS_JSON"

  # The convolution and fused-kernel benchmarks, when this build has them, with
  # fewer repetitions than their default to fit the budget; their key lines are
  # the summary rows (conv: per pass and implementation; fused: the fused rows).
  if [[ -x "$BUILD_DIR/conv_bench" ]]; then
    KEY_RE='^(fwd|dgrad|wgrad) ' bench conv_bench 60 15 $((NEED_FUSED + NEED_BF16)) \
      "$BUILD_DIR/conv_bench" --reps 5
  else
    echo "=== [conv_bench] not built here; skipped"
  fi
  if [[ -x "$BUILD_DIR/fused_bench" ]]; then
    KEY_RE=', fused ' bench fused_bench 60 15 "$NEED_BF16" "$BUILD_DIR/fused_bench" --reps 5
  else
    echo "=== [fused_bench] not built here; skipped"
  fi

  # PyTorch/timm, the side-by-side reference, when torch and timm import. It
  # runs before the engine's bf16 step so that step can print the ratios, and
  # leaves that step and racecheck their time. Its JSON is rewritten after each
  # mode, so a cut during torch.compile keeps the eager numbers.
  if python3 -c 'import torch, timm' >/dev/null 2>&1; then
    KEY_RE='^pytorch (eager|compile)' \
      bench pytorch-train_step 180 40 $((NEED_BF16 + NEED_RACE)) \
      python3 bench/pytorch/train_step.py --steps 5 --warmup 2 --json "$TORCH_JSON"
  else
    skip pytorch-train_step "torch or timm not importable"
    BENCH_LINES+=("pytorch-train_step: skipped (python3 -c 'import torch, timm' fails)")
  fi

  # The training step through the engine, bf16 at the default size (512x512,
  # batch 32), with the PyTorch ratios when its JSON exists.
  TS_ARGS=(--precision bf16 --steps 5 --warmup 2 --json "$NATIVE_JSON")
  [[ -f "$TORCH_JSON" ]] && TS_ARGS+=(--pytorch-json "$TORCH_JSON")
  KEY_RE='^train_step_bench result|^native/|^pytorch|out of GPU memory' \
    bench train_step-bf16 150 30 "$NEED_RACE" "$BUILD_DIR/train_step_bench" "${TS_ARGS[@]}"
fi

# Racecheck on the kernels with shared-memory reductions and tiles (the
# model-level, library and copy tests add nothing for it and are slow under it).
if [[ $BUILD_OK -eq 1 && -n "$SANITIZER" ]]; then
  sanitize racecheck 60 0 -ts=gpu \
    -tce="$SAN_EXCLUDE,*front-ends*,*seresnet_tiny*,*graph*,*CudaContext*,*copies between*,*pinned*"
  SAN_RACE=$SAN_RESULT
fi

# Last, if time is left: the fp32 training step at a smaller batch.
if [[ $BUILD_OK -eq 1 ]]; then
  KEY_RE='^train_step_bench result|out of GPU memory' \
    bench train_step-fp32-b8 90 25 0 "$BUILD_DIR/train_step_bench" --precision fp32 --batch 8 \
    --steps 5 --warmup 2 --json "$NATIVE_FP32_JSON"
fi

# Then the opt-in fast paths (fused SE block tail + whole-step CUDA graph),
# bf16 at the default size, to compare with the train_step-bf16 row above.
if [[ $BUILD_OK -eq 1 ]]; then
  KEY_RE='^train_step_bench result|^captured|out of GPU memory' \
    bench train_step-bf16-graph-fused 120 25 0 "$BUILD_DIR/train_step_bench" --precision bf16 \
    --graph --fused-se --steps 5 --warmup 3 --json "$LOG_DIR/$DATE-train_step_bench-bf16-graph-fused.json"
fi

# Then our kernels end to end: every conv by its native variant (no autotune)
# with the BN work in the conv epilogues, and the per-layer conv + BN table.
if [[ $BUILD_OK -eq 1 ]]; then
  KEY_RE='^train_step_bench result|out of GPU memory' \
    bench train_step-bf16-native-fused 120 25 0 "$BUILD_DIR/train_step_bench" --precision bf16 \
    --fused-se --conv-impl native --steps 5 --warmup 3 \
    --json "$LOG_DIR/$DATE-train_step_bench-bf16-native-fused.json"
  KEY_RE='^  (fwd|dgrad|wgrad)' \
    bench ranzcr-bench-fused 90 20 0 "$BUILD_DIR/ranzcr" bench --fused --batch 8 --img-size 256
fi

# --- (g) summary ------------------------------------------------------------------------------------
FAILED=0
[[ $BUILD_OK -eq 1 ]] || FAILED=1
for r in "${STEP_RESULTS[@]}"; do [[ $r == PASS || $r == SKIPPED* || $r == CUT* ]] || FAILED=1; done

echo
echo "----- gpu_check summary (paste into bench/RESULTS.md) -----"
echo "## $DATE — GPU check, $DEVICE"
echo
echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname)"
echo "- commit: $COMMIT$DIRTY"
echo "- device: $DEVICE, driver $DRIVER, nvcc ${NVCC_VER:-?}, $JOBS build jobs"
echo "- build ($BUILD_DIR, Release, CUDA arch $CUDA_ARCH): $([[ $BUILD_OK -eq 1 ]] && echo ok || echo FAILED)"
echo "- ctest -L gpu (verbose): ${CTEST_GPU:-not run}"
echo "- ctest -LE gpu (all other tests): ${CTEST_CPU:-not run}"
echo "- compute-sanitizer memcheck: $SAN_MEM"
echo "- compute-sanitizer racecheck: $SAN_RACE"
for l in "${BENCH_LINES[@]}"; do echo "- bench $l"; done
echo "- JSON: $(ls "$OPS_JSON" "$TORCH_JSON" "$NATIVE_JSON" "$NATIVE_FP32_JSON" 2>/dev/null | tr '\n' ' ')"
echo "- steps:$(for i in "${!STEP_NAMES[@]}"; do printf ' %s=%s' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}"; done)"
echo "- total time: $(( $(date +%s) - T0 ))s (budget ${BUDGET_S}s); full log: $LOG"
echo "- result: $([[ $FAILED -eq 0 ]] && echo PASS || echo FAIL)"
echo "-----------------------------------------------------------"
exit $FAILED
