#!/usr/bin/env bash
# The engine's criterion medians at an earlier commit and here, in one run:
# both `decision` bench binaries are built first, then run in turn, twice
# each, so that whatever else the machine is doing weighs on both sides alike.
# Usage: engine/benches/before_after.sh REF [criterion filter]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
ref=$1 filter=${2:-decide/}
tree="$root/target/before-after/$ref"
[ -d "$tree" ] || git worktree add -q --detach "$tree" "$ref"
bench_binary() {
  # The shared target directory builds the dependencies once for both sides.
  (cd "$1" && CARGO_TARGET_DIR="$root/target" cargo bench -q -p consentry-engine --bench decision --no-run \
    --message-format=json 2>/dev/null) |
    sed -n 's/.*"executable":"\([^"]*decision-[^"]*\)".*/\1/p' | tail -1
}
before=$(bench_binary "$tree") after=$(bench_binary "$root")
for round in 1 2; do
  for side in before after; do
    bin=$before
    [ "$side" = after ] && bin=$after
    echo "== $side ($([ "$side" = before ] && echo "$ref" || git rev-parse --short HEAD)), round $round, load $(cut -d' ' -f1 /proc/loadavg)"
    "$bin" --bench --warm-up-time 1 --measurement-time 3 --noplot "$filter" 2>/dev/null |
      grep -E '^decide/|time:' | paste - - | sed 's/ \+/ /g'
  done
done
