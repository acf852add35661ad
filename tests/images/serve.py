#!/usr/bin/python3
"""serve: answers every GET with the cluster, node, pod and address it runs in.

The local stand-in for the public image jeremyot/serve used by Karmada's multi-cluster service
article: `curl http://serve.default.svc.clusterset.local:8080` prints

    hello from cluster member1 (Node: member1-node Pod: serve-5f7c9-abcde Address: 10.10.0.7)

from the env vars CLUSTER, NODE_NAME, POD_NAME, POD_IP (a missing one prints as "unknown"; the
pod sets them, the last three through the downward API). Port 8080, or PORT. Standard library
only; exits at once on SIGTERM or SIGINT, so a pod stops without waiting out its grace period.
"""

import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def greeting() -> bytes:
    def env(name: str) -> str:
        return os.environ.get(name) or "unknown"

    return (
        f"hello from cluster {env('CLUSTER')} (Node: {env('NODE_NAME')} Pod: {env('POD_NAME')} "
        f"Address: {env('POD_IP')})\n"
    ).encode()


class Handler(BaseHTTPRequestHandler):
    server_version = "serve/1"

    def do_GET(self) -> None:
        body = greeting()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet: no line per request
        pass


class DualStackServer(ThreadingHTTPServer):
    """Listens on [::] for IPv4 and IPv6 alike; see make_server for IPv4-only hosts."""

    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


def make_server(port: int) -> ThreadingHTTPServer:
    try:
        return DualStackServer(("::", port), Handler)
    except OSError:  # no IPv6 in this network namespace
        server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
        server.daemon_threads = True
        return server


def main() -> int:
    port = int(os.environ.get("PORT") or 8080)

    def stop(signo: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = make_server(port)
    print(f"serve: listening on port {port}", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
