# Sourced by the before-and-after scripts, from the repository root, before
# server.sh (which builds this checkout).
# ref_binary REF: builds commit REF's release binary in a worktree under
# target/before-after/REF (kept for reuse), in this checkout's target
# directory so that the dependencies both share are built once, copies it
# beside the worktree (the next build of this checkout replaces
# target/release/consentry) and prints its path.
ref_binary() {
  local tree
  tree="$(pwd)/target/before-after/$1"
  [ -d "$tree" ] || git worktree add -q --detach "$tree" "$1"
  (cd "$tree" && CARGO_TARGET_DIR="$OLDPWD/target" cargo build --release -p consentry 2>/dev/null)
  cp target/release/consentry "$tree/consentry"
  echo "$tree/consentry"
}
