#!/usr/bin/env bash
# One command for a GPU machine as it is: build there for its GPU (our Debian
# dependencies from .gpu-bundle/ when the machine lacks them, cuDNN/cuBLAS
# from the CUDA toolkit or NVIDIA's Python wheels), validate every kernel,
# measure the headline numbers, and hand everything back in a few files.
#
#   scripts/gpu_check.sh --out DIR            # on the GPU machine (budget 540 s)
#   scripts/gpu_check.sh --out DIR --compile  # second call: torch.compile side by side
#   scripts/gpu_check.sh --rehearse --out DIR # on a CPU machine: the same path,
#                                             # system dev packages hidden, GPU steps SKIPPED
#   scripts/gpu_check.sh --rehearse --dry-run --out DIR   # the output contract only
#
# Options: --budget S (default 540; 3600 when rehearsing), --build-dir D
# (build-gpu), --bundle D (.gpu-bundle), --python PY (python3: torch/timm and
# the wheels' cuDNN), --cudnn-root D / --cublas-root D (a folder with include/
# and lib/, taking precedence), --jobs N, --steps A,B,... (run only these GPU
# steps, by the names the summary uses, after the build: a second call).
#
# Steps, in this order, each under `timeout` with its own cap and never past
# the deadline; a failing step never stops the rest:
#   preflight  compiler, CUDA, where cuDNN/cuBLAS/NCCL were found, GPU name,
#              driver, clocks, free disk
#   deps       unpack the bundle (dpkg -x into the build folder) when needed
#   configure  -DRZ_WERROR=OFF -DRZ_LINEINFO=ON, arch of the local GPU
#   build      the test binary first, then everything else with -k 0
#   gpu-tests  ctest -L gpu in parallel, a timeout per test
#   memcheck   compute-sanitizer on our own kernels' tests (the subset that fits)
#   conv_bench native convs against cuDNN at a size that finishes
#   bf16 step  PyTorch eager, then the engine, side by side
#   racecheck  compute-sanitizer on the kernels with shared-memory tiles
#   fast paths fused SE + graph step, native-conv fused step, ranzcr bench --fused
#   fp32 step  then the CPU tests with whatever time is left
#
# Output contract (DIR, at most 8 plain files named [A-Za-z0-9._-]):
#   gpu_check.log   everything printed, streamed as it runs (a kill keeps it)
#   summary.md      the block for bench/RESULTS.md, also printed last
#   headline.json   the headline numbers and every step's result
#   steps.tar.gz    every step's log and JSON, rewritten after each step
#
# A GPU test that skips on a GPU machine, or a Hopper build without the v3
# (sm_90a) kernels, fails the check. The script only reads the GPU's state;
# it never resets or reconfigures it. Exit status: 0 all passed, 1 something
# failed, 2 bad usage or no GPU without --rehearse.
set -uo pipefail
CALLER_PWD=$(pwd)
cd "$(dirname "$0")/.." || exit 1
ROOT=$(pwd)
ARGS=("$@")

OUT="" REHEARSE=0 DRY_RUN=0 COMPILE=0 BUDGET_S="" JOBS=$(nproc) ONLY_STEPS=""
BUILD_DIR=${BUILD_DIR:-build-gpu}
BUNDLE=.gpu-bundle
PY=python3
CUDNN_ROOT_ARG="" CUBLAS_ROOT_ARG=""
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [[ $# -gt 0 ]]; do
  case $1 in
    --out) OUT=$2; shift ;;
    --rehearse) REHEARSE=1 ;;
    --dry-run) DRY_RUN=1 ;;
    --compile) COMPILE=1 ;;
    --budget) BUDGET_S=$2; shift ;;
    --build-dir) BUILD_DIR=$2; shift ;;
    --bundle) BUNDLE=$2; shift ;;
    --python) PY=$2; shift ;;
    --cudnn-root) CUDNN_ROOT_ARG=$2; shift ;;
    --cublas-root) CUBLAS_ROOT_ARG=$2; shift ;;
    --jobs) JOBS=$2; shift ;;
    --steps) ONLY_STEPS=",$2,"; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n "$OUT" ]] || { echo "gpu_check: --out DIR is required (see --help)" >&2; exit 2; }
[[ $OUT == /* ]] || OUT="$CALLER_PWD/$OUT"
[[ -n "$BUDGET_S" ]] || BUDGET_S=$([[ $REHEARSE -eq 1 ]] && echo 3600 || echo 540)
# --compile is a second call: after the build, only torch.compile and the engine beside it.
[[ $COMPILE -eq 1 && -z $ONLY_STEPS ]] && ONLY_STEPS=",pytorch-compile,train_step-bf16,"

HAVE_GPU=0
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then HAVE_GPU=1; fi
if [[ $HAVE_GPU -eq 0 && $REHEARSE -eq 0 ]]; then
  echo "gpu_check: no NVIDIA GPU on this machine (nvidia-smi missing or lists none);" \
    "run with --rehearse to try the same path on the CPU" >&2
  exit 2
fi
GPU_STEPS=$([[ $HAVE_GPU -eq 1 && $REHEARSE -eq 0 ]] && echo 1 || echo 0)

# --- rehearsal: hide our Debian dev packages, so only the bundle can serve ----
# A private mount namespace lays empty folders and files over what those
# packages installed; nothing outside this process sees it.
# shellcheck source=scripts/packages.sh
source scripts/packages.sh
HIDDEN="no"
if [[ $REHEARSE -eq 1 && $DRY_RUN -eq 0 && -z "${RZ_GPU_CHECK_HIDDEN:-}" ]] &&
  [[ $(id -u) -eq 0 ]] && unshare -m --propagation private true 2>/dev/null; then
  cd "$CALLER_PWD" || exit 1
  exec unshare -m --propagation private env RZ_GPU_CHECK_HIDDEN=1 bash "$ROOT/scripts/gpu_check.sh" "${ARGS[@]}"
fi
if [[ "${RZ_GPU_CHECK_HIDDEN:-}" == 1 ]]; then
  n=0
  for p in "${RZ_DEV_PACKAGES[@]}" "${RZ_RUNTIME_PACKAGES[@]}"; do
    while read -r f; do
      case $f in /usr/share/doc*|/usr/share/lintian*|/usr/share/man*) continue ;; esac
      if [[ -d "$f" && ! -L "$f" ]]; then
        # Folders the package owns (include/doctest, cmake/CLI11, ...), not shared ones.
        if [[ $f =~ ^/usr/include/[^/]+$|/cmake/[^/]+$ ]]; then mount -t tmpfs none "$f" && n=$((n + 1)); fi
      elif [[ -f "$f" && ! -L "$f" && $f =~ ^/usr/(include|lib)/ ]]; then
        mount --bind /dev/null "$f" 2>/dev/null && n=$((n + 1))
      fi
    done < <(dpkg -L "$p" 2>/dev/null)
  done
  HIDDEN="yes ($n system paths of ${RZ_DEV_PACKAGES[*]} hidden)"
fi

# --- output ------------------------------------------------------------------------
mkdir -p "$OUT" "$BUILD_DIR" || exit 1
OUT=$(cd "$OUT" && pwd)
WORK="$ROOT/$BUILD_DIR/gpu_check"
[[ $BUILD_DIR == /* ]] && WORK="$BUILD_DIR/gpu_check"
STEPS="$WORK/steps"
rm -rf "$STEPS" && mkdir -p "$STEPS"
rm -f "$OUT"/gpu_check.log "$OUT"/summary.md "$OUT"/headline.json "$OUT"/steps.tar.gz
exec 3>&1 4>&2
exec > >(tee "$OUT/gpu_check.log") 2>&1
TEE_PID=$!

T0=$(date +%s)
DEADLINE=$((T0 + BUDGET_S))
DATE=$(date -u +%Y-%m-%d)
RESULTS="$WORK/results.tsv"   # step <TAB> result <TAB> seconds <TAB> note
: > "$RESULTS"
NSTEP=0

remaining() { echo $((DEADLINE - $(date +%s))); }
# budget CAP MIN [RESERVE]: LIMIT = min(CAP, remaining - RESERVE); false when below MIN.
budget() {
  local cap=$1 min=$2 reserve=${3:-0} left
  [[ -n $ONLY_STEPS ]] && reserve=0  # --steps: the steps not selected need no time
  left=$(($(remaining) - reserve))
  LIMIT=$((cap < left ? cap : left))
  [[ $LIMIT -ge $min ]]
}
# pack: the tarball of every step's log and JSON, rewritten atomically.
pack() {
  tar -czf "$OUT/.steps.tar.gz.part" -C "$WORK" steps 2>/dev/null &&
    mv -f "$OUT/.steps.tar.gz.part" "$OUT/steps.tar.gz"
}
# record NAME RESULT SECONDS [NOTE]
record() {
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "${4:-}" >> "$RESULTS"
  echo "=== [$1] $2 in ${3}s${4:+ — $4}"
  pack
}
skip() { echo; record "$1" "SKIPPED($2)" 0 "${3:-}"; }
# step NAME LIMIT CMD...: runs CMD under timeout (a shell function of this
# script runs as it is and keeps to its own limits), its output to the log and
# to steps/NN-NAME.log; sets STEP_LOG and STEP_RC and records PASS, FAIL(rc=N)
# or TIMEOUT (CUT when the deadline, not the step's cap CAP_OF_STEP, set the limit).
step() {
  local name=$1 limit=$2 t=$SECONDS result
  shift 2
  NSTEP=$((NSTEP + 1))
  STEP_LOG="$STEPS/$(printf '%02d' "$NSTEP")-$name.log"
  echo
  echo "=== [$name] (timeout ${limit}s, $(remaining)s of the budget left): $*"
  if declare -F "$1" >/dev/null; then
    "$@" 2>&1 | tee "$STEP_LOG"
  else
    timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$STEP_LOG"
  fi
  STEP_RC=${PIPESTATUS[0]}
  if [[ $STEP_RC -eq 0 ]]; then
    result=PASS
  elif [[ $STEP_RC -eq 124 || $STEP_RC -eq 137 ]]; then
    result=TIMEOUT
    [[ -n "${CAP_OF_STEP:-}" && $limit -lt $CAP_OF_STEP ]] && result="CUT(deadline, ${limit}s)"
  else
    result="FAIL(rc=$STEP_RC)"
  fi
  record "$name" "$result" $((SECONDS - t)) "${STEP_NOTE:-}"
  return $STEP_RC
}
# gpu_step NAME CAP MIN RESERVE CMD...: a step that needs the GPU and the build.
gpu_step() {
  local name=$1 cap=$2 min=$3 reserve=$4
  shift 4
  if [[ $DRY_RUN -eq 1 ]]; then skip "$name" "dry run"; return 1; fi
  if [[ $GPU_STEPS -eq 0 ]]; then skip "$name" "no GPU"; return 1; fi
  if [[ $BUILD_OK -eq 0 ]]; then skip "$name" "no build"; return 1; fi
  if [[ -n $ONLY_STEPS && $ONLY_STEPS != *",$name,"* ]]; then skip "$name" "not selected"; return 1; fi
  if ! budget "$cap" "$min" "$reserve"; then skip "$name" "out of time"; return 1; fi
  CAP_OF_STEP=$cap step "$name" "$LIMIT" "$@"
}
# amend NAME RESULT: replaces the result just recorded for step NAME.
amend() { sed -i '$d' "$RESULTS"; record "$1" "$2" 0; }
# A benchmark that found no usable device exits 0; on a GPU machine that is a failure.
fail_if_no_device() {
  if grep -qE 'no (usable )?CUDA device' "$STEP_LOG"; then amend "$1" "FAIL(no CUDA device seen)"; fi
}

# --- preflight ---------------------------------------------------------------------
NVCC=""
if command -v nvcc >/dev/null 2>&1; then NVCC=$(command -v nvcc)
elif [[ -x /usr/local/cuda/bin/nvcc ]]; then NVCC=/usr/local/cuda/bin/nvcc; fi
CUDA_HOME=""
[[ -n "$NVCC" ]] && CUDA_HOME=$(cd "$(dirname "$(readlink -f "$NVCC")")/.." && pwd)
SANITIZER=""
for s in "$(command -v compute-sanitizer 2>/dev/null)" "$CUDA_HOME/bin/compute-sanitizer" \
  "$CUDA_HOME/compute-sanitizer/compute-sanitizer"; do
  [[ -n "$s" && -x "$s" ]] && { SANITIZER=$s; break; }
done

# Python's site-packages folders, where NVIDIA's wheels live (nvidia/...).
SITES=$("$PY" -c 'import site, sys; print("\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))' 2>/dev/null | sort -u)
# find_root HEADER LIBPATTERN: prints "toolkit" or a wheel folder holding
# include/HEADER and lib/LIBPATTERN, preferring the toolkit (the wheel first
# when rehearsing, so that path is exercised where both exist).
find_root() {
  local header=$1 lib=$2 tk="" wheel="" d h
  if [[ -n "$CUDA_HOME" ]]; then
    for d in "$CUDA_HOME/include" "$CUDA_HOME/targets/x86_64-linux/include"; do
      if [[ -f "$d/$header" ]] && compgen -G "$CUDA_HOME/lib*/$lib" >/dev/null; then tk=toolkit; fi
    done
  fi
  while read -r d; do
    [[ -d "$d/nvidia" ]] || continue
    for h in $(find "$d/nvidia" -maxdepth 3 -path "*/include/$header" 2>/dev/null); do
      h=$(dirname "$(dirname "$h")")
      compgen -G "$h/lib/$lib" >/dev/null && { wheel=$h; break 2; }
    done
  done <<< "$SITES"
  if [[ -n "$wheel" && ( -z "$tk" || $REHEARSE -eq 1 ) ]]; then echo "$wheel"
  elif [[ -n "$tk" ]]; then echo toolkit
  elif [[ -f "/usr/include/$header" ]]; then echo system
  else echo "not found"; fi
}
CUDNN_FROM=${CUDNN_ROOT_ARG:-$(find_root cudnn.h 'libcudnn.so*')}
CUBLAS_FROM=${CUBLAS_ROOT_ARG:-$(find_root cublas_v2.h 'libcublas.so*')}
NCCL_FROM=$(find_root nccl.h 'libnccl.so*')

echo "=== gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname), budget ${BUDGET_S}s," \
  "$([[ $REHEARSE -eq 1 ]] && echo rehearsal || echo GPU run)$([[ $DRY_RUN -eq 1 ]] && echo ', dry run')"
# RZ_COMMIT names the commit where the copy on the GPU machine has no .git.
COMMIT=${RZ_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
DIRTY=""
[[ -z "${RZ_COMMIT:-}" ]] && git status --porcelain 2>/dev/null | grep -q . && DIRTY=" (uncommitted changes)"
CXX_VER=$( (${CXX:-c++} --version 2>/dev/null || echo "c++: not found") | head -1)
NVCC_VER=$([[ -n "$NVCC" ]] && "$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')
CMAKE_VER=$(cmake --version 2>/dev/null | head -1 | awk '{print $3}')
DEVICE="no GPU" DRIVER="-" CUDA_ARCH=""
if [[ $HAVE_GPU -eq 1 ]]; then
  DEVICE=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  DRIVER=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
  CUDA_ARCH=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .')
fi
[[ "$CUDA_ARCH" =~ ^[0-9]+$ ]] || CUDA_ARCH=90   # rehearsal: the GPU machine's sm_90
preflight() {
  echo "host compiler: $CXX_VER"
  echo "nvcc: ${NVCC:-not found} ${NVCC_VER:-}; CUDA home: ${CUDA_HOME:-none}"
  echo "cmake: ${CMAKE_VER:-not found} ($(command -v cmake)); ninja: $(ninja --version 2>/dev/null || echo 'not found')"
  echo "python: $("$PY" --version 2>&1) ($(command -v "$PY"))"
  "$PY" -c 'import torch, timm; print("torch", torch.__version__, "cuda", torch.version.cuda, "timm", timm.__version__)' 2>/dev/null ||
    echo "torch/timm: not importable"
  echo "cuDNN: $CUDNN_FROM; cuBLAS: $CUBLAS_FROM; NCCL: $NCCL_FROM"
  echo "compute-sanitizer: ${SANITIZER:-not found}; ncu: $(command -v ncu || echo 'not found')"
  echo "disk: $(df -h "$ROOT" | awk 'NR==2 {print $4 " free of " $2}'); cores: $(nproc)"
  if [[ $HAVE_GPU -eq 1 ]]; then
    nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total,memory.used,clocks.sm,clocks.max.sm,clocks.mem,power.draw,power.limit,temperature.gpu --format=csv
  else
    echo "GPU: none (nvidia-smi lists no GPU)"
  fi
}
STEP_NOTE="" step preflight 30 preflight
[[ "$CUDNN_FROM" == "not found" ]] && echo "WARNING: cuDNN not found in the toolkit or the Python wheels"

# --- dependency bundle -------------------------------------------------------------
DEPS_FROM="system"
DEPS_PREFIX="$ROOT/$BUILD_DIR/deps"
[[ $BUILD_DIR == /* ]] && DEPS_PREFIX="$BUILD_DIR/deps"
system_has_deps() {
  local h
  for h in doctest/doctest.h CLI/CLI.hpp nlohmann/json.hpp toml++/toml.h stb/stb_image.h; do
    [[ -s /usr/include/$h || -s /usr/local/include/$h ]] || return 1
  done
}
unpack_bundle() {
  local f tmp
  rm -rf "$DEPS_PREFIX" && mkdir -p "$DEPS_PREFIX" || return 1
  for f in "$BUNDLE"/*.deb; do
    [[ -f "$f" ]] || { echo "no .deb files in $BUNDLE"; return 1; }
    if command -v dpkg >/dev/null 2>&1; then
      dpkg -x "$f" "$DEPS_PREFIX" || return 1
    else  # no dpkg: a .deb is an ar archive holding data.tar.*
      tmp=$(mktemp -d) && (cd "$tmp" && ar x "$ROOT/$f" && tar -xf data.tar.* -C "$DEPS_PREFIX") || return 1
      rm -rf "$tmp"
    fi
    echo "unpacked $(basename "$f")"
  done
}
if [[ $REHEARSE -eq 1 ]] || ! system_has_deps; then
  if [[ ! -d "$BUNDLE" ]]; then
    if [[ $DRY_RUN -eq 1 ]]; then skip deps "dry run" "no $BUNDLE"
    else
      echo "gpu_check: our Debian dev packages are missing here and $BUNDLE/ is absent:" \
        "run scripts/gpu_bundle.sh on a machine with apt and copy $BUNDLE/ along"
      record deps "FAIL(no bundle)" 0
    fi
  elif STEP_NOTE="$BUNDLE -> $DEPS_PREFIX" step deps 60 unpack_bundle; then
    DEPS_FROM="bundle ($BUNDLE, $(grep -vc '^#' "$BUNDLE/MANIFEST" 2>/dev/null || echo '?') packages)"
  fi
else
  record deps "PASS" 0 "system packages"
fi

# --- configure and build --------------------------------------------------------------
CMAKE_ARGS=(-S . -B "$BUILD_DIR" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES="$CUDA_ARCH"
  -DRZ_WERROR=OFF -DRZ_LINEINFO=ON)
[[ -n "$NVCC" ]] && CMAKE_ARGS+=(-DCMAKE_CUDA_COMPILER="$NVCC")
if [[ $DEPS_FROM == bundle* ]]; then
  # The multiarch folders are named too, for a compiler that does not report them.
  CMAKE_ARGS+=(-DCMAKE_PREFIX_PATH="$DEPS_PREFIX/usr" -DCMAKE_LIBRARY_PATH="$DEPS_PREFIX/usr/lib/x86_64-linux-gnu"
    -Dtomlplusplus_DIR="$DEPS_PREFIX/usr/lib/x86_64-linux-gnu/cmake/tomlplusplus")
fi
if [[ $DEPS_FROM == bundle* && $HIDDEN == no && $REHEARSE -eq 1 ]]; then
  CMAKE_ARGS+=("-DCMAKE_IGNORE_PREFIX_PATH=/usr;/")  # no namespace to hide them: ignore them
fi
LIB_PATH=""
for r in "$CUDNN_FROM" "$CUBLAS_FROM" "$NCCL_FROM"; do
  [[ -d "$r/lib" ]] && LIB_PATH="$LIB_PATH${LIB_PATH:+:}$r/lib"
done
[[ -d "$CUDNN_FROM" ]] && CMAKE_ARGS+=(-DRZ_CUDNN_ROOT="$CUDNN_FROM")
[[ -d "$CUBLAS_FROM" && "$CUBLAS_FROM" != toolkit ]] && CMAKE_ARGS+=(-DRZ_CUBLAS_ROOT="$CUBLAS_FROM")
[[ -d "$NCCL_FROM" ]] && CMAKE_ARGS+=(-DRZ_NCCL_ROOT="$NCCL_FROM")
[[ -n "$LIB_PATH" ]] && export LD_LIBRARY_PATH="$LIB_PATH${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
command -v ninja >/dev/null 2>&1 && [[ ! -f "$BUILD_DIR/CMakeCache.txt" ]] && CMAKE_ARGS+=(-G Ninja)

BUILD_OK=0 BUILD_NOTE=""
if [[ $DRY_RUN -eq 1 ]]; then
  skip configure "dry run"; skip build-tests "dry run"; skip build-rest "dry run"
elif budget 120 20 && step configure "$LIMIT" cmake "${CMAKE_ARGS[@]}"; then
  # The test binary first: an error in a benchmark must not cost the GPU tests.
  if budget 420 60 150 && CAP_OF_STEP=420 step build-tests "$LIMIT" \
    cmake --build "$BUILD_DIR" -j "$JOBS" --target rz_tests ranzcr; then
    BUILD_OK=1
  fi
  if budget 240 20 120; then
    KEEP=(-- -k 0)
    grep -q '^CMAKE_GENERATOR:INTERNAL=Ninja' "$BUILD_DIR/CMakeCache.txt" || KEEP=(-- -k)
    CAP_OF_STEP=240 step build-rest "$LIMIT" cmake --build "$BUILD_DIR" -j "$JOBS" "${KEEP[@]}"
    BUILD_NOTE=$(grep -E '^FAILED: ' "$STEP_LOG" | sed 's/^FAILED: //' | tr '\n' ' ')
    # ptxas's per-kernel registers, shared memory and spills, as this build made them.
    [[ -f "$BUILD_DIR/kernel_resources.md" ]] && cp "$BUILD_DIR/kernel_resources.md" "$STEPS/"
  else
    skip build-rest "out of time"
  fi
else
  [[ $(tail -1 "$RESULTS" | cut -f1) == configure ]] || skip configure "out of time"
fi
RZ_TESTS="$BUILD_DIR/rz_tests"

# Where the dependencies came from: in a bundle build no header of the hidden
# packages may come from /usr/include, and the libraries must resolve to the bundle.
origin_check() {
  local bad=0
  if [[ -f "$BUILD_DIR/build.ninja" ]]; then
    local n
    n=$(ninja -C "$BUILD_DIR" -t deps 2>/dev/null | grep -cE '^ +/usr/include/(doctest|CLI|nlohmann|toml\+\+|stb)/')
    echo "headers of the bundled packages read from /usr/include: $n"
    [[ $n -eq 0 ]] || bad=1
  fi
  ldd "$RZ_TESTS" | grep -E 'libstb|libtomlplusplus|libcudnn|libcublas' | sed 's/^\s*/  /'
  if ldd "$RZ_TESTS" | grep -E 'libstb|libtomlplusplus' | grep -qv "$DEPS_PREFIX"; then
    echo "a bundled library resolves outside $DEPS_PREFIX"; bad=1
  fi
  return $bad
}
if [[ $BUILD_OK -eq 1 && $DEPS_FROM == bundle* ]]; then step deps-origin 30 origin_check; fi

# On a compute capability 9.x device the build must hold the v3 (sm_90a) kernels.
if [[ $BUILD_OK -eq 1 && $CUDA_ARCH == 9* && -n "$CUDA_HOME" ]]; then
  v3_in_build() {
    local dump
    dump=$(command -v cuobjdump || echo "$CUDA_HOME/bin/cuobjdump")
    if [[ -x "$dump" ]]; then
      "$dump" --list-elf "$RZ_TESTS" > "$WORK/elf.txt"
      grep -c . "$WORK/elf.txt" | sed 's/$/ ELF images in rz_tests/'
      grep -q 'sm_90a' "$WORK/elf.txt" || { echo "no sm_90a code in $RZ_TESTS: native conv v3 is missing"; return 1; }
      grep 'sm_90a' "$WORK/elf.txt"
    else  # no cuobjdump here (a rehearsal): the sm_90a object library must have been built
      compgen -G "$BUILD_DIR/CMakeFiles/rz_conv_v3.dir/kernels/cuda/conv_native_v3.cu.o" >/dev/null ||
        { echo "the sm_90a object of native conv v3 was not built"; return 1; }
      echo "cuobjdump not found; the sm_90a object of native conv v3 was built"
    fi
  }
  step v3-in-build 30 v3_in_build
fi

# --- tests -------------------------------------------------------------------------------
# shellcheck source=scripts/tally.sh
source scripts/tally.sh
GPU_TESTS="not run"
if gpu_step gpu-tests 150 40 120 ctest --test-dir "$BUILD_DIR" -L gpu -j 8 --timeout 100 --output-on-failure; then :; fi
if [[ -f "${STEP_LOG:-}" && $STEP_LOG == *gpu-tests.log ]]; then
  GPU_TESTS=$(tally "$STEP_LOG")
  failed=$(grep -E '\*\*\*(Failed|Timeout|Exception|Skipped)' "$STEP_LOG" | sed -E 's/.*Test +#[0-9]+: //; s/ \.+.*//' | head -20 | tr '\n' ';')
  [[ -n "$failed" ]] && GPU_TESTS="$GPU_TESTS (not passed: $failed)"
  if [[ $GPU_TESTS =~ \ ([1-9][0-9]*)\ skipped ]]; then
    amend gpu-tests "FAIL(${BASH_REMATCH[1]} skipped on a GPU machine)"
  fi
fi

# sanitize_all TOOL EXCLUDE PER: each selected GPU test under compute-sanitizer,
# 8 at a time, each under PER seconds or what is left of the step's LIMIT,
# whichever is less; none starts with under 10 s left (reported "not
# started"), so the step ends in time.
SAN_EXCLUDE='*cuDNN*,*gemm_cublas*,*2^31*'
sanitize_all() {
  local tool=$1 excl=$2 per=$3 list="$WORK/$1.tests" stop
  stop=$(( $(date +%s) + LIMIT ))
  "$RZ_TESTS" -ts=gpu -tce="$excl" -ltc 2>/dev/null | grep -E '^gpu' > "$list" || true
  # RZ_SAN_REVERSE=1: the list from its end, to reach what an earlier, shorter run did not.
  [[ "${RZ_SAN_REVERSE:-}" == 1 ]] && { tac "$list" > "$list.r" && mv "$list.r" "$list"; }
  echo "$(wc -l < "$list") tests under $tool, ${per}s each at most"
  mkdir -p "$STEPS/$tool"
  # shellcheck disable=SC2016
  tr '\n' '\0' < "$list" | xargs -0 -P 8 -I{} bash -c '
    name=$1; tool=$2; per=$3; bin=$4; dir=$5; san=$6; stop=$7
    left=$((stop - $(date +%s)))
    if [[ $left -lt 10 ]]; then printf "not-started\t%s\n" "$name"; exit 0; fi
    [[ $per -lt $left ]] || per=$left
    log="$dir/$(printf "%s" "$name" | tr -c "A-Za-z0-9" "_" | cut -c1-80).log"
    subset=3; [[ $tool == racecheck ]] && subset=8  # racecheck is the slower tool
    RZ_GPU_TEST_SUBSET=$subset timeout --kill-after=5 "$per" "$san" --tool "$tool" --error-exitcode 86 \
      "$bin" -tc="$(printf "%s" "$name" | sed "s/,/\\\\,/g")" > "$log" 2>&1
    rc=$?
    case $rc in 0) r=clean ;; 86) r=ERRORS ;; 124|137) r=timeout ;; 77) r=skipped ;; *) r="tests-failed(rc=$rc)" ;; esac
    printf "%s\t%s\n" "$r" "$name"' _ {} "$tool" "$per" "$RZ_TESTS" "$STEPS/$tool" "$SANITIZER" "$stop" |
    tee "$WORK/$tool.tsv"
  ! grep -qvE '^(clean|timeout|not-started)' "$WORK/$tool.tsv"
}
san_line() {
  local f="$WORK/$1.tsv"
  [[ -f $f ]] || { echo "not run"; return; }
  echo "$(grep -c '^clean' "$f") clean, $(grep -c '^ERRORS' "$f") with errors, $(grep -cE '^(tests-failed|skipped)' "$f") failing or skipping, $(grep -c '^timeout' "$f") cut by the timeout, $(grep -c '^not-started' "$f") not started (out of time)$(grep -vE '^(clean|timeout|not-started)' "$f" | cut -f2 | head -5 | sed 's/^/; /' | tr -d '\n')"
}
if [[ -z "$SANITIZER" && $GPU_STEPS -eq 1 ]]; then skip memcheck "compute-sanitizer not found"
else gpu_step memcheck 150 30 200 sanitize_all memcheck "$SAN_EXCLUDE" 100; fi

# --- benchmarks -------------------------------------------------------------------------------
J_CONV="$STEPS/conv_bench.txt"
J_TORCH="$STEPS/pytorch-train_step-bf16.json"
J_BF16="$STEPS/train_step_bench-bf16.json"
J_FUSED="$STEPS/train_step_bench-bf16-graph-fused.json"
J_NATIVE="$STEPS/train_step_bench-bf16-native-fused.json"
J_FP32="$STEPS/train_step_bench-fp32-b8.json"
if gpu_step conv_bench 90 25 170 "$BUILD_DIR/conv_bench" --batch 8 --img-size 512 --reps 5; then
  fail_if_no_device conv_bench
fi
[[ -f "${STEP_LOG:-}" && $STEP_LOG == *conv_bench.log ]] && cp "$STEP_LOG" "$J_CONV"
if [[ $COMPILE -eq 1 ]]; then
  TORCH_MODES=compile
else
  TORCH_MODES=eager
fi
if "$PY" -c 'import torch, timm' >/dev/null 2>&1 || [[ $GPU_STEPS -eq 0 ]]; then
  gpu_step "pytorch-$TORCH_MODES" $([[ $COMPILE -eq 1 ]] && echo 300 || echo 75) 30 130 \
    env PYTHONUNBUFFERED=1 "$PY" bench/pytorch/train_step.py --modes "$TORCH_MODES" --steps 5 --warmup 2 --json "$J_TORCH"
else
  skip "pytorch-$TORCH_MODES" "torch or timm not importable"
fi
TS=(--steps 5 --warmup 2)
[[ -f "$J_TORCH" ]] && TS+=(--pytorch-json "$J_TORCH")
gpu_step train_step-bf16 75 25 90 "$BUILD_DIR/train_step_bench" --precision bf16 "${TS[@]}" --json "$J_BF16" &&
  fail_if_no_device train_step-bf16

if [[ $COMPILE -eq 0 ]]; then
  if [[ -z "$SANITIZER" && $GPU_STEPS -eq 1 ]]; then skip racecheck "compute-sanitizer not found"
  else
    gpu_step racecheck 120 30 60 sanitize_all racecheck \
      "$SAN_EXCLUDE,*front-ends*,*seresnet_tiny*,*graph*,*CudaContext*,*copies between*,*pinned*" 100
  fi
  gpu_step train_step-bf16-graph-fused 50 20 40 "$BUILD_DIR/train_step_bench" --precision bf16 \
    --graph --fused-se --steps 5 --warmup 3 --json "$J_FUSED" && fail_if_no_device train_step-bf16-graph-fused
  gpu_step train_step-bf16-native-fused 50 20 30 "$BUILD_DIR/train_step_bench" --precision bf16 \
    --fused-se --conv-impl native --steps 5 --warmup 3 --json "$J_NATIVE" &&
    fail_if_no_device train_step-bf16-native-fused
  gpu_step ranzcr-bench-fused 40 15 25 "$BUILD_DIR/ranzcr" bench --fused --batch 8 --img-size 256 &&
    fail_if_no_device ranzcr-bench-fused
  gpu_step train_step-fp32-b8 45 20 0 "$BUILD_DIR/train_step_bench" --precision fp32 --batch 8 \
    --steps 5 --warmup 2 --json "$J_FP32" && fail_if_no_device train_step-fp32-b8
  # Then, with time left, the per-op bandwidth table and the fused-kernel bench.
  gpu_step ops_gpu_bench 45 20 0 "$BUILD_DIR/ops_gpu_bench" --reps 5 && fail_if_no_device ops_gpu_bench
  gpu_step fused_bench 40 15 0 "$BUILD_DIR/fused_bench" --reps 5 && fail_if_no_device fused_bench
fi

# --- the CPU tests, with what time is left (on a CPU machine: the rehearsal's tests) ----------
CPU_TESTS="not run"
if [[ $DRY_RUN -eq 1 ]]; then skip cpu-tests "dry run"
elif [[ $BUILD_OK -eq 0 ]]; then skip cpu-tests "no build"
elif [[ $COMPILE -eq 1 ]]; then skip cpu-tests "--compile run"
elif [[ -n $ONLY_STEPS && $ONLY_STEPS != *",cpu-tests,"* ]]; then skip cpu-tests "not selected"
elif budget 1800 30 5; then
  par=$((JOBS > 2 ? JOBS / 2 : 1))
  CAP_OF_STEP=1800 OMP_NUM_THREADS=2 step cpu-tests "$LIMIT" ctest --test-dir "$BUILD_DIR" -LE gpu \
    -j "$par" --timeout 300 --output-on-failure
  CPU_TESTS=$(tally "$STEP_LOG")
  # Without a GPU the gpu suite is not run here; on a GPU machine a CPU test may
  # skip only for a reason of its own (it prints it).
else
  skip cpu-tests "out of time"
fi
if [[ $GPU_STEPS -eq 0 && $DRY_RUN -eq 0 && $BUILD_OK -eq 1 ]] && budget 300 10 0; then
  # The GPU tests without a GPU: every one must report skipped, none passed.
  STEP_NOTE="must all skip without a GPU" step gpu-tests-skip "$LIMIT" ctest --test-dir "$BUILD_DIR" -L gpu -j "$JOBS"
  GPU_TESTS="$(tally "$STEP_LOG") (no GPU: skips expected)"
  if grep -qE 'Test +#[0-9]+: .* Passed' "$STEP_LOG"; then
    amend gpu-tests-skip "FAIL(a GPU test passed without a GPU)"
  fi
fi

# --- summary ---------------------------------------------------------------------------------------
keys() {  # keys FILE REGEX: the key lines of a step's output, indented
  [[ -f "$1" ]] && grep -E "$2" "$1" | head -"${3:-12}" | cut -c1-220 | sed 's/^/    /'
}
steplog() { ls "$STEPS"/*-"$1".log 2>/dev/null | head -1; }
FAILED=0
while IFS=$'\t' read -r n r _ _; do
  [[ $r == PASS || $r == SKIPPED* || $r == CUT* ]] || FAILED=1
  [[ $GPU_STEPS -eq 1 && $r == SKIPPED\(out\ of\ time\) && $n =~ ^(gpu-tests|memcheck)$ ]] && FAILED=1
done < "$RESULTS"
[[ $DRY_RUN -eq 0 && $BUILD_OK -eq 0 ]] && FAILED=1
TOTAL_S=$(( $(date +%s) - T0 ))

summary() {
  echo "## $DATE — GPU check$([[ $REHEARSE -eq 1 ]] && echo ' (rehearsal)'), $DEVICE"
  echo
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ), host $(hostname); commit $COMMIT$DIRTY"
  echo "- device: $DEVICE, driver $DRIVER; nvcc ${NVCC_VER:-?}; $CXX_VER; cmake ${CMAKE_VER:-?}; $JOBS jobs"
  echo "- dependencies: $DEPS_FROM; system dev packages hidden: $HIDDEN; cuDNN: $CUDNN_FROM; cuBLAS: $CUBLAS_FROM; NCCL: $NCCL_FROM"
  echo "- build ($BUILD_DIR, Release, sm_$CUDA_ARCH, RZ_WERROR=OFF, -lineinfo): $([[ $BUILD_OK -eq 1 ]] && echo ok || echo 'not built')${BUILD_NOTE:+; failed targets: $BUILD_NOTE}"
  echo "- GPU tests: $GPU_TESTS"
  echo "- CPU tests: $CPU_TESTS"
  echo "- compute-sanitizer memcheck: $(san_line memcheck)"
  echo "- compute-sanitizer racecheck: $(san_line racecheck)"
  local f
  f=$(steplog conv_bench); [[ -n $f ]] && { echo "- conv_bench (batch 8, 512 px, bf16):"; keys "$f" '^(fwd|dgrad|wgrad) |no (usable )?CUDA device' 12; }
  for n in "pytorch-$TORCH_MODES" train_step-bf16 train_step-bf16-graph-fused train_step-bf16-native-fused train_step-fp32-b8; do
    f=$(steplog "$n"); [[ -n $f ]] || continue
    echo "- $n:"; keys "$f" '^pytorch (eager|compile)|^train_step_bench result|^native/|^captured|out of GPU memory|no (usable )?CUDA device' 6
  done
  f=$(steplog ranzcr-bench-fused); [[ -n $f ]] && { echo "- ranzcr bench --fused:"; keys "$f" '^  (fwd|dgrad|wgrad)|geomean' 8; }
  f=$(steplog ops_gpu_bench); [[ -n $f ]] && { echo "- ops_gpu_bench:"; keys "$f" '^ops_gpu_bench summary' 4; }
  f=$(steplog fused_bench); [[ -n $f ]] && { echo "- fused_bench:"; keys "$f" ', fused ' 6; }
  echo "- steps:$(while IFS=$'\t' read -r n r s _; do printf ' %s=%s(%ss)' "$n" "$r" "$s"; done < "$RESULTS")"
  echo "- total: ${TOTAL_S}s of a ${BUDGET_S}s budget"
  echo "- tests: $(tests_line)"
  echo "- result: $([[ $FAILED -eq 0 ]] && echo PASS || echo FAIL)"
}
# The closing line: every test this run ran, GPU and CPU.
tests_line() {
  local p=0 f=0 s=0 l
  for l in "$GPU_TESTS" "$CPU_TESTS"; do
    [[ $l =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed,\ ([0-9]+)\ skipped ]] || continue
    p=$((p + BASH_REMATCH[1])) f=$((f + BASH_REMATCH[2])) s=$((s + BASH_REMATCH[3]))
  done
  echo "$p passed, $f failed, $s skipped"
}

# headline.json: the numbers that matter, from the steps' JSON files.
headline() {
  RESULTS="$RESULTS" STEPS="$STEPS" DEVICE="$DEVICE" DRIVER="$DRIVER" COMMIT="$COMMIT$DIRTY" \
  GPU_TESTS="$GPU_TESTS" CPU_TESTS="$CPU_TESTS" MEMCHECK="$(san_line memcheck)" \
  RACECHECK="$(san_line racecheck)" RESULT="$([[ $FAILED -eq 0 ]] && echo PASS || echo FAIL)" \
  REHEARSE=$REHEARSE TOTAL_S=$TOTAL_S CUDNN="$CUDNN_FROM" DEPS="$DEPS_FROM" "$PY" - "$1" <<'EOF'
import glob, json, os, re, sys
env = os.environ
out = {k.lower(): env[k] for k in ("DEVICE", "DRIVER", "COMMIT", "GPU_TESTS", "CPU_TESTS", "MEMCHECK",
                                   "RACECHECK", "RESULT", "CUDNN", "DEPS")}
out["rehearsal"] = env["REHEARSE"] == "1"
out["total_s"] = int(env["TOTAL_S"])
out["steps"] = {}
for line in open(env["RESULTS"]):
    name, result, secs, note = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
    out["steps"][name] = {"result": result, "seconds": int(secs or 0), "note": note}
benches = {}
for path in sorted(glob.glob(os.path.join(env["STEPS"], "*.json"))):
    name = os.path.basename(path)[:-5]
    try:
        j = json.load(open(path))
    except (OSError, ValueError) as e:
        benches[name] = {"error": str(e)}
        continue
    if "modes" in j:  # bench/pytorch/train_step.py
        benches[name] = {m: {k: v.get(k) for k in ("images_per_s", "ms_per_step", "peak_mem_bytes", "error")
                             if k in v} for m, v in j["modes"].items()}
    else:
        benches[name] = {k: j.get(k) for k in ("model", "img_size", "batch", "precision", "images_per_s",
                                               "ms_per_step", "peak_mem_bytes", "tflops", "mfu", "pytorch",
                                               "error") if k in j}
out["train_step"] = benches
conv = os.path.join(env["STEPS"], "conv_bench.txt")
if os.path.exists(conv):
    out["conv_bench"] = [l.rstrip() for l in open(conv) if re.match(r"^(fwd|dgrad|wgrad) ", l)][:24]
json.dump(out, open(sys.argv[1], "w"), indent=1, sort_keys=True)
EOF
}

# check_contract: at most 8 plain files, plain names, under 16 MiB each, the summary there.
check_contract() {
  local n=0 bad=0 f
  for f in "$OUT"/* "$OUT"/.[!.]*; do
    [[ -e "$f" ]] || continue
    n=$((n + 1))
    [[ $(basename "$f") =~ ^[A-Za-z0-9._-]+$ ]] || { echo "contract: bad name $(basename "$f")"; bad=1; }
    [[ -f "$f" && ! -L "$f" ]] || { echo "contract: not a plain file: $(basename "$f")"; bad=1; }
    [[ $(stat -c %s "$f") -le $((16 * 1024 * 1024)) ]] || { echo "contract: over 16 MiB: $(basename "$f")"; bad=1; }
  done
  [[ $n -le 8 ]] || { echo "contract: $n files, more than 8"; bad=1; }
  grep -q '^- result: ' "$OUT/summary.md" 2>/dev/null || { echo "contract: summary.md missing"; bad=1; }
  return $bad
}

summary > "$OUT/summary.md"
headline "$OUT/headline.json" 2>/dev/null || echo "{\"result\": \"$([[ $FAILED -eq 0 ]] && echo PASS || echo FAIL)\", \"note\": \"no python3 for the full headline\"}" > "$OUT/headline.json"
pack
if ! check_contract; then
  FAILED=1
  summary > "$OUT/summary.md"
fi
echo
echo "----- gpu_check summary (paste into bench/RESULTS.md; also $OUT/summary.md) -----"
cat "$OUT/summary.md"
echo "-----------------------------------------------------------"
exec 1>&3 2>&4
wait "$TEE_PID" 2>/dev/null
exit $FAILED
