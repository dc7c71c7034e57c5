#!/usr/bin/env bash
# Bytes per decision log record, and what zstd (the log's choice) and gzip
# make of a finished file, with the CPU time each takes (user + system, not
# wall time). Usage, from the repository root:
#   host/benches/audit_size.sh [SECS] [BODY_FILE]
# BIN (default target/release/consentry) serves the bundled pack with
# 1 MiB files; wrk sends BODY_FILE (default host/benches/decision.json,
# Dr. Weber's read) for SECS seconds (default 5).
set -euo pipefail
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install wrk" >&2; exit 1; }
secs=${1:-5}
body=${2:-host/benches/decision.json}
bin=${BIN:-target/release/consentry}
work=$(mktemp -d)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
RUST_LOG=warn "$bin" serve --policies policies --bind 127.0.0.1:0 --store "$work/store" \
  --audit "$work/audit" --audit-rotate-bytes 1048576 >"$work/log" 2>&1 &
echo $! >"$work/pid"
for _ in $(seq 100); do grep -q 'listening on' "$work/log" && break; sleep 0.1; done
url=$(sed -n 's/^consentry listening on //p' "$work/log")
printf 'wrk.method = "POST"\nwrk.headers["content-type"] = "application/json"\nwrk.body = [[%s]]\n' "$(cat "$body")" >"$work/body.lua"
wrk -t1 -c4 -d"${secs}s" -s "$work/body.lua" "$url/v1/is_authorized" >/dev/null
kill "$(cat "$work/pid")"; sleep 1
plain=$(ls "$work"/audit/decisions-*.jsonl | tail -1)
records=$(cat "$work"/audit/decisions-*.jsonl | wc -l)
bytes=$(cat "$work"/audit/decisions-*.jsonl | wc -c)
echo "records in plain files: $records, bytes per record: $((bytes / records))"
zstd_files=$(ls "$work"/audit/*.zst 2>/dev/null | wc -l)
if [ "$zstd_files" -gt 0 ]; then
  f=$(ls "$work"/audit/*.zst | head -1)
  n=$(zstd -dc "$f" | wc -l); raw=$(zstd -dc "$f" | wc -c); packed=$(stat -c %s "$f")
  echo "a rotated file as the server compressed it: $n records, $raw -> $packed bytes (ratio $(echo "scale=1; $raw / $packed" | bc)), $(echo "scale=1; $packed / $n" | bc) bytes per record"
  zstd -dc "$f" >"$work/sample"
else
  cp "$plain" "$work/sample"
fi
n=$(wc -l <"$work/sample")
# CPU time over 100 rounds of the sample, as one file is too quick to time.
for tool in "zstd -3 -q -c" "gzip -6 -c"; do
  size=$($tool "$work/sample" | wc -c)
  cpu=$( { /usr/bin/time -f '%U %S' bash -c "for i in \$(seq 100); do $tool '$work/sample' >/dev/null; done"; } 2>&1 | tail -1)
  per=$(echo "$cpu" | awk -v n="$n" '{ printf "%.2f", ($1 + $2) * 1e6 / (100 * n) }')
  echo "$tool: $size bytes ($(echo "scale=1; $size / $n" | bc) per record), CPU $per us per record (user+sys $cpu s for $((100 * n)) records)"
done
# What leaving the policy hash off every line would save, plain and packed.
sed 's/,"policy_hash":"[0-9a-f]*"//' "$work/sample" >"$work/nohash"
echo "without policy_hash: $(( $(wc -c <"$work/nohash") / n )) bytes per record plain, $(( $(zstd -3 -q -c "$work/nohash" | wc -c) * 10 / n )) tenths of a byte packed"
