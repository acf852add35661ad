"""A hand-written stand-in for Karmada's aggregated cluster proxy: a test fixture, not Karmada.

Karmada's karmada-aggregated-apiserver serves
``/apis/cluster.karmada.io/v1alpha1/clusters/<name>/proxy/<rest>`` by forwarding ``<rest>`` to
member ``<name>``'s apiserver with the credentials Karmada holds for that member. This module
does the same on loopback so that ``clusterset controller --karmada-kubeconfig`` can be tested
against real kube-apiservers: one HTTPS listener that

* forwards ``.../clusters/<name>/proxy/<rest>`` to the apiserver of member ``<name>`` with the
  member's token (404 Status for an unknown member, 401 without the proxy's bearer token);
* forwards every other path, with the caller's own Authorization, to the apiserver that plays
  the Karmada control plane (which serves the ``cluster.karmada.io`` Cluster CRD);
* streams responses as they arrive (re-chunked), so watches work through it.

It does not do what real Karmada also does (impersonating the caller in the member,
aggregated discovery, the Cluster's ``apiEndpoint``/secret lookup): the member URLs and the
token are given to it. Stdlib only::

    with KarmadaProxy(karmada=cp.servers["member3"], members={...}, token=..., ...) as proxy:
        proxy.url  # https://127.0.0.1:PORT
"""

from __future__ import annotations

import contextlib
import http.client
import json
import re
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Self

__all__ = ["PROXY_RE", "KarmadaProxy"]

PROXY_RE = re.compile(
    r"^/apis/cluster\.karmada\.io/v1alpha1/clusters/([^/?]+)/proxy(/[^?]*)?(\?.*)?$"
)
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "host",
}


def _status(code: int, reason: str, message: str) -> bytes:
    return json.dumps(
        {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
    ).encode()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    proxy: KarmadaProxy

    def finish_request(self, request: Any, client_address: Any) -> None:
        # TLS handshake in the connection's own thread, not in the accept loop.
        try:
            tls = self.proxy.server_context.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError):
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            with contextlib.suppress(OSError):
                tls.close()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: bytes) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(self) -> None:
        proxy = self.server.proxy
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        m = PROXY_RE.match(self.path)
        if m:
            name = urllib.parse.unquote(m.group(1))
            rest = (m.group(2) or "/") + (m.group(3) or "")
            auth = self.headers.get("Authorization", "")
            if auth != f"Bearer {proxy.token}":
                self._reply(401, _status(401, "Unauthorized", "Unauthorized"))
                return
            upstream = proxy.members.get(name)
            if upstream is None:
                self._reply(
                    404,
                    _status(404, "NotFound", f'clusters.cluster.karmada.io "{name}" not found'),
                )
                return
            headers["Authorization"] = f"Bearer {proxy.member_token}"
            proxy.record(name, self.command, rest)
        else:
            upstream, rest = proxy.karmada, self.path
            proxy.record("karmada", self.command, rest)
        url = urllib.parse.urlsplit(upstream)
        conn = http.client.HTTPSConnection(
            url.hostname or "127.0.0.1", url.port, context=proxy.client_context, timeout=None
        )
        proxy.track(conn, True)
        try:
            try:
                conn.request(self.command, rest, body=body, headers=headers)
                resp = conn.getresponse()
            except OSError as exc:
                self._reply(502, _status(502, "BadGateway", f"upstream {upstream}: {exc}"))
                return
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in HOP_BY_HOP:
                    self.send_header(k, v)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            while True:
                try:
                    chunk = resp.read1(65536)
                except (OSError, http.client.HTTPException):
                    # The member went away mid-stream: cut the stream (no last chunk), as a
                    # real proxy does, so the client sees a broken watch.
                    self.close_connection = True
                    return
                if not chunk:
                    break
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        finally:
            proxy.track(conn, False)
            conn.close()

    def _safe(self) -> None:
        try:
            self._forward()
        except (OSError, ssl.SSLError, http.client.HTTPException):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _safe


class KarmadaProxy:
    """The Karmada control plane's front door on 127.0.0.1: cluster proxy + everything else."""

    def __init__(
        self,
        *,
        karmada: str,
        members: Mapping[str, str],
        token: str,
        member_token: str,
        ca: Path,
        cert: Path,
        key: Path,
    ) -> None:
        self.karmada = karmada
        self.members = dict(members)
        self.token = token
        self.member_token = member_token
        self.client_context = ssl.create_default_context(cafile=str(ca))
        self.server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_context.load_cert_chain(str(cert), str(key))
        self.requests: list[tuple[str, str, str]] = []  # (cluster or "karmada", method, path)
        self._lock = threading.Lock()
        self._open: set[http.client.HTTPSConnection] = set()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.proxy = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="karmada-proxy", daemon=True
        )

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self._server.server_address[1]}"

    def record(self, cluster: str, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((cluster, method, path))

    def track(self, conn: http.client.HTTPSConnection, opened: bool) -> None:
        with self._lock:
            if opened:
                self._open.add(conn)
            else:
                self._open.discard(conn)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        with self._lock:
            conns = list(self._open)
        for conn in conns:  # unblock the threads that stream watches
            sock = conn.sock
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
