"""The issuer stand-in for the bench scripts.

Serves the files under DIR as Vault serves its OIDC documents
(`application/json`), adds the kind of headers an issuer or the load balancer
in front of it sends and that no proxy may pass on to its clients
(`Set-Cookie`, `X-Vault-*`, an internal address), and records every request
it receives, with the port it arrived on, as one JSON line in LOG. Each
server under test gets its own port, so what each one sent is known exactly.

    issuer.py DIR LOG PORT [PORT...]
"""

import http.server
import json
import os
import sys
import threading

LEAKY_HEADERS = [
    ("Set-Cookie", "vault-lb=vault-2; Path=/; HttpOnly"),
    ("X-Vault-Raft-Node", "vault-2.internal:8201"),
    ("X-Vault-Cluster-Addr", "https://10.0.12.7:8201"),
]

root, log_path, ports = sys.argv[1], sys.argv[2], [int(p) for p in sys.argv[3:]]
log = open(log_path, "a", buffering=1)
log_lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "Vault"
    sys_version = ""

    def record(self):
        with log_lock:
            log.write(
                json.dumps(
                    {
                        "port": self.server.server_address[1],
                        "method": self.command,
                        "target": self.path,
                        "headers": [[k, v] for k, v in self.headers.items()],
                    }
                )
                + "\n"
            )

    def answer(self, body):
        self.record()
        # Only plain targets map to files: no query, no `..`, no encodings.
        rel = self.path.lstrip("/")
        file = os.path.join(root, rel)
        ok = "?" not in self.path and "%" not in self.path and ".." not in rel.split("/") and os.path.isfile(file)
        data = open(file, "rb").read() if ok else b'{"errors":["unsupported path"]}\n'
        self.send_response(200 if ok else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in LEAKY_HEADERS:
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self):
        self.answer(True)

    def do_HEAD(self):
        self.answer(False)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.answer(True)

    def log_message(self, *args):
        pass


class Server(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        # A proxy closing its idle upstream connection is not an error.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


servers = [Server(("127.0.0.1", p), Handler) for p in ports]
for s in servers[1:]:
    threading.Thread(target=s.serve_forever, daemon=True).start()
servers[0].serve_forever()
