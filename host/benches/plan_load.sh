#!/usr/bin/env bash
# Load test of `POST /v1/plan` on the real server, keep-alive loopback, wrk
# --latency, beside the decision it stands for: Dr. Weber's treatment read
# of one of p-100's records, and a search of p-100. The README's consent is
# stored first, so every plan evaluates the pack and the patient's cached
# consent partition and answers `conditional` (the special categories).
# Usage: host/benches/plan_load.sh [seconds per run, default 10]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
secs=${1:-10}
. host/benches/support/server.sh
export CONSENTRY_ADMIN_TOKEN=load-test
url=$(start_server plan)
ready_for_decisions "$url" "$(cat host/benches/decision.json)"
body=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" host/benches/plan.lua | sed 's/\\\\/\\/g')
curl -sf "$url/v1/plan" -H 'content-type: application/json' -d "$body" | grep -q '"kind":"conditional"' \
  || { echo "the benchmark plan is not conditional; check the consent" >&2; exit 1; }
echo "server: $url  cores: $(nproc)  $(date -u +%FT%TZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for conns in 1 16; do
  run "POST /v1/plan" "$conns" -s host/benches/plan.lua "$url/v1/plan"
  run "POST /v1/is_authorized (a record the plan admits)" "$conns" -s host/benches/decision.lua "$url/v1/is_authorized"
  run "POST /v1/is_authorized (search of the patient)" "$conns" -s host/benches/patient_search.lua "$url/v1/is_authorized"
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
