#!/usr/bin/env bash
# The CUDA compiler launcher of the library's targets (CMakeLists.txt): runs
# the nvcc command line it is given with --resource-usage and keeps ptxas's
# per-kernel report (registers, shared and constant memory, stack frame,
# spills) beside the object as <object>.resources, for the build's kernel
# resource table (scripts/kernel_resources.sh). Everything else nvcc prints
# (warnings, errors) passes through; the exit status is nvcc's.
set -u
out=""
prev=""
for arg in "$@"; do
  [ "$prev" = "-o" ] && out="$arg"
  prev="$arg"
done
[ -z "$out" ] && exec "$@"
report="$out.resources"
"$@" --resource-usage 2> "$report.tmp"
rc=$?
grep -v -e '^ptxas info' -e '^    [0-9]* bytes stack frame' "$report.tmp" >&2
mv -f "$report.tmp" "$report"
exit $rc
