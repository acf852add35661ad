"""Forwarding rules that need no socket: cache keys, client ranges, upstream parsing, sizes."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset
import pytest

from clusterset.server import forward
from clusterset.server.forward import Cache, Forwarder, parse_upstream, question_end


def _key(name: str, rdtype: str | int) -> bytes:
    q = dns.message.make_query(name, dns.rdatatype.RdataType.make(rdtype), use_edns=0).to_wire()
    qend, edns, do = question_end(q)
    return Cache.key(q, qend, edns, do)


def test_cache_key_folds_the_name_case_but_not_the_type() -> None:
    """TYPE97 (0x0061) must not be answered from the cached HTTPS (0x0041) reply."""
    assert _key("Example.COM.", "HTTPS") == _key("example.com.", "HTTPS")
    assert _key("example.com.", 97) != _key("example.com.", "HTTPS")


def test_cache_does_not_answer_another_type_with_the_same_lowercase_bytes() -> None:
    cache = Cache()
    q = dns.message.make_query("example.com.", "HTTPS", use_edns=0)
    reply = dns.message.make_response(q)
    reply.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "192.0.2.1"))
    qw = q.to_wire()
    qend, edns, do = question_end(qw)
    key = Cache.key(qw, qend, edns, do)
    cache.put(key, reply.to_wire(), now=0.0)
    assert cache.get(key, qw, qend, now=1.0) is not None  # cached for HTTPS itself
    other = dns.message.make_query(
        "example.com.", dns.rdatatype.RdataType(97), use_edns=0
    ).to_wire()
    oend, oedns, odo = question_end(other)
    assert cache.get(Cache.key(other, oend, oedns, odo), other, oend, now=1.0) is None


def test_cache_hit_copies_rd_from_the_query() -> None:
    """Found by bench/dns_fuzz.py --unified: a reply cached for an RD=0 query was handed to
    RD=1 clients with RD clear."""
    cache = Cache()
    q = dns.message.make_query("example.com.", "A", use_edns=0)
    q.flags = 0  # RD clear
    reply = dns.message.make_response(q)
    reply.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "192.0.2.1"))
    qw = q.to_wire()
    qend, edns, do = question_end(qw)
    cache.put(Cache.key(qw, qend, edns, do), reply.to_wire(), now=0.0)
    for flags in (dns.flags.RD, 0):
        ask = dns.message.make_query("example.com.", "A", use_edns=0)
        ask.flags = flags
        aw = ask.to_wire()
        hit = cache.get(Cache.key(aw, qend, edns, do), aw, qend, now=1.0)
        assert hit is not None
        assert dns.message.from_wire(hit).flags & dns.flags.RD == flags


def test_cache_is_bounded_by_bytes() -> None:
    cache = Cache(max_bytes=50_000)
    for i in range(200):
        q = dns.message.make_query(f"n{i}.example.com.", "TXT", use_edns=0)
        r = dns.message.make_response(q)
        r.answer.append(
            dns.rrset.from_text(f"n{i}.example.com.", 60, "IN", "TXT", '"' + "x" * 200 + '"')
        )
        qw = q.to_wire()
        qend, edns, do = question_end(qw)
        cache.put(Cache.key(qw, qend, edns, do), r.to_wire(), now=0.0)
    assert 0 < cache.bytes <= 50_000
    assert cache.bytes == sum(len(k) + len(e.reply) for k, e in cache._data.items())


@pytest.mark.parametrize(
    ("client", "allowed"),
    [
        ("10.1.2.3", True),
        ("::ffff:10.1.2.3", True),  # an IPv4 client of a dual-stack [::] listener
        ("::ffff:127.0.0.1", True),
        ("::ffff:8.8.8.8", False),
        ("8.8.8.8", False),
        ("fd00::1", True),
        ("2001:db8::1", False),
        ("not-an-ip", False),
    ],
)
def test_allow_matches_v4_mapped_clients_against_v4_ranges(client: str, allowed: bool) -> None:
    fwd = Forwarder(("127.0.0.1", 53))
    assert fwd.allowed(client) is allowed


@pytest.mark.parametrize(
    ("value", "expect"),
    [
        ("10.96.0.10", ("10.96.0.10", 53)),
        ("10.96.0.10:5353", ("10.96.0.10", 5353)),
        ("fd00::a", ("fd00::a", 53)),
        ("[fd00::a]:54", ("fd00::a", 54)),
        ("dns.google", "not an IP address"),
        ("dns.google:53", "not an IP address"),
        ("127.0.0.1:99999", "1-65535"),
        ("127.0.0.1:0", "1-65535"),
        ("127.0.0.1:x", "1-65535"),
    ],
)
def test_parse_upstream(value: str, expect: tuple[str, int] | str) -> None:
    if isinstance(expect, tuple):
        assert parse_upstream(value) == expect
    else:
        with pytest.raises(ValueError, match=expect):
            parse_upstream(value)


def test_forwarded_reply_over_our_udp_size_is_truncated() -> None:
    q = dns.message.make_query("big.example.com.", "TXT", use_edns=0, payload=65535).to_wire()
    qend, edns, _ = question_end(q)
    assert forward.udp_limit(q, qend, edns, 1232) == 1232
    assert forward.udp_limit(q, qend, edns, 4096) == 4096
    plain = dns.message.make_query("big.example.com.", "TXT").to_wire()
    assert forward.udp_limit(plain, question_end(plain)[0], False, 4096) == 512
    r = dns.message.from_wire(forward.truncated(b"\x00\x00\x81\x80", q, qend, edns, 1232))
    assert r.flags & dns.flags.TC and r.payload == 1232 and not r.answer
    assert r.question[0].name.to_text() == "big.example.com."


def test_cache_key_separates_cd() -> None:
    """CD=1 answers skipped validation upstream: a CD=0 client must not get them."""
    q = dns.message.make_query("example.com.", "A", use_edns=0)
    plain = q.to_wire()
    q.flags |= dns.flags.CD
    cd = q.to_wire()
    qend, edns, do = question_end(plain)
    assert Cache.key(plain, qend, edns, do) != Cache.key(cd, qend, edns, do)


def test_with_payload_rewrites_only_the_opt_size() -> None:
    q = dns.message.make_query("example.com.", "A", use_edns=0)
    r = dns.message.make_response(q, our_payload=8192)
    r.answer.append(dns.rrset.from_text("example.com.", 60, "IN", "A", "192.0.2.1"))
    out = dns.message.from_wire(forward.with_payload(r.to_wire(), 1232))
    assert out.payload == 1232 and out.answer == r.answer
    assert forward.with_payload(r.to_wire(), 100)[-8:-6] == b"\x02\x00"  # never below 512
    plain = dns.message.make_response(dns.message.make_query("example.com.", "A")).to_wire()
    assert forward.with_payload(plain, 1232) == plain  # no OPT: nothing to rewrite
    assert forward.with_payload(r.to_wire()[:20], 1232) == r.to_wire()[:20]  # malformed
