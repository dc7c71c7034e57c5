# Sourced by the load scripts, from the repository root: checks for wrk,
# builds the release binary, makes a work directory that is removed (and
# its servers stopped) on exit, and starts servers in it.
# start_server runs $SERVER_BIN on $SERVER_POLICIES when they are set,
# so that one run can put another build (an earlier commit with its own
# pack, say) beside this one.
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
# A script that names its own build in SERVER_BIN has no use for this one.
[ -n "${SERVER_BIN:-}" ] || cargo build --release -p consentry 2>/dev/null
work=$(mktemp -d)
# `|| true`: under set -e a failing kill (a server already stopped) would
# end the trap before the work directory is removed.
trap 'kill $(cat "$work"/*/pid 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT

# start_server NAME [SERVE_ARGS...]: starts `consentry serve` on the bundled
# pack, a free port and a store in $work/NAME (its pid in $work/NAME/pid,
# its output in $work/NAME/log) and prints its URL once it listens.
start_server() {
  local name=$1
  shift
  mkdir -p "$work/$name"
  RUST_LOG=${RUST_LOG:-warn} "${SERVER_BIN:-target/release/consentry}" serve --policies "${SERVER_POLICIES:-policies}" --bind 127.0.0.1:0 \
    --store "$work/$name/store" "$@" >"$work/$name/log" 2>&1 &
  echo $! >"$work/$name/pid"
  for _ in $(seq 100); do grep -q 'listening on' "$work/$name/log" && break; sleep 0.1; done
  sed -n 's/^consentry listening on //p' "$work/$name/log"
}

# ready_for_decisions URL BODY...: stores the README's consent c-100 at URL
# and checks that every request BODY (JSON text) is allowed there, so a
# benchmark never measures Denies by mistake.
ready_for_decisions() {
  local url=$1 body
  shift
  curl -sf -X PUT "$url/v1/consents/c-100" -H "authorization: Bearer $CONSENTRY_ADMIN_TOKEN" \
    -H 'content-type: application/json' -d @host/benches/support/consent-c-100.json >/dev/null
  for body in "$@"; do
    curl -sf "$url/v1/is_authorized" -H 'content-type: application/json' -d "$body" | grep -q '"decision":"Allow"' \
      || { echo "a benchmark request is not allowed at $url" >&2; return 1; }
  done
}

# cpu_per_request NAME BODY_FILE: the server NAME (started by start_server)
# gets the README's consent c-100, is warmed for 2 s, then answers wrk
# sending BODY_FILE to /v1/is_authorized for ${SECS:-6} s with 16
# connections; prints its user+system CPU time (/proc/PID/stat) per answered
# request, which moves far less with the machine's load than throughput.
cpu_per_request() {
  local url pid t0 t1 out requests ticks
  url=$(sed -n 's/^consentry listening on //p' "$work/$1/log" | head -1)
  pid=$(cat "$work/$1/pid")
  ticks=$(getconf CLK_TCK)
  printf 'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\nwrk.body = [[%s]]\n' "$(cat "$2")" >"$work/$1/body.lua"
  ready_for_decisions "$url" "$(cat "$2")"
  wrk -t1 -c16 -d2s -s "$work/$1/body.lua" "$url/v1/is_authorized" >/dev/null
  t0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  out=$(wrk -t1 -c16 -d"${SECS:-6}s" -s "$work/$1/body.lua" "$url/v1/is_authorized")
  t1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
  requests=$(echo "$out" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  echo "$1: $(( (t1 - t0) * 1000000000 / ticks / requests )) ns CPU per request," \
    "$requests requests, $(echo "$out" | sed -n 's/Requests\/sec: *//p') rps"
}

# run NAME CONNECTIONS WRK_ARGS...: one wrk run of ${secs} seconds with
# --latency, printing its throughput, median, 99th percentile and errors.
run() {
  local name=$1 conns=$2
  shift 2
  echo "== $name, $conns connection(s), ${secs}s"
  wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" | grep -E 'Requests/sec|^ +50%|^ +99%|Non-2xx|Socket errors'
}
