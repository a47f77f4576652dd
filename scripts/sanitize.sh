#!/usr/bin/env bash
# Builds the CPU library, the CLI and the doctest binary with AddressSanitizer
# and UndefinedBehaviorSanitizer into build-asan/ (g++, CUDA off) and runs the
# CPU test suite there. Every sanitizer report fails its test: ASan and UBSan
# stop the process at the first finding (-fno-sanitize-recover), and
# LeakSanitizer reports leaks at exit. Exits non-zero on any failure; the
# summary lists each failing test with the sanitizer's one-line summary.
#
#   ./scripts/sanitize.sh [--no-build] [--all] [-- CTEST_ARGS...]
#
# What runs: every CPU test but the four longest, which train whole runs and
# take 1-2 minutes each under the sanitizers (40x their normal time; 5 of the
# 8 minutes of a full run); the code they run is also run by shorter tests
# (the CLI demo test, the run-folder and checkpoint tests, the conv v2 tests).
# --all runs them too. The GPU suite (ctest label gpu) is left out: without
# CUDA it only reports skips. CTEST_ARGS go to ctest, e.g. `-- -R csv`.
# Suppressions for reports in code that is not ours: tests/sanitize/*.supp
# (each entry says why). Log: build-asan/ctest.log.
set -euo pipefail
cd "$(dirname "$0")/.."

build=1
all=0
ctest_args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --no-build) build=0; shift ;;
    --all) all=1; shift ;;
    --) shift; ctest_args=("$@"); break ;;
    -h|--help) sed -n '2,19p' "$0"; exit 0 ;;
    *) echo "sanitize: unknown option $1" >&2; exit 2 ;;
  esac
done

build_dir="build-asan"
if [ "$build" = 1 ]; then
  generator=()
  command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
  # -O1 -g1: a quick build with line numbers in every stack. Warnings are not
  # errors here: instrumentation changes what GCC's flow analysis sees.
  cmake -S . -B "$build_dir" "${generator[@]}" -DRZ_SANITIZE=ON -DRZ_CUDA=OFF -DRZ_WERROR=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" >/dev/null
  cmake --build "$build_dir" -j"$(nproc)" --target rz_tests
fi

# The long tests left out unless --all (see the top).
long_tests='^(tiny example: the main-job example learns|conv igemm: v2 kernel emulation|kill: a run stopped at any step|trainer: stages run end to end)'
exclude=()
[ "$all" = 1 ] || exclude=(-E "$long_tests")

supp=tests/sanitize
# allocator_may_return_null: a failed allocation throws std::bad_alloc as it
# does without ASan (the out-of-memory tests check the engine's message).
export ASAN_OPTIONS="allocator_may_return_null=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:detect_stack_use_after_return=1${ASAN_OPTIONS:+:$ASAN_OPTIONS}"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:suppressions=$PWD/$supp/ubsan.supp${UBSAN_OPTIONS:+:$UBSAN_OPTIONS}"
export LSAN_OPTIONS="suppressions=$PWD/$supp/lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"

# shellcheck source=scripts/tally.sh
source scripts/tally.sh
log="$build_dir/ctest.log"
rc=0
# One test process at a time, as in test.sh (each uses every core through OpenMP).
ctest --test-dir "$build_dir" --output-on-failure -LE gpu "${exclude[@]}" "${ctest_args[@]}" \
  >"$log" 2>&1 || rc=$?
grep -E '^ *[0-9]+/[0-9]+ Test +#' "$log" | grep -v ' Passed ' || true

echo "sanitize summary: $(tally "$log")"
# For each failing test: the sanitizer's report lines (output is in the log
# because of --output-on-failure).
awk '
  /^ *[0-9]+\/[0-9]+ Test +#[0-9]+: / { name = $0; sub(/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: /, "", name); sub(/ \.\.\..*/, "", name) }
  /^SUMMARY: (Address|Leak|UndefinedBehavior)Sanitizer/ || /runtime error:/ { print "  " name ": " $0 }
' "$log" | sort -u | head -40
if [ "$rc" -ne 0 ]; then
  echo "sanitize: FAILED (full output in $log)"
  exit 1
fi
echo "sanitize: no sanitizer findings"
