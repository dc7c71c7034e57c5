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
ref=$1 body_file=${2:-host/benches/decision.json} secs=${SECS:-6}
tree="$root/target/before-after/$ref"
. host/benches/support/ref_binary.sh
ref_bin=$(ref_binary "$ref")
. host/benches/support/server.sh
export CONSENTRY_ADMIN_TOKEN=load-test
printf 'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\nwrk.body = [[%s]]\n' "$(cat "$body_file")" >"$work/body.lua"
ticks=$(getconf CLK_TCK)
measure() { # NAME BIN POLICIES
  local url pid t0 t1 out requests
  url=$(SERVER_BIN=$2 SERVER_POLICIES=$3 start_server "$1")
  pid=$(cat "$work/$1/pid")
  curl -sf -X PUT "$url/v1/consents/c-100" -H "authorization: Bearer $CONSENTRY_ADMIN_TOKEN" \
    -H 'content-type: application/json' -d @host/benches/support/consent-c-100.json >/dev/null
  wrk -t1 -c16 -d2s -s "$work/body.lua" "$url/v1/is_authorized" >/dev/null
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(wrk -t1 -c16 -d"${secs}s" -s "$work/body.lua" "$url/v1/is_authorized")
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  requests=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  kill "$pid"
  echo "$1: $(( (t1 - t0) * 1000000000 / ticks / requests )) ns CPU per request," \
    "$requests requests, $(echo "$out" | sed -n 's/Requests\/sec: *//p') rps"
}
echo "before: $ref  after: $(git rev-parse --short HEAD)  body: $body_file  $(date -u +%FT%TZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in 1 2; do
  measure "before-$round" "$ref_bin" "$tree/policies"
  measure "after-$round" target/release/consentry policies
done
