#!/usr/bin/env bash
# CPU time the server spends per answered request, for an earlier commit and
# this checkout, A B A B. Throughput on a shared two-core machine moves with
# whatever else runs; the process's own CPU time per request moves far less.
# Each build serves alone (its own pack, the README's consent stored), is
# warmed for 2 s, then answers wrk for SECS seconds with 16 connections, and
# its user+system time from /proc/PID/stat is divided by the requests answered.
# Usage: host/benches/cpu_per_request.sh REF [BODY_FILE, default host/benches/decision.json]
# REF is built by support/ref_binary.sh.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
ref=$1 body_file=${2:-host/benches/decision.json}
tree="$root/target/before-after/$ref"
. host/benches/support/ref_binary.sh
ref_bin=$(ref_binary "$ref")
. host/benches/support/server.sh
export CONSENTRY_ADMIN_TOKEN=load-test
measure() { # NAME BIN POLICIES
  SERVER_BIN=$2 SERVER_POLICIES=$3 start_server "$1" >/dev/null
  cpu_per_request "$1" "$body_file"
  kill "$(cat "$work/$1/pid")"
}
echo "before: $ref  after: $(git rev-parse --short HEAD)  body: $body_file  $(date -u +%FT%TZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in 1 2; do
  measure "before-$round" "$ref_bin" "$tree/policies"
  measure "after-$round" target/release/consentry policies
done
