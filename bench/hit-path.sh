#!/usr/bin/env bash
# Cache-hit path benchmark: the release binary serving a cached ~1 KB JWKS
# to wrk over HTTP/1.1 keep-alive on loopback. The issuer is a static file
# server (python3 http.server) that is asked only on refreshes.
#
# Usage: bench/hit-path.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT

doc="$work/issuer/v1/identity/oidc/plugins/.well-known"
mkdir -p "$doc"
python3 - "$doc" <<'PY'
import json, sys
n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"
keys = {"keys": [{"use": "sig", "kty": "RSA", "kid": f"key-{i}", "alg": "RS256", "n": n, "e": "AQAB"} for i in range(2)]}
open(sys.argv[1] + "/keys", "w").write(json.dumps(keys, separators=(",", ":")))
open(sys.argv[1] + "/openid-configuration", "w").write(json.dumps({"issuer": "http://127.0.0.1:18080/v1/identity/oidc/plugins", "jwks_uri": "http://127.0.0.1:18080/v1/identity/oidc/plugins/.well-known/keys"}))
PY
python3 -m http.server 18200 --bind 127.0.0.1 --directory "$work/issuer" >/dev/null 2>&1 &
cat > "$work/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:18081"
public_url = "http://127.0.0.1:18080"
[log]
access = ${ACCESS_LOG:-false}
[[issuer]]
name = "vault"
kind = "vault-plugin-wif"
upstream = "http://127.0.0.1:18200"
TOML
./target/release/wif-proxy --config "$work/proxy.toml" 2>"$work/proxy.log" &
proxy=$!
for _ in $(seq 50); do curl -sf http://127.0.0.1:18081/readyz >/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:18080/v1/identity/oidc/plugins/.well-known/keys
echo "document: $(curl -s "$url" | wc -c) bytes; access log: ${ACCESS_LOG:-false}"
wrk -t1 -c"$conns" -d"${secs}s" --latency "$url" | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" || true
echo "peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$proxy/status)"
echo "denied path:"
wrk -t1 -c"$conns" -d"${secs}s" --latency http://127.0.0.1:18080/v1/sys/health | grep -E "Requests/sec|50%|99%" || true
