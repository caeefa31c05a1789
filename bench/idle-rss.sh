#!/usr/bin/env bash
# RSS of wif-proxy while it holds N idle keep-alive connections (each served
# one request first), and its peak while they were being opened. Loopback
# only; the connections come from 127.0.0.x source addresses.
#
# Usage: bench/idle-rss.sh [N]
#   RATE=2000 bench/idle-rss.sh     open 2000 connections a second (default:
#                                   as fast as possible, all busy at once)
#   IDLE_WAIT=10 bench/idle-rss.sh  seconds to hold them before measuring
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
python3 - "$n" "$proxy" "${RATE:-0}" "${IDLE_WAIT:-6}" <<'PY'
import socket, sys, time
n, pid, rate, wait = int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
req = b"GET /v1/identity/oidc/plugins/.well-known/keys HTTP/1.1\r\nHost: x\r\n\r\n"
def rss():
    status = open(f"/proc/{pid}/status").read()
    kb = {l.split(":")[0]: int(l.split()[1]) for l in status.splitlines() if l.startswith(("VmRSS", "VmHWM"))}
    return f"RSS {kb['VmRSS'] / 1024:.1f} MiB (peak so far {kb['VmHWM'] / 1024:.1f} MiB)"
socks, statuses = [], {}
start = time.monotonic()
for i in range(n):
    if rate:
        # Paced: connections arrive over time, as they do in production.
        time.sleep(max(0, start + i / rate - time.monotonic()))
    s = socket.socket()
    s.bind((f"127.0.0.{2 + i // 20000}", 0))
    s.connect(("127.0.0.1", 18380))
    s.sendall(req)
    socks.append(s)
for s in socks:
    s.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536)
    status = data[9:12].decode()
    statuses[status] = statuses.get(status, 0) + 1
print(f"{n} connections opened in {time.monotonic() - start:.1f} s, one request each: statuses {statuses}")
print(f"right after the last answer: {rss()}")
time.sleep(wait)
print(f"holding {n} idle keep-alive connections after {wait:.0f} s: {rss()}")
for s in socks:
    s.close()
PY
echo "RSS before the connections: $((before / 1024)) MiB"
