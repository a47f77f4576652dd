#!/usr/bin/env bash
# Sets up, builds and runs every test, then the reliability stages:
#   tests     the doctest suite in build/ (GPU tests, ctest label "gpu",
#             report Skipped, not Passed, when no CUDA device is present);
#   sanitize  the CPU tests again in an ASan + UBSan build (scripts/sanitize.sh);
#   fuzz      every libFuzzer target for a bounded time (scripts/fuzz.sh).
# The last lines give one result per stage; the very last counts passed,
# failed and skipped tests. RZ_TEST_STAGES (default "tests sanitize fuzz") picks the
# stages; the exit status is non-zero when any stage that ran failed.
set -euo pipefail
cd "$(dirname "$0")/.."
stages="${RZ_TEST_STAGES:-tests sanitize fuzz}"
want() { [[ " $stages " == *" $1 "* ]]; }

./scripts/setup.sh
# shellcheck source=scripts/tally.sh
source scripts/tally.sh
rc=0
tests_line="skipped (RZ_TEST_STAGES)"
if want tests; then
  ./scripts/build.sh "$@"
  log=build/ctest.log
  # One test process at a time: each already uses every core through OpenMP.
  ctest --test-dir build --output-on-failure 2>&1 | tee "$log" || rc=$?
  tests_line="$(tally "$log")"
fi

# stage NAME COMMAND...: runs a reliability stage, timed, into its result line.
declare -A result
stage() {
  local name="$1" start=$SECONDS
  shift
  if ! want "$name"; then
    result[$name]="skipped (RZ_TEST_STAGES)"
    return
  fi
  echo "==== $name: $*"
  if "$@"; then
    result[$name]="passed ($((SECONDS - start)) s)"
  else
    result[$name]="FAILED ($((SECONDS - start)) s)"
    rc=1
  fi
}
stage sanitize ./scripts/sanitize.sh
stage fuzz ./scripts/fuzz.sh

echo "sanitize: ${result[sanitize]}"
echo "fuzz: ${result[fuzz]}"
echo "tests: $tests_line"
exit "$rc"
