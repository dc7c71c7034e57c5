#!/usr/bin/env bash
# What the size of the entity directory costs a replica: the import rate of
# `consentry policies import`, then the start-up time (spawn to listening)
# and resident memory of `consentry serve` on that store, and one decision.
#
#   host/benches/directory_size.sh N [STORE] [CACHE_BYTES]
#
# Then, since a replica holds only a bounded cache of the directory: the
# latency of a decision whose principal is not cached and of the same one
# cached, and the RSS after 20 s of decisions for practitioners drawn at
# random from all N (wrk, host/benches/spread.lua), which fills the cache.
#
# N practitioners are added to the bundled pack's entities.json (each in
# St. Mary's and one of 100 care-team groups). STORE defaults to a fresh
# SQLite directory; pass a postgres:// URL (with its own search_path) to
# measure PostgreSQL.
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:?number of entities}
bin=target/release/consentry
[ -x "$bin" ] || cargo build --release -q -p consentry
work=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
pid=
store=${2:-$work/store}
cp policies/*.cedar policies/*.cedarschema policies/special-categories.json "$work/"
python3 - "$n" "$work/entities.json" <<'PY'
import json, sys
n, out = int(sys.argv[1]), sys.argv[2]
base = json.load(open("policies/entities.json"))
extra = ({"uid": {"type": "Practitioner", "id": f"dr-{i}"},
          "attrs": {"role": "physician", "organization": {"type": "Organization", "id": "st-mary"}},
          "parents": [{"type": "Organization", "id": "st-mary"}, {"type": "Group", "id": f"team-{i % 100}"}]}
         for i in range(n))
with open(out, "w") as f:
    json.dump(base + list(extra), f)
PY
echo "entities.json: $(du -h "$work/entities.json" | cut -f1), $n extra practitioners"
t0=$(date +%s%N)
"$bin" policies import "$work" --store "$store"
t1=$(date +%s%N)
echo "import: $(( (t1 - t0) / 1000000 )) ms, $(( n * 1000000000 / (t1 - t0 + 1) )) entities/s (parse, validate, write)"
export CONSENTRY_ADMIN_TOKEN=bench-token
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
timed() { curl -s -o /dev/null -w '%{time_total}' "$url/v1/is_authorized" -H 'content-type: application/json' -d "$1"; }
for who in 7 8 9; do
  request="{\"principal\":\"Practitioner::\\\"dr-$who\\\"\",\"action\":\"Action::\\\"read\\\"\",\"resource\":\"Record::\\\"obs-1\\\"\",\"context\":{\"purpose\":\"TREAT\"}}"
  cold=$(timed "$request"); warm=$(timed "$request")
  echo "dr-$who: uncached principal ${cold}s, then cached ${warm}s (curl, connection included)"
done
curl -s "$url/v1/is_authorized" -H 'content-type: application/json' -d "$request" | head -c 120; echo
echo "RSS after the first decisions: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
if command -v wrk >/dev/null; then
  SPREAD=$n wrk -t2 -c16 -d20s -s host/benches/spread.lua "$url/v1/is_authorized" | grep -E 'Requests/sec|Latency'
  echo "RSS after 20 s of decisions over all $n practitioners: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
  curl -s "$url/readyz" -H "authorization: Bearer $CONSENTRY_ADMIN_TOKEN" | python3 -c 'import json,sys; print("cache:", json.load(sys.stdin).get("entity_cache"))'
fi
