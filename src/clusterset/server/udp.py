"""UDP: blocking receive/send loops in threads, memo hits answered in C where it is built.

UDP does not go through the event loop: a datagram costs only the kernel,
this loop and `respond` (bench/README.md, `dns_qps.py --floor`: the bare
Python loop about 6.9 µs a query, `respond` about 3 µs more), and `respond`
holds the GIL only for those few µs.

Why native: that Python floor alone was most of our 11.6 µs a query against
knotd's 8.8 µs (0.76x per CPU). The optional extension `_fastudp` takes up to
32 datagrams per recvmmsg, answers those whose exact bytes (after the ID) are in
the zone's memo with one dict lookup each, and sends them with one sendmmsg; only
misses (new or rotating answers, errors, forwarding) come back to `respond` here.
Measured on one core (bench/README.md, issue 12 hot path): 6.8 µs a query against
10.1 µs for the Python loop and 8.7 µs for knotd in the same run (1.27x knotd per
CPU-second, 1.15x its QPS). The pure-Python loop stays for machines where the module
did not build, and with CLUSTERSET_NATIVE=0.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from types import ModuleType

from clusterset.server.forward import Forwarder
from clusterset.server.holder import ZoneHolder
from clusterset.server.querylog import log_query
from clusterset.zone.wire import UDP_PAYLOAD, respond

log = logging.getLogger(__name__)
_TC_BIT = 0x02


def _native_module() -> ModuleType | None:
    """The C fast path, unless absent (no compiler at install) or CLUSTERSET_NATIVE=0."""
    if os.environ.get("CLUSTERSET_NATIVE", "1") == "0":
        return None
    try:
        from clusterset.server import _fastudp
    except ImportError:
        return None
    return _fastudp


NATIVE = _native_module()


class UdpServer:
    def __init__(
        self,
        sock: socket.socket,
        holder: ZoneHolder,
        *,
        threads: int = 1,
        forwarder: Forwarder | None = None,
        log_queries: bool = False,
        udp_size: int = UDP_PAYLOAD,
    ) -> None:
        self.log_queries = log_queries
        self.udp_size = udp_size
        self.sock = sock
        self.holder = holder
        self.forwarder = forwarder
        self._stop = False
        # --log-queries logs every reply: only the Python loop sees them all.
        self.native = None if log_queries else NATIVE
        self._threads = [
            threading.Thread(target=self._loop, name=f"dns-udp-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        if self.native is not None:
            self._native_loop(self.native)
            return
        recvfrom = self.sock.recvfrom
        answer = self._answer
        while True:
            try:
                query, addr = recvfrom(65535)
            except OSError:
                if self._stop:
                    return
                continue
            if self._stop:
                return
            answer(query, addr)

    def _native_loop(self, native: ModuleType) -> None:
        """Batches through C: hits are answered and counted there, misses come back here."""
        serve = native.Receiver(self.sock.fileno()).serve
        holder, counters, answer = self.holder, self.holder.counters, self._answer
        rcodes = counters.rcodes
        while True:
            try:
                misses, queries, truncated, dropped = serve(holder, rcodes)
            except OSError:
                if self._stop:
                    return
                continue
            except Exception:  # a bug (or no memory) must cost one batch, never the server
                log.exception("dns: internal error in a native UDP batch")
                if self._stop:
                    return
                continue
            counters.queries_udp += queries
            counters.truncated += truncated
            counters.dropped += dropped
            if self._stop:
                return
            for query, addr in misses:
                answer(query, addr)

    def _answer(self, query: bytes, addr: tuple[str, int] | tuple[str, int, int, int]) -> None:
        """One query the memo did not answer (or every query, on the pure-Python loop)."""
        holder = self.holder
        counters = holder.counters
        counters.queries_udp += 1
        try:
            reply = respond(
                holder.zone,
                holder.origin,
                query,
                forward=self.forwarder is not None,
                udp_size=self.udp_size,
            )
        except Exception:  # a bug must cost one query, never the server
            log.exception("dns: internal error answering a %d-byte query", len(query))
            counters.dropped += 1
            return
        if reply is None:
            counters.dropped += 1
            return
        if not reply and self.forwarder is not None:
            counters.forwarded += 1
            self.forwarder.submit(query, addr, self.sock.sendto)
            return
        counters.rcodes[reply[3] & 0x0F] += 1
        if self.log_queries:
            log_query(addr, "udp", query, reply)
        if reply[2] & _TC_BIT:
            counters.truncated += 1
        try:
            self.sock.sendto(reply, addr)
        except OSError:
            counters.dropped += 1

    def stop(self) -> None:
        """Wake every blocked receive with empty datagrams to ourselves until all threads end.

        One wake-up per thread is not enough: a batched receive can take several at once.
        """
        self._stop = True
        addr = self.sock.getsockname()
        host = addr[0]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if self.sock.family == socket.AF_INET else "::1"
        deadline = time.monotonic() + 2
        with socket.socket(self.sock.family, socket.SOCK_DGRAM) as s:
            for t in self._threads:
                while t.is_alive() and time.monotonic() < deadline:
                    try:
                        s.sendto(b"", (host, addr[1]))
                    except OSError:
                        t.join(timeout=max(0.0, deadline - time.monotonic()))
                        break
                    t.join(timeout=0.01)
        self.sock.close()
