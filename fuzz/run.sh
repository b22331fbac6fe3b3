#!/usr/bin/env bash
# Runs one fuzz target (default 600 s) with its dictionary and size limit,
# seeded by its corpus and regression folders, then appends the run to
# RUNS.md with the figures libFuzzer printed. New inputs land in
# corpus/<target>; minimize before committing (README.md).
#
#   ./run.sh <target> [seconds]
set -euo pipefail
cd "$(dirname "$0")"

target=${1:?usage: ./run.sh <target> [seconds]}
secs=${2:-600}
case $target in
    # Past the 64 KiB payload limit.
    data_frame) flags=(-max_len=70000) ;;
    # Past the 4 KiB header line limit.
    lsp_framing) flags=(-max_len=16384 -dict=dicts/lsp.dict) ;;
    *) flags=(-max_len=8192 -dict=dicts/control.dict) ;;
esac

log=$(mktemp)
trap 'rm -f "$log"' EXIT
started=$(date -u +%Y-%m-%dT%H:%MZ)
set +e
cargo fuzz run -s none "$target" "corpus/$target" "regressions/$target" -- \
    -max_total_time="$secs" -print_final_stats=1 "${flags[@]}" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e

execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | awk '{print $2}' | tail -1)
took=$(grep -oE 'Done [0-9]+ runs in [0-9]+ second' "$log" | awk '{print $5}' | tail -1)
cov=$(grep -E '^#[0-9]+' "$log" | grep -oE 'cov: [0-9]+ ft: [0-9]+' | tail -1)
if [ "$status" -eq 0 ]; then
    outcome="none"
else
    outcome="CRASH (exit $status): $(grep -oE 'artifacts/[^ ]+' "$log" | tail -1)"
fi
echo "| \`$target\` | $started | ${took:-?} s | ${execs:-?} | ${cov:-?} | ${flags[*]} | $outcome |" >>RUNS.md
tail -1 RUNS.md
exit "$status"
