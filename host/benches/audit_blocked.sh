#!/usr/bin/env bash
# How fast fail-closed denies come back while the decision log is blocked,
# and whether memory stays flat. The real server writes its log to a
# PostgreSQL table; another session holds an ACCESS EXCLUSIVE lock on that
# table, so the writer hangs inside its INSERT, the queue fills, and every
# decision after that is denied with "audit unavailable". wrk measures the
# denies; the server's VmRSS is read before and after.
# Usage: host/benches/audit_blocked.sh [seconds, default 10] [connections, default 16]
# Needs psql and a PostgreSQL server: CONSENTRY_BENCH_POSTGRES_URL, default
# postgres://postgres@127.0.0.1:5432 (a database consentry_bench_blocked is made there).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
secs=${1:-10}
conns=${2:-16}
base=${CONSENTRY_BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432}
db=consentry_bench_blocked
. host/benches/support/server.sh
psql -q "$base/postgres" -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
url=$(RUST_LOG=error start_server server --audit "$base/$db" --audit-queue 64)
body='{"principal": "Practitioner::\"dr-ali\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "BTG", "justification": "unconscious on arrival"}}'
curl -sf "$url/v1/is_authorized" -H 'content-type: application/json' -d "$body" | grep -q '"decision":"Allow"'
psql -q "$base/$db" -c "BEGIN; LOCK TABLE consentry_audit_log IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep($((secs + 30)));" >/dev/null 2>&1 &
mkdir -p "$work/lock" && echo $! >"$work/lock/pid"
sleep 1
for _ in $(seq 200); do
  curl -s "$url/v1/is_authorized" -H 'content-type: application/json' -d "$body" | grep -q 'audit unavailable' && break
done
curl -s "$url/v1/is_authorized" -H 'content-type: application/json' -d "$body" | grep -q 'audit unavailable' \
  || { echo "the log never blocked" >&2; exit 1; }
rss() { awk '/VmRSS/ {print $2}' "/proc/$(cat "$work/server/pid")/status"; }
before=$(rss)
cat >"$work/request.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = [[$body]]
LUA
echo "cores: $(nproc)  $(date -u +%FT%TZ)  ${secs}s, $conns connections, log blocked, queue 64"
wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/request.lua" "$url/v1/is_authorized" \
  | grep -E 'Requests/sec|^ +50%|^ +90%|^ +99%|requests in'
after=$(rss)
echo "VmRSS before: ${before} KiB  after: ${after} KiB"
curl -s "$url/v1/is_authorized" -H 'content-type: application/json' -d "$body" | grep -o '"summary":"[^"]*"'
