"""Limits on the per-query path: UDP reply size, the reply memo, glue names (issue 11)."""

from __future__ import annotations

import random

import dns.flags
import dns.message
import dns.rdatatype
import pytest

from clusterset.model.objects import ImportType
from clusterset.zone import wire
from clusterset.zone.wire import respond
from tests.dnsutil import compile_view
from tests.factories import endpoint, eslice, imported, port, view

Z = "clusterset.local."
ORIGIN = b"\x0aclusterset\x05local\x00"
ZONE_VIEW = view(
    imports=(
        imported("svc1", ips=("10.0.0.1",), ports=(port(80, "http"),)),
        imported("big", type=ImportType.HEADLESS, ports=(port(5432, "db"),)),
    ),
    slices=(
        eslice(
            "big",
            source="c1",
            ports=(port(5432, "db"),),
            endpoints=tuple(
                endpoint(f"10.9.{i // 200}.{i % 200 + 1}", hostname=f"pod-{i}") for i in range(300)
            ),
        ),
    ),
)


def _case_variants(name: str, n: int) -> list[bytes]:
    """`n` distinct 0x20 case variants of one query (same ID, same everything else)."""
    base = dns.message.make_query(name, "A", id=0).to_wire()
    rng = random.Random(11)
    out = []
    for _ in range(n):
        q = bytearray(base)
        for i in range(13, len(base) - 5):
            if 0x61 <= q[i] <= 0x7A and rng.random() < 0.5:
                q[i] -= 0x20
        out.append(bytes(q))
    return out


@pytest.mark.parametrize("payload", [1233, 4096, 65535])
def test_udp_reply_never_exceeds_our_size_whatever_the_client_advertises(payload: int) -> None:
    """A 60-byte query must not buy a 5 KB reply (amplification): cap at 1232, TC above."""
    zone = compile_view(ZONE_VIEW)
    q = dns.message.make_query("big.ns.svc." + Z, "A", use_edns=0, payload=payload)
    reply = respond(zone, ORIGIN, q.to_wire())
    assert reply is not None and len(reply) <= 1232
    r = dns.message.from_wire(reply)
    assert r.flags & dns.flags.TC
    assert r.payload == 1232  # and we say so in our OPT


def test_udp_size_setting_moves_the_cap_and_what_we_advertise() -> None:
    zone = compile_view(ZONE_VIEW)
    q = dns.message.make_query("big.ns.svc." + Z, "A", use_edns=0, payload=65535)
    reply = respond(zone, ORIGIN, q.to_wire(), udp_size=4000)
    assert reply is not None and 1232 < len(reply) <= 4000
    r = dns.message.from_wire(reply)
    assert r.flags & dns.flags.TC and r.payload == 4000
    # A client asking for less still gets no more than it asked for; TCP is not capped.
    small = dns.message.make_query("big.ns.svc." + Z, "A", use_edns=0, payload=600)
    assert len(respond(zone, ORIGIN, small.to_wire(), udp_size=4000) or b"") <= 600
    full = respond(zone, ORIGIN, q.to_wire(), tcp=True, udp_size=512)
    assert full is not None and len(dns.message.from_wire(full).answer[0]) == 300


def test_memo_is_bounded_by_bytes_under_case_variants_of_large_answers() -> None:
    """Every 0x20 variant is a new key; 3,000 variants of a 4.8 KB answer must not be kept."""
    zone = compile_view(ZONE_VIEW)
    for q in _case_variants("big.ns.svc." + Z, 3000):
        respond(zone, ORIGIN, q, tcp=True)
    for q in _case_variants("svc1.ns.svc." + Z, 60000):
        respond(zone, ORIGIN, q)
    for memo in (zone.memo_tcp, zone.memo_udp):
        held = sum(len(k) + len(v) for k, v in memo.items())
        assert held <= wire.MEMO_BYTES


def test_memo_answers_repeated_queries_from_memory() -> None:
    """Fails when the memo is disabled: a repeat is served from the memo, not re-spliced."""
    zone = compile_view(ZONE_VIEW)
    q = dns.message.make_query("svc1.ns.svc." + Z, "A").to_wire()
    first = respond(zone, ORIGIN, q)
    assert first is not None
    assert zone.memo_udp[q[2:]] == first[2:]
    zone.memo_udp[q[2:]] = b"memoised"  # what a repeat returns comes from the memo
    assert respond(zone, ORIGIN, b"\x99\x98" + q[2:]) == b"\x99\x98memoised"
    assert not zone.memo_tcp  # UDP and TCP replies differ (truncation): separate memos


@pytest.mark.parametrize(
    "qname",
    [
        "_HTTP._TCP.SVC1.ns.svc.clusterset.local.",  # ClusterSetIP: target is the service name
        "svc1.NS.SVC.ClusterSet.Local.",  # bare SRV
        "_DB._tcp.BIG.ns.svc.clusterset.local.",  # headless: targets below the service name
    ],
)
def test_srv_glue_owner_is_byte_for_byte_the_target(qname: str) -> None:
    zone = compile_view(ZONE_VIEW)
    q = dns.message.make_query(qname, "SRV")
    reply = respond(zone, ORIGIN, q.to_wire(), tcp=True)
    assert reply is not None
    r = dns.message.from_wire(reply)
    targets = {rd.target.to_text() for rd in r.answer[0]}
    glue = {rrset.name.to_text() for rrset in r.additional if rrset.rdtype == dns.rdatatype.A}
    assert glue and glue <= targets  # compared as text: case counts
    assert all(t == t.lower() for t in targets)
    assert r.answer[0].name.to_text() == qname  # the answer owner still echoes the query
