#!/usr/bin/env bash
# Instructions per decision of `decide/bundled_pack`, at an earlier commit and
# here, counted by callgrind: unlike a time, the count does not move when
# other work shares the machine. Each side runs engine/examples/pack_decisions.rs
# (copied into the earlier commit's worktree) at 2,000 and 6,000 decisions; the
# difference divided by 4,000 leaves out the pack's set-up.
# Usage: engine/benches/instructions.sh REF
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
ref=$1
tree="$root/target/before-after/$ref"
[ -d "$tree" ] || git worktree add -q --detach "$tree" "$ref"
mkdir -p "$tree/engine/examples"
cp engine/examples/pack_decisions.rs "$tree/engine/examples/"
(cd "$tree" && CARGO_TARGET_DIR="$tree/target" cargo build -q --release -p consentry-engine --example pack_decisions)
cargo build -q --release -p consentry-engine --example pack_decisions
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$1" "$2" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,
}
for side in before after; do
  bin=target/release/examples/pack_decisions
  [ "$side" = before ] && bin="$tree/target/release/examples/pack_decisions"
  small=$(count "$bin" 2000) large=$(count "$bin" 6000)
  echo "$side: $(( (large - small) / 4000 )) instructions per decision"
done
