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

. bench/lib.sh
make_issuer_docs "$work/issuer" http://127.0.0.1:18080
python3 -m http.server 18200 --bind 127.0.0.1 --directory "$work/issuer" >/dev/null 2>&1 &
cat > "$work/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:18080"
admin_listen = "127.0.0.1:18081"
public_url = "http://127.0.0.1:18080"
[log]
access = ${ACCESS_LOG:-false}
[rate_limit]
# One client address sending everything: the per-address limit would answer 429.
enabled = false
[[issuer]]
name = "vault"
kind = "vault-plugin-wif"
upstream = "http://127.0.0.1:18200"
TOML
./target/release/wif-proxy --config "$work/proxy.toml" 2>"$work/proxy.log" &
proxy=$!
wait_http http://127.0.0.1:18200/v1/identity/oidc/plugins/.well-known/keys
for _ in $(seq 50); do curl -sf http://127.0.0.1:18081/readyz >/dev/null && break; sleep 0.1; done
url=http://127.0.0.1:18080/v1/identity/oidc/plugins/.well-known/keys
echo "document: $(curl -s "$url" | wc -c) bytes; access log: ${ACCESS_LOG:-false}"
wrk -t1 -c"$conns" -d"${secs}s" --latency "$url" | grep -E "Requests/sec|50%|99%|Non-2xx|Socket errors" || true
echo "peak RSS: $(awk '/VmHWM/ {print $2, $3}' /proc/$proxy/status)"
echo "denied path:"
wrk -t1 -c"$conns" -d"${secs}s" --latency http://127.0.0.1:18080/v1/sys/health | grep -E "Requests/sec|50%|99%" || true
