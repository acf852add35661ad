"""The forwarder against an upstream whose answer depends on the flags asked (issue 20 items
2 and 8): what the cache may serve to whom, the OPT size we advertise, and reused upstream
TCP connections."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest

from clusterset.server import forward
from clusterset.server.forward import Forwarder
from tests.integration.servers import clusterset, free_port

pytestmark = pytest.mark.integration

BOGUS = "6.6.6.6"  # what a validating upstream hands out when told not to check (CD=1)
GOOD = "192.0.2.1"


class Upstream:
    """A cluster DNS stand-in on one loopback port, UDP and TCP (several queries per
    connection): CD=1 gets BOGUS, RD=0 a referral, RD=1 GOOD; every reply with EDNS
    advertises 8192. Counts the TCP connections it accepts and sees closed."""

    def __init__(self, *, close_after_reply: bool = False) -> None:
        self.close_after_reply = close_after_reply
        self.port = free_port()
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", self.port))
        self.udp.settimeout(0.1)
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.bind(("127.0.0.1", self.port))
        self.tcp.listen(16)
        self.tcp.settimeout(0.1)
        self.accepted = 0
        self.closed = 0
        self.queries = 0
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._serve_udp, daemon=True),
            threading.Thread(target=self._serve_tcp, daemon=True),
        ]
        for t in self._threads:
            t.start()

    def answer(self, wire: bytes) -> bytes:
        self.queries += 1
        q = dns.message.from_wire(wire)
        r = dns.message.make_response(q, our_payload=8192)
        name = q.question[0].name
        if q.flags & dns.flags.CD:
            r.answer.append(dns.rrset.from_text(name, 300, "IN", "A", BOGUS))
        elif not q.flags & dns.flags.RD:
            r.authority.append(dns.rrset.from_text(name.parent(), 300, "IN", "NS", "ns.example."))
        else:
            r.flags |= dns.flags.RA
            r.answer.append(dns.rrset.from_text(name, 300, "IN", "A", GOOD))
        return r.to_wire()

    def _serve_udp(self) -> None:
        while not self._stop.is_set():
            try:
                data, addr = self.udp.recvfrom(65535)
            except TimeoutError:
                continue
            self.udp.sendto(self.answer(data), addr)

    def _serve_tcp(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.tcp.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            t = threading.Thread(target=self._connection, args=(conn,), daemon=True)
            self._threads.append(t)
            t.start()

    def _connection(self, conn: socket.socket) -> None:
        conn.settimeout(0.1)
        with conn:
            buf = b""
            while not self._stop.is_set():
                try:
                    chunk = conn.recv(65535)
                except TimeoutError:
                    continue
                if not chunk:
                    self.closed += 1
                    return
                buf += chunk
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack_from("!H", buf)[0]:
                    n = struct.unpack_from("!H", buf)[0]
                    reply = self.answer(buf[2 : 2 + n])
                    buf = buf[2 + n :]
                    conn.sendall(struct.pack("!H", len(reply)) + reply)
                    if self.close_after_reply:
                        return

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=2)
        self.udp.close()
        self.tcp.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    up = Upstream()
    try:
        yield up
    finally:
        up.close()


@pytest.fixture
def server(upstream: Upstream, tmp_path: Path) -> Iterator[int]:
    """Our server in unified mode (empty manifests), forwarding to `upstream`."""
    args = ("dns", "--manifests", str(tmp_path), "--unified-cluster-local")
    with clusterset(*args, "--upstream", f"127.0.0.1:{upstream.port}") as (port, _):
        yield port


def ask(
    port: int, name: str, *, flags: int = dns.flags.RD, tcp: bool = False, payload: int = 1232
) -> dns.message.Message:
    q = dns.message.make_query(name, "A", use_edns=0, payload=payload)
    q.flags = flags
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(q, "127.0.0.1", port=port, timeout=2)


def addresses(r: dns.message.Message) -> list[str]:
    return [rd.address for rrset in r.answer for rd in rrset]


def test_cd_answer_is_not_served_to_cd_clear_clients(server: int) -> None:
    """CD=1 skips validation upstream; before the fix its bogus answer, cached, was served
    to every CD=0 client for up to 300 s."""
    name = "web.shop.svc.cluster.local."
    assert addresses(ask(server, name, flags=dns.flags.RD | dns.flags.CD)) == [BOGUS]
    assert addresses(ask(server, name)) == [GOOD]
    # Each answer is cached under its own key: served again without asking upstream.
    assert addresses(ask(server, name, flags=dns.flags.RD | dns.flags.CD)) == [BOGUS]
    assert addresses(ask(server, name)) == [GOOD]


def test_rd_clear_referral_is_not_served_to_rd_clients(server: int, upstream: Upstream) -> None:
    name = "api.shop.svc.cluster.local."
    referral = ask(server, name, flags=0)
    assert referral.answer == [] and referral.authority
    r = ask(server, name)
    assert addresses(r) == [GOOD] and r.flags & dns.flags.RD
    # RD=0 is still answered from what an RD=1 query cached, as a resolver does.
    asked = upstream.queries
    r = ask(server, name, flags=0)
    assert addresses(r) == [GOOD] and not r.flags & dns.flags.RD
    assert upstream.queries == asked


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_forwarded_reply_advertises_our_payload_size(server: int, tcp: bool) -> None:
    """The upstream says 8192; we send at most 1232 over UDP, and say so (also on a hit)."""
    name = f"size-{tcp}.shop.svc.cluster.local."
    for _ in range(2):  # a miss, then a cache hit
        r = ask(server, name, tcp=tcp, payload=4096)
        assert addresses(r) == [GOOD]
        assert r.payload == 1232


def test_forwarded_tcp_queries_reuse_one_upstream_connection(
    server: int, upstream: Upstream
) -> None:
    for i in range(10):
        r = ask(server, f"n{i}.shop.svc.cluster.local.", tcp=True)
        assert addresses(r) == [GOOD]
    assert upstream.queries == 10
    assert upstream.accepted == 1  # 10 before: one connection per forwarded query


def test_a_connection_the_upstream_closed_is_retried_on_a_fresh_one() -> None:
    """An upstream that closes after each reply: every reuse fails, every query is answered."""

    async def scenario(up: Upstream) -> None:
        fwd = Forwarder(("127.0.0.1", up.port))
        await fwd.start()
        try:
            for i in range(3):
                q = dns.message.make_query(f"r{i}.shop.svc.cluster.local.", "A", id=i + 1)
                r = dns.message.from_wire(await fwd.forward_tcp(q.to_wire(), "127.0.0.1"))
                assert r.rcode() == dns.rcode.NOERROR and addresses(r) == [GOOD]
                await asyncio.sleep(0.1)  # the upstream's close reaches us
            assert fwd.timeouts == 0 and up.accepted == 3
        finally:
            await fwd.stop()

    up = Upstream(close_after_reply=True)
    try:
        asyncio.run(scenario(up))
    finally:
        up.close()


def test_idle_upstream_connections_are_closed(
    upstream: Upstream, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(forward, "TCP_IDLE", 0.2)

    async def scenario() -> None:
        fwd = Forwarder(("127.0.0.1", upstream.port), timeout=0.4)  # reaped every 0.2 s
        await fwd.start()
        try:
            q = dns.message.make_query("idle.shop.svc.cluster.local.", "A")
            r = dns.message.from_wire(await fwd.forward_tcp(q.to_wire(), "127.0.0.1"))
            assert addresses(r) == [GOOD]
            await asyncio.sleep(1.0)
            assert upstream.accepted == 1 and upstream.closed == 1
        finally:
            await fwd.stop()

    asyncio.run(scenario())
