#!/usr/bin/env bash
# The kernel resource table of a CUDA build, from the ptxas reports that
# scripts/nvcc_resources.sh left beside each object (<object>.resources):
#
#   scripts/kernel_resources.sh BUILD_DIR OUT.md [ARCH]
#
# One row per kernel (entry function) compiled for ARCH (default sm_90):
# registers per thread, static shared memory per block, stack frame, spill stores and loads, and the occupancy the registers allow
# on sm_90 (65,536 registers and 64 warps per SM, registers allocated 256 per
# warp): an upper bound for any block size. Dynamic shared memory is a
# launch parameter, not known to the compiler; the kernels that use it set it
# at their launch site (kernels/cuda/conv_native_v*.cu).
#
# Exits 1, naming them, when a kernel spills registers to local memory: the
# build runs this after compiling the library, so a change that makes a
# kernel spill fails the build.
set -euo pipefail
build=${1:?usage: kernel_resources.sh BUILD_DIR OUT.md [ARCH]}
out=${2:?usage: kernel_resources.sh BUILD_DIR OUT.md [ARCH]}
arch=${3:-sm_90}
demangle=cat
command -v c++filt > /dev/null && demangle=c++filt

mapfile -t reports < <(find "$build" -name '*.resources' | sort)
if [ ${#reports[@]} -eq 0 ]; then
  echo "kernel_resources.sh: no *.resources under $build (is the CUDA launcher scripts/nvcc_resources.sh in use?)" >&2
  exit 1
fi

rows=$(for r in "${reports[@]}"; do
  obj=$(basename "${r%.resources}")
  awk -v obj="$obj" -v arch="$arch" '
    /Compiling entry function/ {
      name = $0; sub(/.*Compiling entry function \047/, "", name); sub(/\047 for \047.*/, "", name)
      a = $0; sub(/.* for \047/, "", a); sub(/\047.*/, "", a)
      keep = (a == arch || a == arch "a"); regs = 0; smem = 0; stack = 0; sst = 0; sld = 0; next
    }
    keep && /bytes stack frame/ {
      n = split($0, f, /[ ,]+/)
      for (i = 1; i <= n; i++) {
        if (f[i] == "stack") stack = f[i-2]
        if (f[i] == "spill" && f[i+1] == "stores") sst = f[i-2]
        if (f[i] == "spill" && f[i+1] == "loads") sld = f[i-2]
      }
      next
    }
    keep && /ptxas info *: Used [0-9]+ registers/ {
      n = split($0, f, /[ ,]+/)
      for (i = 1; i <= n; i++) {
        if (f[i] == "registers") regs = f[i-1]
        if (f[i] == "smem") smem = f[i-2]
      }
      printf "%s\t%s\t%d\t%d\t%d\t%d\t%d\n", obj, name, regs, smem, stack, sst, sld
      keep = 0
    }' "$r"
done)

{
  echo "# Kernel resources ($arch)"
  echo
  echo "ptxas's report for every kernel of this build (scripts/kernel_resources.sh)."
  echo "Occupancy: the share of sm_90's 64 warps per SM that the register use allows"
  echo "(an upper bound; shared memory and the block size can lower it)."
  echo
  echo "| object | kernel | registers | static smem B | stack B | spill stores B | spill loads B | occupancy by registers |"
  echo "|---|---|---|---|---|---|---|---|"
  printf '%s\n' "$rows" | while IFS=$'\t' read -r obj name regs smem stack sst sld; do
    [ -z "$obj" ] && continue
    pretty=$(printf '%s\n' "$name" | $demangle | sed -e 's/(anonymous namespace):://g' -e 's/rz:://g')
    [ ${#pretty} -gt 110 ] && pretty="${pretty:0:107}..."
    per_warp=$(( (regs * 32 + 255) / 256 * 256 ))
    warps=64
    if [ "$per_warp" -gt 0 ]; then warps=$(( 65536 / per_warp )); [ $warps -gt 64 ] && warps=64; fi
    printf '| %s | `%s` | %d | %d | %d | %d | %d | %d%% |\n' "$obj" "${pretty//|/\\|}" "$regs" "$smem" "$stack" \
      "$sst" "$sld" $(( warps * 100 / 64 ))
  done
} > "$out.tmp"
mv -f "$out.tmp" "$out"

kernels=$(printf '%s\n' "$rows" | grep -c . || true)
spills=$(printf '%s\n' "$rows" | awk -F'\t' 'NF && ($6 > 0 || $7 > 0)')
maxregs=$(printf '%s\n' "$rows" | awk -F'\t' 'NF && $3 > m {m = $3} END {print m + 0}')
echo "kernel resources: $kernels kernels for $arch, at most $maxregs registers per thread; table in $out"
if [ -n "$spills" ]; then
  echo "kernel resources: these kernels spill registers to local memory:" >&2
  printf '%s\n' "$spills" | while IFS=$'\t' read -r obj name regs smem stack sst sld; do
    echo "  $obj: $(printf '%s\n' "$name" | $demangle) ($regs registers, $sst bytes spill stores, $sld bytes spill loads)" >&2
  done
  exit 1
fi
