#!/usr/bin/env bash
# Instructions per search of the search benchmarks' world, at an earlier
# commit and here, counted by callgrind (a count does not move when other
# work shares the machine). Each side runs engine/examples/search_instructions.rs
# (copied, with the world it reads, into the earlier commit's worktree) once
# and three times; half the difference leaves out the world's set-up.
# Usage: engine/benches/search_instructions.sh REF [resource|subject] [N]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
ref=$1 kind=${2:-resource} n=${3:-10000}
tree="$root/target/before-after/$ref"
[ -d "$tree" ] || git worktree add -q --detach "$tree" "$ref"
mkdir -p "$tree/engine/examples" "$tree/engine/benches/support"
cp engine/examples/search_instructions.rs "$tree/engine/examples/"
cp engine/benches/support/search_world.rs "$tree/engine/benches/support/"
(cd "$tree" && CARGO_TARGET_DIR="$tree/target" cargo build -q --release --workspace --example search_instructions)
cargo build -q --release --workspace --example search_instructions
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$@" 2>&1 | sed -n 's/.*I *refs: *//p' | tr -d ,
}
for side in before after; do
  bin=target/release/examples/search_instructions
  [ "$side" = before ] && bin="$tree/target/release/examples/search_instructions"
  once=$(count "$bin" "$kind" "$n" 1) thrice=$(count "$bin" "$kind" "$n" 3)
  echo "$side: $(( (thrice - once) / 2 )) instructions per $kind search of $n"
done
