#!/usr/bin/env bash
# What the size of the entity directory costs a replica: the import rate of
# `consentry entities import`, then the start-up time (spawn to listening)
# and resident memory of `consentry serve` on that store, and one decision.
#
#   host/benches/directory_size.sh N [STORE] [CACHE_BYTES]
#
# Then, since a replica holds only a bounded cache of the directory: the
# latency of a decision whose principal is not cached and of the same one
# cached, and the RSS after 20 s of decisions for practitioners drawn at
# random from all N (wrk, host/benches/spread.lua), which fills the cache.
#
# The bundled pack is imported with `consentry policies import`, then N
# practitioners (each in St. Mary's and one of 100 care-team groups) with
# `consentry entities import` from JSON Lines. STORE defaults to a fresh
# SQLite directory; pass a postgres:// URL (with its own search_path) to
# measure PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:?number of entities}
bin=${BENCH_BIN:-target/release/consentry}
[ -x "$bin" ] || cargo build --release -q -p consentry
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
store=${2:-$work/store}
cp policies/*.cedar policies/*.cedarschema policies/special-categories.json policies/entities.json "$work/"
python3 - "$n" "$work/practitioners.jsonl" <<'PY'
import json, sys
n, out = int(sys.argv[1]), sys.argv[2]
with open(out, "w") as f:
    for i in range(n):
        f.write(json.dumps({"uid": {"type": "Practitioner", "id": f"dr-{i}"},
          "attrs": {"role": "physician", "organization": {"type": "Organization", "id": "st-mary"}},
          "parents": [{"type": "Organization", "id": "st-mary"}, {"type": "Group", "id": f"team-{i % 100}"}]}) + "\n")
PY
echo "practitioners.jsonl: $(du -h "$work/practitioners.jsonl" | cut -f1), $n practitioners"
"$bin" policies import "$work" --store "$store" >/dev/null
t0=$(date +%s%N)
"$bin" entities import "$work/practitioners.jsonl" --store "$store"
t1=$(date +%s%N)
echo "entities import: $(( (t1 - t0) / 1000000 )) ms, $(( n * 1000000000 / (t1 - t0 + 1) )) entities/s (parse, validate, write)"
export CONSENTRY_ADMIN_TOKEN=bench-token
# Start-up is measured on a store at rest, not behind the write-back of the
# gigabytes the import just wrote.
sync
t0=$(date +%s%N)
cache=${3:-}
"$bin" serve --bind 127.0.0.1:0 --store "$store" --audit off ${cache:+--cache-bytes "$cache"} >"$work/out" 2>"$work/err" &
pid=$!
until grep -q '^consentry listening on ' "$work/out" 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { cat "$work/err" >&2; exit 1; }
  sleep 0.01
done
t1=$(date +%s%N)
url=$(sed -n 's/^consentry listening on //p' "$work/out")
echo "start-up: $(( (t1 - t0) / 1000000 )) ms"
request='{"principal":"Practitioner::\"dr-7\"","action":"Action::\"read\"","resource":"Record::\"obs-1\"","context":{"purpose":"TREAT"}}'
echo "RSS before any decision: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
# 300 practitioners no decision has asked about yet, each asked twice over
# one kept-alive connection: the first decision loads the slice from the
# store, the second finds it cached.
python3 - "$url" "$n" <<'PY'
import http.client, json, random, statistics, sys, time, urllib.parse
url, n = urllib.parse.urlparse(sys.argv[1]), int(sys.argv[2])
connection = http.client.HTTPConnection(url.hostname, url.port)
def decide(who):
    body = json.dumps({"principal": f'Practitioner::"dr-{who}"', "action": 'Action::"read"',
                       "resource": 'Record::"obs-1"', "context": {"purpose": "TREAT"}})
    started = time.perf_counter()
    connection.request("POST", "/v1/is_authorized", body, {"content-type": "application/json"})
    connection.getresponse().read()
    return (time.perf_counter() - started) * 1e6
cold, warm = [], []
for who in random.sample(range(10, n), min(300, n - 10)):
    cold.append(decide(who))
    warm.append(decide(who))
for name, times in (("uncached principal", cold), ("same principal, cached", warm)):
    times.sort()
    print(f"{name}: p50 {times[len(times) // 2]:.0f} µs, p99 {times[int(len(times) * 0.99)]:.0f} µs (HTTP round trip)")
PY
curl -s "$url/v1/is_authorized" -H 'content-type: application/json' -d "$request" | head -c 120; echo
echo "RSS after the first decisions: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
if command -v wrk >/dev/null; then
  SPREAD=$n wrk -t2 -c16 -d20s -s host/benches/spread.lua "$url/v1/is_authorized" | grep -E 'Requests/sec|Latency'
  echo "RSS after 20 s of decisions over all $n practitioners: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
  curl -s "$url/readyz" -H "authorization: Bearer $CONSENTRY_ADMIN_TOKEN" | python3 -c 'import json,sys; print("cache:", json.load(sys.stdin).get("entity_cache"))'
fi
