"""`UdpServer.stop` while threads are inside `serve`, and counters exact across UDP threads.

In-process: a real `UdpServer` on loopback, its threads flooded by client threads, over both
loops (the native one must be built: a missing module fails, it is not skipped).
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import dns.message
import pytest

from clusterset.model.state import ImportedView
from clusterset.server import udp
from clusterset.server.holder import ZoneHolder
from clusterset.server.udp import UdpServer
from clusterset.zone import build
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import CompiledZone, respond

pytestmark = pytest.mark.integration

ORIGIN = b"\x0aclusterset\x05local\x00"
LOCAL = "127.0.0.1"


def _zone() -> CompiledZone:
    return CompiledZone(
        build.build(ImportedView(None, {}, {}, frozenset()), ZoneSettings(), serial=1)
    )


def _query(name: str, rdtype: str = "A") -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=0)
    q.id = 0
    return q.to_wire()


# NOERROR (the apex), NXDOMAIN, REFUSED: memo hits after their first time on the native loop.
QUERIES = [
    _query("clusterset.local", "SOA"),
    _query("nope.default.svc.clusterset.local"),
    _query("example.com"),
]


def _server(holder: ZoneHolder, loop: str, threads: int) -> UdpServer:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((LOCAL, 0))
    server = UdpServer(sock, holder, threads=threads)
    if loop == "python":
        server.native = None
    else:
        assert server.native is not None, "the _fastudp extension is not built"
    return server


@pytest.fixture(params=["native", "python"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@contextmanager
def _flood(address: tuple[str, int], clients: int) -> Iterator[list[int]]:
    """Client threads sending queries to `address` as fast as they can; yields the replies
    counted so far, one slot per client (no reply is waited for)."""
    stop = threading.Event()
    got = [0] * clients

    def client(i: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            n = 0
            while not stop.is_set():
                n += 1
                # ECONNREFUSED once the server is gone; a full buffer; nothing to read
                with contextlib.suppress(OSError):
                    s.sendto(n.to_bytes(2, "big") + QUERIES[n % 3][2:], address)
                with contextlib.suppress(OSError):
                    while True:
                        s.recvfrom(4096)
                        got[i] += 1

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    try:
        yield got
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
            assert not t.is_alive()


def _new_socket_at(fd: int) -> socket.socket:
    """A new UDP socket, bound, with file descriptor number `fd` (closed, so free)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if s.fileno() != fd:
        os.dup2(s.fileno(), fd)
        s.close()
        s = socket.socket(fileno=fd)
    s.bind((LOCAL, 0))
    assert s.fileno() == fd
    return s


def _no_reply(s: socket.socket, wait: float) -> None:
    s.settimeout(wait)
    try:
        data, peer = s.recvfrom(4096)
    except TimeoutError:
        return
    pytest.fail(f"a reply after stop, from {peer}: {data!r}")


def test_stop_while_threads_are_inside_serve(loop: str) -> None:
    """Start/stop cycles under a flood: stop returns with every thread ended, nothing is
    answered or counted afterwards, and a new socket given the old fd number is left alone."""
    holder = ZoneHolder(ORIGIN)
    holder.zone = _zone()
    rng = random.Random(22)
    for cycle in range(8):
        server = _server(holder, loop, threads=4)
        address, fd = server.sock.getsockname(), server.sock.fileno()
        server.start()
        with _flood(address, clients=3) as got:
            deadline = time.monotonic() + 10
            while sum(got) < 50:  # the threads are busy serving
                assert time.monotonic() < deadline, f"cycle {cycle}: no replies"
                time.sleep(0.005)
            time.sleep(rng.uniform(0, 0.05))
            server.stop()
            assert not [t.name for t in server._threads if t.is_alive()]
            assert server.sock.fileno() == -1
            counted = holder.total()
            # The flood goes on against the closed port; a new socket takes the old number.
            with (
                _new_socket_at(fd) as probe,
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as late,
            ):
                for i in range(20):
                    late.sendto(i.to_bytes(2, "big") + QUERIES[0][2:], probe.getsockname())
                probe.settimeout(2)
                for i in range(20):  # every datagram is the probe's: none read by a stray thread
                    data, _ = probe.recvfrom(4096)
                    assert data[:2] == i.to_bytes(2, "big")
                _no_reply(late, 0.1)
                time.sleep(0.05)
        assert holder.total() == counted, f"cycle {cycle}: counted after stop"


def test_a_thread_stuck_in_serve_past_stop_never_uses_a_reused_fd(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One thread held inside `serve` (reading holder.zone) while stop gives up waiting,
    closes the socket, and the fd number goes to a new socket: the held batch's memo hit
    must not be sent (the old code sent it from the new socket, by fd number)."""
    monkeypatch.setattr(udp, "STOP_WAIT", 0.3, raising=False)
    holder = _GatedHolder(ORIGIN)
    zone = _zone()
    respond(zone, ORIGIN, QUERIES[0])  # a memo hit from the first datagram on
    assert QUERIES[0][2:] in zone.memo_udp
    holder.zone = zone
    server = _server(holder, "native", threads=2)
    address, fd = server.sock.getsockname(), server.sock.fileno()
    server.start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
        client.settimeout(2)
        client.sendto(QUERIES[0], address)
        assert client.recvfrom(4096)[0][2:] == zone.memo_udp[QUERIES[0][2:]]
        holder.hold_next()
        client.sendto(b"\x00\x01" + QUERIES[0][2:], address)
        assert holder.waiting.wait(5), "no thread took the query"
        server.stop()  # gives up after STOP_WAIT: one thread is still inside serve
        assert sum(t.is_alive() for t in server._threads) == 1
        with _new_socket_at(fd) as probe:
            probe.settimeout(2)
            holder.gate.set()  # the held batch goes on
            for t in server._threads:
                t.join(timeout=5)
                assert not t.is_alive()
            _no_reply(client, 0.3)
            client.sendto(b"mine", probe.getsockname())
            assert probe.recvfrom(100)[0] == b"mine"


class _GatedHolder(ZoneHolder):
    """After `hold_next()`, the next read of `zone` waits (the GIL released) until the gate
    is set: that thread stays inside serve."""

    def __init__(self, origin: bytes) -> None:
        self.gate = threading.Event()
        self.waiting = threading.Event()
        self._turn: threading.Lock | None = None
        self._zone: CompiledZone | None = None
        super().__init__(origin)

    def hold_next(self) -> None:
        self._turn = threading.Lock()

    @property
    def zone(self) -> CompiledZone | None:
        if self._turn is not None and self._turn.acquire(blocking=False):  # the first only
            self.waiting.set()
            self.gate.wait(10)
        return self._zone

    @zone.setter
    def zone(self, zone: CompiledZone | None) -> None:
        self._zone = zone


def test_counters_are_exact_with_several_threads(loop: str) -> None:
    """N queries from several clients at once over four server threads: every counter is
    exactly what was sent, whichever thread (and, native, C or Python) answered each."""
    holder = ZoneHolder(ORIGIN)
    holder.zone = _zone()
    server = _server(holder, loop, threads=4)
    address = server.sock.getsockname()
    clients, per_client = 4, 1500
    failures: list[str] = []

    def client(i: int) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(5)
            for n in range(per_client):  # one in flight per client: none lost to a full buffer
                qid = (i * per_client + n) & 0xFFFF
                s.sendto(qid.to_bytes(2, "big") + QUERIES[n % 3][2:], address)
                try:
                    reply, _ = s.recvfrom(4096)
                except TimeoutError:
                    failures.append(f"client {i}: no reply to query {n}")
                    return
                if reply[:2] != qid.to_bytes(2, "big"):
                    failures.append(f"client {i}: reply to another query")

    server.start()
    try:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        server.stop()
    assert not failures, failures[:5]
    total = holder.total()
    sent = clients * per_client
    assert total.queries_udp == sent
    each = [len(range(k, per_client, 3)) * clients for k in range(3)]
    assert total.rcodes[:6] == [each[0], 0, 0, each[1], 0, each[2]]
    assert (total.dropped, total.truncated) == (0, 0)
