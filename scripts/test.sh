#!/usr/bin/env bash
# Sets up, builds and runs every test. GPU tests (ctest label "gpu") report
# Skipped, not Passed, when no CUDA device is present; the last line counts
# passed, failed and skipped tests.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh "$@"
# shellcheck source=scripts/tally.sh
source scripts/tally.sh
log=build/ctest.log
# One test process at a time: each already uses every core through OpenMP.
rc=0
ctest --test-dir build --output-on-failure 2>&1 | tee "$log" || rc=$?
echo "tests: $(tally "$log")"
exit "$rc"
