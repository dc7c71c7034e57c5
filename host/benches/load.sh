#!/usr/bin/env bash
# Load test of the real server on keep-alive loopback, all in one run:
# a trivial route (/healthz) as the HTTP ceiling, then single decisions,
# AuthZEN evaluations and batches, each with wrk --latency. The requests are
# a practitioner reading a lab result under the patient's consent (the
# README's consent, stored first), so every decision evaluates the pack and
# the patient's cached consent partition.
# Usage: host/benches/load.sh [seconds per run, default 10]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
secs=${1:-10}
. host/benches/support/server.sh
export CONSENTRY_ADMIN_TOKEN=load-test
url=$(start_server load)
ready_for_decisions "$url" "$(cat host/benches/decision.json)"
echo "server: $url  cores: $(nproc)  $(date -u +%FT%TZ)"
for conns in 1 16; do
  run "trivial GET /healthz" "$conns" "$url/healthz"
  run "POST /v1/is_authorized" "$conns" -s host/benches/decision.lua "$url/v1/is_authorized"
  run "POST /access/v1/evaluation" "$conns" -s host/benches/authzen.lua "$url/access/v1/evaluation"
done
run "POST /v1/is_authorized/batch (100 decisions each)" 4 -s host/benches/batch.lua "$url/v1/is_authorized/batch"
