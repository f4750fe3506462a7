#!/usr/bin/env bash
# Run the CI stages in order, each as a make target, and print how long each
# one took. Stops at the first stage that fails and exits non-zero.
#
# Usage: scripts/ci.sh [STAGE...]     (default: test asan tsan ucontext aarch64)
# The make command comes from $MAKE, which the top-level Makefile sets.
set -euo pipefail

make_cmd="${MAKE:-make}"
if [ "$#" -gt 0 ]; then
    stages=("$@")
else
    stages=(test asan tsan ucontext aarch64)
fi

format_seconds() {
    printf '%dm%02ds' "$(($1 / 60))" "$(($1 % 60))"
}

results=()
failed=""
ci_start=$SECONDS

for stage in "${stages[@]}"; do
    echo "==> ci: stage '$stage' started at $(date '+%H:%M:%S')"
    stage_start=$SECONDS
    if $make_cmd "$stage"; then
        status=passed
    else
        status=FAILED
        failed="$stage"
    fi
    elapsed=$((SECONDS - stage_start))
    echo "==> ci: stage '$stage' $status in $(format_seconds "$elapsed")"
    results+=("$(printf '%-10s %-7s %s' "$stage" "$status" "$(format_seconds "$elapsed")")")
    [ -z "$failed" ] || break
done

echo "==> ci: stage timings"
for line in "${results[@]}"; do
    echo "    $line"
done
echo "    total      $(format_seconds $((SECONDS - ci_start)))"

if [ -n "$failed" ]; then
    echo "ci: stage '$failed' failed; rerun it alone with 'make $failed' and see its output above" >&2
    exit 1
fi
