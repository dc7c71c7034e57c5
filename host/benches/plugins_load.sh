#!/usr/bin/env bash
# Throughput of POST /v1/is_authorized through the real server with no
# plugin and with the trivial enrich plugin applied to every request
# (issue 4, §6), in one run. Two servers run side by side on the same
# bundled pack; wrk drives them in turn, A B A B, so that drift of a noisy
# machine falls on both. The request is the README's break-glass read.
# Usage: host/benches/plugins_load.sh [seconds per run, default 10] [connections, default 16]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
secs=${1:-10}
conns=${2:-16}
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
cargo build --release -p consentry 2>/dev/null
# The test-plugins crate builds the guest workspace into target/wasm-plugins.
cargo build -p consentry-test-plugins 2>/dev/null
component="$root/target/wasm-plugins/wasm32-wasip2/release/trivial_enricher.wasm"
[ -f "$component" ] || { echo "missing $component" >&2; exit 1; }
work=$(mktemp -d)
printf '[[plugins]]\nname = "trivial"\npath = "%s"\nhooks = ["enrich"]\n' "$component" >"$work/plugins.toml"
start() { # name, extra args...
  local name=$1; shift
  mkdir -p "$work/$name"
  RUST_LOG=warn target/release/consentry serve --policies policies --bind 127.0.0.1:0 \
    --store "$work/$name/store" "$@" >"$work/$name/log" 2>&1 &
  echo $! >"$work/$name/pid"
  for _ in $(seq 100); do grep -q 'listening on' "$work/$name/log" && break; sleep 0.1; done
  sed -n 's/^consentry listening on //p' "$work/$name/log"
}
trap 'kill $(cat "$work"/*/pid) 2>/dev/null; rm -rf "$work"' EXIT
bare=$(start bare)
plugged=$(start plugged --plugins "$work/plugins.toml")
body='{"principal": "Practitioner::\"dr-ali\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "BTG", "justification": "unconscious on arrival"}}'
cat >"$work/request.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = [[$body]]
LUA
for url in "$bare" "$plugged"; do
  curl -sf "$url/v1/is_authorized" -H 'content-type: application/json' -d "$body" | grep -q '"decision":"Allow"' \
    || { echo "the benchmark request is not allowed at $url" >&2; exit 1; }
done
echo "cores: $(nproc)  $(date -u +%FT%TZ)  ${secs}s per run, $conns connections"
for round in 1 2; do
  for name in bare plugged; do
    url=$bare; [ "$name" = plugged ] && url=$plugged
    echo "== round $round: $name"
    wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/request.lua" "$url/v1/is_authorized" \
      | grep -E 'Requests/sec|^ +50%|^ +99%|Non-2xx|Socket errors'
  done
done
