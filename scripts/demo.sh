#!/usr/bin/env bash
# Sets up, builds and runs the main job: `ranzcr demo` writes a synthetic
# RANZCR set, trains a teacher on annotated images, a distilled student and a
# control student on plain images, fine-tunes the distilled one, and prints
# the held-out AUC table. Extra arguments go to `ranzcr demo` (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
./scripts/build.sh
./build/ranzcr demo --out demo "$@"
