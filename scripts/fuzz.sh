#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz into build-fuzz/ (clang, ASan +
# UBSan, CPU only) and runs each for a bounded time. Exits non-zero when a
# target fails; the summary names each failing input with the command that
# reproduces it.
#
#   ./scripts/fuzz.sh [--time SECONDS] [--jobs N] [--no-build] [TARGET...]
#
# TARGET: csv, ranzcr_csv, safetensors, checkpoint_state, cache_index, image
# (default: all). --time (or RZ_FUZZ_SECONDS): seconds of fuzzing per target,
# default 20; 0 only replays the seeds and the regression inputs. --jobs (or
# RZ_FUZZ_JOBS): targets fuzzed at once, default the number of cores.
#
# Per target:
#   1. every input of tests/fuzz/regressions/<target>/ (inputs that once made
#      it fail) is replayed; one that fails again fails the target;
#   2. the target fuzzes for --time seconds from a copy of its seed corpus
#      tests/fuzz/corpus/<target>/ (the committed seeds stay as they are),
#      with the dictionary tests/fuzz/<target>.dict when there is one.
# A failing input is kept as build-fuzz/artifacts/<target>/crash-<sha1> (or
# timeout-, oom-, leak-); to keep it as a regression input, copy it into
# tests/fuzz/regressions/<target>/. Logs: build-fuzz/logs/<target>.log.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${RZ_FUZZ_SECONDS:-20}"
jobs="${RZ_FUZZ_JOBS:-$(nproc)}"
build=1
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) seconds="$2"; shift 2 ;;
    --time=*) seconds="${1#*=}"; shift ;;
    --jobs) jobs="$2"; shift 2 ;;
    --jobs=*) jobs="${1#*=}"; shift ;;
    --no-build) build=0; shift ;;
    -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
    -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
    *) targets+=("${1#fuzz_}"); shift ;;
  esac
done
[ ${#targets[@]} -gt 0 ] || targets=(csv ranzcr_csv safetensors checkpoint_state cache_index image)
case "$seconds" in ''|*[!0-9]*) echo "fuzz: --time takes whole seconds, got '$seconds'" >&2; exit 2 ;; esac
case "$jobs" in ''|*[!0-9]*|0) echo "fuzz: --jobs takes a positive count, got '$jobs'" >&2; exit 2 ;; esac

# Largest input (bytes) and other per-target settings. The image target caps
# single allocations far above what the decode budget lets through (50
# megapixels), so a decode the budget should have refused is a finding.
max_len() {
  case "$1" in
    image) echo 16384 ;;
    safetensors|cache_index) echo 8192 ;;
    *) echo 4096 ;;
  esac
}
extra_flags() {
  case "$1" in
    image) echo "-malloc_limit_mb=512" ;;
  esac
}

build_dir="build-fuzz"
if [ "$build" = 1 ]; then
  cxx=""
  for c in clang++-14 clang++; do
    if command -v "$c" >/dev/null 2>&1; then cxx="$c"; break; fi
  done
  [ -n "$cxx" ] || { echo "fuzz: clang++ not found (scripts/setup.sh installs clang-14)" >&2; exit 1; }
  # A folder configured with another compiler starts over (CMake cannot switch).
  if [ -f "$build_dir/CMakeCache.txt" ] &&
     ! grep -q "^CMAKE_CXX_COMPILER:[A-Z]*=$(command -v "$cxx")\$" "$build_dir/CMakeCache.txt"; then
    rm -rf "$build_dir/CMakeCache.txt" "$build_dir/CMakeFiles"
  fi
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  # -O1 with line tables: the usual fuzzing trade (fast enough, exact stacks).
  cmake -S . -B "$build_dir" "${generator[@]}" -DCMAKE_CXX_COMPILER="$cxx" \
    -DRZ_FUZZ=ON -DRZ_CUDA=OFF -DRZ_NATIVE=OFF -DRZ_WERROR=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" \
    >/dev/null
  programs=()
  for t in "${targets[@]}"; do programs+=("fuzz_$t"); done
  cmake --build "$build_dir" -j"$(nproc)" --target "${programs[@]}"
fi

# Sanitizer reports with symbolized stacks (the symbolizer of the same LLVM).
cxx_path="$(grep -m1 '^CMAKE_CXX_COMPILER:' "$build_dir/CMakeCache.txt" | cut -d= -f2-)"
symbolizer="$(dirname "$(readlink -f "$(command -v "$cxx_path" || echo "$cxx_path")")")/llvm-symbolizer"
[ -x "$symbolizer" ] || symbolizer="$(command -v llvm-symbolizer || true)"
[ -n "$symbolizer" ] && export ASAN_SYMBOLIZER_PATH="$symbolizer"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"

# Scratch files of the targets (fuzz_util.h): in memory when /dev/shm is usable.
work="$(mktemp -d "${TMPDIR:-/tmp}/rz-fuzz.XXXXXX")"
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  scratch="$(mktemp -d /dev/shm/rz-fuzz.XXXXXX)"
else
  scratch="$work/scratch"
fi
trap 'rm -rf "$work" "$scratch"' EXIT
mkdir -p "$build_dir/logs"

# fuzz_one TARGET: replay, then fuzz; writes $work/<target>.result.
fuzz_one() {
  local t="$1" bin="$build_dir/fuzz_$1" log="$build_dir/logs/$1.log"
  local art="$build_dir/artifacts/$1" corpus="$work/corpus/$1"
  local regress="tests/fuzz/regressions/$1" seeds="tests/fuzz/corpus/$1"
  # -max_len only when fuzzing: libFuzzer cuts a replayed file to it.
  local flags extra
  read -ra extra <<<"$(extra_flags "$t")"
  flags=(-rss_limit_mb=2048 -timeout=30 "${extra[@]}")
  local fuzz_flags=(-max_len="$(max_len "$t")")
  [ -f "tests/fuzz/$t.dict" ] && fuzz_flags+=(-dict="tests/fuzz/$t.dict")
  mkdir -p "$art" "$corpus"
  : >"$log"
  export RZ_FUZZ_SCRATCH="$scratch/$t"
  local result="ok"
  # 1. Regression inputs, one process each so every failing one is named.
  local n_regress=0 f
  if [ -d "$regress" ]; then
    for f in "$regress"/*; do
      [ -f "$f" ] || continue
      n_regress=$((n_regress + 1))
      if ! "$bin" "${flags[@]}" "$f" >>"$log" 2>&1; then
        result="FAILED"
        echo "regression $f fails again; reproduce: $bin ${flags[*]} $f" >>"$work/$t.findings"
      fi
    done
  fi
  # 2. Fuzzing from a copy of the seeds (seeds alone when --time is 0).
  if [ -d "$seeds" ]; then cp "$seeds"/* "$corpus"/; fi
  local before after rc=0
  before="$(ls -A "$art")"
  if [ "$seconds" -gt 0 ]; then
    "$bin" "${flags[@]}" "${fuzz_flags[@]}" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$art/" "$corpus" >>"$log" 2>&1 || rc=$?
  else
    "$bin" "${flags[@]}" "${fuzz_flags[@]}" -runs=0 -artifact_prefix="$art/" "$corpus" \
      >>"$log" 2>&1 || rc=$?
  fi
  after="$(ls -A "$art")"
  if [ "$rc" -ne 0 ]; then
    result="FAILED"
    local new
    new="$(comm -13 <(echo "$before" | sort) <(echo "$after" | sort) | grep -v '^$' || true)"
    if [ -n "$new" ]; then
      for f in $new; do
        echo "$art/$f; reproduce: $bin ${flags[*]} $art/$f" >>"$work/$t.findings"
      done
    else
      echo "exit $rc without an artifact (see $log)" >>"$work/$t.findings"
    fi
  fi
  local runs cov
  runs="$(grep -m1 -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo 0)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo '?')"
  echo "$result $n_regress ${runs:-0} ${cov:-?}" >"$work/$t.result"
}

echo "fuzz: ${#targets[@]} targets, ${seconds} s each, ${jobs} at a time"
running=0
for t in "${targets[@]}"; do
  [ -x "$build_dir/fuzz_$t" ] || { echo "fuzz: no target fuzz_$t in $build_dir" >&2; exit 2; }
  fuzz_one "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then
    wait -n || true
    running=$((running - 1))
  fi
done
wait || true

failed=0
echo "fuzz summary:"
for t in "${targets[@]}"; do
  if [ ! -f "$work/$t.result" ]; then
    echo "  fuzz_$t: FAILED (no result; see $build_dir/logs/$t.log)"
    failed=$((failed + 1))
    continue
  fi
  read -r result n_regress runs cov <"$work/$t.result"
  printf '  fuzz_%-17s %-6s %3d regression inputs, %8s runs, coverage %s\n' \
    "$t" "$result" "$n_regress" "$runs" "$cov"
  if [ "$result" != ok ]; then
    failed=$((failed + 1))
    sed 's/^/      /' "$work/$t.findings"
    # The sanitizer's or libFuzzer's own summary lines, for the CI log.
    grep -E '^(SUMMARY|==[0-9]+==ERROR|fuzz finding|.*runtime error)' "$build_dir/logs/$t.log" |
      head -5 | cut -c1-200 | sed 's/^/      /' || true
  fi
done
if [ "$failed" -gt 0 ]; then
  echo "fuzz: $failed of ${#targets[@]} targets FAILED (logs in $build_dir/logs/)"
  exit 1
fi
echo "fuzz: all ${#targets[@]} targets passed"
