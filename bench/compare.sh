#!/usr/bin/env bash
# Side-by-side: wif-proxy, nginx (the equivalent allowlisting proxy with
# proxy_cache + proxy_cache_use_stale, one worker per core) and a bare hyper
# server returning the same bytes (the ceiling), under the same load
# generators, interleaved and repeated. Loopback only; bounded in time.
#
# Usage: bench/compare.sh [seconds-per-run] [rounds]
# Needs: wrk, h2load (nghttp2-client), nginx (nginx-light), openssl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-5}
rounds=${2:-3}
for t in wrk h2load nginx openssl python3; do command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }; done
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
  ./target/release/wif-proxy --config "$work/wif-$mode.toml" 2>"$work/wif-$mode.log" & pids+=($!)
  eval "wif_${mode}_pid=$!"
done

# nginx: the same allowlist, cache, stale serving.
mkdir -p "$work/nginx/cache"
# nginx workers run as an unprivileged user: they must reach the cache, or
# nginx silently proxies every request and the comparison is meaningless.
chmod 755 "$work"
chown -R nobody "$work/nginx" 2>/dev/null || chmod -R 777 "$work/nginx"
cat > "$work/nginx.conf" <<NGINX
worker_processes $(nproc);
pid $work/nginx.pid;
error_log $work/nginx-error.log;
events { worker_connections 20000; }
http {
  access_log off;
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
nginx -c "$work/nginx.conf" -p "$work" 2>/dev/null
pids+=($(cat "$work/nginx.pid" 2>/dev/null || true))

# The ceiling: bare hyper with the same bytes.
wait_http http://127.0.0.1:19200$path
curl -s http://127.0.0.1:19200$path > "$work/body.json"
./target/release/examples/ceiling 127.0.0.1:19280 "$work/body.json" & pids+=($!); ceiling_pid=$!
./target/release/examples/ceiling 127.0.0.1:19643 "$work/body.json" "$work/cert.pem" "$work/key.pem" & pids+=($!); ceiling_tls_pid=$!
for u in http://127.0.0.1:19080 http://127.0.0.1:19180 http://127.0.0.1:19280; do wait_http "$u$path"; done
curl -s -o /dev/null http://127.0.0.1:19180$path
ls "$work/nginx/cache"/* >/dev/null 2>&1 || { echo "nginx is not caching: see $work/nginx-error.log" >&2; cat "$work/nginx-error.log" >&2; exit 1; }

declare -A url=(
  [wif-http]=http://127.0.0.1:19080 [nginx-http]=http://127.0.0.1:19180 [ceiling-http]=http://127.0.0.1:19280
  [wif-https]=https://127.0.0.1:19443 [nginx-https]=https://127.0.0.1:19543 [ceiling-https]=https://127.0.0.1:19643
)
results="$work/results.tsv"
: > "$results"
run_wrk() { # name scenario url extra...
  local name=$1 scenario=$2 u=$3; shift 3
  local out; out=$(wrk -t1 -c64 -d"${secs}s" --latency "$@" "$u" 2>&1)
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  printf '%s\t%s\t%s\t%s\t%s\n' "$scenario" "$name" "$rps" "$p50" "$p99" >> "$results"
}
run_h2() { # name url
  local out; out=$(h2load -c64 -m10 -D "$secs" "$2$path" 2>&1)
  local rps; rps=$(awk '/^finished in/ {gsub(",","",$4); print $4}' <<<"$out")
  local p50; p50=$(awk '/time for request:/ {print $6}' <<<"$out")
  printf '%s\t%s\t%s\t%s\t%s\n' "h2" "$1" "$rps" "$p50" "-" >> "$results"
}
for r in $(seq "$rounds"); do
  for s in wif nginx ceiling; do
    run_wrk "$s" "http-keepalive" "${url[$s-http]}$path"
    run_wrk "$s" "https-keepalive" "${url[$s-https]}$path"
    run_wrk "$s" "https-new-conn" "${url[$s-https]}$path" -H "Connection: close"
    run_wrk "$s" "denied-path" "${url[$s-http]}/v1/sys/health"
    case $s in wif) run_h2 wif https://127.0.0.1:19443 ;; nginx) run_h2 nginx https://127.0.0.1:19543 ;; ceiling) run_h2 ceiling https://127.0.0.1:19643 ;; esac
  done
done
rss() { awk '/VmHWM/ {print $2/1024 " MiB"}' /proc/$1/status 2>/dev/null || echo "?"; }
nginx_rss=0
for p in $(pgrep -f "nginx: worker process" || true) $(cat "$work/nginx.pid" 2>/dev/null); do
  k=$(awk '/VmHWM/ {print $2}' /proc/$p/status 2>/dev/null || echo 0); nginx_rss=$((nginx_rss + k))
done
echo "peak RSS: wif-proxy plain $(rss $wif_plain_pid), TLS $(rss $wif_tls_pid); ceiling $(rss $ceiling_pid), TLS $(rss $ceiling_tls_pid); nginx master+workers $((nginx_rss/1024)) MiB"
echo
echo "median of $rounds rounds, ${secs}s each; wrk -t1 -c64 (h2: h2load -c64 -m10)"
python3 - "$results" <<'PY'
import sys, statistics, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
def num(x):
    try: return float(x)
    except: return None
def ms(x):
    if not x or x == "-": return None
    for suf, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if x.endswith(suf): return float(x[:-len(suf)]) * f
    return None
data = collections.defaultdict(lambda: collections.defaultdict(list))
for scen, name, rps, p50, p99 in rows:
    data[scen][name].append((num(rps), ms(p50), ms(p99)))
print("| scenario | server | req/s | p50 ms | p99 ms | vs nginx | vs ceiling | req/s per round |")
print("|---|---|---|---|---|---|---|---|")
for scen in ["http-keepalive", "https-keepalive", "https-new-conn", "h2", "denied-path"]:
    med = {}
    for name in ["wif", "nginx", "ceiling"]:
        vals = data[scen][name]
        if not vals: continue
        m = lambda i: statistics.median([v[i] for v in vals if v[i] is not None]) if any(v[i] is not None for v in vals) else None
        med[name] = (m(0), m(1), m(2))
    for name, (rps, p50, p99) in med.items():
        vn = f"{rps/med['nginx'][0]:.2f}x" if rps and med.get('nginx', (None,))[0] else "-"
        vc = f"{rps/med['ceiling'][0]*100:.0f}%" if rps and med.get('ceiling', (None,))[0] else "-"
        f = lambda x: f"{x:.2f}" if x is not None else "-"
        rounds = " / ".join(f"{v[0]/1000:.1f}k" for v in data[scen][name] if v[0] is not None)
        print(f"| {scen} | {name} | {rps:,.0f} | {f(p50)} | {f(p99)} | {vn} | {vc} | {rounds} |")
PY
