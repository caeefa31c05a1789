#!/usr/bin/env bash
# Memory of each server while it holds N idle keep-alive connections (each
# served one request first), and its peak while they were being opened:
# wif-proxy and the peers of bench/compare.sh (nginx, HAProxy, Varnish with
# hitch in front for TLS), over TLS and plain HTTP. Loopback only; the
# connections come from 127.0.0.x source addresses.
#
# Every server runs at its defaults (one worker process or thread per CPU)
# except for what holding N connections needs: connection limits and a
# 300 s idle timeout. Memory is PSS (a page shared by k processes counts 1/k
# in each, so forked workers are not counted twice) summed over every
# process of the server, and RSS for reference.
#
# Usage: bench/idle-rss.sh [N]                       (default 10000)
#   SERVERS="wif nginx haproxy varnish"  which servers (default: all four)
#   MODES="tls plain"               TLS, plain HTTP or both (default: both)
#   RATE=2000 bench/idle-rss.sh     open 2000 connections a second (default:
#                                   as fast as possible, all busy at once)
#   IDLE_WAIT=10 bench/idle-rss.sh  seconds to hold them before measuring
#   RESULTS=file                    also append one tab-separated line per
#                                   measurement (for bench/compare-report.py)
#   WIF_BIN=...                     measure this binary instead of building
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-10000}
read -r -a servers <<<"${SERVERS:-wif nginx haproxy varnish}"
read -r -a modes <<<"${MODES:-tls plain}"
# Per process: each server and the client hold n; hitch holds 2n over its
# workers (client and Varnish sides).
ulimit -n "$(ulimit -Hn)"
[ "$(ulimit -n)" -gt $((n + 1024)) ] || { echo "open-file limit $(ulimit -n) is too low for $n connections" >&2; exit 1; }
. bench/lib.sh
build_bins
work=$(mktemp -d)
cleanup() { stop_servers; for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
make_issuer_docs "$work/issuer" https://wif.example.com
make_cert "$work"
python3 bench/issuer.py "$work/issuer" "$work/issuer.log" 18300 & pids+=($!)
path=/v1/identity/oidc/plugins/.well-known/keys
wait_http http://127.0.0.1:18300$path
ncpu=$(nproc)
maxconn=$((n + 100))

for mode in "${modes[@]}"; do
  for s in "${servers[@]}"; do
    tls=""; port=18380; [ "$mode" = tls ] && { tls=tls; port=18443; }
    case $s in
      wif) start_wif wif "$port" 18381 18300 true 300 "$maxconn" $tls ;;
      nginx) start_nginx nginx 18380 18443 18300 "$ncpu" 300 "$maxconn" ;;
      haproxy) start_haproxy haproxy 18380 18443 18300 "$ncpu" 300 "$maxconn" ;;
      varnish) start_varnish varnish 18380 18443 18300 "$ncpu" 300 "$maxconn" ;;
      *) echo "unknown server $s" >&2; exit 1 ;;
    esac
    base=http://127.0.0.1:$port; [ "$mode" = tls ] && base=https://127.0.0.1:$port
    # The document is cached before the connections arrive.
    curl -sfk -o /dev/null "$base$path"
    # Whatever a start-up spawns on its own (Varnish's thread pools) is
    # there before the baseline is taken.
    sleep 2
    # Plain HTTP to Varnish: hitch is not in the path.
    procs=${server_procs[$s]}; [ "$mode" = plain ] && procs=${server_procs[$s-http]:-$procs}
    before=$(mem_kib $procs)
    echo "== $s, $mode: processes $procs"
    python3 - "$n" "$port" "$mode" "${RATE:-0}" "${IDLE_WAIT:-6}" "$s" "$before" "${RESULTS:-/dev/null}" $procs <<'PY'
import os, socket, ssl, sys, time
n, port, mode, rate, wait, name = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], float(sys.argv[4]), float(sys.argv[5]), sys.argv[6]
before_rss, before_pss = (int(x) for x in sys.argv[7].split())
results, pids = sys.argv[8], sys.argv[9:]
req = b"GET /v1/identity/oidc/plugins/.well-known/keys HTTP/1.1\r\nHost: wif.example.com\r\n\r\n"
ctx = None
if mode == "tls":
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
def mem():
    """(RSS, PSS, peak RSS) in KiB, summed over the server's processes."""
    rss = pss = hwm = 0
    # Transient processes (nginx's cache loader) may have exited.
    for p in [p for p in pids if os.path.exists(f"/proc/{p}/smaps_rollup")]:
        for line in open(f"/proc/{p}/smaps_rollup"):
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
        for line in open(f"/proc/{p}/status"):
            if line.startswith("VmHWM:"):
                hwm += int(line.split()[1])
    return rss, pss, hwm
def show(m):
    return f"PSS {m[1] / 1024:.1f} MiB, RSS {m[0] / 1024:.1f} MiB (peak RSS so far {m[2] / 1024:.1f} MiB)"
socks, statuses = [], {}
start = time.monotonic()
for i in range(n):
    if rate:
        # Paced: connections arrive over time, as they do in production.
        time.sleep(max(0, start + i / rate - time.monotonic()))
    s = socket.socket()
    s.bind((f"127.0.0.{2 + i // 20000}", 0))
    s.connect(("127.0.0.1", port))
    if ctx:
        s = ctx.wrap_socket(s, server_hostname="wif.example.com")
    s.sendall(req)
    socks.append(s)
for s in socks:
    s.settimeout(10)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        status = data[9:12].decode() or "closed"
    except OSError as e:
        status = type(e).__name__
    statuses[status] = statuses.get(status, 0) + 1
print(f"{n} connections opened in {time.monotonic() - start:.1f} s, one request each: statuses {statuses}")
print(f"right after the last answer: {show(mem())}")
time.sleep(wait)
m = mem()
# Still open: a server that closed idle connections would hold less for
# the wrong reason.
open_now = 0
for s in socks:
    s.setblocking(False)
    try:
        open_now += s.recv(1) != b""
    except (BlockingIOError, ssl.SSLWantReadError):
        open_now += 1
    except OSError:
        pass
print(f"holding {open_now} of {n} idle keep-alive connections after {wait:.0f} s: {show(m)}")
print(f"before the connections: PSS {before_pss / 1024:.1f} MiB, RSS {before_rss / 1024:.1f} MiB")
with open(results, "a") as f:
    f.write(f"{mode}\t{name}\t{n}\t{statuses.get('200', 0)}\t{open_now}\t{before_pss}\t{m[1]}\t{before_rss}\t{m[0]}\t{m[2]}\n")
for s in socks:
    s.close()
PY
    stop_servers
  done
done
