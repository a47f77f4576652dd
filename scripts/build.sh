#!/usr/bin/env bash
# Configures and builds ranzcr into build/ (Release, all cores). CUDA is
# enabled when nvcc is found; pass -DRZ_CUDA=OFF (or any CMake option) through.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x /usr/local/cuda/bin/nvcc ] && export PATH="/usr/local/cuda/bin:$PATH"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release "$@"
cmake --build build -j"$(nproc)"
