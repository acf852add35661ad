"""Forwarding for the unified cluster.local mode: queries we do not answer go upstream.

We sit in front of the cluster DNS (kube-dns/CoreDNS). Replies pass through
unchanged (rcode, flags, EDNS options, TC) but for the ID and the OPT payload size,
which is ours (a client must not size its next query by the upstream's 8192 when we
send at most `udp_size` over UDP). A small TTL cache saves upstream round trips; it
keys on DO and CD as CoreDNS's cache does, and never stores the answer to an RD=0
query (a referral must not be served to the RD=1 clients after it). TCP forwards
reuse a few pooled upstream connections, one query at a time each, as CoreDNS's
forward does. Only clients in `allow` get forwarding, so the server never becomes
an open resolver.

Spoofing (RFC 5452): each upstream query gets a random 16-bit ID and leaves from
one of a small pool of UDP sockets on kernel-chosen random ports, renewed as
they are used; a reply is taken only from the upstream's address and port, with
an ID we are waiting for and the question we asked. Anything else is dropped
and never cached.

Loops (`--upstream` that leads back to us): identical questions in flight are
coalesced, so a query that comes back round the loop joins the one already
waiting instead of being forwarded again; in-flight forwards are also bounded
per client and in total (over either: REFUSED, as CoreDNS's `max_concurrent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from clusterset.zone.wire import UDP_PAYLOAD

log = logging.getLogger(__name__)

DEFAULT_ALLOW = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
    "fe80::/10",
)
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Send = Callable[[bytes, Any], object]  # socket.sendto, or a test's collector

POOL = 8  # upstream UDP sockets in use at a time
QUERIES_PER_SOCKET = 256  # then the socket is replaced by one on a new random port
MAX_IN_FLIGHT = 2048  # distinct upstream queries waiting, all clients together
MAX_PER_CLIENT = 256  # waiting queries of one client address
MAX_WAITERS = 64  # clients waiting for one coalesced upstream query
TCP_POOL = 4  # idle upstream TCP connections kept for reuse
TCP_IDLE = 5.0  # seconds an idle upstream TCP connection is kept (CoreDNS's forward: 10)


def parse_upstream(value: str) -> tuple[str, int]:
    """IP, IP:PORT or [IPv6]:PORT; ValueError with the reason otherwise."""
    try:
        return str(ipaddress.ip_address(value.strip("[]"))), 53
    except ValueError:
        pass
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = value, "53"
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(
            f"expected IP[:PORT]; {host!r} is not an IP address "
            "(a host name would need a resolver to reach the resolver)"
        ) from None
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError("expected IP[:PORT] with a port in 1-65535")
    return str(ip), int(port)


def is_own_address(upstream: tuple[str, int], listen: tuple[str, int]) -> bool:
    """True when `upstream` is where we listen ourselves: every forward would come back.

    A wildcard listener owns the port on every local address; an address is local
    when a socket can be bound to it.
    """
    host, port = upstream
    if port != listen[1]:
        return False
    up = ipaddress.ip_address(host)
    lhost = ipaddress.ip_address(listen[0])
    if isinstance(lhost, ipaddress.IPv6Address) and lhost.ipv4_mapped is not None:
        lhost = lhost.ipv4_mapped
    if up == lhost:
        return True
    if not lhost.is_unspecified:
        return False
    family = socket.AF_INET6 if up.version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, 0))
        except OSError:
            return False
    return True


def _skip_name(msg: bytes, i: int) -> int:
    while True:
        length = msg[i]
        if length == 0:
            return i + 1
        if length >= 0xC0:
            return i + 2
        i += length + 1


def ttl_offsets(msg: bytes) -> tuple[list[int], int]:
    """Offsets of every RR's TTL (OPT excluded) and the smallest TTL; ValueError if malformed.

    Hand-written on purpose: it runs once per cached reply, and lets hits age TTLs by
    patching 4-byte fields instead of parsing and rendering the message again.
    """
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", msg, 4)
        i = 12
        for _ in range(qd):
            i = _skip_name(msg, i) + 4
        offsets: list[int] = []
        least = 1 << 31
        negative_soa = None
        for n in range(an + ns + ar):
            i = _skip_name(msg, i)
            rtype, _cls, ttl, rdlen = struct.unpack_from("!HHIH", msg, i)
            if rtype != 41:
                offsets.append(i + 4)
                least = min(least, ttl)
                if rtype == 6 and an <= n < an + ns:
                    # RFC 2308: a negative answer lives min(SOA TTL, SOA MINIMUM).
                    negative_soa = struct.unpack_from("!I", msg, i + 10 + rdlen - 4)[0]
            i += 10 + rdlen
        if i > len(msg):
            raise ValueError("short")
        if negative_soa is not None:
            least = min(least, negative_soa)
        return offsets, (least if offsets else 0)
    except (IndexError, struct.error) as exc:
        raise ValueError("malformed reply") from exc


@dataclass(slots=True)
class _Entry:
    reply: bytes
    offsets: list[int]
    stored: float
    expires: float


CACHE_BYTES = 32 << 20


class Cache:
    """(qname lowercased, qtype, qclass, EDNS present, DO, CD) -> reply; TTLs aged on hits.

    Bounded by entries and by bytes: a client chooses what is forwarded, and a reply over
    TCP can be 64 KiB.
    """

    def __init__(self, size: int = 10000, max_ttl: int = 300, max_bytes: int = CACHE_BYTES) -> None:
        self.size = size
        self.max_ttl = max_ttl
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[bytes, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(query: bytes, qend: int, edns: bool, do: bool) -> bytes:
        # Only the name is case-insensitive: lowercasing the type bytes too would make
        # TYPE97 (0x0061) the same key as HTTPS (0x0041). CD is in the key as in CoreDNS's
        # cache: a CD=1 answer skipped DNSSEC validation and must not reach CD=0 clients.
        cd = bool(query[3] & 0x10)
        return query[12 : qend - 4].lower() + query[qend - 4 : qend] + bytes([edns, do, cd])

    def get(self, key: bytes, query: bytes, qend: int, now: float) -> bytes | None:
        e = self._data.get(key)
        if e is None or e.expires <= now:
            if e is not None:
                self._drop(key)
            self.misses += 1
            return None
        self.hits += 1
        age = int(now - e.stored)
        out = bytearray(e.reply)
        out[0:2] = query[0:2]
        out[2] = (out[2] & 0xFE) | (query[2] & 0x01)  # RD is copied from the query (RFC 1035)
        out[12:qend] = query[12:qend]  # the client's case
        for off in e.offsets:
            (ttl,) = struct.unpack_from("!I", out, off)
            struct.pack_into("!I", out, off, max(0, ttl - age))
        return bytes(out)

    def put(self, key: bytes, reply: bytes, now: float) -> None:
        rcode = reply[3] & 0x0F
        if reply[2] & 0x02 or rcode not in (0, 3):  # truncated, SERVFAIL, REFUSED...: not cached
            return
        try:
            offsets, ttl = ttl_offsets(reply)
        except ValueError:
            return
        ttl = min(ttl, self.max_ttl)
        if ttl <= 0 or len(reply) > self.max_bytes:
            return
        if key in self._data:
            self._drop(key)
        self._data[key] = _Entry(reply, offsets, now, now + ttl)
        self.bytes += len(key) + len(reply)
        while len(self._data) > self.size or self.bytes > self.max_bytes:
            self._drop(next(iter(self._data)))

    def _drop(self, key: bytes) -> None:
        e = self._data.pop(key)
        self.bytes -= len(key) + len(e.reply)


def question_end(query: bytes) -> tuple[int, bool, bool]:
    """(end of question, EDNS present, DO bit) of a query already accepted by `respond`."""
    i = _skip_name(query, 12) + 4
    edns = len(query) > i and struct.unpack_from("!H", query, 10)[0] > 0
    do = False
    if edns and _opt_at(query, i):
        do = bool(query[i + 7] & 0x80)
    return i, edns, do


def with_payload(reply: bytes, udp_size: int) -> bytes:
    """`reply` with its OPT RR advertising `udp_size` (at least 512) instead of the
    upstream's payload size; unchanged without OPT or when malformed."""
    try:
        qd, an, ns, ar = struct.unpack_from("!HHHH", reply, 4)
        i = 12
        for _ in range(qd):
            i = _skip_name(reply, i) + 4
        for _ in range(an + ns + ar):
            i = _skip_name(reply, i)
            rtype, rdlen = struct.unpack_from("!H6xH", reply, i)
            if rtype == 41:
                return reply[: i + 2] + struct.pack("!H", max(512, udp_size)) + reply[i + 4 :]
            i += 10 + rdlen
    except (IndexError, struct.error):
        pass
    return reply


def _opt_at(msg: bytes, i: int) -> bool:
    """An OPT RR (root owner, type 41) starts at `i`."""
    return i + 11 <= len(msg) and msg[i] == 0 and msg[i + 1 : i + 3] == b"\x00\x29"


def udp_limit(query: bytes, qend: int, edns: bool, udp_size: int) -> int:
    """Largest UDP reply for this client: its EDNS payload size (at least 512), never more
    than our own `udp_size`; 512 without EDNS (RFC 6891 6.2.3-6.2.5)."""
    if not (edns and _opt_at(query, qend)):
        return 512
    return min(max(512, (query[qend + 3] << 8) | query[qend + 4]), max(512, udp_size))


def truncated(reply: bytes, query: bytes, qend: int, edns: bool, udp_size: int) -> bytes:
    """`reply` cut to header and question with TC set: the client retries over TCP."""
    opt = b""
    if edns:
        opt = b"\x00\x00\x29" + struct.pack("!H", udp_size) + b"\x00\x00" + b"\x00" * 4
    return (
        query[:2]
        + bytes([reply[2] | 0x02, reply[3]])
        + struct.pack("!HHHH", 1, 0, 0, 1 if opt else 0)
        + query[12:qend]
        + opt
    )


@dataclass(slots=True)
class _Waiter:
    query: bytes  # the client's own packet: its ID, its case, its EDNS
    qend: int
    edns: bool
    client: object
    host: str
    send: Send


@dataclass(slots=True)
class _Flight:
    """One upstream query; every client asking the same question meanwhile waits on it."""

    key: bytes
    store: bytes | None  # the cache key, None for an RD=0 query (its answer is not cached)
    port: _Port
    qid: int
    question: bytes  # what we asked (`_question`), to check the reply's question section
    started: float
    waiters: list[_Waiter] = field(default_factory=list)


class _Port:
    """A UDP socket connected to the upstream from a random local port (so the kernel
    delivers only the upstream's datagrams to it); replaced after QUERIES_PER_SOCKET."""

    __slots__ = ("flights", "sent", "sock")

    def __init__(self, upstream: tuple[str, int]) -> None:
        family = socket.AF_INET6 if ":" in upstream[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.setblocking(False)
        self.sock.connect(upstream)  # binds a random ephemeral port (Linux randomises it)
        self.sent = 0
        self.flights: dict[int, _Flight] = {}


def _random_id() -> int:
    return int.from_bytes(os.urandom(2), "big")


def _store_key(query: bytes, key: bytes) -> bytes | None:
    """Where the upstream's answer to `query` is cached: nowhere for RD=0. CoreDNS keys on
    DO and CD only, so an RD=0 referral would be served to RD=1 clients; an RD=0 query is
    still answered from what RD=1 queries cached, as a resolver does."""
    return key if query[2] & 0x01 else None


@dataclass(slots=True)
class _Conn:
    """A pooled upstream TCP connection; it carries one query at a time."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = 0.0


class Forwarder:
    """UDP upstream with random IDs and ports and reply checks; pooled TCP; shared cache."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        allow: tuple[str, ...] = DEFAULT_ALLOW,
        timeout: float = 2.0,
        cache: Cache | None = None,
        udp_size: int = UDP_PAYLOAD,
        clock: Callable[[], float] = time.monotonic,  # injectable for tests
    ) -> None:
        self.upstream = upstream
        self.allow: list[Network] = [ipaddress.ip_network(a) for a in allow]
        self.timeout = timeout
        self.cache = cache or Cache()
        self.udp_size = udp_size
        self.clock = clock
        self._allowed: dict[str, bool] = {}
        self._ports: list[_Port] = []
        self._retired: list[_Port] = []
        self._flights: dict[bytes, _Flight] = {}
        self._per_client: dict[str, int] = {}
        self._idle: list[_Conn] = []  # most recently used last
        self._stopped = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.forwarded = 0
        self.refused = 0
        self.timeouts = 0
        self.mismatched = 0  # replies dropped: wrong source, unknown ID or other question
        self.limited = 0  # REFUSED because too many forwards were in flight
        self.coalesced = 0
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stopped = False
        self._ports = [self._open() for _ in range(POOL)]
        self._reaper = asyncio.create_task(self._reap(), name="forward-reaper")

    def _open(self) -> _Port:
        assert self.loop is not None
        port = _Port(self.upstream)
        self.loop.add_reader(port.sock.fileno(), self._readable, port)
        return port

    def _close(self, port: _Port) -> None:
        assert self.loop is not None
        self.loop.remove_reader(port.sock.fileno())
        port.sock.close()

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        for port in self._ports + self._retired:
            self._close(port)
        self._ports, self._retired = [], []
        self._stopped = True
        for conn in self._idle:
            conn.writer.close()
        self._idle = []

    def allowed(self, host: str) -> bool:
        ok = self._allowed.get(host)
        if ok is None:
            try:
                ip = ipaddress.ip_address(host.split("%", 1)[0])
                if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                    ip = ip.ipv4_mapped  # an IPv4 client of a dual-stack [::] listener
                ok = any(ip in net for net in self.allow)
            except ValueError:
                ok = False
            if len(self._allowed) > 65536:
                self._allowed.clear()
            self._allowed[host] = ok
        return ok

    def _admit(self, host: str) -> bool:
        """Count one more waiting query of `host`, unless that is over a bound."""
        n = self._per_client.get(host, 0)
        if n >= MAX_PER_CLIENT:
            self.limited += 1
            return False
        self._per_client[host] = n + 1
        return True

    def _release(self, host: str) -> None:
        n = self._per_client.pop(host, 1) - 1
        if n > 0:
            self._per_client[host] = n

    # -- UDP: called from the UDP threads ------------------------------------------------
    def submit(self, query: bytes, addr: object, send: Send) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._handle, query, addr, send)

    def _handle(self, query: bytes, addr: object, send: Send) -> None:
        host = str(addr[0]) if isinstance(addr, tuple) else ""
        if not self.allowed(host):
            self.refused += 1
            send(refused(query), addr)
            return
        qend, edns, do = question_end(query)
        limit = udp_limit(query, qend, edns, self.udp_size)
        key = Cache.key(query, qend, edns, do)
        hit = self.cache.get(key, query, qend, self.clock())
        if hit is not None:
            if len(hit) > limit:
                hit = truncated(hit, query, qend, edns, self.udp_size)
            send(hit, addr)
            return
        waiter = _Waiter(query, qend, edns, addr, host, send)
        # Flags that change the upstream's answer (RD, AD; CD is in `key`) are part of the
        # flight key.
        fkey = key + bytes([query[2] & 0x01, query[3] & 0x20])
        flight = self._flights.get(fkey)
        if flight is not None:
            if len(flight.waiters) >= MAX_WAITERS:
                self.limited += 1
            elif self._admit(host):
                self.coalesced += 1
                flight.waiters.append(waiter)
                return
            send(refused(query), addr)
            return
        if len(self._flights) >= MAX_IN_FLIGHT:
            self.limited += 1
            send(refused(query), addr)
            return
        if not self._admit(host):
            send(refused(query), addr)
            return
        port = self._pick()
        qid = _random_id()
        while qid in port.flights:
            qid = _random_id()
        out = bytearray(query)
        out[0:2] = struct.pack("!H", qid)
        if edns and _opt_at(query, qend):
            # Ask for what we can pass on: our own UDP size, not the client's.
            out[qend + 3 : qend + 5] = struct.pack("!H", max(512, self.udp_size))
        flight = _Flight(
            fkey, _store_key(query, key), port, qid, _question(query, qend), self.clock(), [waiter]
        )
        try:
            port.sock.send(out)
        except OSError:
            self._release(host)
            send(servfail(query), addr)
            return
        port.sent += 1
        port.flights[qid] = flight
        self._flights[fkey] = flight
        self.forwarded += 1

    def _pick(self) -> _Port:
        """A pool socket at random; one that has sent its share is retired and replaced."""
        i = _random_id() % len(self._ports)
        port = self._ports[i]
        if port.sent >= QUERIES_PER_SOCKET:
            self._retired.append(port)  # closed by the reaper once nothing waits on it
            port = self._ports[i] = self._open()
        return port

    def _readable(self, port: _Port) -> None:
        while True:
            try:
                data, addr = port.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # ICMP unreachable on a connected socket, ...
                if exc.errno != errno.ECONNREFUSED:
                    log.debug("forward: upstream socket error: %s", exc)
                return
            self._reply(port, data, addr)

    def _reply(self, port: _Port, data: bytes, addr: object) -> None:
        flight = port.flights.get(struct.unpack_from("!H", data, 0)[0]) if len(data) >= 12 else None
        if (
            flight is None
            or not isinstance(addr, tuple)
            or not _same_host(addr, self.upstream)
            or not data[2] & 0x80
            or data[4:6] != b"\x00\x01"
            or _question(data, 12 + len(flight.question)) != flight.question
        ):
            self.mismatched += 1  # late, spoofed or foreign: never delivered, never cached
            return
        del port.flights[flight.qid]
        del self._flights[flight.key]
        data = with_payload(data, self.udp_size)
        if flight.store is not None:
            self.cache.put(flight.store, data, self.clock())
        for w in flight.waiters:
            self._release(w.host)
            reply = w.query[:2] + data[2:12] + w.query[12 : w.qend] + data[w.qend :]
            if len(reply) > udp_limit(w.query, w.qend, w.edns, self.udp_size):
                reply = truncated(reply, w.query, w.qend, w.edns, self.udp_size)
            w.send(reply, w.client)

    async def _reap(self) -> None:
        """Answer SERVFAIL for queries the upstream never answered; close retired sockets
        and upstream TCP connections idle for TCP_IDLE."""
        while True:
            await asyncio.sleep(self.timeout / 2)
            cutoff = self.clock() - self.timeout
            for flight in [f for f in self._flights.values() if f.started < cutoff]:
                del self._flights[flight.key]
                del flight.port.flights[flight.qid]
                self.timeouts += 1
                for w in flight.waiters:
                    self._release(w.host)
                    w.send(servfail(w.query), w.client)
            for port in [p for p in self._retired if not p.flights]:
                self._retired.remove(port)
                self._close(port)
            self._expire_idle()

    # -- TCP ------------------------------------------------------------------------------
    async def forward_tcp(self, query: bytes, host: str) -> bytes:
        if not self.allowed(host):
            self.refused += 1
            return refused(query)
        qend, edns, do = question_end(query)
        key = Cache.key(query, qend, edns, do)
        hit = self.cache.get(key, query, qend, self.clock())
        if hit is not None:
            return hit
        if not self._admit(host):
            return refused(query)
        self.forwarded += 1
        try:
            async with asyncio.timeout(self.timeout):
                reply = await self._tcp_exchange(query)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, struct.error):
            self.timeouts += 1
            return servfail(query)
        finally:
            self._release(host)
        if (
            len(reply) < 12
            or reply[:2] != query[:2]
            or not reply[2] & 0x80
            or _question(reply, qend) != _question(query, qend)
        ):
            self.mismatched += 1
            return servfail(query)
        reply = with_payload(reply, self.udp_size)
        store = _store_key(query, key)
        if store is not None:
            self.cache.put(store, reply, self.clock())
        return reply

    async def _tcp_exchange(self, query: bytes) -> bytes:
        """`query` on a pooled connection; if a reused one fails (the upstream may have
        closed it while it sat idle), once more on a fresh one."""
        conn = self._checkout()
        if conn is not None:
            try:
                return await self._ask(conn, query)
            except (OSError, asyncio.IncompleteReadError):
                pass
        reader, writer = await asyncio.open_connection(*self.upstream)
        return await self._ask(_Conn(reader, writer), query)

    async def _ask(self, conn: _Conn, query: bytes) -> bytes:
        """One exchange; the connection goes back to the pool only after a reply with our
        ID, so a cancelled or confused exchange never leaves a stray reply for the next."""
        reply = b""
        try:
            conn.writer.write(struct.pack("!H", len(query)) + query)
            await conn.writer.drain()
            (length,) = struct.unpack("!H", await conn.reader.readexactly(2))
            reply = await conn.reader.readexactly(length)
            return reply
        finally:
            if reply[:2] == query[:2] and not self._stopped and len(self._idle) < TCP_POOL:
                conn.idle_since = self.clock()
                self._idle.append(conn)
            else:
                conn.writer.close()

    def _checkout(self) -> _Conn | None:
        """The most recently used idle connection still open, if any."""
        self._expire_idle()
        while self._idle:
            conn = self._idle.pop()
            if not conn.reader.at_eof() and not conn.writer.is_closing():
                return conn
            conn.writer.close()
        return None

    def _expire_idle(self) -> None:
        cutoff = self.clock() - TCP_IDLE
        while self._idle and self._idle[0].idle_since < cutoff:
            self._idle.pop(0).writer.close()


def _question(msg: bytes, qend: int) -> bytes:
    """The question section with the name lowercased (the type and class bytes as they are)."""
    return msg[12 : qend - 4].lower() + msg[qend - 4 : qend]


def _same_host(addr: tuple[Any, ...], upstream: tuple[str, int]) -> bool:
    if addr[1] != upstream[1]:
        return False
    try:
        return ipaddress.ip_address(str(addr[0]).split("%", 1)[0]) == ipaddress.ip_address(
            upstream[0]
        )
    except ValueError:
        return False


def servfail(query: bytes) -> bytes:
    """SERVFAIL with no sections (the upstream did not answer in time)."""
    return query[:2] + b"\x81\x82" + b"\x00" * 8


def refused(query: bytes) -> bytes:
    """REFUSED with the question echoed (for clients outside the allowed ranges)."""
    try:
        qend = _skip_name(query, 12) + 4
    except IndexError:
        qend = 12
    return (
        query[:2]
        + bytes([0x80 | (query[2] & 0x79), 0x05])
        + b"\x00\x01"
        + b"\x00" * 6
        + query[12:qend]
    )
