"""DNS wire encoding of prebuilt answers, straight from names and packed rdata.

Why not dnspython here: rendering one RR through dnspython's objects and
renderer costs ~100 µs, which made every zone build cost seconds at fleet
size. This module packs the same bytes with `struct` and bytes slicing
(~2 µs an RR). dnspython stays the oracle: tests/zone_oracle.py renders
every answer with dnspython's renderer and the tests compare the bytes.

To be byte-identical with dnspython, names are compressed the way its
renderer does it: every suffix of every name written with compression (the
question, owners, NS/SOA rdata; never SRV targets, RFC 2782) is remembered at
its offset, and a later name points at the longest remembered suffix. All
names here are lowercase wire bytes, so the compression keys are plain bytes.
One rule of ours on top: glue owners never point into the question (which
echoes the client's case), so they are byte for byte the SRV/NS targets.
"""

from __future__ import annotations

import functools
import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

NOERROR = 0

# Header flag bits (RFC 1035 4.1.1), first and second flag octets.
_QR = 0x80
_AA = 0x04
_RD = 0x01

A = 1
NS = 2
SOA = 6
TXT = 16
AAAA = 28
SRV = 33

_MAX_MESSAGE = 65535  # even over TCP; a bigger answer is served as the subset that fits
_POINTER_MAX = 0x3FFF
_RR_HEAD = struct.Struct("!HHIH")


class NameProblem(ValueError):
    """A name that cannot exist in DNS; the class name goes into the zone's warning."""


class LabelTooLong(NameProblem):
    pass


class NameTooLong(NameProblem):
    pass


class EmptyLabel(NameProblem):
    pass


# One record to write: owner (wire), type, TTL, names written compressed at the start
# of the rdata (NS target, SOA MNAME/RNAME), then raw rdata bytes.
RR = tuple[bytes, int, int, tuple[bytes, ...], bytes]


@dataclass(frozen=True, slots=True)
class Prebuilt:
    """A positive answer: header variants [with OPT][RD], body after the question, RR ends."""

    headers: tuple[bytes, bytes, bytes, bytes]
    body: bytes
    # (end offset in body, section 1=answer 2=authority 3=additional) per RR, for truncation.
    rr_ends: tuple[tuple[int, int], ...]
    counts: tuple[int, int, int]


class Rotation:
    """Answers served in turn (round-robin among equals); races between threads are benign."""

    __slots__ = ("i", "items")

    def __init__(self, items: list[Prebuilt]) -> None:
        self.items = items
        self.i = -1

    def next(self) -> Prebuilt:
        self.i = (self.i + 1) % len(self.items)
        return self.items[self.i]

    def __eq__(self, other: object) -> bool:  # for the equivalence tests: same answers
        return isinstance(other, Rotation) and other.items == self.items

    __hash__ = None  # type: ignore[assignment]


def _header(flags2: int, rcode: int, an: int, ns: int, ar: int) -> bytes:
    """Bytes 2..12 of a header (after the ID)."""
    return struct.pack("!BBHHHH", flags2, rcode, 1, an, ns, ar)


@functools.lru_cache(maxsize=4096)
def headers(rcode: int, an: int, ns: int, ar: int) -> tuple[bytes, bytes, bytes, bytes]:
    """The four header variants; shared between answers of the same counts (memory)."""
    base = _QR | _AA
    return (
        _header(base, rcode, an, ns, ar),
        _header(base | _RD, rcode, an, ns, ar),
        _header(base, rcode, an, ns, ar + 1),
        _header(base | _RD, rcode, an, ns, ar + 1),
    )


def labels_wire(labels: Sequence[str], parent: bytes) -> bytes:
    """`labels` (lowercased, UTF-8) in front of the absolute wire name `parent`.

    Checked as dnspython checks a Name: each label 1..63 octets, the whole at most 255.
    """
    out = bytearray()
    empty = False
    for label in labels:
        raw = label.lower().encode()
        if len(raw) > 63:
            raise LabelTooLong(label)
        empty = empty or not raw
        out.append(len(raw))
        out += raw
    if empty:
        raise EmptyLabel(".".join(labels))
    out += parent
    if len(out) > 255:
        raise NameTooLong(bytes(out))
    return bytes(out)


def name_from_text(text: str) -> bytes:
    """Wire form of a dotted absolute name such as `clusterset.local` (no escapes)."""
    stripped = text.rstrip(".")
    return labels_wire(stripped.split(".") if stripped else [], b"\x00")


@functools.lru_cache(maxsize=65536)
def address(text: str) -> tuple[int, bytes]:
    """(A or AAAA, packed address) of an IP literal."""
    if text.count(".") == 3 and ":" not in text:
        # Fast path for the canonical dotted quad (every endpoint address is canonical,
        # model.convert normalises them): ~5x cheaper than ipaddress; anything else falls
        # through to ipaddress, which validates.
        try:
            packed = bytes(int(p) for p in text.split("."))
        except ValueError:
            packed = b""
        if packed and ".".join(map(str, packed)) == text:
            return A, packed
    ip = ipaddress.ip_address(text)
    return (AAAA if ip.version == 6 else A), ip.packed


def _put_name(out: bytearray, name: bytes, table: dict[bytes, int], base: int) -> None:
    """Write `name` compressed (dnspython's rule: longest remembered suffix, remember the rest)."""
    i = 0
    while name[i]:
        suffix = name[i:]
        pos = table.get(suffix)
        if pos is not None:
            out += (0xC000 | pos).to_bytes(2, "big")
            return
        at = base + len(out)
        if at <= _POINTER_MAX:
            table[suffix] = at
        end = i + name[i] + 1
        out += name[i:end]
        i = end
    out.append(0)


def prebuild(qname: bytes, qtype: int, answer: Sequence[RR], additional: Sequence[RR]) -> Prebuilt:
    """The answer to (qname, qtype) as dnspython's renderer lays it out after the question."""
    if len(answer) == 1 and not additional:
        owner, rdtype, ttl, names, raw = answer[0]
        if owner == qname and not names:
            # One record at the question's name (every A/AAAA of an endpoint name, most
            # ClusterSetIP answers): the owner is a pointer to the question, nothing else.
            body = b"\xc0\x0c" + _RR_HEAD.pack(rdtype, 1, ttl, len(raw)) + raw
            return Prebuilt(headers(NOERROR, 1, 0, 0), body, _single_end(len(body)), _counts(1, 0))
    table: dict[bytes, int] = {}
    i = 0
    while qname[i]:
        table[qname[i:]] = 12 + i
        i += qname[i] + 1
    base = 12 + len(qname) + 4
    room = _MAX_MESSAGE - base
    out = bytearray()
    ends: list[tuple[int, int]] = []
    counts = [0, 0, 0, 0]
    pack = _RR_HEAD.pack
    for section, rrs in ((1, answer), (3, additional)):
        if section == 3:
            # Glue owners must be byte for byte the SRV/NS targets (lowercase, as CoreDNS
            # writes them), not pointers into the question, which echoes the client's case.
            for suffix in [k for k, at in table.items() if at < base]:
                del table[suffix]
        for owner, rdtype, ttl, names, raw in rrs:
            start = len(out)
            if section == 1 and owner == qname:
                out += b"\xc0\x0c"  # what the table gives for the question's own name
            else:
                _put_name(out, owner, table, base)
            if names:
                rdstart = len(out) + 10
                out += pack(rdtype, 1, ttl, 0)
                for n in names:
                    _put_name(out, n, table, base)
                out += raw
                out[rdstart - 2 : rdstart] = (len(out) - rdstart).to_bytes(2, "big")
            else:
                out += pack(rdtype, 1, ttl, len(raw))
                out += raw
            if len(out) > room:
                # Over 64 KiB even over TCP (e.g. SRV + glue of ~700 endpoints): serve the
                # subset that fits, as the spec allows for headless answers ("a subset ...
                # due to ... response size limit"). Names remembered past here are never used.
                del out[start:]
                an, ar = counts[1], counts[3]
                return Prebuilt(
                    headers(NOERROR, an, 0, ar), bytes(out), tuple(ends), _counts(an, ar)
                )
            counts[section] += 1
            end = len(out)
            pair = _PAIRS.get(end * 4 + section)
            if pair is None:
                pair = _PAIRS[end * 4 + section] = (end, section)
            ends.append(pair)
    an, ar = counts[1], counts[3]
    return Prebuilt(headers(NOERROR, an, 0, ar), bytes(out), tuple(ends), _counts(an, ar))


@functools.lru_cache(maxsize=4096)
def _counts(an: int, ar: int) -> tuple[int, int, int]:
    return (an, 0, ar)


@functools.lru_cache(maxsize=1024)
def _single_end(length: int) -> tuple[tuple[int, int], ...]:
    return ((length, 1),)


# (RR end offset, section) pairs shared by every answer: they were the biggest part of a
# zone's memory (a tuple per RR). Bounded by construction: offsets < 64 KiB, two sections.
_PAIRS: dict[int, tuple[int, int]] = {}
