#!/usr/bin/env bash
# Collects what a GPU machine lacks for the build into one folder (default
# .gpu-bundle/, ignored by git): the .deb files of our dependencies'
# development packages and their run-time libraries, downloaded with
# `apt-get download`, nothing compiled. scripts/gpu_check.sh unpacks them
# (dpkg -x into a folder of the build, never over /) when a dependency is
# missing there. Copy the folder along with the checkout.
#
#   scripts/gpu_bundle.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/packages.sh
source scripts/packages.sh
dest=${1:-.gpu-bundle}
max_bytes=$((20 * 1024 * 1024))
packages=("${RZ_DEV_PACKAGES[@]}" "${RZ_RUNTIME_PACKAGES[@]}")

tmp=$(mktemp -d "${dest%/}.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
chmod 755 "$tmp"  # apt's download user writes here
download() { (cd "$tmp" && apt-get download "${packages[@]}" >/dev/null); }
if ! download; then
  echo "gpu_bundle: apt-get download failed; refreshing the package lists and trying again"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  download
fi

# Every package once, as a .deb that dpkg can read.
for p in "${packages[@]}"; do
  n=$(find "$tmp" -maxdepth 1 -name "${p}_*.deb" | wc -l)
  if [ "$n" -ne 1 ]; then
    echo "gpu_bundle: expected one .deb for $p, found $n" >&2
    exit 1
  fi
done
for f in "$tmp"/*.deb; do dpkg-deb --info "$f" >/dev/null; done

bytes=$(du -cb "$tmp"/*.deb | tail -1 | cut -f1)
if [ "$bytes" -gt "$max_bytes" ]; then
  echo "gpu_bundle: the bundle is $bytes bytes, over the $max_bytes-byte limit" >&2
  exit 1
fi
{
  echo "# ranzcr GPU-machine dependency bundle, made $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "# package version architecture sha256"
  for f in "$tmp"/*.deb; do
    echo "$(dpkg-deb --show --showformat='${Package} ${Version} ${Architecture}' "$f") $(sha256sum "$f" | cut -d' ' -f1)"
  done
} > "$tmp/MANIFEST"
rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "gpu_bundle: ${#packages[@]} packages, $bytes bytes in $dest/ (MANIFEST lists them)"
