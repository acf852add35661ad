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

import contextlib
import logging
import os
import socket
import threading
import time
from types import ModuleType
from typing import Any

from clusterset.server.forward import Forwarder
from clusterset.server.holder import Counters, ZoneHolder
from clusterset.server.querylog import log_query
from clusterset.zone.wire import UDP_PAYLOAD, respond

log = logging.getLogger(__name__)
_TC_BIT = 0x02
STOP_WAIT = 5.0  # seconds stop() waits for the threads to leave their loops


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
        self._receivers: list[Any] = []  # the native threads' Receivers, closed by stop()
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
        counters = self.holder.thread_counters()  # this thread's alone: no increment lost
        if self._stop:  # stopped before this thread ran
            return
        if self.native is not None:
            self._native_loop(self.native, counters)
            return
        recvfrom = self.sock.recvfrom
        answer = self._answer
        while not self._stop:
            try:
                query, addr = recvfrom(65535)
            except OSError:
                continue
            if self._stop:  # also after shutdown: (b"", None), no query
                return
            answer(query, addr, counters)

    def _native_loop(self, native: ModuleType, counters: Counters) -> None:
        """Batches through C: hits are answered and counted there, misses come back here."""
        receiver = native.Receiver(self.sock.fileno())  # its own dup of the fd
        self._receivers.append(receiver)
        try:
            serve = receiver.serve
            holder, answer, rcodes = self.holder, self._answer, counters.rcodes
            while not self._stop:
                try:
                    misses, queries, truncated, dropped = serve(holder, rcodes)
                except OSError:
                    continue
                except Exception:  # a bug (or no memory) must cost one batch, never the server
                    log.exception("dns: internal error in a native UDP batch")
                    continue
                counters.queries_udp += queries
                counters.truncated += truncated
                counters.dropped += dropped
                if self._stop:
                    return
                for query, addr in misses:
                    answer(query, addr, counters)
        finally:
            receiver.close()

    def _answer(
        self,
        query: bytes,
        addr: tuple[str, int] | tuple[str, int, int, int],
        counters: Counters,
    ) -> None:
        """One query the memo did not answer (or every query, on the pure-Python loop)."""
        holder = self.holder
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
        """Wake every thread, wait until all have left their receive loop, close the socket.

        shutdown(SHUT_RD) wakes every blocked receive at once (Linux says ENOTCONN for an
        unconnected UDP socket, but wakes them), and every later one returns at once with
        no datagram, so each thread sees `_stop` and ends (the native one closing its
        Receiver's own fd). Only then is the socket closed: no thread still receiving can be
        handed the fd number a new socket was given. A thread still busy after STOP_WAIT
        (stuck in a batch) is logged and left: its Receiver is closed (the batch's replies
        not yet being sent are not sent), the Python socket too (sendto fails), and it
        stops at its next check.
        """
        self._stop = True
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RD)
        deadline = time.monotonic() + STOP_WAIT
        for t in self._threads:
            if t.ident is not None:  # started
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        for receiver in list(self._receivers):
            receiver.close()  # done already by the threads that ended
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("dns: UDP threads still busy %gs after stop: %s", STOP_WAIT, alive)
        self.sock.close()
