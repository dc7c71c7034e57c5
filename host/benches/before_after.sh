#!/usr/bin/env bash
# Decision throughput of an earlier commit and of this checkout, in one run:
# both release binaries serve the bundled pack side by side, each with the
# README's consent stored, and wrk drives them in turn, A B A B, so that the
# drift of a noisy machine falls on both. Two requests: Dr. Weber's
# treatment read of obs-1 (the pack and the patient's consent partition) and
# Dr. Ali's break-glass read (an emergency Allow, whose record must be
# durable before the answer).
# Usage: host/benches/before_after.sh REF [seconds, default 10] [connections, default 16]
# REF is built by support/ref_binary.sh and serves its own policy pack:
# "before" is what users had.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
ref=$1 secs=${2:-10} conns=${3:-16}
tree="$root/target/before-after/$ref"
. host/benches/support/ref_binary.sh
ref_bin=$(ref_binary "$ref")
. host/benches/support/server.sh
export CONSENTRY_ADMIN_TOKEN=load-test
before=$(SERVER_BIN="$ref_bin" SERVER_POLICIES="$tree/policies" start_server before)
after=$(SERVER_BIN="${AFTER_BIN:-target/release/consentry}" start_server after)
weber="$(cat host/benches/decision.json)"
ali='{"principal": "Practitioner::\"dr-ali\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "BTG", "justification": "unconscious on arrival"}}'
for url in "$before" "$after"; do
  ready_for_decisions "$url" "$weber" "$ali"
done
echo "before: $ref  after: $(git rev-parse --short HEAD)  cores: $(nproc)  $(date -u +%FT%TZ)  ${secs}s per run, $conns connections"
for request in weber ali; do
  body=$weber; [ "$request" = ali ] && body=$ali
  printf 'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\nwrk.body = [[%s]]\n' "$body" >"$work/$request.lua"
  for round in 1 2; do
    for side in before after; do
      url=$before; [ "$side" = after ] && url=$after
      echo "== $request, round $round: $side"
      wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/$request.lua" "$url/v1/is_authorized" \
        | grep -E 'Requests/sec|^ +50%|^ +99%|Non-2xx|Socket errors'
    done
  done
done
