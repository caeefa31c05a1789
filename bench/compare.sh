#!/usr/bin/env bash
# Side-by-side: wif-proxy, nginx (the equivalent allowlisting proxy with
# proxy_cache + proxy_cache_use_stale, one worker per server CPU) and a bare hyper
# server returning the same bytes (the ceiling), under the same load
# generators, interleaved and repeated. Loopback only; bounded in time.
#
# Usage: bench/compare.sh [seconds-per-run] [rounds]
#   PIN=1 (default on 2+ CPUs): the servers run on SERVER_CPUS, the load
#         generators on LOAD_CPUS (default: the first half of the CPUs and the
#         rest), so the load generator cannot take the server's CPU time and
#         each server is measured on the same, known cores. nginx gets one
#         worker per server CPU; the tokio runtimes size themselves to the
#         affinity mask.
#   PIN=0: everything shares every CPU (one nginx worker per CPU).
# Needs: wrk, h2load (nghttp2-client), nginx (nginx-light), openssl, python3,
# taskset (util-linux).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-2}
rounds=${2:-15}
for t in wrk h2load nginx openssl python3 taskset; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done
ncpu=$(nproc)
pin=${PIN:-$([ "$ncpu" -ge 2 ] && echo 1 || echo 0)}
if [ "$pin" = 1 ]; then
  half=$((ncpu / 2))
  server_cpus=${SERVER_CPUS:-0-$((half - 1))}
  load_cpus=${LOAD_CPUS:-$half-$((ncpu - 1))}
else
  server_cpus=${SERVER_CPUS:-0-$((ncpu - 1))}
  load_cpus=${LOAD_CPUS:-0-$((ncpu - 1))}
fi
server_ncpu=$(taskset -c "$server_cpus" nproc)
# Arrays, not functions: a backgrounded function runs in a subshell, and $!
# would name the subshell instead of the server.
srv=(taskset -c "$server_cpus")
load=(taskset -c "$load_cpus")
echo "servers on CPUs $server_cpus ($server_ncpu), load generators on CPUs $load_cpus"
cargo build --release --quiet --bin wif-proxy --example ceiling
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

# The issuer: a static file server with a Vault-shaped JWKS (~1 KB).
. bench/lib.sh
make_issuer_docs "$work/issuer" https://wif.example.com
python3 -m http.server 19200 --bind 127.0.0.1 --directory "$work/issuer" >/dev/null 2>&1 & pids+=($!)
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$work/key.pem" -out "$work/cert.pem" \
  -days 2 -subj /CN=wif.example.com -addext subjectAltName=DNS:wif.example.com 2>/dev/null
path=/v1/identity/oidc/plugins/.well-known/keys

# wif-proxy: plain on 19080, TLS on 19443 (access log off, as nginx below).
for mode in plain tls; do
  port=19080; admin=19081; tls=""
  if [ $mode = tls ]; then
    port=19443; admin=19444
    tls=$(printf '[tls]\nmode = "files"\n[[tls.certificate]]\ncert = "%s/cert.pem"\nkey = "%s/key.pem"' "$work" "$work")
  fi
  cat > "$work/wif-$mode.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
public_url = "https://wif.example.com"
max_connections = 20000
max_connections_per_ip = 20000
[log]
access = false
[rate_limit]
enabled = false
$tls
[[issuer]]
name = "vault"
kind = "vault-plugin-wif"
upstream = "http://127.0.0.1:19200"
TOML
  "${srv[@]}" ./target/release/wif-proxy --config "$work/wif-$mode.toml" 2>"$work/wif-$mode.log" & pids+=($!)
  eval "wif_${mode}_pid=$!"
done

# nginx: the same allowlist, cache, stale serving.
mkdir -p "$work/nginx/cache"
# nginx workers run as an unprivileged user: they must reach the cache, or
# nginx silently proxies every request and the comparison is meaningless.
chmod 755 "$work"
chown -R nobody "$work/nginx" 2>/dev/null || chmod -R 777 "$work/nginx"
cat > "$work/nginx.conf" <<NGINX
worker_processes $server_ncpu;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 20000; }
http {
  access_log off;
  # nginx closes a connection after 1,000 requests by default; h2load does
  # not reconnect, so the cap, not nginx, would set its h2 rate.
  keepalive_requests 1000000;
  proxy_cache_path $work/nginx/cache keys_zone=docs:1m max_size=10m;
  upstream issuer { server 127.0.0.1:19200; keepalive 8; }
  server {
    listen 127.0.0.1:19180;
    listen 127.0.0.1:19543 ssl http2;
    ssl_certificate $work/cert.pem;
    ssl_certificate_key $work/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    location = $path { proxy_pass http://issuer; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_set_header Host 127.0.0.1:19200;
      proxy_pass_request_headers off; proxy_pass_request_body off; proxy_cache docs; proxy_cache_valid 200 5m;
      proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504; proxy_cache_background_update on; proxy_cache_lock on;
      proxy_hide_header Server; add_header X-Content-Type-Options nosniff; }
    location / { return 404; }
  }
}
NGINX
"${srv[@]}" nginx -c "$work/nginx.conf" -p "$work" 2>/dev/null
pids+=($(cat "$work/nginx.pid" 2>/dev/null || true))

# The ceiling: bare hyper with the same bytes.
wait_http http://127.0.0.1:19200$path
curl -s http://127.0.0.1:19200$path > "$work/body.json"
"${srv[@]}" ./target/release/examples/ceiling 127.0.0.1:19280 "$work/body.json" & pids+=($!); ceiling_pid=$!
"${srv[@]}" ./target/release/examples/ceiling 127.0.0.1:19643 "$work/body.json" "$work/cert.pem" "$work/key.pem" & pids+=($!); ceiling_tls_pid=$!
for u in http://127.0.0.1:19080 http://127.0.0.1:19180 http://127.0.0.1:19280; do wait_http "$u$path"; done
curl -s -o /dev/null http://127.0.0.1:19180$path
ls "$work/nginx/cache"/* >/dev/null 2>&1 || { echo "nginx is not caching: see $work/nginx-error.log" >&2; cat "$work/nginx-error.log" >&2; exit 1; }

declare -A url=(
  [wif-http]=http://127.0.0.1:19080 [nginx-http]=http://127.0.0.1:19180 [ceiling-http]=http://127.0.0.1:19280
  [wif-https]=https://127.0.0.1:19443 [nginx-https]=https://127.0.0.1:19543 [ceiling-https]=https://127.0.0.1:19643
)
# The processes that do each server's work, for its CPU time (nginx: the
# workers; the master only supervises).
nginx_workers=$(pgrep -P "$(cat "$work/nginx.pid")" -f 'worker process' | tr '\n' ' ')
declare -A procs=(
  [wif-http]=$wif_plain_pid [nginx-http]=$nginx_workers [ceiling-http]=$ceiling_pid
  [wif-https]=$wif_tls_pid [nginx-https]=$nginx_workers [ceiling-https]=$ceiling_tls_pid
)
# cpu_ns PID...: nanoseconds on a CPU so far, all threads of the processes.
cpu_ns() {
  local p; for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null; done | awk '{s += $1} END {printf "%.0f", s}'
}
results="$work/results.tsv"
: > "$results"
# record ROUND SCENARIO NAME REQUESTS RPS P50 P99 CPU_NS
record() {
  local us; us=$(awk -v n="$4" -v c="$8" 'BEGIN {if (n > 0) printf "%.1f", c / n / 1000; else print "-"}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$5" "$6" "$7" "$us" >> "$results"
}
run_wrk() { # round name scenario url procs extra...
  local round=$1 name=$2 scenario=$3 u=$4 pids=$5; shift 5
  local before; before=$(cpu_ns $pids)
  local out; out=$("${load[@]}" wrk -t1 -c64 -d"${secs}s" --latency "$@" "$u" 2>&1)
  local cpu=$(($(cpu_ns $pids) - before))
  record "$round" "$scenario" "$name" "$(awk '/requests in/ {print $1}' <<<"$out")" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(awk '$1=="50%" {print $2}' <<<"$out")" \
    "$(awk '$1=="99%" {print $2}' <<<"$out")" "$cpu"
}
run_h2() { # round name url procs
  local before; before=$(cpu_ns $4)
  local out; out=$("${load[@]}" h2load -c64 -m10 -D "$secs" "$3$path" 2>&1)
  local cpu=$(($(cpu_ns $4) - before))
  # h2load reports no percentiles: its mean stands in the p50 column.
  record "$1" h2 "$2" "$(awk '/^requests:/ {print $8}' <<<"$out")" \
    "$(awk '/^finished in/ {gsub(",","",$4); print $4}' <<<"$out")" \
    "$(awk '/time for request:/ {print $6}' <<<"$out")" - "$cpu"
}
# Noise on a shared (virtual) machine comes in bursts of seconds to minutes.
# So the three servers are measured back to back for each scenario, in an
# order that rotates every round, and each round's ratios are taken within
# the round: a burst then hits the servers being compared alike.
run() { # round scenario server
  local u=${url[$3-http]} us=${url[$3-https]} p=${procs[$3-http]} ps=${procs[$3-https]}
  case $2 in
    http-keepalive) run_wrk "$1" "$3" "$2" "$u$path" "$p" ;;
    https-keepalive) run_wrk "$1" "$3" "$2" "$us$path" "$ps" ;;
    https-new-conn) run_wrk "$1" "$3" "$2" "$us$path" "$ps" -H "Connection: close" ;;
    h2) run_h2 "$1" "$3" "$us" "$ps" ;;
    denied-path) run_wrk "$1" "$3" "$2" "$u/v1/sys/health" "$p" ;;
  esac
}
servers=(wif nginx ceiling)
for r in $(seq "$rounds"); do
  for scenario in http-keepalive https-keepalive https-new-conn h2 denied-path; do
    for i in 0 1 2; do run "$r" "$scenario" "${servers[$(((r + i) % 3))]}"; done
  done
done
rss() { awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$1/status 2>/dev/null || echo "?"; }
nginx_rss=0
for p in $(pgrep -f "nginx: worker process" || true) $(cat "$work/nginx.pid" 2>/dev/null); do
  k=$(awk '/VmHWM/ {print $2}' /proc/$p/status 2>/dev/null || echo 0); nginx_rss=$((nginx_rss + k))
done
echo "peak RSS: wif-proxy plain $(rss $wif_plain_pid), TLS $(rss $wif_tls_pid); ceiling $(rss $ceiling_pid), TLS $(rss $ceiling_tls_pid); nginx master+workers $((nginx_rss/1024)) MiB"
echo
echo "median of $rounds rounds, ${secs}s each; wrk -t1 -c64 (h2: h2load -c64 -m10); servers on CPUs $server_cpus, load on CPUs $load_cpus"
python3 bench/compare-report.py "$results"
