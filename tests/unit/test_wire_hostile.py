"""Packets that cannot be queries are refused from the header, before any parse (issue 20).

One 64 KB query of 4,090 additional records cost dnspython 0.3 s; the timings here bound
the cost of each hostile packet generously (machines differ) but far below that.
"""

from __future__ import annotations

import struct
import time

import dns.edns
import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import pytest
from bench.dns_fuzz import worst_packets

from clusterset.zone.wire import respond
from tests.dnsutil import compile_view
from tests.factories import imported, view

Z = "clusterset.local."
ORIGIN = b"\x0aclusterset\x05local\x00"
ZONE_VIEW = view(imports=(imported("svc1", ips=("10.0.0.1",)),))
QUERY = dns.message.make_query("svc1.ns.svc." + Z, "A", id=0x1234).to_wire()
A_RR = bytes.fromhex("c00c00010001000000000004") + bytes([10, 0, 0, 1])


def _with_counts(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100) -> bytes:
    return QUERY[:2] + struct.pack("!HHHHH", flags, qd, an, ns, ar) + QUERY[12:]


def _rcode(reply: bytes | None) -> str:
    assert reply is not None
    return dns.rcode.to_text(dns.rcode.Rcode.make(reply[3] & 0xF))


def _cost(packet: bytes, times: int = 100) -> float:
    """Seconds for `times` replies, the memo emptied before each (no repeat is free)."""
    zone = compile_view(ZONE_VIEW)
    started = time.perf_counter()
    for _ in range(times):
        zone.memo_udp.clear()
        respond(zone, ORIGIN, packet)
    return time.perf_counter() - started


def test_4090_additional_records_are_formerr_without_parsing_them() -> None:
    packet = _with_counts(ar=4090) + A_RR * 4090
    assert len(packet) > 65_000
    zone = compile_view(ZONE_VIEW)
    reply = respond(zone, ORIGIN, packet)
    assert _rcode(reply) == "FORMERR" and reply is not None and reply[:2] == packet[:2]
    assert dns.message.from_wire(reply).question[0].name.to_text() == "svc1.ns.svc." + Z
    assert _cost(packet) < 0.5  # 100 of them; 0.3 s each before


@pytest.mark.parametrize("name", sorted(worst_packets()))
def test_no_structured_worst_case_costs_more_than_a_few_hundred_microseconds(name: str) -> None:
    packet = worst_packets()[name]
    assert respond(compile_view(ZONE_VIEW), ORIGIN, packet) is not None
    assert _cost(packet) < 0.1  # 100 of them: under 1 ms each; 0.1 to 0.25 s each before


@pytest.mark.parametrize(
    ("counts", "expect"),
    [
        pytest.param({"an": 4090}, "FORMERR", id="answer-records"),
        pytest.param({"ns": 4090}, "FORMERR", id="authority-records"),
        pytest.param({"an": 2045, "ns": 2045}, "FORMERR", id="answer-and-authority"),
        pytest.param({"ar": 2}, "FORMERR", id="two-additional"),
        pytest.param({"ns": 4090, "flags": 0x2800}, "NOTIMP", id="update"),
        pytest.param({"an": 4090, "flags": 0x2100}, "NOTIMP", id="notify"),
        pytest.param({"ar": 4090, "flags": 0x1100}, "NOTIMP", id="status"),
    ],
)
def test_counts_and_opcodes_are_judged_from_the_header(counts: dict[str, int], expect: str) -> None:
    """The announced records are there, and never parsed: the header alone decides."""
    records = counts.get("an", 0) + counts.get("ns", 0) + counts.get("ar", 0)
    packet = _with_counts(**counts) + A_RR * records
    reply = respond(compile_view(ZONE_VIEW), ORIGIN, packet)
    assert _rcode(reply) == expect
    assert reply is not None and reply[2] & 0x80 and reply[:2] == QUERY[:2]
    assert _cost(packet, times=20) < 0.1  # 0.15 s each before


def test_a_response_is_dropped_whatever_it_carries() -> None:
    """QR set: nothing to answer (this held before issue 20 too: pinned here)."""
    packet = _with_counts(ar=4090, flags=0x8100) + A_RR * 4090
    assert respond(compile_view(ZONE_VIEW), ORIGIN, packet) is None
    assert _cost(packet) < 0.05


def test_notimp_keeps_the_opt_of_a_query_shaped_packet() -> None:
    q = dns.message.make_query("svc1.ns.svc." + Z, "A", use_edns=0, want_dnssec=True)
    q.set_opcode(dns.opcode.NOTIFY)
    r = dns.message.from_wire(respond(compile_view(ZONE_VIEW), ORIGIN, q.to_wire()))  # type: ignore[arg-type]
    assert r.rcode() == dns.rcode.NOTIMP and r.edns == 0 and r.ednsflags & dns.flags.DO


def test_records_other_than_one_opt_in_additional_are_formerr() -> None:
    """We hold no TSIG key (a TSIG was always FORMERR), and nothing else belongs there."""
    assert _rcode(respond(compile_view(ZONE_VIEW), ORIGIN, _with_counts(ar=1) + A_RR)) == "FORMERR"


def test_opt_options_are_not_parsed_and_a_real_query_with_them_is_answered() -> None:
    """Cookie, ECS and padding, as dig and kdig send them: the answer, options not echoed."""
    q = dns.message.make_query("svc1.ns.svc." + Z, "A", use_edns=0)
    q.use_edns(
        0,
        0,
        1232,
        options=[
            dns.edns.CookieOption(b"12345678", b""),
            dns.edns.ECSOption("192.0.2.0", 24),
            dns.edns.GenericOption(dns.edns.OptionType.PADDING, bytes(300)),
        ],
    )
    r = dns.message.from_wire(respond(compile_view(ZONE_VIEW), ORIGIN, q.to_wire()))  # type: ignore[arg-type]
    assert r.rcode() == dns.rcode.NOERROR and r.options == ()
    assert [rd.address for rd in r.answer[0]] == ["10.0.0.1"]


def test_a_compressed_question_is_still_answered_as_its_canonical_form() -> None:
    """`c004` points at QDCOUNT's high octet (0): the root name, out of zone, with DO kept."""
    packet = (
        QUERY[:12] + b"\xc0\x04\x00\x06\x00\x01" + b"\x00\x00\x29\x04\xd0\x00\x00\x80\x00\x00\x00"
    )
    packet = packet[:10] + b"\x00\x01" + packet[12:]
    zone = compile_view(ZONE_VIEW)
    reply = respond(zone, ORIGIN, packet)
    assert _rcode(reply) == "REFUSED" and reply is not None and reply[:2] == packet[:2]
    r = dns.message.from_wire(reply)
    assert r.edns == 0 and r.ednsflags & dns.flags.DO and r.payload == 1232
    assert respond(compile_view(ZONE_VIEW), ORIGIN, packet, forward=True) == b""  # unified mode


def test_a_name_walk_stops_at_255_octets() -> None:
    packet = worst_packets()["label-walk"]
    assert _rcode(respond(compile_view(ZONE_VIEW), ORIGIN, packet)) == "FORMERR"


def test_refusals_are_memoised_so_a_repeat_is_a_dict_hit() -> None:
    """Small ones only: 64 KB keys would flush the memo for everyone."""
    zone = compile_view(ZONE_VIEW)
    small = _with_counts(an=1)
    big = _with_counts(ar=4090) + A_RR * 4090
    respond(zone, ORIGIN, small)
    respond(zone, ORIGIN, big)
    assert list(zone.memo_udp) == [small[2:]]
    assert _rcode(small[:2] + zone.memo_udp[small[2:]]) == "FORMERR"
