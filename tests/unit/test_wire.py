"""The per-query path on raw bytes: golden vectors, EDNS, truncation, malformed packets."""

from __future__ import annotations

import random
import struct

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import pytest

from clusterset.model.objects import ImportType
from clusterset.zone.wire import respond
from tests.dnsutil import ask, compile_view, rcode
from tests.factories import endpoint, eslice, imported, view

Z = "clusterset.local."
ORIGIN = b"\x0aclusterset\x05local\x00"
BIG = view(
    imports=(
        imported("svc1", ips=("10.0.0.1",)),
        imported("big", type=ImportType.HEADLESS, ports=()),
    ),
    slices=(
        eslice(
            "big",
            source="c1",
            endpoints=tuple(endpoint(f"10.9.{i // 200}.{i % 200 + 1}") for i in range(300)),
        ),
    ),
)
ZONE = compile_view(BIG)


def test_golden_a_answer_bytes() -> None:
    """Hex vector: ID patched, RD copied, question echoed, owner compressed to offset 12."""
    qname = b"\x04svc1\x02ns\x03svc" + ORIGIN
    query = (
        bytes.fromhex("beef0100000100000000 0000".replace(" ", "")) + qname + b"\x00\x01\x00\x01"
    )
    reply = respond(ZONE, ORIGIN, query)
    expected = (
        bytes.fromhex("beef85000001000100000000")
        + qname
        + b"\x00\x01\x00\x01"
        + bytes.fromhex("c00c000100010000000500040a000001")
    )
    assert reply == expected


def test_golden_nxdomain_bytes_soa_points_into_question() -> None:
    qname = b"\x04nope\x02ns\x03svc" + ORIGIN
    query = (
        bytes.fromhex("1234 0000 0001 0000 0000 0000".replace(" ", ""))
        + qname
        + b"\x00\x01\x00\x01"
    )
    reply = respond(ZONE, ORIGIN, query)
    assert reply is not None
    zone_at = 12 + len(b"\x04nope\x02ns\x03svc")
    ptr = struct.pack("!H", 0xC000 | zone_at)
    rdata = (
        b"\x02ns\x03dns"
        + ptr
        + b"\x0ahostmaster"
        + ptr
        + struct.pack("!IIIII", 42, 7200, 1800, 86400, 5)
    )
    assert reply == (
        bytes.fromhex("1234 8403 0001 0000 0001 0000".replace(" ", ""))
        + qname
        + b"\x00\x01\x00\x01"
        + ptr
        + struct.pack("!HHIH", 6, 1, 5, len(rdata))
        + rdata
    )


def test_edns_is_echoed_with_do_bit_and_no_options() -> None:
    q = dns.message.make_query("svc1.ns.svc." + Z, "A", use_edns=0, want_dnssec=True, payload=4096)
    q.use_edns(
        0,
        dns.flags.DO,
        4096,
        options=[dns.edns.GenericOption(dns.edns.OptionType.COOKIE, b"12345678")],
    )  # cookie
    r = dns.message.from_wire(respond(ZONE, ORIGIN, q.to_wire()))  # type: ignore[arg-type]
    assert r.edns == 0 and r.ednsflags & dns.flags.DO and r.options == ()
    assert r.payload == 1232


def test_no_edns_in_query_means_no_opt_in_reply() -> None:
    r = ask(ZONE, "svc1.ns.svc." + Z, edns=None)
    assert r.edns == -1


def test_bad_edns_version_is_badvers() -> None:
    q = dns.message.make_query("svc1.ns.svc." + Z, "A", use_edns=1)
    r = dns.message.from_wire(respond(ZONE, ORIGIN, q.to_wire()))  # type: ignore[arg-type]
    assert r.rcode() == dns.rcode.BADVERS
    assert r.edns == 0


def test_truncation_without_edns_sets_tc_and_fits_512() -> None:
    q = dns.message.make_query("big.ns.svc." + Z, "A")
    wire = respond(ZONE, ORIGIN, q.to_wire())
    assert wire is not None and len(wire) <= 512
    r = dns.message.from_wire(wire)
    assert r.flags & dns.flags.TC
    assert 0 < len(r.answer[0]) < 300


def test_truncation_honours_advertised_payload() -> None:
    q = dns.message.make_query("big.ns.svc." + Z, "A", use_edns=0, payload=1232)
    wire = respond(ZONE, ORIGIN, q.to_wire())
    assert wire is not None and 512 < len(wire) <= 1232
    r = dns.message.from_wire(wire)
    assert r.flags & dns.flags.TC and r.edns == 0


def test_tcp_carries_the_full_answer() -> None:
    r = ask(ZONE, "big.ns.svc." + Z, "A", tcp=True)
    assert not r.flags & dns.flags.TC
    assert len(r.answer[0]) == 300


def test_dropping_only_additional_does_not_set_tc() -> None:
    v = view(
        imports=(imported("h", type=ImportType.HEADLESS, ports=()),),
        slices=(
            eslice(
                "h",
                source="c1",
                endpoints=tuple(
                    endpoint(f"10.8.0.{i}", hostname="host-with-a-longish-name-" + str(i))
                    for i in range(1, 6)
                ),
            ),
        ),
    )
    zone = compile_view(v)
    q = dns.message.make_query("_http._tcp.h.ns.svc." + Z, "SRV")
    wire = respond(zone, ORIGIN, q.to_wire())
    assert wire is not None and len(wire) <= 512
    r = dns.message.from_wire(wire)
    assert len(r.answer[0]) == 5
    assert len(r.additional) < 5
    assert not r.flags & dns.flags.TC


@pytest.mark.parametrize(
    ("packet", "expect"),
    [
        pytest.param(b"", None, id="empty"),
        pytest.param(b"\x12\x34\x01", None, id="short-header"),
        pytest.param(
            bytes.fromhex("123481000001000000000000") + b"\x00\x00\x01\x00\x01",
            None,
            id="a-response",
        ),
        pytest.param(
            bytes.fromhex("123401000001000000000000") + b"\x05ab", "FORMERR", id="truncated-name"
        ),
        pytest.param(
            bytes.fromhex("123401000001000000000000") + b"\xc0\x0c\x00\x01\x00\x01",
            "FORMERR",
            id="pointer-loop",
        ),
        pytest.param(bytes.fromhex("123401000000000000000000"), "FORMERR", id="no-question"),
        pytest.param(
            bytes.fromhex("123401000002000000000000") + (b"\x00\x00\x01\x00\x01" * 2),
            "FORMERR",
            id="two-questions",
        ),
        pytest.param(
            bytes.fromhex("123401000001000000000000") + ORIGIN + b"\x00\x01\x00\x01junk",
            "FORMERR",
            id="trailing-junk",
        ),
        pytest.param(
            bytes.fromhex("123429000001000000000000") + ORIGIN + b"\x00\x06\x00\x01",
            "NOTIMP",
            id="update-opcode",
        ),
        pytest.param(
            bytes.fromhex("123401000001000000000000") + ORIGIN + b"\x00\x01\x00\x03",
            "REFUSED",
            id="chaos-class",
        ),
        pytest.param(
            bytes.fromhex("123401000001000000000000")
            + b"\x40"
            + b"a" * 64
            + b"\x00\x00\x01\x00\x01",
            "FORMERR",
            id="label-too-long",
        ),
    ],
)
def test_malformed_packets(packet: bytes, expect: str | None) -> None:
    reply = respond(ZONE, ORIGIN, packet)
    if expect is None:
        assert reply is None
        return
    assert reply is not None
    assert reply[:2] == packet[:2]
    assert dns.rcode.to_text(dns.rcode.Rcode(reply[3] & 0xF)) == expect
    assert reply[2] & 0x80


def test_random_garbage_never_raises() -> None:
    rng = random.Random(1645)
    base = dns.message.make_query("svc1.ns.svc." + Z, "A", use_edns=0).to_wire()
    for _ in range(5000):
        pkt = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            pkt[rng.randrange(len(pkt))] = rng.randrange(256)
        if rng.random() < 0.3:
            pkt = pkt[: rng.randrange(len(pkt) + 1)]
        reply = respond(ZONE, ORIGIN, bytes(pkt))
        if reply is not None:
            assert len(reply) >= 12 and reply[:2] == bytes(pkt[:2])


def test_ns_alone_for_rcode_names() -> None:
    assert rcode(ask(ZONE, "svc1.ns.svc." + Z)) == "NOERROR"


def test_memo_replies_patch_the_id_and_keep_the_case() -> None:
    zone = compile_view(BIG)
    q1 = dns.message.make_query("svc1.ns.svc." + Z, "A").to_wire()
    upper = dns.message.make_query("SVC1.ns.svc." + Z, "A").to_wire()
    r1, r_upper = respond(zone, ORIGIN, q1), respond(zone, ORIGIN, upper)
    assert r1 is not None and r_upper is not None
    # Take the prebuilt answers away: what still answers now can only come from the memo
    # (without a memo, both names below would be NXDOMAIN).
    zone.answers.clear()
    r2 = respond(zone, ORIGIN, b"\xab\xcd" + q1[2:])
    assert r2 == b"\xab\xcd" + r1[2:]
    again = dns.message.from_wire(respond(zone, ORIGIN, upper))  # type: ignore[arg-type]
    assert again.answer[0].name.to_text() == "SVC1.ns.svc." + Z
    assert [rd.address for rd in again.answer[0]] == ["10.0.0.1"]


def test_huge_headless_answer_is_a_subset_not_a_crash() -> None:
    """~700 endpoints: SRV + glue would exceed 64 KiB even over TCP (found by the benchmark)."""
    v = view(
        imports=(imported("huge", type=ImportType.HEADLESS, ports=()),),
        slices=(
            eslice(
                "huge",
                source="c1",
                endpoints=tuple(
                    endpoint(f"10.7.{i // 250}.{i % 250 + 1}", hostname=f"pod-with-a-long-name-{i}")
                    for i in range(800)
                ),
            ),
        ),
    )
    zone = compile_view(v)
    r = ask(zone, "huge.ns.svc." + Z, "SRV", tcp=True)
    assert 0 < len(r.answer[0]) <= 800
    assert len(r.to_wire()) <= 65535
    assert len(ask(zone, "huge.ns.svc." + Z, "A", tcp=True).answer[0]) == 800
