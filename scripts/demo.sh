#!/usr/bin/env bash
# Sets up, builds and runs the main job. Until the RANZCR demo lands this is
# the tiny example: a conv net with BN and SE learning synthetic shapes.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
./build/ranzcr tiny-train "$@"
