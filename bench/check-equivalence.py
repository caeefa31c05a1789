"""Checks, before anything is measured, that the servers bench/compare.sh is
about to compare do the same job (a failure stops the run):

- every server answers each document with the issuer's bytes and wif-proxy's
  Content-Type, over HTTP/1.1, HTTPS and h2 (the ceiling: the JWKS);
- no answer carries an issuer header (`Set-Cookie`, `X-Vault-*`) or the
  issuer's internal address;
- other targets (another path, a query, an encoding) are refused locally
  (404), and so are other methods (405);
- once a document is cached, requests carrying client credentials are
  answered from the cache too;
- the issuer received only GETs of the exact document targets, and none of
  the credentials a client sent (`X-Vault-*`, `Authorization`, `Cookie`). The
  peers see their first requests cold: these are the ones that fetch. Other
  client headers that reached the issuer are listed (stock VCL can remove
  headers only by name). ISSUER_LOG must hold only this run's requests.

    check-equivalence.py ISSUER_DIR ISSUER_LOG SPEC.json
SPEC: [{"name", "http", "https", "issuer_port" (or null), "ceiling" (bool)}],
wif-proxy first (the reference).
"""

import json
import os
import subprocess
import sys
import tempfile

DOCS = [
    "/v1/identity/oidc/plugins/.well-known/keys",
    "/v1/identity/oidc/plugins/.well-known/openid-configuration",
]
CREDENTIALS = {
    "X-Vault-Token": "smuggled-token",
    "X-Vault-Namespace": "smuggled-namespace",
    "Authorization": "Bearer smuggled-bearer",
    "Cookie": "session=smuggled-cookie",
}
OTHER = {"X-Forwarded-For": "203.0.113.9", "X-Client-Probe": "smuggled-probe"}
LEAKS = ("set-cookie", "x-vault-")
INTERNAL = ("10.0.12.7", "vault-2")

issuer_dir, issuer_log, spec_path = sys.argv[1:4]
spec = json.load(open(spec_path))
tmp = tempfile.mkdtemp()
failures = []


def fetch(url, proto="--http1.1", method=None, headers=None, data=None):
    """(status, content-type, [(name, value)], body) by curl."""
    hdr, body = os.path.join(tmp, "h"), os.path.join(tmp, "b")
    for f in (hdr, body):
        if os.path.exists(f):
            os.remove(f)
    cmd = ["curl", "-sk", proto, "--max-time", "10", "-D", hdr, "-o", body, "-w", "%{http_code}"]
    if method == "HEAD":
        cmd.append("-I")
    elif method:
        cmd += ["-X", method]
    if data is not None:
        cmd += ["--data-binary", data]
    for k, v in (headers or {}).items():
        cmd += ["-H", f"{k}: {v}"]
    out = subprocess.run(cmd + [url], capture_output=True, text=True)
    status = int(out.stdout or 0)
    pairs = []
    if os.path.exists(hdr):
        for line in open(hdr, encoding="latin-1").read().splitlines():
            if ":" in line and not line.startswith("HTTP/"):
                k, v = line.split(":", 1)
                pairs.append((k.strip().lower(), v.strip()))
    ctype = next((v for k, v in pairs if k == "content-type"), None)
    return status, ctype, pairs, open(body, "rb").read() if os.path.exists(body) else b""


def fail(msg):
    failures.append(msg)
    print(f"  FAIL {msg}")


def issuer_requests(port):
    """How many requests the issuer has recorded from the server on PORT."""
    if port is None or not os.path.exists(issuer_log):
        return 0
    return sum(f'"port": {port},' in line for line in open(issuer_log))


def leak_check(name, where, pairs):
    for k, v in pairs:
        if k.startswith(LEAKS) or any(s in v for s in INTERNAL):
            fail(f"{name} {where}: issuer header passed on: {k}: {v}")


expected = {d: open(issuer_dir + d, "rb").read() for d in DOCS}
reference_ctype = {}
reference_refusal = {}
for s in spec:
    name = s["name"]
    docs = DOCS[:1] if s.get("ceiling") else DOCS
    # Cold: the peers' first requests are the ones that reach the issuer, so
    # they carry everything a client could try to smuggle.
    smuggle = dict(CREDENTIALS, **OTHER)
    status, _, pairs, _ = fetch(s["http"] + docs[0], method="HEAD", headers=smuggle)
    if status != 200:
        fail(f"{name}: HEAD {docs[0]} answered {status}")
    leak_check(name, "HEAD", pairs)
    for base, protos in ((s["http"], ["--http1.1"]), (s["https"], ["--http1.1", "--http2"])):
        for proto in protos:
            for d in docs:
                status, ctype, pairs, body = fetch(base + d, proto, headers=smuggle)
                where = f"{base}{d} {proto[2:]}"
                leak_check(name, where, pairs)
                if status != 200:
                    fail(f"{name} {where}: status {status}")
                    continue
                if body != expected[d]:
                    fail(f"{name} {where}: body differs from the issuer's ({len(body)} bytes, {len(expected[d])} expected)")
                if name == spec[0]["name"]:
                    reference_ctype.setdefault(d, ctype)
                if ctype != reference_ctype.get(d):
                    fail(f"{name} {where}: Content-Type {ctype!r}, wif-proxy's is {reference_ctype.get(d)!r}")
    if s.get("ceiling"):
        continue
    # Warm: what a client sends does not take it past the cache (HAProxy's
    # cache, for one, skips requests with an Authorization header).
    before = issuer_requests(s.get("issuer_port"))
    for proto in ("--http1.1", "--http2"):
        for d in docs:
            fetch((s["https"] if proto == "--http2" else s["http"]) + d, proto, headers=smuggle)
    if issuer_requests(s.get("issuer_port")) != before:
        fail(f"{name}: requests with client credentials went past the cache to the issuer")
    refused = [
        ("GET", "/v1/sys/health"),
        ("GET", docs[0] + "?x=1"),
        ("GET", docs[0].replace("keys", "%6beys")),
        ("GET", docs[0].replace("/keys", "//keys")),
        ("POST", docs[0]),
        ("DELETE", docs[0]),
    ]
    answers = []
    for method, target in refused:
        status, _, pairs, _ = fetch(
            s["http"] + target, method=method, headers=smuggle, data="x=1" if method == "POST" else None
        )
        leak_check(name, f"{method} {target}", pairs)
        if not 400 <= status < 500:
            fail(f"{name}: {method} {target} answered {status}, not refused")
        reference_refusal.setdefault((method, target), status)
        if status != reference_refusal[(method, target)]:
            answers.append(f"{method} {target} {status} (wif-proxy {reference_refusal[(method, target)]})")
    differs = f" (other statuses than wif-proxy's: {'; '.join(answers)})" if answers else ""
    print(f"  {name}: documents byte-identical over HTTP/1.1, HTTPS and h2; other targets and methods refused{differs}")

# What each server asked the issuer, from the issuer's own record.
seen = {}
with open(issuer_log) as f:
    for line in f:
        r = json.loads(line)
        seen.setdefault(r["port"], []).append(r)
for s in spec:
    port = s.get("issuer_port")
    if port is None:
        continue
    reqs = seen.get(port, [])
    passed_on = set()
    for r in reqs:
        if r["method"] != "GET" or r["target"] not in DOCS:
            fail(f"{s['name']}: the issuer received {r['method']} {r['target']}")
        for k, v in r["headers"]:
            if any(x in v for x in CREDENTIALS.values()):
                fail(f"{s['name']}: the issuer received the client's {k}")
            elif any(x in v for x in OTHER.values()):
                passed_on.add(k)
    note = f"; client headers passed on: {', '.join(sorted(passed_on))}" if passed_on else ""
    if passed_on and s["name"].startswith("wif"):
        fail(f"{s['name']}: client headers reached the issuer: {', '.join(sorted(passed_on))}")
    print(f"  {s['name']}: the issuer received {len(reqs)} request(s), all GETs of the documents{note}")

if failures:
    print(f"equivalence check FAILED ({len(failures)})")
    sys.exit(1)
print("equivalence check passed")
