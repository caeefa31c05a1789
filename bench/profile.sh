#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: repeatable for the
# same binary and inputs whatever else the machine does, so before/after
# comparisons of a change do not drown in wall-clock noise.
#
# The release binary runs under callgrind; after a warm-up the counters are
# zeroed, N requests of one kind are sent over one keep-alive connection, and
# the counters are dumped. Instructions / N is the cost of one request,
# including hyper's parsing and writing and the kernel-facing syscalls'
# user-space side (not the kernel itself).
#
# Usage: bench/profile.sh [N]            (default 2000 requests per scenario)
#        KEEP=dir bench/profile.sh       (keep the callgrind.out files in dir
#                                         for callgrind_annotate)
#        H2N=5000                         (requests per h2c scenario; needs h2load)
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
h2n=${H2N:-5000}
command -v valgrind >/dev/null || { echo "needs valgrind (apt-get install valgrind)" >&2; exit 1; }
# Symbols for the annotations; the code is the release build's.
CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release --quiet --bin wif-proxy --example ceiling
work=$(mktemp -d)
out=${KEEP:-$work}
mkdir -p "$out"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
. bench/lib.sh
make_issuer_docs "$work/issuer" http://127.0.0.1:18480
python3 -m http.server 18400 --bind 127.0.0.1 --directory "$work/issuer" >/dev/null 2>&1 & pids+=($!)
wait_http http://127.0.0.1:18400/v1/identity/oidc/plugins/.well-known/keys

# run_scenario NAME ACCESS_LOG PATH [h2c]
run_scenario() {
  local name=$1 access=$2 path=$3 proto=${4:-http1}
  cat > "$work/proxy.toml" <<TOML
[server]
listen = "127.0.0.1:18480"
admin_listen = "127.0.0.1:18481"
public_url = "http://127.0.0.1:18480"
[log]
access = $access
[rate_limit]
enabled = false
[[issuer]]
name = "vault"
kind = "vault-plugin-wif"
upstream = "http://127.0.0.1:18400"
TOML
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.$name" \
    ./target/release/wif-proxy --config "$work/proxy.toml" 2>"$work/proxy-$name.log" >/dev/null &
  local proxy=$!
  pids+=($proxy)
  for _ in $(seq 300); do curl -sf http://127.0.0.1:18481/readyz >/dev/null && break; sleep 0.1; done
  measure "$name" "$proxy" "$path" "$proto"
}

# The floor: the bare hyper server of bench/compare.sh, the same bytes.
# run_ceiling NAME [h2c]
run_ceiling() {
  local name=$1 proto=${2:-http1}
  curl -sf http://127.0.0.1:18400/v1/identity/oidc/plugins/.well-known/keys > "$work/body.json"
  valgrind --tool=callgrind --callgrind-out-file="$out/callgrind.out.$name" \
    ./target/release/examples/ceiling 127.0.0.1:18480 "$work/body.json" 2>/dev/null >/dev/null &
  local server=$!
  pids+=($server)
  for _ in $(seq 300); do curl -sf -o /dev/null http://127.0.0.1:18480/ && break; sleep 0.1; done
  measure "$name" "$server" /v1/identity/oidc/plugins/.well-known/keys "$proto"
}

# measure NAME PID PATH PROTO: requests after a warm-up; prints instructions/request.
# HTTP/1.1: N requests over one keep-alive connection. h2c: H2N requests
# (default 5,000) over one connection, ten streams at a time (h2load).
measure() {
  local name=$1 proxy=$2 path=$3 proto=$4 count=$n
  if [ "$proto" = h2c ]; then
    count=$h2n
    h2load -n 500 -c1 -m10 "http://127.0.0.1:18480$path" >/dev/null
    callgrind_control --zero "$proxy" >/dev/null 2>&1
    h2load -n "$count" -c1 -m10 "http://127.0.0.1:18480$path" | grep -E "^requests:" >&2
    callgrind_control --dump "$proxy" >/dev/null 2>&1
  else
  python3 - "$n" "$path" "$proxy" "$out/callgrind.out.$name" <<'PY'
import os, socket, subprocess, sys, time
n, path, pid, outfile = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
req = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: profile\r\n\r\n".encode()
s = socket.create_connection(("127.0.0.1", 18480))
buf = b""
def one():
    global buf
    s.sendall(req)
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buf[:head_end].decode()
            length = int([l.split(":")[1] for l in head.split("\r\n") if l.lower().startswith("content-length")][0])
            total = head_end + 4 + length
            if len(buf) >= total:
                buf = buf[total:]
                return head.split(" ")[1]
        buf += s.recv(65536)
for _ in range(200):
    status = one()
subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
for _ in range(n):
    one()
subprocess.run(["callgrind_control", "--dump", pid], check=True, capture_output=True)
print(status)
PY
  fi
  # TERM, not INT: a background job of a script ignores SIGINT unless it
  # installs its own handler (wif-proxy does, the ceiling does not).
  kill -TERM "$proxy"; wait "$proxy" 2>/dev/null || true
  # The dump taken right after the N requests (callgrind numbers them .1, .2, ...).
  local dump
  dump=$(ls "$out/callgrind.out.$name".* | sort -t. -k4 -n | head -1)
  local total
  total=$(awk '/^summary:|^totals:/ {print $2; exit}' "$dump")
  printf '%-28s %10d instructions/request\n' "$name" $((total / count))
}

echo "instructions per request (callgrind, $n requests per scenario, one keep-alive connection)"
run_scenario hit-log-off false /v1/identity/oidc/plugins/.well-known/keys
run_scenario denied-log-off false /v1/sys/health
run_scenario hit-log-on true /v1/identity/oidc/plugins/.well-known/keys
run_scenario denied-log-on true /v1/sys/health
run_ceiling ceiling
if command -v h2load >/dev/null; then
  echo "h2c ($h2n requests per scenario, one connection, ten streams at a time)"
  run_scenario h2c-hit-log-off false /v1/identity/oidc/plugins/.well-known/keys h2c
  run_scenario h2c-hit-log-on true /v1/identity/oidc/plugins/.well-known/keys h2c
  run_ceiling h2c-ceiling h2c
else
  echo "h2c scenarios skipped: needs h2load (apt-get install nghttp2-client)" >&2
fi
