#!/usr/bin/env bash
# Search latency against the real server, at the sizes issue 15 names.
#
#   host/benches/search_load.sh [RECORDS] [PRACTITIONERS] [ROUNDS]
#
# The bundled pack and its directory, plus RECORDS records of patient
# p-100 (one in a hundred unlabelled, the rest PSY, which the README's
# consent excludes) and PRACTITIONERS practitioners (half at St. Mary's,
# half at a lab no consent names), imported with `consentry entities
# import`; then `consentry serve` on that SQLite store with a cache large
# enough to hold them (`--cache-bytes 2147483648`: search decides the
# entities it is given, and a cache that keeps evicting them parses them
# again on every search), the decision log on (one record per search), and
# the README's consent. A Python client on one kept-alive connection asks,
# ROUNDS times each after one warm-up:
#
# - resource search of p-100's records by Dr. Weber for treatment, first
#   page (limit 50), and with limit 1000, which examines every record;
# - subject search of who may break the glass on obs-1 (purpose BTG with a
#   justification), which examines every practitioner and finds Dr. Ali;
# - subject search of who may read obs-1 for treatment, first page.
#
# It prints p50 and p99 per search and the load average before and after:
# the machine is shared, and a busy one stretches every figure.
set -euo pipefail
cd "$(dirname "$0")/../.."
records=${1:-10000}
practitioners=${2:-100000}
rounds=${3:-30}
bin=${BENCH_BIN:-target/release/consentry}
[ -x "$bin" ] || cargo build --release -q -p consentry
work=$(mktemp -d)
pid=
trap 'kill $pid 2>/dev/null || true; rm -rf "$work"' EXIT
python3 - "$records" "$practitioners" "$work/extra.jsonl" <<'PY'
import json, sys
records, practitioners, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
with open(out, "w") as f:
    for i in range(records):
        labels = [] if i % 100 == 0 else ["PSY"]
        f.write(json.dumps({"uid": {"type": "Record", "id": f"r-{i:06}"},
          "attrs": {"patient": {"type": "Patient", "id": "p-100"}, "resourceType": "Observation",
                    "labels": labels, "confidentiality": "N", "date": f"2026-0{1 + i % 9}-0{1 + i % 9}T08:00:00Z"},
          "parents": [{"type": "Patient", "id": "p-100"}]}) + "\n")
    for i in range(practitioners):
        org = "st-mary" if i % 2 == 0 else "city-lab"
        f.write(json.dumps({"uid": {"type": "Practitioner", "id": f"pr-{i:06}"},
          "attrs": {"role": "physician", "organization": {"type": "Organization", "id": org}},
          "parents": [{"type": "Organization", "id": org}]}) + "\n")
PY
"$bin" policies import policies --store "$work/store" >/dev/null
"$bin" entities import "$work/extra.jsonl" --store "$work/store" >/dev/null
export CONSENTRY_ADMIN_TOKEN=bench-token
"$bin" serve --bind 127.0.0.1:0 --store "$work/store" --audit "$work/audit" --cache-bytes 2147483648 \
  >"$work/out" 2>"$work/err" &
pid=$!
until grep -q '^consentry listening on ' "$work/out" 2>/dev/null; do
  kill -0 $pid 2>/dev/null || { cat "$work/err" >&2; exit 1; }
  sleep 0.05
done
url=$(sed -n 's/^consentry listening on //p' "$work/out")
consent=$(sed -n 's/^pub const README_CONSENT: &str = r#"\(.*\)"#;$/\1/p' tests/e2e/support.rs)
curl -sf -X PUT "$url/v1/consents/c-100" -H "authorization: Bearer bench-token" \
  -H 'content-type: application/json' -d "$consent" >/dev/null
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
python3 - "$url" "$rounds" "$records" "$practitioners" <<'PY'
import http.client, json, statistics, sys, time, urllib.parse
url, rounds, records, practitioners = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
parsed = urllib.parse.urlparse(url)
conn = http.client.HTTPConnection(parsed.hostname, parsed.port)
def ask(path, body):
    conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
    answer = json.loads(conn.getresponse().read())
    assert "results" in answer, answer
    return answer
weber = {"subject": {"type": "Practitioner", "id": "dr-weber"}, "action": {"name": "read"},
         "resource": {"type": "Record", "properties": {"patient": "p-100"}}, "context": {"purpose": "TREAT"}}
cases = [
    (f"resource search, {records} records of p-100, first page (limit 50)", "/access/v1/search/resource", weber),
    (f"resource search, {records} records of p-100, limit 1000 (every record examined)", "/access/v1/search/resource",
     dict(weber, page={"limit": 1000})),
    (f"subject search, {practitioners} practitioners, break-glass on obs-1 (every one examined)",
     "/access/v1/search/subject",
     {"subject": {"type": "Practitioner"}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "obs-1"},
      "context": {"purpose": "BTG", "justification": "unconscious on arrival"}}),
    (f"subject search, {practitioners} practitioners, treatment on obs-1, first page (limit 50)",
     "/access/v1/search/subject",
     {"subject": {"type": "Practitioner"}, "action": {"name": "read"}, "resource": {"type": "Record", "id": "obs-1"},
      "context": {"purpose": "TREAT"}}),
]
for name, path, body in cases:
    t0 = time.perf_counter()
    first = ask(path, body)
    cold = (time.perf_counter() - t0) * 1000
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        ask(path, body)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    print(f"{name}: {first['page']['count']} results; first (cold) {cold:.1f} ms; "
          f"p50 {statistics.median(times):.1f} ms, p99 {p99:.1f} ms over {rounds}")
PY
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "RSS: $(awk '/VmRSS/ {printf "%.0f MiB", $2/1024}' /proc/$pid/status)"
