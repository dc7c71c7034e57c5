#!/usr/bin/env bash
# Throughput of POST /v1/is_authorized with no plugin and with the trivial
# enrich plugin applied to every request (issue 4, §6), in one run.
# Usage: host/benches/plugins_load.sh [seconds per run, default 10] [connections, default 16]
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
# The test-plugins crate builds the guest workspace into target/wasm-plugins.
cargo build -p consentry-test-plugins 2>/dev/null
component="$root/target/wasm-plugins/wasm32-wasip2/release/trivial_enricher.wasm"
[ -f "$component" ] || { echo "missing $component" >&2; exit 1; }
config=$(mktemp --suffix=.toml)
trap 'rm -f "$config"' EXIT
printf '[[plugins]]\nname = "trivial"\npath = "%s"\nhooks = ["enrich"]\n' "$component" >"$config"
"$root/host/benches/ab_load.sh" bare "" plugged "--plugins $config" "${1:-10}" "${2:-16}"
