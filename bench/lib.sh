# Shared by the bench scripts: the issuer's documents as static files.
# make_issuer_docs DIR PUBLIC_URL  -> DIR/v1/identity/oidc/plugins/.well-known/{keys,openid-configuration}
make_issuer_docs() {
  local doc="$1/v1/identity/oidc/plugins/.well-known"
  mkdir -p "$doc"
  python3 - "$doc" "$2" <<'PY'
import json, sys
doc, public = sys.argv[1], sys.argv[2]
n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"
keys = {"keys": [{"use": "sig", "kty": "RSA", "kid": f"key-{i}", "alg": "RS256", "n": n, "e": "AQAB"} for i in range(2)]}
open(doc + "/keys", "w").write(json.dumps(keys, separators=(",", ":")))
issuer = public + "/v1/identity/oidc/plugins"
open(doc + "/openid-configuration", "w").write(json.dumps({"issuer": issuer, "jwks_uri": issuer + "/.well-known/keys"}))
PY
}

# wait_http URL: until it answers (10 s at most).
wait_http() {
  for _ in $(seq 100); do curl -sf -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not answering: $1" >&2
  return 1
}

# wait_up URL: until it gives any HTTP answer (10 s at most). For the peers,
# whose first request for a document is the one that fetches it.
wait_up() {
  for _ in $(seq 100); do curl -sk -o /dev/null "$1" && return 0; sleep 0.1; done
  echo "not answering: $1" >&2
  return 1
}

# The binaries under test. WIF_BIN and CEILING_BIN name other builds, so that
# published figures can be measured again against a newer binary unchanged.
target_dir=${CARGO_TARGET_DIR:-target}
wif_bin=${WIF_BIN:-$target_dir/release/wif-proxy}
ceiling_bin=${CEILING_BIN:-$target_dir/release/examples/ceiling}

# build_bins [ceiling]: build the release binaries WIF_BIN / CEILING_BIN do
# not name. Always both together: building the example unifies the
# dependencies' features differently, and every script should measure the
# same wif-proxy binary.
build_bins() {
  local args=()
  [ -n "${WIF_BIN:-}" ] || args+=(--bin wif-proxy)
  [ -n "${CEILING_BIN:-}" ] || args+=(--example ceiling)
  if [ ${#args[@]} -gt 0 ]; then cargo build --release --quiet "${args[@]}"; fi
  [ -x "$wif_bin" ] || { echo "no wif-proxy binary at $wif_bin" >&2; return 1; }
  if [ "${1:-}" = ceiling ]; then [ -x "$ceiling_bin" ] || { echo "no ceiling binary at $ceiling_bin" >&2; return 1; }; fi
}

# render TEMPLATE OUT KEY=VALUE...: TEMPLATE with every @KEY@ replaced; fails
# if one is left without a value.
render() {
  python3 - "$@" <<'PY'
import re, sys
tpl, out, *pairs = sys.argv[1:]
text = open(tpl).read()
for pair in pairs:
    k, v = pair.split("=", 1)
    text = text.replace(f"@{k}@", v)
left = sorted(set(re.findall(r"@[A-Z_]+@", text)))
if left:
    sys.exit(f"{tpl}: no value for {' '.join(left)}")
open(out, "w").write(text)
PY
}

# make_cert DIR: DIR/cert.pem, DIR/key.pem (ECDSA P-256, wif.example.com) and
# DIR/tls.pem, both in one file for HAProxy and hitch.
make_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$1/key.pem" -out "$1/cert.pem" \
    -days 2 -subj /CN=wif.example.com -addext subjectAltName=DNS:wif.example.com 2>/dev/null
  cat "$1/cert.pem" "$1/key.pem" > "$1/tls.pem"
}

# The servers under test. Each start_* function starts one server (with the
# command prefix in the array `srv`, e.g. a taskset), records its process in
# `pids` (for the scripts' cleanup) and in server_pids[NAME] (what stop_servers
# stops), and, once it answers, server_procs[NAME]: every process that does
# its work, for CPU time and memory. Configurations and logs go to
# $work/NAME/. Ports: NAME's HTTP and HTTPS ports; ISSUER: the issuer
# stand-in's port; WORKERS: processes or threads, where the server asks;
# IDLE: keep-alive idle timeout, seconds; MAXCONN: connections.
srv=()
pids=()
declare -A server_pids=() server_procs=()
bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# start_wif NAME PORT ADMIN_PORT ISSUER ACCESS_LOG(true|false) IDLE MAXCONN [tls]
start_wif() {
  local name=$1 port=$2 admin=$3 issuer=$4 access=$5 idle=$6 maxconn=$7 tls="" d=$work/$1
  mkdir -p "$d"
  if [ "${8:-}" = tls ]; then
    tls=$(printf '[tls]\nmode = "files"\n[[tls.certificate]]\ncert = "%s/cert.pem"\nkey = "%s/key.pem"' "$work" "$work")
  fi
  cat > "$d/wif.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
admin_listen = "127.0.0.1:$admin"
public_url = "https://wif.example.com"
max_connections = $maxconn
max_connections_per_ip = $maxconn
idle_timeout = "${idle}s"
[log]
access = $access
[rate_limit]
enabled = false
$tls
[[issuer]]
name = "vault"
kind = "vault-plugin-wif"
upstream = "http://127.0.0.1:$issuer"
TOML
  # Appended, so that the log can be emptied while wif-proxy writes to it.
  "${srv[@]}" "$wif_bin" --config "$d/wif.toml" 2>>"$d/log" &
  pids+=($!); server_pids[$name]=$!
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" && break; sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:$admin/readyz" || { echo "$name not ready: $(tail -5 "$d/log")" >&2; return 1; }
  server_procs[$name]=${server_pids[$name]}
}

# start_ceiling NAME PORT BODY [tls]
start_ceiling() {
  local tls=()
  [ "${4:-}" = tls ] && tls=("$work/cert.pem" "$work/key.pem")
  "${srv[@]}" "$ceiling_bin" "127.0.0.1:$2" "$3" "${tls[@]}" &
  pids+=($!); server_pids[$1]=$!
  wait_up "http$([ "${4:-}" = tls ] && echo s)://127.0.0.1:$2/"
  server_procs[$1]=${server_pids[$1]}
}

# start_nginx NAME HTTP HTTPS ISSUER WORKERS IDLE MAXCONN
start_nginx() {
  local d=$work/$1
  rm -rf "$d"; mkdir -p "$d/cache"
  # nginx workers run as an unprivileged user: they must reach the cache, or
  # nginx proxies every request and the comparison is meaningless.
  chmod 755 "$work" "$d"
  chown -R nobody "$d/cache" 2>/dev/null || chmod 777 "$d/cache"
  render "$bench_dir/peers/nginx.conf" "$d/nginx.conf" DIR="$d" HTTP_PORT="$2" HTTPS_PORT="$3" \
    ISSUER="127.0.0.1:$4" WORKERS="$5" IDLE="$6" MAXCONN="$7" CERT="$work/cert.pem" KEY="$work/key.pem"
  "${srv[@]}" nginx -c "$d/nginx.conf" -p "$d" -e "$d/error.log" &
  pids+=($!); server_pids[$1]=$!
  wait_up "http://127.0.0.1:$2/" || { cat "$d/error.log" >&2; return 1; }
  # The master and its workers and cache manager; not the cache loader,
  # which exits a minute after the start.
  server_procs[$1]="${server_pids[$1]} $(pgrep -P "${server_pids[$1]}" -f 'worker process|cache manager' | tr '\n' ' ')"
}

# start_haproxy NAME HTTP HTTPS ISSUER THREADS IDLE MAXCONN
start_haproxy() {
  local d=$work/$1
  mkdir -p "$d"
  render "$bench_dir/peers/haproxy.cfg" "$d/haproxy.cfg" HTTP_PORT="$2" HTTPS_PORT="$3" \
    ISSUER="127.0.0.1:$4" WORKERS="$5" IDLE="$6" MAXCONN="$7" PEM="$work/tls.pem"
  haproxy -c -q -f "$d/haproxy.cfg" >&2 || return 1
  "${srv[@]}" haproxy -db -f "$d/haproxy.cfg" 2>>"$d/log" &
  pids+=($!); server_pids[$1]=$!
  wait_up "http://127.0.0.1:$2/" || { cat "$d/log" >&2; return 1; }
  server_procs[$1]=${server_pids[$1]}
}

# start_varnish NAME HTTP HTTPS ISSUER POOLS IDLE MAXCONN [varnishd args...]
# Varnish on HTTP, hitch (WORKERS = POOLS processes) on HTTPS in front of it,
# speaking PROXY v2 to Varnish's second listener (HTTP + 1).
start_varnish() {
  local name=$1 http=$2 https=$3 issuer=$4 pools=$5 idle=$6 maxconn=$7 d=$work/$1; shift 7
  rm -rf "$d"; mkdir -p "$d"
  render "$bench_dir/peers/varnish.vcl" "$d/varnish.vcl" ISSUER_PORT="$issuer" ISSUER="127.0.0.1:$issuer"
  render "$bench_dir/peers/hitch.conf" "$d/hitch.conf" HTTPS_PORT="$https" PROXY_PORT=$((http + 1)) \
    PEM="$work/tls.pem" WORKERS="$pools"
  # hitch will not run its workers as root.
  if [ "$(id -u)" = 0 ]; then printf 'user = "nobody"\ngroup = "%s"\n' "$(id -gn nobody)" >> "$d/hitch.conf"; fi
  # -j none: every process runs as the invoking user (no jail to set up for a
  # loopback benchmark). The shared-memory log cannot be switched off; it is
  # an in-memory ring written by every worker.
  "${srv[@]}" varnishd -F -j none -n "$d/varnish" -T none -f "$d/varnish.vcl" \
    -a "http=127.0.0.1:$http,HTTP" -a "proxy=127.0.0.1:$((http + 1)),PROXY" -s malloc,32m \
    -p feature=+http2 -p thread_pools="$pools" -p timeout_idle="$idle" "$@" >>"$d/log" 2>&1 &
  pids+=($!); server_pids[$name]=$!
  "${srv[@]}" hitch --config="$d/hitch.conf" >>"$d/hitch.log" 2>&1 &
  pids+=($!); server_pids[$name-hitch]=$!
  wait_up "http://127.0.0.1:$http/" || { cat "$d/log" >&2; return 1; }
  wait_up "https://127.0.0.1:$https/" || { cat "$d/hitch.log" >&2; return 1; }
  # Varnish's manager and its child; hitch's master and workers. NAME-http:
  # Varnish alone, what plain HTTP uses.
  local p=${server_pids[$name]} h=${server_pids[$name-hitch]}
  server_procs[$name-http]="$p $(pgrep -P "$p" | tr '\n' ' ')"
  server_procs[$name]="${server_procs[$name-http]} $h $(pgrep -P "$h" | tr '\n' ' ')"
}

# stop_servers: stop every server started so far and wait until they are gone.
stop_servers() {
  local n
  for n in "${!server_pids[@]}"; do kill "${server_pids[$n]}" 2>/dev/null || true; done
  for n in "${!server_pids[@]}"; do
    # Gone, or a zombie (exited, not yet waited for).
    for _ in $(seq 100); do
      [ "$(awk '{print $3}' /proc/"${server_pids[$n]}"/stat 2>/dev/null || echo Z)" = Z ] && break
      sleep 0.1
    done
    kill -9 "${server_pids[$n]}" 2>/dev/null || true
    wait "${server_pids[$n]}" 2>/dev/null || true
  done
  server_pids=(); server_procs=()
}

# mem_kib PID...: "RSS PSS" in KiB summed over the processes (PSS counts a
# page shared by N processes 1/N in each: no double counting for forked
# workers).
mem_kib() {
  local p; for p in "$@"; do
    awk '/^Rss:/ {r = $2} /^Pss:/ {s = $2} END {print r + 0, s + 0}' /proc/"$p"/smaps_rollup 2>/dev/null || true
  done | awk '{r += $1; s += $2} END {printf "%d %d\n", r, s}'
}
