#!/usr/bin/env bash
# Installs the Debian packages the build needs. Idempotent: packages already
# present are not reinstalled, and nothing is asked interactively.
set -euo pipefail
# shellcheck source=scripts/packages.sh
source "$(dirname "$0")/packages.sh"

packages=("${RZ_TOOL_PACKAGES[@]}" "${RZ_CHECK_PACKAGES[@]}" "${RZ_DEV_PACKAGES[@]}")

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all packages present"
fi

# The CUDA toolkit is optional: the build enables CUDA when nvcc is found.
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  echo "setup: CUDA toolkit found"
else
  echo "setup: no CUDA toolkit found; building the CPU backend only"
fi
