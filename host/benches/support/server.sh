# Sourced by the load scripts, from the repository root: checks for wrk,
# builds the release binary, makes a work directory that is removed (and
# its servers stopped) on exit, and starts servers in it.
# start_server runs $SERVER_BIN on $SERVER_POLICIES when they are set,
# so that one run can put another build (an earlier commit with its own
# pack, say) beside this one.
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release -p consentry 2>/dev/null
work=$(mktemp -d)
# `|| true`: under set -e a failing kill (a server already stopped) would
# end the trap before the work directory is removed.
trap 'kill $(cat "$work"/*/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

# start_server NAME [SERVE_ARGS...]: starts `consentry serve` on the bundled
# pack, a free port and a store in $work/NAME (its pid in $work/NAME/pid,
# its output in $work/NAME/log) and prints its URL once it listens.
start_server() {
  local name=$1
  shift
  mkdir -p "$work/$name"
  RUST_LOG=${RUST_LOG:-warn} "${SERVER_BIN:-target/release/consentry}" serve --policies "${SERVER_POLICIES:-policies}" --bind 127.0.0.1:0 \
    --store "$work/$name/store" "$@" >"$work/$name/log" 2>&1 &
  echo $! >"$work/$name/pid"
  for _ in $(seq 100); do grep -q 'listening on' "$work/$name/log" && break; sleep 0.1; done
  sed -n 's/^consentry listening on //p' "$work/$name/log"
}
