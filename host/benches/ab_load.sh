#!/usr/bin/env bash
# Throughput of POST /v1/is_authorized through the real server in two
# configurations, in one run: two servers run side by side on the bundled
# pack, and wrk drives them in turn, A B A B, so that drift of a noisy
# machine falls on both. The request is the README's break-glass read.
# Usage: host/benches/ab_load.sh NAME_A "SERVE_ARGS_A" NAME_B "SERVE_ARGS_B" [seconds, default 10] [connections, default 16]
# Example: host/benches/ab_load.sh audit-off "--audit off" audit-on ""
# AB_BODY replaces the request (it must be allowed), e.g. a decision that is
# not break-glass, to measure `--audit-durability sync`:
#   AB_BODY='{"principal": "RelatedPerson::\"rp-anna\"", "action": "Action::\"read\"", "resource": "Patient::\"p-100\"", "context": {"purpose": "PWATRNY"}}' \
#     host/benches/ab_load.sh break-glass "" sync "--audit-durability sync"
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
name_a=$1 args_a=$2 name_b=$3 args_b=$4
secs=${5:-10}
conns=${6:-16}
. host/benches/support/server.sh
# shellcheck disable=SC2086 # the arguments are word-split on purpose
url_a=$(start_server "$name_a" $args_a)
# shellcheck disable=SC2086
url_b=$(start_server "$name_b" $args_b)
body=${AB_BODY:-'{"principal": "Practitioner::\"dr-ali\"", "action": "Action::\"read\"", "resource": "Record::\"obs-1\"", "context": {"purpose": "BTG", "justification": "unconscious on arrival"}}'}
cat >"$work/request.lua" <<LUA
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.body = [[$body]]
LUA
for url in "$url_a" "$url_b"; do
  curl -sf "$url/v1/is_authorized" -H 'content-type: application/json' -d "$body" | grep -q '"decision":"Allow"' \
    || { echo "the benchmark request is not allowed at $url" >&2; exit 1; }
done
echo "cores: $(nproc)  $(date -u +%FT%TZ)  ${secs}s per run, $conns connections"
for round in 1 2; do
  for name in "$name_a" "$name_b"; do
    url=$url_a; [ "$name" = "$name_b" ] && url=$url_b
    echo "== round $round: $name"
    wrk -t1 -c"$conns" -d"${secs}s" --latency -s "$work/request.lua" "$url/v1/is_authorized" \
      | grep -E 'Requests/sec|^ +50%|^ +99%|Non-2xx|Socket errors'
  done
done
