#!/usr/bin/env bash
# Sets up, builds and runs every test. GPU tests (ctest label "gpu") skip
# with a message when no CUDA device is present.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh "$@"
# One test process at a time: each already uses every core through OpenMP.
ctest --test-dir build --output-on-failure
