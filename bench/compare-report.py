"""Summarises bench/compare.sh's results, and checks each target.

    compare-report.py RESULTS.tsv [IDLE.tsv]

RESULTS rows (tab-separated): layout, round, scenario, server, req/s, p50,
p99, the server's CPU time per request in microseconds (all its threads and
processes), errors. req/s, latencies and CPU are medians over rounds. Ratios
are computed within each round (the servers of one round ran back to back
and shared its noise) and the median of those is quoted.

The best peer of a scenario and layout is the peer (nginx, HAProxy,
Varnish) with the highest median req/s; it is what wif-proxy is held to:
- req/s at least 1.3 times the best peer's (median of the per-round ratios);
- p99 latency at or below the best peer's (medians);
- req/s at least 90% of the ceiling's pinned, 85% shared;
and, from IDLE (bench/idle-rss.sh), memory (PSS) holding the idle TLS
connections at or below the least any peer needs. "wif" is wif-proxy with
its access log on (as deployed), "wif-nolog" with it off; the targets are
checked for both, wif first.

"CPU vs best peer" is the best peer's CPU time per request divided by the
server's: how many more requests the server's CPUs could carry. Where the
load generator, not the server, is the bottleneck (a new TLS handshake per
request costs the client more than the server) req/s are close for every
server, and this is the column that tells them apart.

"CPU use" is the CPU time the server got per second of the run (1.0 = one
CPU's worth). Pinned, a server that saturates its CPU shows close to 100%;
much less means the load generator was the bottleneck or, on a shared
machine, that other work took the CPU. Then req/s measure the share of the
CPU each server won -- a server with more busy threads wins more -- and CPU
time per request is the figure to compare.
"""

import collections
import statistics
import sys

PEERS = ["nginx", "haproxy", "varnish"]
WIFS = ["wif", "wif-nolog"]
ORDER = WIFS + PEERS + ["ceiling"]
SCENARIOS = ["http-keepalive", "https-keepalive", "https-new-conn", "h2", "denied-path"]
RPS_TARGET = 1.3
CEILING_TARGET = {"pinned": 0.90, "shared": 0.85}


def num(x):
    try:
        return float(x)
    except ValueError:
        return None


def ms(x):
    if not x or x == "-":
        return None
    for suf, f in (("us", 0.001), ("ms", 1.0), ("s", 1000.0)):
        if x.endswith(suf):
            return float(x[: -len(suf)]) * f
    return None


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fmt(x, spec="{:.2f}"):
    return spec.format(x) if x is not None else "-"


def verdict(ok):
    return "met" if ok else "**not met**"


# data[layout][scenario][server][round] = (rps, p50, p99, cpu_us, errors)
data = collections.defaultdict(lambda: collections.defaultdict(lambda: collections.defaultdict(dict)))
for line in open(sys.argv[1]):
    if line.strip():
        layout, rnd, scen, name, rps, p50, p99, cpu, errs = line.rstrip("\n").split("\t")
        data[layout][scen][name][rnd] = (num(rps), ms(p50), ms(p99), num(cpu), int(errs or 0))


def ratios(d, name, other, i=0, inverse=False):
    mine, theirs = d[name], d[other]
    out = []
    for r, v in sorted(mine.items(), key=lambda kv: int(kv[0])):
        if v[i] and r in theirs and theirs[r][i]:
            out.append(theirs[r][i] / v[i] if inverse else v[i] / theirs[r][i])
    return out


def medians(d, name):
    vals = list(d[name].values())
    return [med([v[i] for v in vals]) for i in range(4)] + [sum(v[4] for v in vals)]


def best_peer(d):
    present = [p for p in PEERS if d.get(p)]
    return max(present, key=lambda p: medians(d, p)[0] or 0) if present else None


targets = []  # (layout, scenario, server, best, rps ratio, rounds, p99 pair, ceiling ratio)
for layout in data:
    print(f"\n### {layout}\n")
    print(
        "| scenario | server | req/s | p50 ms | p99 ms | CPU µs/req | CPU use | vs best peer | CPU vs best peer "
        "| vs ceiling | errors |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for scen in SCENARIOS:
        d = data[layout][scen]
        best = best_peer(d)
        for name in ORDER:
            if not d.get(name):
                continue
            rps, p50, p99, cpu, errs = medians(d, name)
            # CPUs' worth of time the server got: well under its CPUs when
            # the load generator is the bottleneck, or other work on the
            # machine takes the CPU.
            use = med([v[0] * v[3] / 1e6 for v in d[name].values() if v[0] and v[3]])
            vb = med(ratios(d, name, best)) if best else None
            cb = med(ratios(d, name, best, 3, inverse=True)) if best else None
            vc = med(ratios(d, name, "ceiling")) if d.get("ceiling") else None
            label = f"{name} (best peer)" if name == best else name
            print(
                f"| {scen} | {label} | {fmt(rps, '{:,.0f}')} | {fmt(p50)} | {fmt(p99)} | {fmt(cpu, '{:.1f}')} "
                f"| {fmt(use, '{:.0%}')} | {fmt(vb, '{:.2f}x')} | {fmt(cb, '{:.2f}x')} | {fmt(vc and vc * 100, '{:.0f}%')} | {errs} |"
            )
            if name in WIFS and best:
                _, _, bp99, _, _ = medians(d, best)
                targets.append((layout, scen, name, best, vb, ratios(d, name, best), (p99, bp99), vc))

# Over HTTP/1.1 keep-alive the ceiling keeps its CPU busy (pinned), or most
# of one CPU with the load generator on the other (shared), unless something
# else takes the CPUs: then every req/s figure is a CPU share.
busy = []
for layout in data:
    d = data[layout]["http-keepalive"]
    uses = [v[0] * v[3] / 1e6 for v in d.get("ceiling", {}).values() if v[0] and v[3]]
    if uses and med(uses) < 0.8:
        busy.append(f"{layout}: the ceiling got {med(uses):.0%} of a CPU")
if busy:
    print(
        "\n**The machine was busy with other work** ("
        + "; ".join(busy)
        + " over HTTP/1.1 keep-alive, where it keeps a CPU busy when nothing else runs). "
        "req/s then measure the share of the CPU each server won, which favours servers with more "
        "busy threads; compare CPU time per request instead, and measure again on a quiet machine."
    )

print("\n### Targets\n")
print(
    "wif-proxy against the best peer of each scenario (highest median req/s) and the ceiling: "
    f"req/s ≥ {RPS_TARGET:.1f}× the best peer's, p99 ≤ the best peer's, req/s ≥ "
    + ", ".join(f"{v:.0%} of the ceiling {k}" for k, v in CEILING_TARGET.items())
    + ".\n"
)
print("| layout | scenario | server | best peer | req/s vs best peer | p99 ms vs best peer's | vs ceiling | vs best peer, each round |")
print("|---|---|---|---|---|---|---|---|")
met = collections.Counter()
total = collections.Counter()
for layout, scen, name, best, vb, each, (p99, bp99), vc in sorted(
    targets, key=lambda t: (t[2] != "wif", t[2], list(data).index(t[0]), SCENARIOS.index(t[1]))
):
    ok_rps = vb is not None and vb >= RPS_TARGET
    ok_p99 = p99 is not None and bp99 is not None and p99 <= bp99
    ok_ceil = vc is not None and vc >= CEILING_TARGET.get(layout, 0.9)
    for ok in (ok_rps, ok_p99, ok_ceil):
        met[name] += ok
        total[name] += 1
    print(
        f"| {layout} | {scen} | {name} | {best} | {fmt(vb, '{:.2f}x')} {verdict(ok_rps)} "
        f"| {fmt(p99)} vs {fmt(bp99)} {verdict(ok_p99)} | {fmt(vc and vc * 100, '{:.0f}%')} {verdict(ok_ceil)} "
        f"| {' '.join(f'{x:.2f}' for x in each)} |"
    )

idle = []
if len(sys.argv) > 2:
    for line in open(sys.argv[2]):
        if line.strip():
            idle.append(line.rstrip("\n").split("\t"))
if idle:
    print("\n### Memory holding idle connections (bench/idle-rss.sh)\n")
    print("| mode | server | connections | answered 200 | still open | PSS before | PSS holding them | RSS holding them | peak RSS |")
    print("|---|---|---|---|---|---|---|---|---|")
    mib = lambda k: f"{int(k) / 1024:.1f} MiB"  # noqa: E731
    for mode, name, n, ok, still, bpss, pss, brss, rss, hwm in idle:
        print(f"| {mode} | {name} | {n} | {ok} | {still} | {mib(bpss)} | {mib(pss)} | {mib(rss)} | {mib(hwm)} |")
    for mode in sorted({r[0] for r in idle}):
        rows = {r[1]: r for r in idle if r[0] == mode}
        # A server that dropped connections or did not answer holds less for
        # the wrong reason: it does not count as the best.
        full = {k: r for k, r in rows.items() if r[3] == r[2] and r[4] == r[2]}
        peers = {k: int(r[6]) for k, r in full.items() if k in PEERS}
        if "wif" in rows and peers:
            best = min(peers, key=peers.get)
            ok = "wif" in full and int(rows["wif"][6]) <= peers[best]
            met["wif"] += ok
            total["wif"] += 1
            print(
                f"\nMemory target ({mode}, {rows['wif'][2]} idle connections): wif-proxy {mib(rows['wif'][6])} PSS "
                f"against the best peer, {best}, {mib(peers[best])}: {verdict(ok)}."
            )

print()
for name in WIFS:
    if total[name]:
        print(f"Targets met by {name}: {met[name]} of {total[name]}.")
