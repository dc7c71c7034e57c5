#!/usr/bin/env bash
# What a verified access token and tracing add to a decision's CPU, on one
# build: Dr. Weber's treatment read sent plain; the same read carrying his
# RS256 access token instead of a principal (verified against a JWKS file);
# and the plain read with traces on, exported over OTLP/HTTP to a local
# receiver. Each server is measured as by cpu_per_request (support/server.sh),
# in turn, twice.
# Needs wrk, and python3 with pyjwt and cryptography (pip install pyjwt cryptography).
# Usage: host/benches/token_trace_cpu.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
. host/benches/support/server.sh
export CONSENTRY_ADMIN_TOKEN=load-test
issuer=https://idp.bench.example
python3 - "$work" "$issuer" <<'PY'
import json, sys, time
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
work, issuer = sys.argv[1], sys.argv[2]
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk.update(kid="bench", alg="RS256", use="sig")
with open(f"{work}/jwks.json", "w") as f:
    json.dump({"keys": [jwk]}, f)
now = int(time.time())
claims = {"iss": issuer, "aud": "consentry", "sub": "u-1", "iat": now, "exp": now + 3600,
          "fhirUser": "Practitioner/dr-weber"}
token = jwt.encode(claims, key, algorithm="RS256", headers={"kid": "bench"})
with open(f"{work}/token.json", "w") as f:
    json.dump({"token": token, "action": 'Action::"read"', "resource": 'Record::"obs-1"',
               "context": {"purpose": "TREAT"}}, f)
PY
# An OTLP/HTTP receiver that accepts every export, so that spans are sent.
python3 - "$work/otlp-port" <<'PY' &
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer
class Sink(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self.send_response(200); self.send_header("content-length", "0"); self.end_headers()
    def log_message(self, *args): pass
server = HTTPServer(("127.0.0.1", 0), Sink)
open(sys.argv[1], "w").write(str(server.server_port))
server.serve_forever()
PY
echo $! >"$work/otlp.pid"
for _ in $(seq 50); do [ -s "$work/otlp-port" ] && break; sleep 0.1; done
trap 'kill $(cat "$work"/*/pid "$work/otlp.pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
start_server plain >/dev/null
start_server token --oidc-issuer "$issuer" --oidc-audience consentry --oidc-jwks-file "$work/jwks.json" >/dev/null
start_server traced --otlp-endpoint "http://127.0.0.1:$(cat "$work/otlp-port")/v1/traces" >/dev/null
echo "$(git rev-parse --short HEAD)  $(date -u +%FT%TZ)  load: $(cut -d' ' -f1-3 /proc/loadavg)"
for round in 1 2; do
  cpu_per_request plain host/benches/decision.json
  cpu_per_request token "$work/token.json"
  cpu_per_request traced host/benches/decision.json
done
