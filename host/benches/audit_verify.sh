#!/usr/bin/env bash
# What anchoring the decision log costs: the real server fills a JSON Lines
# log under wrk load, then wrk asks GET /v1/audit/head on one connection,
# and `consentry audit verify` checks the whole log without and with the
# anchor the server gave, timed by /usr/bin/time (seconds and peak RSS).
# Usage: host/benches/audit_verify.sh [seconds of load, default 20]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
secs=${1:-20}
. host/benches/support/server.sh
export CONSENTRY_ADMIN_TOKEN=bench
url=$(start_server server --audit "$work/audit")
echo "server: $url  cores: $(nproc)  $(date -u +%FT%TZ)"
echo "== filling the log: wrk, 16 connections, ${secs}s"
wrk -t1 -c16 -d"${secs}s" -s host/benches/decision.lua "$url/v1/is_authorized" | grep Requests/sec
sleep 1
echo "log: $(du -sh "$work/audit" | cut -f1) in $(ls "$work/audit" | grep -c jsonl) file(s)"
echo "wrk.headers[\"authorization\"] = \"Bearer $CONSENTRY_ADMIN_TOKEN\"" >"$work/head.lua"
echo "== GET /v1/audit/head: wrk, 1 connection, 5s"
wrk -t1 -c1 -d5s --latency -s "$work/head.lua" "$url/v1/audit/head" | grep -E 'Requests/sec|^ +50%|^ +99%|Non-2xx'
head=$(curl -sf "$url/v1/audit/head" -H "authorization: Bearer $CONSENTRY_ADMIN_TOKEN")
echo "$head"
kill "$(cat "$work/server/pid")"; wait 2>/dev/null || true
anchor=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["anchor"])' <<<"$head")
echo "== audit verify"
/usr/bin/time -f "%e s, %M KiB peak RSS" target/release/consentry audit verify "$work/audit"
echo "== audit verify --anchor (the head above)"
/usr/bin/time -f "%e s, %M KiB peak RSS" target/release/consentry audit verify "$work/audit" --anchor "$anchor"
