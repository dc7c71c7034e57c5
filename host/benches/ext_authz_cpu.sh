#!/usr/bin/env bash
# CPU time the server spends per Envoy check (issue 16): the HTTP service
# (`/ext_authz/*`, wrk, 16 connections) against the gRPC one (`Check`, the
# grpc_check_load client, 16 calls at a time over one HTTP/2 connection, as
# an Envoy worker sends them), for the same request: Dr. Ali's break-glass
# read of obs-1 through the FHIR mapper, an Allow with obligations. The
# decision log is off, so that the break-glass record's fsync is not what
# is measured. One server answers both, A B A B; each run's user+system
# time from /proc/PID/stat is divided by the requests answered, which a
# shared machine moves far less than throughput.
# Usage: host/benches/ext_authz_cpu.sh [HTTP seconds, default 6] [gRPC requests, default 20000]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
target=${CARGO_TARGET_DIR:-$root/target}
secs=${1:-6} count=${2:-20000}
cargo build -p consentry-test-plugins 2>/dev/null
cargo bench --bench grpc_check_load --no-run 2>/dev/null
export SERVER_BIN=${SERVER_BIN:-$target/release/consentry}
. host/benches/support/server.sh
mapper="$target/wasm-plugins/wasm32-wasip2/release/fhir_rest_mapper.wasm"
# A generous time limit: on a loaded machine the production 10 ms would
# deny a few checks, and a denial costs other work than the Allow measured.
printf '[[plugins]]\nname = "fhir"\npath = "%s"\nhooks = ["map-request"]\n[plugins.limits]\ntimeout_ms = 1000\n' \
  "$mapper" >"$work/plugins.toml"
url=$(start_server ext-authz --plugins "$work/plugins.toml" --grpc-bind 127.0.0.1:0 --audit off)
grpc=$(sed -n 's/^consentry grpc listening on //p' "$work/ext-authz/log")
pid=$(cat "$work/ext-authz/pid")
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
http() {
  wrk -t1 -c16 -d"$1" -H 'x-principal: Practitioner/dr-ali' -H 'x-purpose-of-use: BTG' \
    -H 'x-justification: unconscious on arrival' "$url/ext_authz/fhir/Observation/obs-1"
}
grpc_check() { cargo bench -q --bench grpc_check_load -- "$grpc" "$1" 16 2>/dev/null; }
report() { # NAME TICKS REQUESTS
  echo "$1: $(( $2 * 1000000000 / ticks / $3 )) ns CPU per request, $3 requests"
}
echo "commit: $(git rev-parse --short HEAD)  $(date -u +%FT%TZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
http 2s >/dev/null
grpc_check 2000 >/dev/null
for round in 1 2; do
  t0=$(cpu); out=$(http "${secs}s"); t1=$(cpu)
  requests=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  non2xx=$(echo "$out" | sed -n 's/^ *Non-2xx or 3xx responses: *//p')
  [ -z "$non2xx" ] || { echo "HTTP answered $non2xx requests with other than 200" >&2; exit 1; }
  report "http-$round" $((t1 - t0)) "$requests"
  t0=$(cpu); out=$(grpc_check "$count"); t1=$(cpu)
  [ "$out" = "$count requests, $count allowed" ] || { echo "gRPC: $out" >&2; exit 1; }
  report "grpc-$round" $((t1 - t0)) "$count"
done
