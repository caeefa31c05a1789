#!/usr/bin/env bash
# Peak RSS of wif-proxy while it holds N idle keep-alive connections (each
# served one request first). Loopback only; the connections come from
# several 127.0.0.x source addresses. Usage: bench/idle-rss.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
ulimit -n $((n + 1024))   # per process: the proxy and the client each hold n
cargo build --release --quiet --bin wif-proxy
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
. bench/lib.sh
make_issuer_docs "$work/issuer" http://127.0.0.1:18380
python3 -m http.server 18300 --bind 127.0.0.1 --directory "$work/issuer" >/dev/null 2>&1 & pids+=($!)
cat > "$work/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:18380"
admin_listen = "127.0.0.1:18381"
public_url = "http://127.0.0.1:18380"
max_connections = $((n + 100))
max_connections_per_ip = $((n + 100))
idle_timeout = "300s"
[log]
access = false
[rate_limit]
enabled = false
[[issuer]]
name = "vault"
kind = "vault-plugin-wif"
upstream = "http://127.0.0.1:18300"
TOML
./target/release/wif-proxy --config "$work/proxy.toml" 2>"$work/proxy.log" & proxy=$!; pids+=($proxy)
wait_http http://127.0.0.1:18300/v1/identity/oidc/plugins/.well-known/keys
wait_http http://127.0.0.1:18380/v1/identity/oidc/plugins/.well-known/keys
before=$(awk '/VmRSS/ {print $2}' /proc/$proxy/status)
python3 - "$n" "$proxy" <<'PY'
import socket, sys, time
n, pid = int(sys.argv[1]), sys.argv[2]
req = b"GET /v1/identity/oidc/plugins/.well-known/keys HTTP/1.1\r\nHost: x\r\n\r\n"
socks = []
for i in range(n):
    s = socket.socket()
    s.bind((f"127.0.0.{2 + i // 20000}", 0))
    s.connect(("127.0.0.1", 18380))
    s.sendall(req)
    socks.append(s)
ok = 0
for s in socks:
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    ok += data.startswith(b"HTTP/1.1 200")
time.sleep(2)
status = open(f"/proc/{pid}/status").read()
rss = [l for l in status.splitlines() if l.startswith(("VmRSS", "VmHWM"))]
print(f"{ok} of {n} connections served and now idle; " + ", ".join(rss))
for s in socks:
    s.close()
PY
echo "RSS before the connections: $((before / 1024)) MiB"
