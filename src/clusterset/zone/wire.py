"""Compiled zone: every positive answer prebuilt as wire bytes, and the per-query path.

Why bytes: parsing and rendering each reply with dnspython costs ~135 µs a
query; a dict lookup of prebuilt bytes plus an ID patch costs a few µs
(measured, see bench/). `zone.build` packs every answer once, when the zone
is built (incrementally: only changed services); `respond` only slices the
question, looks up, and splices.

Splicing keeps the client's question bytes, so names come back in the case
the client asked (0x20 randomisation) and the compression pointers of the
prebuilt body stay valid (the question has the same length whatever its case).

`respond` is pure and hand-written on purpose (the measured hot path); the
odd cases (EDNS errors, truncation, malformed packets) take a slower branch.
"""

from __future__ import annotations

import struct
from collections.abc import Collection

import dns.message

from clusterset.zone.build import ZoneState
from clusterset.zone.encode import Prebuilt, Rotation

# Header flag bits (RFC 1035 4.1.1), first and second flag octets.
_QR = 0x80
_AA = 0x04
_TC = 0x02
_RD = 0x01

NOERROR = 0
FORMERR = 1
SERVFAIL = 2
NXDOMAIN = 3
NOTIMP = 4
REFUSED = 5
BADVERS = 16

SOA = 6
OPT = 41
AXFR = 252
IXFR = 251
UDP_PAYLOAD = 1232  # default largest UDP reply, and what we advertise (DNS flag day 2020)
_RR_OVERHEAD = 10


def _opt(udp_size: int, do: bool) -> bytes:
    """Our OPT RR: version 0, no options, the DO bit echoed, `udp_size` advertised."""
    return b"\x00\x00\x29" + struct.pack("!HBBBBH", udp_size, 0, 0, 0x80 if do else 0, 0, 0)


_OPT_RR = {(size, do): _opt(size, do) for size in (UDP_PAYLOAD,) for do in (False, True)}


def _opt_rr(udp_size: int, do: bool) -> bytes:
    opt = _OPT_RR.get((udp_size, do))
    if opt is None:
        opt = _OPT_RR[(udp_size, do)] = _opt(udp_size, do)
    return opt


class CompiledZone:
    """Read-only after construction; swapped whole by the server (one reference)."""

    __slots__ = (
        "_neg_cache",
        "answers",
        "memo_tcp",
        "memo_udp",
        "names",
        "origin_wire",
        "serial",
        "soa_tail",
        "state",
        "synced",
    )

    def __init__(self, state: ZoneState, *, synced: bool = True) -> None:
        self.state = state  # what zone.build reuses for the next generation, and --explain
        self.synced = synced
        self.memo_udp = Memo()
        self.memo_tcp = Memo()
        self.origin_wire = state.origin
        self.serial = state.serial
        self.names: Collection[bytes] = state.names  # `in` and len() only
        self.answers: dict[bytes, Prebuilt | Rotation] = state.answers if synced else {}
        # Negative answers: one SOA in authority whose owner (and MNAME/RNAME suffix) points
        # at the zone inside the client's question, so it echoes the client's case.
        self.soa_tail = (state.soa_ttl, state.soa_fixed)
        self._neg_cache: dict[int, bytes] = {}

    def negative_soa(self, zone_offset: int) -> bytes:
        """The authority SOA RR for a question whose zone suffix starts at `zone_offset`."""
        cached = self._neg_cache.get(zone_offset)
        if cached is None:
            ptr = struct.pack("!H", 0xC000 | zone_offset)
            ttl, fixed = self.soa_tail
            rdata = b"\x02ns\x03dns" + ptr + b"\x0ahostmaster" + ptr + fixed
            cached = ptr + struct.pack("!HHIH", SOA, 1, ttl, len(rdata)) + rdata
            self._neg_cache[zone_offset] = cached
        return cached


def _error(query: bytes, qend: int, rcode: int, opt: bytes = b"") -> bytes:
    """Reply with the question echoed and no records (REFUSED, FORMERR, NOTIMP...)."""
    rd = query[2] & _RD
    flags2 = _QR | rd | (query[2] & 0x78)  # keep the opcode
    ext, low = rcode >> 4, rcode & 0xF
    if ext and opt:
        opt = opt[:5] + bytes([ext]) + opt[6:]
    qd = 1 if qend > 12 else 0
    return (
        query[:2]
        + struct.pack("!BBHHHH", flags2, low, qd, 0, 0, 1 if opt else 0)
        + query[12:qend]
        + opt
    )


def _walk(query: bytes) -> int:
    """End offset of the question name, or -1 if malformed (bad length, pointer, overrun).

    Never looks past 255 octets (the longest name): a packet of one-octet labels must not
    cost a step per octet of 64 KB.
    """
    i = 12
    end = min(len(query), 12 + 255)
    while i < end:
        length = query[i]
        if length == 0:
            return i + 1
        if length > 63:
            return -1
        i += length + 1
    return -1


def _skip_name(query: bytes, i: int) -> int:
    """Offset after the name at `i`, a pointer ending it (not followed); -1 if malformed.

    Bounded like `_walk`: at most 255 octets are looked at.
    """
    n = len(query)
    end = min(n, i + 255)
    while i < end:
        length = query[i]
        if length == 0:
            return i + 1
        if length >= 0xC0:
            return i + 2 if i + 2 <= n else -1
        if length > 63:
            return -1
        i += length + 1
    return -1


def _in_zone(name: bytes, origin: bytes) -> int:
    """Offset in `name` where `origin` starts on a label boundary, else -1."""
    i = 0
    n = len(name) - len(origin)
    while i <= n:
        if name[i:] == origin:
            return i
        i += name[i] + 1
    return -1


def _truncate(resp: bytes, qend: int, p: Prebuilt, limit: int, opt: bytes) -> bytes:
    """Keep the RRs that fit (answer first), set TC if an answer RR was dropped (miekg rule)."""
    room = limit - qend - len(opt)
    keep = 0
    for end, _section in p.rr_ends:
        if end > room:
            break
        keep += 1
    counts = [0, 0, 0, 0]
    for _end, section in p.rr_ends[:keep]:
        counts[section] += 1
    cut = p.rr_ends[keep - 1][0] if keep else 0
    tc = counts[1] < p.counts[0]
    flags2 = resp[2] | (_TC if tc else 0)
    header = (
        resp[:2]
        + bytes([flags2, resp[3]])
        + struct.pack("!HHHH", 1, counts[1], counts[2], counts[3] + (1 if opt else 0))
    )
    return header + resp[12:qend] + p.body[:cut] + opt


FORWARD = b""  # respond() result: not ours, hand the query to the upstream (unified mode)


def respond(
    zone: CompiledZone | None,
    origin: bytes,
    query: bytes,
    *,
    tcp: bool = False,
    forward: bool = False,
    udp_size: int = UDP_PAYLOAD,
) -> bytes | None:
    """The reply to one query packet; None to drop it; FORWARD (empty) to forward it.

    `zone` is None until the first load: in-zone names then get SERVFAIL, never NXDOMAIN.
    With `forward`, names outside the zone that the zone does not answer are FORWARD
    instead of REFUSED (the unified cluster.local mode, in front of the cluster DNS).
    A UDP reply is at most the client's EDNS payload size and never more than `udp_size`
    (above it: TC), whatever the client advertises, so we never amplify beyond our own
    limit. `udp_size` is one server's setting: the zone's memo assumes it does not change.
    """
    n = len(query)
    if n < 12 or query[2] & _QR:
        return None
    memo = None
    if zone is not None and n <= MEMO_LARGEST:  # no larger key is kept (`_remember`)
        # Replies already given for these exact bytes (all but the ID) in this zone
        # generation: a dict hit instead of re-splicing (measured ~30% less CPU a query).
        memo = zone.memo_tcp if tcp else zone.memo_udp
        hit = memo.get(query[2:])
        if hit is not None:
            return query[:2] + hit
    # Fast path: one question, no answer/authority, at most the OPT record.
    if n >= 17 and query[4:10] == b"\x00\x01\x00\x00\x00\x00" and query[2] & 0x78 == 0:
        j = query.find(0, 12)
        if j >= 12 and j + 5 <= n and query[j + 3 : j + 5] == b"\x00\x01":
            edns = _edns(query, j + 5, tcp, udp_size)
            if edns is not None:
                return _fast(zone, origin, query, j, edns, memo, forward)
    return _slow(zone, origin, query, tcp=tcp, forward=forward, udp_size=udp_size)


def _edns(query: bytes, qend: int, tcp: bool, udp_size: int) -> tuple[bytes, int] | None:
    """The reply's OPT record and size limit; None when the additional section is not
    nothing or exactly one well-formed OPT after the question (the slow path judges it)."""
    ar = query[10:12]
    if ar == b"\x00\x00":
        return (b"", 65535 if tcp else 512) if qend == len(query) else None
    if (
        ar != b"\x00\x01"
        or qend + 11 > len(query)
        or query[qend] != 0
        or query[qend + 1 : qend + 3] != b"\x00\x29"
        or query[qend + 6] != 0
        or qend + 11 + ((query[qend + 9] << 8) | query[qend + 10]) != len(query)
    ):
        return None
    opt = _opt_rr(udp_size, query[qend + 7] >= 0x80)
    if tcp:
        return opt, 65535
    limit = max(512, (query[qend + 3] << 8) | query[qend + 4])
    return opt, min(limit, max(512, udp_size))


def _fast(
    zone: CompiledZone | None,
    origin: bytes,
    query: bytes,
    j: int,
    edns: tuple[bytes, int],
    memo: Memo | None,
    forward: bool,
) -> bytes:
    """The fast path's reply: a prebuilt answer spliced after the question, else the
    negative answer (the question ends at `j`, its root label)."""
    opt, limit = edns
    qend = j + 5
    if zone is not None:
        p = zone.answers.get(query[12 : j + 3].lower())
        if p is not None:
            rotating = False
            if isinstance(p, Rotation):
                p, rotating = p.next(), True
            resp = (
                query[:2]
                + p.headers[(2 if opt else 0) + (query[2] & _RD)]
                + query[12:qend]
                + p.body
                + opt
            )
            if len(resp) > limit:
                resp = _truncate(resp, qend, p, limit, opt)
            if memo is not None and not rotating:  # rotations must keep turning
                _remember(memo, query, resp)
            return resp
    resp = _negative(zone, origin, query, j + 1, qend, opt, forward)
    if memo is not None and resp:
        _remember(memo, query, resp)
    return resp


MEMO_BYTES = 8 << 20  # per zone and transport
MEMO_LARGEST = 1232  # larger replies are spliced anew: the copy costs more than the lookup saves
_MEMO_ENTRY = 120  # two bytes objects and a dict slot, besides their contents


class Memo(dict[bytes, bytes]):
    """Replies already given in one zone generation, by query bytes after the ID.

    Bounded by bytes, not entries: every 0x20 case variant of a name is its own key,
    so a client chooses how many keys there are. Threads race on `size` benignly.
    """

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0


def _remember(memo: Memo, query: bytes, resp: bytes) -> None:
    if len(resp) > MEMO_LARGEST or len(query) > MEMO_LARGEST:
        return  # a few 64 KB keys would also flush everything else
    cost = len(query) + len(resp) + _MEMO_ENTRY
    if memo.size + cost > MEMO_BYTES:
        memo.clear()  # start over: cheaper than LRU bookkeeping on the hot path
        memo.size = 0
    memo[query[2:]] = resp[2:]
    memo.size += cost


def _negative(
    zone: CompiledZone | None,
    origin: bytes,
    query: bytes,
    name_end: int,
    qend: int,
    opt: bytes,
    forward: bool,
) -> bytes:
    """NXDOMAIN / NODATA with one SOA, REFUSED out of zone, SERVFAIL before the first load."""
    walked = _walk(query)
    if walked != name_end:
        # A zero octet inside a label fooled the fast path: use the real boundaries.
        if walked < 0 or walked + 4 > len(query) or query[walked + 2 : walked + 4] != b"\x00\x01":
            return _error(query, 12, FORMERR, opt)
        name_end, qend = walked, walked + 4
    name = query[12:name_end].lower()
    at = _in_zone(name, origin)
    if at < 0:
        return FORWARD if forward else _error(query, qend, REFUSED, opt)
    qtype = (query[name_end] << 8) | query[name_end + 1]
    rd = query[2] & _RD
    if zone is None:
        return _error(query, qend, SERVFAIL, opt)
    rcode = NOERROR if name in zone.names else NXDOMAIN
    if not zone.synced:
        rcode = SERVFAIL  # before the first full load: never a (cacheable) NXDOMAIN
    if qtype in (AXFR, IXFR):
        return _error(query, qend, REFUSED, opt)
    if qtype == OPT or (128 <= qtype <= 255 and qtype != 255):
        # Meta types (RFC 6895 3.1) cannot be asked for.
        return _error(query, qend, FORMERR, opt)
    soa = zone.negative_soa(12 + at)
    return (
        query[:2]
        + struct.pack("!BBHHHH", _QR | _AA | rd, rcode, 1, 0, 1, 1 if opt else 0)
        + query[12:qend]
        + soa
        + opt
    )


def _screen(query: bytes) -> tuple[int, int]:
    """The rcode to refuse `query` with (NOERROR: it may be a query), and where its OPT is.

    Decided from the header and a bounded scan, before any parse: one 64 KB query of
    4,090 additional records cost dnspython 0.3 s (issue 20). A query is one question and
    at most an OPT (we hold no TSIG key: a TSIG always had FORMERR); the OPT's options are
    not parsed, as on the fast path. The OPT is looked for only in that shape: elsewhere,
    finding it would mean walking records the sender counts. The offset returned is the
    OPT's TYPE field, or -1.
    """
    qd, an, ns, ar = struct.unpack_from("!HHHH", query, 4)
    opcode = query[2] & 0x78
    if qd != 1 or an or ns or ar > 1:
        return (NOTIMP if opcode else FORMERR), -1
    n = len(query)
    i = _skip_name(query, 12)
    if i < 0 or i + 4 > n:
        return FORMERR, -1
    i += 4
    at = -1
    if ar:
        if query[i : i + 3] != b"\x00\x00\x29" or i + 11 > n:  # root owner, TYPE OPT
            return FORMERR, -1
        at = i + 1
        i += 11 + ((query[i + 9] << 8) | query[i + 10])
    if i != n:
        return FORMERR, -1
    if at >= 0 and query[at + 5]:
        return BADVERS, at
    return (NOTIMP if opcode else NOERROR), at


def _slow(
    zone: CompiledZone | None,
    origin: bytes,
    query: bytes,
    *,
    tcp: bool,
    forward: bool,
    udp_size: int,
) -> bytes | None:
    """Everything unusual: screened, then the question parsed with dnspython.

    Refusals are memoised: a repeat then costs a dict hit (in C for UDP), not a screen.
    """
    qend = _walk(query)
    qend = qend + 4 if query[4:6] == b"\x00\x01" and qend > 0 and qend + 4 <= len(query) else 12
    rcode, at = _screen(query)
    opt = _opt_rr(udp_size, query[at + 6] >= 0x80) if at >= 0 else b""
    if rcode == NOERROR:
        try:
            q = dns.message.from_wire(query, question_only=True).question[0]
            rcode = NOERROR if q.rdclass == 1 else REFUSED
        except Exception:
            rcode = FORMERR
    if rcode != NOERROR:
        refusal = _error(query, qend, rcode, opt)
        if zone is not None:
            _remember(zone.memo_tcp if tcp else zone.memo_udp, query, refusal)
        return refusal
    # A well-formed query the fast path did not take (a compressed question): rebuild it
    # in canonical form, as the fast path takes it, and answer that.
    wire = (
        query[:4]
        + struct.pack("!HHHH", 1, 0, 0, 1 if opt else 0)
        + b"".join(bytes([len(label)]) + label for label in q.name.labels)
        + struct.pack("!HH", q.rdtype, 1)
        + (query[at - 1 : at + 8] + b"\x00\x00" if opt else b"")  # the OPT without options
    )
    if wire == query:
        return _error(query, qend, FORMERR, opt)
    return respond(zone, origin, wire, tcp=tcp, forward=forward, udp_size=udp_size)
