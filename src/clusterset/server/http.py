"""/metrics, /health and /ready on a separate port (CoreDNS's prometheus/health/ready).

prometheus-client renders the metrics; the DNS hot path only bumps plain ints
(`holder.Counters`, one per thread), summed here at scrape time by a collector, so no lock is
taken per query. Served by a small asyncio HTTP/1.1 server in a thread of its own,
so that a connection costs a socket and a coroutine, not a thread, and its limits
(`OpsServer`) keep slow or unfinished requests from holding threads and fds. /metrics alone
is rendered in the loop's default executor (a few threads at most), beside the probes.
"""

from __future__ import annotations

import asyncio
import io
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import unquote

from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clusterset.server.errors import ListenError
from clusterset.server.holder import ZoneHolder

log = logging.getLogger(__name__)
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")


class DnsCollector(Collector):
    def __init__(self, holder: ZoneHolder, forwarder: Any = None) -> None:
        self.holder = holder
        self.forwarder = forwarder

    def collect(self) -> Iterator[Metric]:
        c = self.holder.total()
        req = CounterMetricFamily(
            "clusterset_dns_requests", "DNS requests received.", labels=["proto"]
        )
        req.add_metric(["udp"], c.queries_udp)
        req.add_metric(["tcp"], c.queries_tcp)
        yield req
        resp = CounterMetricFamily(
            "clusterset_dns_responses", "DNS responses sent, by rcode.", labels=["rcode"]
        )
        for i, name in enumerate(RCODES):
            resp.add_metric([name], c.rcodes[i])
        yield resp
        yield CounterMetricFamily(
            "clusterset_dns_dropped", "Queries dropped (not answerable).", value=c.dropped
        )
        yield CounterMetricFamily(
            "clusterset_dns_truncated", "UDP responses with TC set.", value=c.truncated
        )
        tcp = CounterMetricFamily(
            "clusterset_dns_tcp_closed",
            "TCP connections closed for want of a slot: ones waiting on their client "
            "evicted, or new ones rejected while every slot was being answered.",
            labels=["reason"],
        )
        tcp.add_metric(["evicted"], c.tcp_evicted)
        tcp.add_metric(["rejected"], c.tcp_rejected)
        yield tcp
        yield CounterMetricFamily(
            "clusterset_dns_forwarded",
            "Queries handed to the upstream (unified mode).",
            value=c.forwarded,
        )
        zone = self.holder.zone
        yield GaugeMetricFamily(
            "clusterset_dns_zone_generation",
            "Zone loads since start.",
            value=self.holder.generation,
        )
        yield GaugeMetricFamily(
            "clusterset_dns_zone_serial",
            "SOA serial of the served zone.",
            value=zone.serial if zone else 0,
        )
        yield GaugeMetricFamily(
            "clusterset_dns_zone_names",
            "Names in the served zone.",
            value=len(zone.names) if zone else 0,
        )
        yield GaugeMetricFamily(
            "clusterset_dns_zone_answers",
            "Prebuilt answers in the served zone.",
            value=len(zone.answers) if zone else 0,
        )
        yield GaugeMetricFamily(
            "clusterset_dns_ready",
            "1 once the first full load is served.",
            value=1 if zone is not None and zone.synced else 0,
        )
        if self.forwarder is not None:
            cache = CounterMetricFamily(
                "clusterset_dns_forward_cache", "Forwarding cache lookups.", labels=["result"]
            )
            cache.add_metric(["hit"], self.forwarder.cache.hits)
            cache.add_metric(["miss"], self.forwarder.cache.misses)
            yield cache
            yield CounterMetricFamily(
                "clusterset_dns_forward_refused",
                "Forwarding refused by --allow.",
                value=self.forwarder.refused,
            )
            yield CounterMetricFamily(
                "clusterset_dns_forward_timeouts",
                "Upstream queries that timed out.",
                value=self.forwarder.timeouts,
            )
            yield CounterMetricFamily(
                "clusterset_dns_forward_mismatched",
                "Upstream replies dropped: wrong source, unknown ID or another question.",
                value=self.forwarder.mismatched,
            )
            yield CounterMetricFamily(
                "clusterset_dns_forward_limited",
                "Forwards REFUSED because too many were in flight (per client or in total).",
                value=self.forwarder.limited,
            )
            yield CounterMetricFamily(
                "clusterset_dns_forward_coalesced",
                "Queries that joined an identical upstream query already in flight.",
                value=self.forwarder.coalesced,
            )


HEAD_LIMIT = 8192  # bytes of request line and headers; past that the connection is closed


class OpsServer:
    """Serves the registry and the two probes; `ready` and `alive` are callables.

    The request head must arrive within `timeout` seconds of the connect, and the reply
    be taken within `timeout` more, or the connection is closed (one request per
    connection). At most `max_connections` are open: a newcomer past that closes the one
    that has waited longest for its request, so unfinished requests cannot starve the
    probes, and threads and fds stay bounded whatever clients do.
    """

    def __init__(
        self,
        listen: tuple[str, int],
        registry: CollectorRegistry,
        *,
        ready: Callable[[], bool],
        alive: Callable[[], bool] = lambda: True,
        about: Callable[[], str] = lambda: "",
        timeout: float = 5.0,
        max_connections: int = 64,
    ) -> None:
        metrics = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics(environ, start)  # type: ignore[no-any-return]
            if path in ("/health", "/ready"):
                ok = alive() if path == "/health" else ready()
                start(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
                )
                body = b"OK" if ok else b"not ready" if path == "/ready" else b"unhealthy"
                # /ready also says what this server is (its cluster ID and where it came from).
                extra = about() if path == "/ready" else ""
                return [body + (f"\n{extra}".encode() if extra else b"")]
            start("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]

        self.app = app
        self.timeout = timeout
        self.max_connections = max_connections
        host, port = listen
        self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
            self._sock.listen()
        except OSError as exc:
            self._sock.close()
            raise ListenError(f"--metrics-listen {host}:{port}: {exc.strerror or exc}") from exc
        self.address: tuple[str, int] = self._sock.getsockname()[:2]
        # Open connections: loop time of the connect while the request is awaited, None
        # once it is being answered (not evictable).
        self._conns: dict[asyncio.StreamWriter, float | None] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._metrics_turn = asyncio.Lock()  # one /metrics render at a time (_metrics)
        self._loop = asyncio.new_event_loop()
        self._stopped = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="ops-http", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if self._thread.ident is None:  # never started
            self._sock.close()
            self._loop.close()
            return
        self._loop.call_soon_threadsafe(self._stopped.set)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        server = await asyncio.start_server(self._client, sock=self._sock, limit=HEAD_LIMIT)
        try:
            await self._stopped.wait()
        finally:
            server.close()
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _admit(self) -> bool:
        """Room for one more connection: close the one waiting longest for its request
        if need be; False when every one is being answered."""
        if len(self._conns) < self.max_connections:
            return True
        waiting = [(t, w) for w, t in self._conns.items() if t is not None]
        if not waiting:
            return False
        _, oldest = min(waiting, key=lambda tw: tw[0])
        del self._conns[oldest]
        oldest.transport.abort()  # its pending read fails and its task returns
        return True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit():
            writer.transport.abort()
            return
        task = asyncio.current_task()
        assert task is not None  # a connection callback runs in its own task
        self._tasks.add(task)
        self._conns[writer] = asyncio.get_running_loop().time()
        try:
            try:
                async with asyncio.timeout(self.timeout):
                    head = await _read_head(reader)
            except (TimeoutError, ValueError, asyncio.IncompleteReadError, ConnectionError):
                return  # too slow, too long, or gone: no reply
            if writer not in self._conns:
                return  # evicted as the last byte came
            if _path(head) == "/metrics":
                writer.write(await self._metrics(writer, head))
            else:
                self._conns[writer] = None
                writer.write(self._respond(head))
            async with asyncio.timeout(self.timeout):
                await writer.drain()
            writer.close()
        except (TimeoutError, ConnectionError):
            pass  # a client that does not read its reply
        except asyncio.CancelledError:
            pass  # stop(): asyncio's start_server callback (3.11) would log it with a traceback
        finally:
            self._conns.pop(writer, None)
            self._tasks.discard(task)
            if not writer.is_closing():
                writer.transport.abort()  # nothing worth flushing: free the fd now

    async def _metrics(self, writer: asyncio.StreamWriter, head: list[str]) -> bytes:
        """Off the loop, one at a time: a collector may wait (the --workers supervisor fetches
        every worker's /metrics, up to 1 s), the probes must not wait behind it, and a
        connection waiting its turn stays evictable, so scrapes in flight never take the room
        the probes need (TimeoutError when the turn does not come within `timeout`)."""
        self._conns[writer] = asyncio.get_running_loop().time()
        async with asyncio.timeout(self.timeout):
            await self._metrics_turn.acquire()
        try:
            if writer not in self._conns:
                raise ConnectionError("evicted while waiting")
            self._conns[writer] = None
            return await asyncio.to_thread(self._respond, head)
        finally:
            self._metrics_turn.release()

    def _respond(self, head: list[str]) -> bytes:
        """The WSGI app's answer to a request head, as a whole HTTP/1.1 response."""
        try:
            method, target, version = head[0].split()
        except ValueError:
            return _response("400 Bad Request", [], b"bad request", send_body=True)
        path, query = _path(head), target.partition("?")[2]
        # The keys the two WSGI apps read (make_wsgi_app: method, query, Accept headers).
        environ: dict[str, Any] = {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "SERVER_PROTOCOL": version,
            "wsgi.input": io.BytesIO(),
            "wsgi.errors": sys.stderr,
        }
        for line in head[1:]:
            name, sep, value = line.partition(":")
            if sep:
                environ["HTTP_" + name.strip().upper().replace("-", "_")] = value.strip()
        reply: list[tuple[str, list[tuple[str, str]]]] = []

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            reply.append((status, headers))

        try:
            body = b"".join(self.app(environ, start))
        except Exception:
            log.exception("http: internal error answering %s", path)
            return _response("500 Internal Server Error", [], b"internal error", send_body=True)
        status, headers = reply[-1]
        return _response(status, headers, body, send_body=method != "HEAD")


def _path(head: list[str]) -> str:
    """The request's path, without its query; "" if the request line is malformed."""
    fields = head[0].split()
    return unquote(fields[1].partition("?")[0], "iso-8859-1") if len(fields) == 3 else ""


async def _read_head(reader: asyncio.StreamReader) -> list[str]:
    """Request line and header lines, without the blank line that ends them; ValueError
    past HEAD_LIMIT bytes (the reader's limit bounds each line, this the sum)."""
    lines: list[str] = []
    size = 0
    while True:
        try:
            line = await reader.readuntil(b"\n")
        except asyncio.LimitOverrunError as exc:
            raise ValueError("request head too long") from exc
        size += len(line)
        if size > HEAD_LIMIT:
            raise ValueError("request head too long")
        text = line.decode("iso-8859-1").rstrip("\r\n")
        if not text:
            if lines:
                return lines
            continue  # blank lines before the request line are allowed (RFC 9112 2.2)
        lines.append(text)


def _response(
    status: str, headers: list[tuple[str, str]], body: bytes, *, send_body: bool
) -> bytes:
    """A whole response; a HEAD one has the GET one's headers and no body."""
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    return head.encode("iso-8859-1") + (body if send_body else b"")
