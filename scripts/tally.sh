# Sourced by test.sh and gpu_check.sh.
# shellcheck shell=bash
# tally LOG: "N passed, N failed, N skipped" from ctest's per-test result lines
# in LOG (a test that did not run, timed out or crashed counts as failed).
tally() {
  local p f s
  p=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .* Passed' "$1")
  s=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*\*\*\*Skipped' "$1")
  f=$(grep -cE '^ *[0-9]+/[0-9]+ Test +#[0-9]+: .*(\*\*\*Failed|\*\*\*Timeout|\*\*\*Exception|Not Run)' "$1")
  echo "$p passed, $f failed, $s skipped"
}
