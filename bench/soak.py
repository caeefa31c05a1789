#!/usr/bin/env python3
"""Load-and-fault soak: mixed traffic against the release binary while the
issuer is sealed, stopped, restarted and made slow. Loopback only.

    bench/soak.sh [seconds]      (default 180; builds the binary first)

Traffic, all at once for the whole run:
  - legitimate: 4 addresses (127.0.0.2-5) fetching discovery + JWKS ~20/s each
  - a flooder (127.0.0.9) on 4 pipelining connections, as fast as it can
  - 20 slow clients (127.0.0.10) trickling a request head, one byte per 0.5 s
  - hostile requests (127.0.0.11): other paths, traversal, queries, methods,
    absolute-form, smuggled headers and tokens
Issuer phases (fractions of the run): ok, sealed (503), stopped, restarted,
slow (beyond upstream_timeout), ok.

Checks and report:
  - every legitimate fetch is a 200 with a valid document (the goal: 100%)
  - the issuer received only GETs of the two allowlisted paths, no query,
    only the proxy's fixed headers; how often (the cache's refresh rate)
  - the proxy's RSS sampled every 5 s (flat, not growing)
Exit status 1 if a check fails.
"""
import asyncio, json, os, random, signal, subprocess, sys, time

DURATION = float(sys.argv[1]) if len(sys.argv) > 1 else 180
BIN, WORK = sys.argv[2], sys.argv[3]
PROXY, ADMIN, ISSUER = 18680, 18681, 18600
DISC = "/v1/identity/oidc/plugins/.well-known/openid-configuration"
KEYS = "/v1/identity/oidc/plugins/.well-known/keys"
MODE_FILE = os.path.join(WORK, "issuer-mode")
ISSUER_LOG = os.path.join(WORK, "issuer-requests.jsonl")

ISSUER_CODE = r'''
import asyncio, json, sys
mode_file, log_file, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
n = "sXchDaQebHnPiGvyDOAT4saGEUetSyo9MKLOoWFsueri23bOdgWp4Dy1WlUzewbgBHod5pcM9H95GQRV3JDXboIRROSBigeC5yjU1hGzHHyXss8UDprecbAYxknTcQkhslANGRUZmdTOQ5qTRsLAt6BTYuyvVRdhS8exSZEy_c4gs_7svlJJQ4H9_NxsiIoLwAEk7-Q3UXERGYw_75IDrGA84-lA_-Ct4eTlXHBIY2EaV7t7LjJaynVJCpkv4LKjTTAumiGUIuQhrNhZLuF_RJLqHpM2kgWFLU7-VTdL1VbC2tejvcI2BlMkEpk1BzBZI0KQB0GaDWFLN-aEAw3vRw"
iss = "http://127.0.0.1:18680/v1/identity/oidc/plugins"
docs = {
  "/v1/identity/oidc/plugins/.well-known/keys": json.dumps({"keys": [{"use": "sig", "kty": "RSA", "kid": "k1", "alg": "RS256", "n": n, "e": "AQAB"}]}),
  "/v1/identity/oidc/plugins/.well-known/openid-configuration": json.dumps({"issuer": iss, "jwks_uri": iss + "/.well-known/keys", "response_types_supported": ["id_token"], "subject_types_supported": ["public"], "id_token_signing_alg_values_supported": ["RS256"]}),
}
log = open(log_file, "a", buffering=1)
async def handle(r, w):
    try:
        while True:
            head = await r.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            names = sorted(l.split(":", 1)[0].lower() for l in lines[1:] if l)
            log.write(json.dumps({"t": __import__("time").time(), "method": method, "target": target, "headers": names}) + "\n")
            mode = open(mode_file).read().strip()
            if mode == "slow":
                await asyncio.sleep(3)
            if mode == "sealed":
                body, status = '{"errors":["Vault is sealed"]}', "503 Service Unavailable"
            elif target in docs:
                body, status = docs[target], "200 OK"
            else:
                body, status = '{"errors":[]}', "404 Not Found"
            w.write(f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nCache-Control: max-age=5\r\nContent-Length: {len(body)}\r\n\r\n{body}".encode())
            await w.drain()
    except Exception:
        w.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", port, reuse_address=True)
    async with server:
        await server.serve_forever()
asyncio.run(main())
'''


def set_mode(m):
    with open(MODE_FILE, "w") as f:
        f.write(m)


def start_issuer():
    return subprocess.Popen([sys.executable, "-c", ISSUER_CODE, MODE_FILE, ISSUER_LOG, str(ISSUER)])


def rss_mib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


async def read_response(r):
    head = await r.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.decode("latin-1").split("\r\n")[1:]:
        if line.lower().startswith("content-length:"):
            length = int(line.split(":")[1])
    body = await r.readexactly(length) if length else b""
    closes = b"connection: close" in head.lower()
    return status, body, closes


stats = {"legit_ok": 0, "legit_fail": 0, "legit_fail_why": {}, "flood": {}, "hostile": {}, "slow_cut": 0}
stop = False


async def legit(source):
    r = w = None
    while not stop:
        for path in (DISC, KEYS):
            try:
                if w is None:
                    r, w = await asyncio.open_connection("127.0.0.1", PROXY, local_addr=(source, 0))
                w.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: soak\r\n\r\n".encode())
                status, body, closes = await asyncio.wait_for(read_response(r), 10)
                doc = json.loads(body) if status == 200 else {}
                if status == 200 and ("keys" in doc or "issuer" in doc):
                    stats["legit_ok"] += 1
                else:
                    stats["legit_fail"] += 1
                    why = stats["legit_fail_why"]
                    why[str(status)] = why.get(str(status), 0) + 1
                if closes:
                    w.close()
                    w = None
            except Exception as e:
                stats["legit_fail"] += 1
                why = stats["legit_fail_why"]
                why[type(e).__name__] = why.get(type(e).__name__, 0) + 1
                if w:
                    w.close()
                w = None
        await asyncio.sleep(0.1)


async def flood():
    req = f"GET {KEYS} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * 32
    while not stop:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", PROXY, local_addr=("127.0.0.9", 0))
            while not stop:
                w.write(req)
                for _ in range(32):
                    status, _, _ = await asyncio.wait_for(read_response(r), 10)
                    stats["flood"][status] = stats["flood"].get(status, 0) + 1
        except Exception:
            await asyncio.sleep(0.05)


async def slow_client():
    while not stop:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", PROXY, local_addr=("127.0.0.10", 0))
            for b in f"GET {KEYS} HTTP/1.1\r\nHost: x\r\nX-Padding: {'a' * 200}\r\n\r\n".encode():
                w.write(bytes([b]))
                await w.drain()
                if r.at_eof():
                    break
                await asyncio.sleep(0.5)
            data = await asyncio.wait_for(r.read(), 5)
            if data.startswith(b"HTTP/1.1 200"):
                raise RuntimeError("a slow client was served")
            stats["slow_cut"] += 1
            w.close()
        except (ConnectionError, asyncio.TimeoutError, OSError):
            stats["slow_cut"] += 1
        await asyncio.sleep(0.1)


HOSTILE = [
    "GET /v1/sys/health HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /v1/secret/data/prod HTTP/1.1\r\nHost: x\r\nX-Vault-Token: s.root\r\n\r\n",
    f"GET {KEYS}?list=true HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /v1/identity/oidc/plugins/.well-known/../../../sys/seal-status HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /v1/identity/oidc/plugins/.well-known/%6beys HTTP/1.1\r\nHost: x\r\n\r\n",
    f"GET http://vault.internal:8200{KEYS} HTTP/1.1\r\nHost: x\r\n\r\n",
    f"POST {KEYS} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}",
    f"DELETE {KEYS} HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /v1/ns1/identity/oidc/plugins/.well-known/keys HTTP/1.1\r\nHost: x\r\nX-Vault-Namespace: admin\r\n\r\n",
    "GET /v1/identity/oidc/plugins/.well-known/keys/ HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET //v1/identity/oidc/plugins/.well-known/keys HTTP/1.1\r\nHost: x\r\n\r\n",
]


async def hostile():
    while not stop:
        try:
            r, w = await asyncio.open_connection("127.0.0.1", PROXY, local_addr=("127.0.0.11", 0))
            while not stop:
                w.write(random.choice(HOSTILE).encode())
                status, _, closes = await asyncio.wait_for(read_response(r), 10)
                stats["hostile"][status] = stats["hostile"].get(status, 0) + 1
                if closes:
                    break
                await asyncio.sleep(0.01)
            w.close()
        except Exception:
            await asyncio.sleep(0.05)


def ports_free():
    import socket
    for port in (PROXY, ADMIN, ISSUER):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            sys.exit(f"port {port} is in use (a previous run still going?)")
        finally:
            s.close()


async def main():
    global stop
    ports_free()
    set_mode("ok")
    issuer = start_issuer()
    config = os.path.join(WORK, "proxy.toml")
    with open(config, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{PROXY}"
admin_listen = "127.0.0.1:{ADMIN}"
public_url = "http://127.0.0.1:{PROXY}"
header_read_timeout = "3s"
[cache]
min_ttl = "5s"
max_ttl = "5s"
max_stale = "1h"
[rate_limit]
per_client = 50
per_client_burst = 100
[log]
access = true
[[issuer]]
name = "vault"
kind = "vault-plugin-wif"
upstream = "http://127.0.0.1:{ISSUER}"
upstream_timeout = "2s"
""")
    await asyncio.sleep(0.5)
    proxy = subprocess.Popen([BIN, "--config", config], stderr=open(os.path.join(WORK, "proxy.log"), "w"))
    for _ in range(100):
        try:
            r, w = await asyncio.open_connection("127.0.0.1", ADMIN)
            w.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _, _ = await read_response(r)
            w.close()
            if status == 200:
                break
        except OSError:
            pass
        await asyncio.sleep(0.1)
    else:
        sys.exit("the proxy never became ready")
    if proxy.poll() is not None:
        sys.exit("the proxy exited: " + open(os.path.join(WORK, "proxy.log")).read()[-2000:])

    tasks = [asyncio.create_task(legit(f"127.0.0.{i}")) for i in range(2, 6)]
    tasks += [asyncio.create_task(flood()) for _ in range(4)]
    tasks += [asyncio.create_task(slow_client()) for _ in range(20)]
    tasks += [asyncio.create_task(hostile())]

    phases = [(0.0, "ok"), (0.15, "sealed"), (0.30, "stopped"), (0.40, "restarted"), (0.50, "slow"), (0.70, "ok")]
    start = time.time()
    rss = []
    boundaries = []
    for i, (at, phase) in enumerate(phases):
        until = start + (phases[i + 1][0] if i + 1 < len(phases) else 1.0) * DURATION
        boundaries.append((phase, start + at * DURATION, until))
        if phase == "stopped":
            issuer.send_signal(signal.SIGKILL)
            issuer.wait()
        elif phase == "restarted":
            set_mode("ok")
            issuer = start_issuer()
        else:
            set_mode(phase)
        while time.time() < until:
            rss.append(rss_mib(proxy.pid))
            await asyncio.sleep(min(5, max(0.01, until - time.time())))
        print(f"{time.time() - start:6.1f} s  phase {phase:9s} done; legit ok {stats['legit_ok']} fail {stats['legit_fail']}; RSS {rss[-1]:.1f} MiB", flush=True)
    stop = True
    await asyncio.sleep(1)
    for t in tasks:
        t.cancel()
    proxy.send_signal(signal.SIGTERM)
    proxy.wait(timeout=20)
    issuer.kill()

    # The issuer's view.
    seen = [json.loads(l) for l in open(ISSUER_LOG)]
    bad = [s for s in seen if s["method"] != "GET" or s["target"] not in (DISC, KEYS)
           or not set(s["headers"]) <= {"host", "accept", "user-agent"}]
    per_phase = []
    for phase, a, b in boundaries:
        n = sum(1 for s in seen if a <= s["t"] < b)
        per_phase.append(f"{phase} {n} in {b - a:.0f} s")
    total = stats["legit_ok"] + stats["legit_fail"]
    print()
    print(f"duration {DURATION:.0f} s")
    print(f"legitimate fetches: {stats['legit_ok']} of {total} OK ({100 * stats['legit_ok'] / max(total, 1):.3f}%); failures {stats['legit_fail_why']}")
    print(f"flooder answers by status: {dict(sorted(stats['flood'].items()))}")
    print(f"hostile answers by status: {dict(sorted(stats['hostile'].items()))}")
    print(f"slow clients cut off: {stats['slow_cut']}")
    print(f"issuer requests: {len(seen)} ({per_phase}); outside the allowlist or with other headers: {len(bad)}")
    print(f"proxy RSS: first {rss[0]:.1f} MiB, min {min(rss):.1f}, max {max(rss):.1f}, last {rss[-1]:.1f} ({len(rss)} samples)")
    ok = stats["legit_fail"] == 0 and not bad and 200 not in stats["hostile"] and stats["legit_ok"] > 0 and len(seen) > 0
    print("result:", "PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


asyncio.run(main())
