#!/usr/bin/env bash
# Side-by-side: wif-proxy (access log on, the production default, and off),
# the equivalent allowlisting caches a user would build from nginx, HAProxy
# and Varnish (+ hitch for TLS) with their logs off (bench/peers/), and a bare
# hyper server returning the same bytes (the ceiling), under the same load
# generators, interleaved and repeated, in two CPU layouts. Before anything
# is measured, bench/check-equivalence.py checks that every server serves the
# same documents and refuses the same requests. Then the memory each holds
# with 10,000 idle TLS connections (bench/idle-rss.sh), and a report of every
# target (bench/compare-report.py). Loopback only; bounded in time.
#
# Usage: bench/compare.sh [seconds-per-run] [rounds]      (default 2 s, 7 rounds)
#   LAYOUTS="pinned shared"  both by default, one after the other:
#       pinned: the servers on SERVER_CPUS, the load generators on LOAD_CPUS
#               (default: the first half of the CPUs and the rest);
#       shared: every process on every CPU.
#     Every server gets one worker (process, thread or pool) per CPU it may
#     use; the tokio runtimes size themselves to the affinity mask.
#   WIF_LOG=both|on|off  wif-proxy with its access log on (as deployed), off,
#                        or both as two servers (default: both)
#   PEERS="nginx haproxy varnish"  the peers to run (default: all three)
#   WIF_BIN=... CEILING_BIN=...    measure these binaries instead of building
#   IDLE_N=10000   idle TLS connections for the memory comparison; 0 skips it
#   KEEP=dir       keep the raw results (results.tsv, idle.tsv) in dir
# Needs: wrk, h2load (nghttp2-client), nginx (nginx-light), haproxy, varnish,
# hitch, curl, openssl, python3, taskset (util-linux).
set -Eeuo pipefail
trap 'echo "compare.sh: line $LINENO failed: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
secs=${1:-2}
rounds=${2:-7}
for t in wrk h2load nginx haproxy varnishd hitch curl openssl python3 taskset; do
  command -v $t >/dev/null || { echo "needs $t" >&2; exit 1; }
done
ncpu=$(nproc)
layouts=${LAYOUTS:-$([ "$ncpu" -ge 2 ] && echo "pinned shared" || echo shared)}
case ${WIF_LOG:-both} in
  both) wifs=(wif wif-nolog) ;;
  on) wifs=(wif) ;;
  off) wifs=(wif-nolog) ;;
  *) echo "WIF_LOG is both, on or off" >&2; exit 1 ;;
esac
read -r -a peers <<<"${PEERS:-nginx haproxy varnish}"
servers=("${wifs[@]}" "${peers[@]}" ceiling)
nserv=${#servers[@]}
scenarios=(http-keepalive https-keepalive https-new-conn h2 denied-path)

. bench/lib.sh
build_bins ceiling
work=$(mktemp -d)
cleanup() {
  stop_servers
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp "$work"/*.tsv "$KEEP"/ 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# The issuer stand-in, one port per server, so that what each asked is known.
make_issuer_docs "$work/issuer" https://wif.example.com
make_cert "$work"
declare -A issuer_port=([wif]=19200 [wif-nolog]=19201 [nginx]=19202 [haproxy]=19203 [varnish]=19204)
python3 bench/issuer.py "$work/issuer" "$work/issuer.log" 19200 19201 19202 19203 19204 & pids+=($!)
path=/v1/identity/oidc/plugins/.well-known/keys
wait_http http://127.0.0.1:19200$path
curl -s http://127.0.0.1:19200$path > "$work/body.json"

declare -A url=(
  [wif-http]=http://127.0.0.1:19080 [wif-https]=https://127.0.0.1:19443
  [wif-nolog-http]=http://127.0.0.1:19082 [wif-nolog-https]=https://127.0.0.1:19445
  [nginx-http]=http://127.0.0.1:19180 [nginx-https]=https://127.0.0.1:19543
  [haproxy-http]=http://127.0.0.1:19480 [haproxy-https]=https://127.0.0.1:19843
  [varnish-http]=http://127.0.0.1:19380 [varnish-https]=https://127.0.0.1:19743
  [ceiling-http]=http://127.0.0.1:19280 [ceiling-https]=https://127.0.0.1:19643
)
declare -A procs=()

# start_all: every server for the current layout ($srv, $server_ncpu).
start_all() {
  local s n=$server_ncpu
  : > "$work/issuer.log"
  for s in "${servers[@]}"; do
    case $s in
      wif)
        start_wif wif 19080 19081 19200 true 60 4000
        start_wif wif-tls 19443 19444 19200 true 60 4000 tls ;;
      wif-nolog)
        start_wif wif-nolog 19082 19083 19201 false 60 4000
        start_wif wif-nolog-tls 19445 19446 19201 false 60 4000 tls ;;
      nginx) start_nginx nginx 19180 19543 19202 "$n" 60 4000 ;;
      haproxy) start_haproxy haproxy 19480 19843 19203 "$n" 60 4000 ;;
      # Enough threads from the start for 64 connections with 10 h2 streams
      # each (a thread per stream and per connection): none is created
      # while measuring.
      varnish) start_varnish varnish 19380 19743 19204 "$n" 60 4000 -p thread_pool_min=$((800 / n)) ;;
      ceiling)
        start_ceiling ceiling 19280 "$work/body.json"
        start_ceiling ceiling-tls 19643 "$work/body.json" tls ;;
      *) echo "unknown server $s" >&2; return 1 ;;
    esac
    case $s in
      wif | wif-nolog | ceiling) procs[$s-http]=${server_procs[$s]}; procs[$s-https]=${server_procs[$s-tls]} ;;
      varnish) procs[$s-http]=${server_procs[$s-http]}; procs[$s-https]=${server_procs[$s]} ;;
      *) procs[$s-http]=${server_procs[$s]}; procs[$s-https]=${server_procs[$s]} ;;
    esac
  done
}

# cpu_ns PID...: nanoseconds on a CPU so far, all threads of the processes.
cpu_ns() {
  local p; for p in "$@"; do cat /proc/"$p"/task/*/schedstat 2>/dev/null || true; done | awk '{s += $1} END {printf "%.0f", s}'
}
results="$work/results.tsv"
: > "$results"
# record LAYOUT ROUND SCENARIO NAME REQUESTS RPS P50 P99 CPU_NS ERRORS
record() {
  local us; us=$(awk -v n="$5" -v c="$9" 'BEGIN {if (n > 0) printf "%.1f", c / n / 1000; else print "-"}')
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$6" "$7" "$8" "$us" "${10}" >> "$results"
}
run_wrk() { # layout round name scenario url procs extra...
  local layout=$1 round=$2 name=$3 scenario=$4 u=$5 ps=$6; shift 6
  local before; before=$(cpu_ns $ps)
  local out; out=$("${load[@]}" wrk -t1 -c64 -d"${secs}s" --latency "$@" "$u" 2>&1) || echo "wrk failed ($name, $scenario): $out" >&2
  local cpu=$(($(cpu_ns $ps) - before))
  # Errors: failed sockets, and answers other than 2xx/3xx where a document
  # was asked for.
  local errs; errs=$(awk -v denied="$([ "$scenario" = denied-path ] && echo 1 || echo 0)" '
    /Socket errors/ {gsub(",", ""); e += $4 + $6 + $8 + $10}
    /Non-2xx or 3xx/ && !denied {e += $5}
    END {print e + 0}' <<<"$out")
  record "$layout" "$round" "$scenario" "$name" "$(awk '/requests in/ {print $1}' <<<"$out")" \
    "$(awk '/Requests\/sec/ {print $2}' <<<"$out")" "$(awk '$1=="50%" {print $2}' <<<"$out")" \
    "$(awk '$1=="99%" {print $2}' <<<"$out")" "$cpu" "$errs"
}
run_h2() { # layout round name url procs
  local before; before=$(cpu_ns $5)
  local out; out=$("${load[@]}" h2load -c64 -m10 -D "$secs" --log-file="$work/h2.log" "$4$path" 2>&1) ||
    echo "h2load failed ($3): $out" >&2
  local cpu=$(($(cpu_ns $5) - before))
  # Percentiles from h2load's per-request log (its third column: µs).
  local p; p=$(cut -f3 "$work/h2.log" | sort -n | awk '{v[NR] = $1} END {
    if (NR) printf "%.2fms %.2fms", v[int(NR * 0.5) + 1] / 1000, v[int(NR * 0.99) + 1] / 1000; else print "- -"}')
  record "$1" "$2" h2 "$3" "$(awk '/^requests:/ {print $8}' <<<"$out")" \
    "$(awk '/^finished in/ {gsub(",","",$4); print $4}' <<<"$out")" "${p% *}" "${p#* }" "$cpu" \
    "$(awk '/^requests:/ {e += $10 + $12} /^status codes:/ {e += $7 + $9} END {print e + 0}' <<<"$out")"
}
run() { # layout round scenario server
  local u=${url[$4-http]} us=${url[$4-https]} p=${procs[$4-http]} ps=${procs[$4-https]}
  case $3 in
    http-keepalive) run_wrk "$1" "$2" "$4" "$3" "$u$path" "$p" ;;
    https-keepalive) run_wrk "$1" "$2" "$4" "$3" "$us$path" "$ps" ;;
    https-new-conn) run_wrk "$1" "$2" "$4" "$3" "$us$path" "$ps" -H "Connection: close" ;;
    h2) run_h2 "$1" "$2" "$4" "$us" "$ps" ;;
    denied-path) run_wrk "$1" "$2" "$4" "$3" "$u/v1/sys/health" "$p" ;;
  esac
  # The access log would grow by gigabytes: emptied after every run (it is
  # opened for appending, so wif-proxy keeps writing at the new end).
  if [ "$4" = wif ]; then : > "$work/wif/log"; : > "$work/wif-tls/log"; fi
}

echo "wif-proxy: $wif_bin ($(sha256sum "$wif_bin" | cut -c1-12)), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?'); $(date -u +%FT%TZ)"
echo "peers: $(nginx -v 2>&1 | sed 's/.*: //'), $(haproxy -v | sed -n '1s/^\(HAProxy version [^ ]*\).*/\1/p'), $(varnishd -V 2>&1 | sed -n 1p | sed 's/.*(\(varnish-[0-9.]*\).*/\1/'), $(hitch --version 2>&1 | sed -n 1p)"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
for layout in $layouts; do
  if [ "$layout" = pinned ]; then
    half=$((ncpu / 2))
    server_cpus=${SERVER_CPUS:-0-$((half - 1))}
    load_cpus=${LOAD_CPUS:-$half-$((ncpu - 1))}
  else
    server_cpus=0-$((ncpu - 1))
    load_cpus=0-$((ncpu - 1))
  fi
  # Arrays, not functions: a backgrounded function runs in a subshell, and $!
  # would name the subshell instead of the server.
  srv=(taskset -c "$server_cpus")
  load=(taskset -c "$load_cpus")
  server_ncpu=$(taskset -c "$server_cpus" nproc)
  echo
  echo "== $layout: servers on CPUs $server_cpus ($server_ncpu workers each), load generators on CPUs $load_cpus"
  start_all
  spec="["
  for s in "${servers[@]}"; do
    spec+="{\"name\": \"$s\", \"http\": \"${url[$s-http]}\", \"https\": \"${url[$s-https]}\", "
    spec+="\"issuer_port\": ${issuer_port[$s]:-null}, \"ceiling\": $([ "$s" = ceiling ] && echo true || echo false)},"
  done
  echo "${spec%,}]" > "$work/spec.json"
  python3 bench/check-equivalence.py "$work/issuer" "$work/issuer.log" "$work/spec.json"
  # Warm-up, not recorded: allocators, thread pools, TLS session state.
  for s in "${servers[@]}"; do
    "${load[@]}" wrk -t1 -c64 -d1s "${url[$s-http]}$path" >/dev/null 2>&1
    "${load[@]}" h2load -c64 -m10 -D 1 "${url[$s-https]}$path" >/dev/null 2>&1
  done
  # The access log is on where it should be, and only there.
  if [ -f "$work/wif/log" ]; then
    grep -q "$path" "$work/wif/log" || { echo "wif-proxy wrote no access log: $(tail -3 "$work/wif/log")" >&2; exit 1; }
    : > "$work/wif/log"; : > "$work/wif-tls/log"
  fi
  if [ -f "$work/wif-nolog/log" ] && grep -q "$path" "$work/wif-nolog/log"; then
    echo "wif-proxy wrote an access log with access = false" >&2; exit 1
  fi
  before_rounds=$(wc -l < "$work/issuer.log")
  # Paired rounds: for each scenario every server runs back to back, in an
  # order that rotates every round, so that a burst of the machine's noise
  # (seconds to minutes) hits the servers being compared alike; ratios are
  # taken within each round.
  for r in $(seq "$rounds"); do
    for scenario in "${scenarios[@]}"; do
      for i in $(seq 0 $((nserv - 1))); do run "$layout" "$r" "$scenario" "${servers[$(((r + i) % nserv))]}"; done
    done
  done
  # The documents came from the cache: the issuer was asked for refreshes
  # only. A server that did not cache would ask once per request; HAProxy's
  # cache, which does not collapse concurrent misses, asks once per request
  # waiting when an entry expires (up to 64 here). The run stops above 1% of
  # the documents served.
  tail -n +$((before_rounds + 1)) "$work/issuer.log" > "$work/asked.log"
  line="issuer requests while measuring:"
  for s in "${servers[@]}"; do
    [ -n "${issuer_port[$s]:-}" ] || continue
    c=$(grep -c "\"port\": ${issuer_port[$s]}," "$work/asked.log" || true)
    served=$(awk -F'\t' -v l="$layout" -v s="$s" -v t="$secs" \
      '$1 == l && $4 == s && $3 != "denied-path" {n += $5 * t} END {printf "%d", n}' "$results")
    line+=" $s $c (of $served documents served);"
    [ "$c" -le $((served / 100)) ] ||
      { echo "$s asked the issuer $c times for $served documents served: it is not caching" >&2; exit 1; }
  done
  echo "${line%;}"
  line="peak RSS ($layout):"
  for s in "${servers[@]}"; do
    ps=$(echo ${procs[$s-http]} ${procs[$s-https]} | tr ' ' '\n' | sort -u)
    kib=0; for p in $ps; do kib=$((kib + $(awk '/VmHWM/ {print $2}' /proc/"$p"/status 2>/dev/null || echo 0))); done
    line+=" $s $((kib / 1024)) MiB;"
  done
  echo "${line%;} (plain and TLS processes together; multi-process servers summed)"
  stop_servers
done

idle="$work/idle.tsv"
: > "$idle"
if [ "${IDLE_N:-10000}" -gt 0 ]; then
  echo
  echo "== memory holding ${IDLE_N:-10000} idle TLS connections (bench/idle-rss.sh)"
  idle_servers=(wif "${peers[@]}")
  WIF_BIN=$wif_bin CEILING_BIN=$ceiling_bin RESULTS="$idle" MODES=tls SERVERS="${idle_servers[*]}" \
    bench/idle-rss.sh "${IDLE_N:-10000}"
fi
echo
echo "medians of $rounds rounds, ${secs} s each; wrk -t1 -c64 (h2: h2load -c64 -m10); layouts: $layouts"
python3 bench/compare-report.py "$results" "$idle"
