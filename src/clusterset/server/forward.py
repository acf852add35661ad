"""Forwarding for the unified cluster.local mode: queries we do not answer go upstream.

We sit in front of the cluster DNS (kube-dns/CoreDNS). Replies pass through
unchanged (rcode, flags, EDNS, TC) but for the ID; a small TTL cache saves
upstream round trips. Only clients in `allow` get forwarding, so the server
never becomes an open resolver.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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


def parse_upstream(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        return value.strip("[]"), 53
    if not port.isdigit():
        raise ValueError(f"--upstream {value!r}: expected IP[:PORT]")
    host = host.strip("[]")
    ipaddress.ip_address(host)
    return host, int(port)


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


class Cache:
    """(qname lowercased, qtype, qclass, EDNS present, DO) -> reply; TTLs aged on hits."""

    def __init__(self, size: int = 10000, max_ttl: int = 300) -> None:
        self.size = size
        self.max_ttl = max_ttl
        self._data: OrderedDict[bytes, _Entry] = OrderedDict()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(query: bytes, qend: int, edns: bool, do: bool) -> bytes:
        return query[12:qend].lower() + bytes([edns, do])

    def get(self, key: bytes, query: bytes, qend: int, now: float) -> bytes | None:
        e = self._data.get(key)
        if e is None or e.expires <= now:
            if e is not None:
                del self._data[key]
            self.misses += 1
            return None
        self.hits += 1
        age = int(now - e.stored)
        out = bytearray(e.reply)
        out[0:2] = query[0:2]
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
        if ttl <= 0:
            return
        self._data[key] = _Entry(reply, offsets, now, now + ttl)
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)


def question_end(query: bytes) -> tuple[int, bool, bool]:
    """(end of question, EDNS present, DO bit) of a query already accepted by `respond`."""
    i = _skip_name(query, 12) + 4
    edns = len(query) > i and struct.unpack_from("!H", query, 10)[0] > 0
    do = False
    if edns and i + 11 <= len(query) and query[i] == 0 and query[i + 1 : i + 3] == b"\x00\x29":
        do = bool(query[i + 7] & 0x80)
    return i, edns, do


class Forwarder(asyncio.DatagramProtocol):
    """UDP to the upstream with ID remapping; TCP per query; shared cache."""

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        allow: tuple[str, ...] = DEFAULT_ALLOW,
        timeout: float = 2.0,
        cache: Cache | None = None,
        clock: Callable[[], float] = time.monotonic,  # injectable for tests
    ) -> None:
        self.upstream = upstream
        self.allow: list[Network] = [ipaddress.ip_network(a) for a in allow]
        self.timeout = timeout
        self.cache = cache or Cache()
        self.clock = clock
        self._allowed: dict[str, bool] = {}
        self._pending: dict[int, tuple[bytes, object, bytes, float, Send]] = {}
        self._next_id = 1
        self._transport: asyncio.DatagramTransport | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.forwarded = 0
        self.refused = 0
        self.timeouts = 0
        self._reaper: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.upstream[0] else socket.AF_INET
        self._transport, _ = await self.loop.create_datagram_endpoint(
            lambda: self, remote_addr=self.upstream, family=family
        )
        self._reaper = asyncio.create_task(self._reap(), name="forward-reaper")

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
        if self._transport is not None:
            self._transport.close()

    def allowed(self, host: str) -> bool:
        ok = self._allowed.get(host)
        if ok is None:
            try:
                ip = ipaddress.ip_address(host.split("%", 1)[0])
                ok = any(ip in net for net in self.allow)
            except ValueError:
                ok = False
            if len(self._allowed) > 65536:
                self._allowed.clear()
            self._allowed[host] = ok
        return ok

    # -- UDP: called from the UDP threads ------------------------------------------------
    def submit(self, query: bytes, addr: object, send: Send) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._handle, query, addr, send)

    def _handle(self, query: bytes, addr: object, send: Send) -> None:
        host = addr[0] if isinstance(addr, tuple) else ""
        if not self.allowed(str(host)):
            self.refused += 1
            send(refused(query), addr)
            return
        qend, edns, do = question_end(query)
        key = Cache.key(query, qend, edns, do)
        hit = self.cache.get(key, query, qend, self.clock())
        if hit is not None:
            send(hit, addr)
            return
        if self._transport is None:
            return
        new_id = self._next_id
        self._next_id = (self._next_id % 0xFFFF) + 1
        self._pending[new_id] = (query[:2], addr, key, self.clock(), send)
        self.forwarded += 1
        self._transport.sendto(struct.pack("!H", new_id) + query[2:])

    def datagram_received(self, data: bytes, addr: object) -> None:
        if len(data) < 12:
            return
        (rid,) = struct.unpack_from("!H", data, 0)
        pending = self._pending.pop(rid, None)
        if pending is None:
            return  # late or spoofed
        orig_id, client, key, _t, send = pending
        self.cache.put(key, data, self.clock())
        send(orig_id + data[2:], client)

    async def _reap(self) -> None:
        """Forget queries the upstream never answered (the client will retry)."""
        while True:
            await asyncio.sleep(self.timeout / 2)
            cutoff = self.clock() - self.timeout
            for rid in [r for r, p in self._pending.items() if p[3] < cutoff]:
                orig_id, client, _key, _t, send = self._pending.pop(rid)
                self.timeouts += 1
                send(orig_id + b"\x81\x82" + b"\x00" * 8, client)  # SERVFAIL, no sections

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
        self.forwarded += 1
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), self.timeout
            )
            try:
                writer.write(struct.pack("!H", len(query)) + query)
                (length,) = struct.unpack(
                    "!H", await asyncio.wait_for(reader.readexactly(2), self.timeout)
                )
                reply = await asyncio.wait_for(reader.readexactly(length), self.timeout)
            finally:
                writer.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            self.timeouts += 1
            return query[:2] + b"\x81\x82" + b"\x00" * 8
        self.cache.put(key, reply, self.clock())
        return reply


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
