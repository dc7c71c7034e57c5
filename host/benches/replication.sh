#!/usr/bin/env bash
# How long a change written through one replica takes to govern another
# replica's decisions, over one shared PostgreSQL (LISTEN/NOTIFY).
#
#   host/benches/replication.sh [ROUNDS] [consents|entities|policies]
#   (default 20 consents; needs psql, curl, the release binary, and
#   CONSENTRY_TEST_POSTGRES_URL or a local PostgreSQL)
#
# Each round makes a change through replica A and undoes it, and after each
# polls replica B until its decision flips; the time is from A's
# acknowledgement to B's first flipped answer, so it includes one polling
# interval (a curl round trip, about 1-3 ms here). consents: a consent
# granted and withdrawn; entities: dr-ali taken out of the break-glass group
# and put back; policies: a policy set that forbids patients' own reads, and
# the pack again. The replicas serve the pack from the store (imported
# first), so policies can change through the API.
set -euo pipefail
cd "$(dirname "$0")/../.."
rounds="${1:-20}"
kind="${2:-consents}"
base="${CONSENTRY_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test}"
schema="consentry_replication_$$"
psql -q "$base" -c "CREATE SCHEMA $schema"
store="$base?options=-c%20search_path%3D$schema"
bin=target/release/consentry
[ -x "$bin" ] || cargo build --release -q -p consentry
export CONSENTRY_ADMIN_TOKEN=bench-token
logs=$(mktemp -d)
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  psql -q "$base" -c "SET client_min_messages = warning; DROP SCHEMA $schema CASCADE" || true
  rm -rf "$logs"
}
pids=()
trap cleanup EXIT
start() {
  "$bin" serve --bind 127.0.0.1:0 --store "$store" --audit "$logs/$1-audit" >"$logs/$1.out" 2>"$logs/$1.err" &
  pids+=($!)
  for _ in $(seq 100); do
    addr=$(sed -n 's/^consentry listening on //p' "$logs/$1.out")
    [ -n "$addr" ] && { echo "$addr"; return; }
    sleep 0.1
  done
  echo "replica $1 did not start" >&2; cat "$logs/$1.err" >&2; exit 1
}
"$bin" policies import policies --store "$store" >/dev/null
a=$(start a)
b=$(start b)
consent() {
  printf '{"resourceType":"Consent","id":"c-repl","status":"%s","patient":{"reference":"Patient/p-100"},"provision":{"type":"permit","actor":[{"reference":{"reference":"Organization/st-mary"}}],"purpose":[{"code":"TREAT"}]}}' "$1"
}
ali() {
  local groups='{"type":"Organization","id":"st-mary"}'
  [ "$1" = in ] && groups="$groups,{\"type\":\"Group\",\"id\":\"break-glass\"}"
  printf '{"upsert":[{"uid":{"type":"Practitioner","id":"dr-ali"},"attrs":{"role":"physician","organization":{"type":"Organization","id":"st-mary"}},"parents":[%s]}]}' "$groups"
}
pack="$(cat policies/pack.cedar policies/transfers.cedar)"
admin() { curl -sf -X "$1" "$a$2" -H "authorization: Bearer $CONSENTRY_ADMIN_TOKEN" -H "content-type: $3" --data-binary "$4" >/dev/null; }
case "$kind" in
  consents) request='{"principal":"Practitioner::\"dr-weber\"","action":"Action::\"read\"","resource":"Record::\"obs-1\"","context":{"purpose":"TREAT"}}'
            steps="active:Allow inactive:Deny" ;;
  entities) request='{"principal":"Practitioner::\"dr-ali\"","action":"Action::\"read\"","resource":"Record::\"obs-1\"","context":{"purpose":"BTG","justification":"x"}}'
            steps="out:Deny in:Allow" ;;
  policies) request='{"principal":"Patient::\"p-100\"","action":"Action::\"read\"","resource":"Record::\"obs-1\"","context":{"purpose":"PATRQT"}}'
            steps="closed:Deny pack:Allow" ;;
  *) echo "unknown kind $kind" >&2; exit 2 ;;
esac
change() {
  case "$kind:$1" in
    consents:*) admin PUT /v1/consents/c-repl application/json "$(consent "$1")" ;;
    entities:*) admin PATCH /v1/entities application/json "$(ali "$1")" ;;
    policies:closed) admin PUT /v1/policies text/plain "$pack
@id(\"no-portal\") forbid (principal is Patient, action, resource);" ;;
    policies:pack) admin PUT /v1/policies text/plain "$pack" ;;
  esac
}
decision() { curl -s "$b/v1/is_authorized" -H 'content-type: application/json' -d "$request" | sed -n 's/.*"decision":"\([A-Za-z]*\)".*/\1/p'; }
decision >/dev/null  # warm B (for consents, load p-100's partition), so only the notification can change it
samples=()
for i in $(seq "$rounds"); do
  for step in $steps; do
    what=${step%%:*}; want=${step##*:}
    change "$what"
    t0=$(date +%s%N)
    until [ "$(decision)" = "$want" ]; do :; done
    samples+=($(( ($(date +%s%N) - t0) / 1000 )))
  done
done
printf '%s\n' "${samples[@]}" | sort -n | awk '{v[NR]=$1} END {
  printf "changes: %d  p50: %.1f ms  p90: %.1f ms  p99: %.1f ms  max: %.1f ms\n", NR, v[int(NR*0.5+0.5)]/1000, v[int(NR*0.9+0.5)]/1000, v[int(NR*0.99+0.5)]/1000, v[NR]/1000 }'
