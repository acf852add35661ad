"""UDP: blocking recvfrom/sendto loops in threads.

UDP does not go through the event loop: a datagram costs only the kernel,
this loop and `respond` (bench/README.md, `dns_qps.py --floor`: the bare
Python loop about 6.9 µs a query, `respond` about 3 µs more), and `respond`
holds the GIL only for those few µs.
"""

from __future__ import annotations

import logging
import socket
import threading

from clusterset.server.forward import Forwarder
from clusterset.server.holder import ZoneHolder
from clusterset.zone.wire import respond

log = logging.getLogger(__name__)
_TC_BIT = 0x02


class UdpServer:
    def __init__(
        self,
        sock: socket.socket,
        holder: ZoneHolder,
        *,
        threads: int = 1,
        forwarder: Forwarder | None = None,
        log_queries: bool = False,
    ) -> None:
        self.log_queries = log_queries
        self.sock = sock
        self.holder = holder
        self.forwarder = forwarder
        self._stop = False
        self._threads = [
            threading.Thread(target=self._loop, name=f"dns-udp-{i}", daemon=True)
            for i in range(threads)
        ]

    def start(self) -> None:
        for t in self._threads:
            t.start()

    def _loop(self) -> None:
        sock, holder = self.sock, self.holder
        counters = holder.counters
        recvfrom, sendto = sock.recvfrom, sock.sendto
        forwarder = self.forwarder
        forward = forwarder is not None
        while True:
            try:
                query, addr = recvfrom(65535)
            except OSError:
                if self._stop:
                    return
                continue
            if self._stop:
                return
            counters.queries_udp += 1
            try:
                reply = respond(holder.zone, holder.origin, query, forward=forward)
            except Exception:  # a bug must cost one query, never the server
                log.exception("dns: internal error answering a %d-byte query", len(query))
                counters.dropped += 1
                continue
            if reply is None:
                counters.dropped += 1
                continue
            if not reply and forwarder is not None:
                counters.forwarded += 1
                forwarder.submit(query, addr, sendto)
                continue
            counters.rcodes[reply[3] & 0x0F] += 1
            if self.log_queries:
                _log_query(addr, query, reply)
            if reply[2] & _TC_BIT:
                counters.truncated += 1
            try:
                sendto(reply, addr)
            except OSError:
                counters.dropped += 1

    def stop(self) -> None:
        """Wake every blocked recvfrom with an empty datagram to ourselves, then join."""
        self._stop = True
        addr = self.sock.getsockname()
        host = addr[0]
        if host in ("0.0.0.0", "::"):
            host = "127.0.0.1" if self.sock.family == socket.AF_INET else "::1"
        with socket.socket(self.sock.family, socket.SOCK_DGRAM) as s:
            for _ in self._threads:
                try:
                    s.sendto(b"", (host, addr[1]))
                except OSError:
                    break
        for t in self._threads:
            t.join(timeout=2)
        self.sock.close()


def _log_query(addr: object, query: bytes, reply: bytes) -> None:
    """One line per query (only with --log-queries: it costs far more than answering)."""
    import dns.message

    try:
        q = dns.message.from_wire(query).question[0]
        what = f"{q.name} {dns.rdatatype.to_text(q.rdtype)}"
    except Exception:
        what = "(malformed)"
    log.info(
        "query",
        extra={"client": str(addr), "q": what, "rcode": reply[3] & 0x0F, "size": len(reply)},
    )
