"""Summarises bench/compare.sh's results: one line per scenario and server.

Input rows (tab-separated): round, scenario, server, req/s, p50, p99, and
the server's CPU time per request in microseconds (all its threads; nginx's
workers). req/s, latencies and CPU are medians over rounds; the ratios are
computed within each round (the servers of one round ran back to back and
shared its noise) and the median of those is quoted, with every round's
requests/s ratio to nginx shown.

"CPU vs nginx" is nginx's CPU time per request divided by the server's: how
many times more requests the server's CPUs could carry than nginx's. It is
what separates the servers when the load generator, not the server, is the
bottleneck (a new TLS handshake per request costs the client more than the
server).
"""

import collections
import statistics
import sys


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


# data[scenario][server][round] = (rps, p50, p99, cpu_us)
data = collections.defaultdict(lambda: collections.defaultdict(dict))
for line in open(sys.argv[1]):
    if line.strip():
        rnd, scen, name, rps, p50, p99, cpu = line.rstrip("\n").split("\t")
        data[scen][name][rnd] = (num(rps), ms(p50), ms(p99), num(cpu))


def ratios(scen, name, other, i=0, inverse=False):
    mine, theirs = data[scen][name], data[scen][other]
    out = []
    for r, v in sorted(mine.items()):
        if v[i] and r in theirs and theirs[r][i]:
            out.append(theirs[r][i] / v[i] if inverse else v[i] / theirs[r][i])
    return out


print(
    "| scenario | server | req/s | p50 ms | p99 ms | vs nginx | vs ceiling | CPU µs/req | CPU vs nginx "
    "| vs nginx, each round |"
)
print("|---|---|---|---|---|---|---|---|---|---|")
for scen in ["http-keepalive", "https-keepalive", "https-new-conn", "h2", "denied-path"]:
    for name in ["wif", "nginx", "ceiling"]:
        vals = list(data[scen][name].values())
        if not vals:
            continue
        rps, p50, p99, cpu = (med([v[i] for v in vals]) for i in range(4))
        vn = ratios(scen, name, "nginx")
        vc = med(ratios(scen, name, "ceiling"))
        each = " ".join(f"{x:.2f}" for x in vn) if name != "nginx" else ""
        print(
            f"| {scen} | {name} | {fmt(rps, '{:,.0f}')} | {fmt(p50)} | {fmt(p99)} "
            f"| {fmt(med(vn), '{:.2f}x')} | {fmt(vc and vc * 100, '{:.0f}%')} | {fmt(cpu, '{:.1f}')} "
            f"| {fmt(med(ratios(scen, name, 'nginx', 3, inverse=True)), '{:.2f}x')} | {each} |"
        )
