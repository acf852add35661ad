"""The name grammar and the answer of every name form (MCS DNS spec; docs/dns-schema.md)."""

from __future__ import annotations

import pytest

from clusterset.model.objects import ImportType, Protocol, ServicePort
from tests.dnsutil import ask, compile_view, rcode, rrs
from tests.factories import endpoint, eslice, imported, port, view

Z = "clusterset.local."
HL = ImportType.HEADLESS

VIEW = view(
    imports=(
        imported("svc1", ips=("10.0.0.1",), ports=(port(80, "http"), port(443, "https"))),
        imported("dual", ips=("10.0.0.2", "fd00::2"), ports=(port(80, "http"),)),
        imported("noport", ips=("10.0.0.3",), ports=()),
        imported("noip", ips=(), ports=(port(80, "http"),)),
        imported("hdls", type=HL, ports=()),
        imported("empty", type=HL, ports=()),
        imported("portless", type=HL, ports=()),
        imported("elsewhere", ns="gone", ips=("10.0.0.9",)),
        imported("dupname", type=HL, ports=()),
    ),
    slices=(
        eslice(
            "hdls",
            source="c1",
            ports=(port(80, "http"),),
            endpoints=(
                endpoint("172.0.0.2", hostname="ep1"),
                endpoint("172.0.0.3"),
                endpoint("172.0.0.4", ready=False),
                endpoint("172.0.0.5", ready=None),
            ),
        ),
        eslice(
            "hdls",
            source="c2",
            slice_name="hdls-v6",
            address_type="IPv6",
            ports=(port(80, "http"),),
            endpoints=(endpoint("5678:abcd::1"),),
        ),
        eslice("empty", source="c1", endpoints=(endpoint("172.0.1.1", ready=False),)),
        eslice("portless", source="c1", ports=(), endpoints=(endpoint("172.0.0.20"),)),
        eslice(
            "dupname",
            source="c1",
            endpoints=(endpoint("172.0.0.30", hostname="x"), endpoint("172.0.0.31", hostname="x")),
        ),
    ),
    namespaces=("ns", "empty-ns"),
)
ZONE = compile_view(VIEW)

CASES = [
    # (name, type, rcode, answer set, authority has SOA)
    ("svc1.ns.svc." + Z, "A", "NOERROR", {f"svc1.ns.svc.{Z} 5 A 10.0.0.1"}, False),
    ("svc1.ns.svc." + Z, "AAAA", "NOERROR", set(), True),
    ("dual.ns.svc." + Z, "AAAA", "NOERROR", {f"dual.ns.svc.{Z} 5 AAAA fd00::2"}, False),
    ("dual.ns.svc." + Z, "A", "NOERROR", {f"dual.ns.svc.{Z} 5 A 10.0.0.2"}, False),
    ("noport.ns.svc." + Z, "A", "NOERROR", {f"noport.ns.svc.{Z} 5 A 10.0.0.3"}, False),
    ("noip.ns.svc." + Z, "A", "NOERROR", set(), True),
    ("nosuch.ns.svc." + Z, "A", "NXDOMAIN", set(), True),
    ("elsewhere.gone.svc." + Z, "A", "NXDOMAIN", set(), True),  # namespace not here
    (
        "hdls.ns.svc." + Z,
        "A",
        "NOERROR",
        {f"hdls.ns.svc.{Z} 5 A 172.0.0.{i}" for i in (2, 3, 5)},
        False,
    ),
    ("hdls.ns.svc." + Z, "AAAA", "NOERROR", {f"hdls.ns.svc.{Z} 5 AAAA 5678:abcd::1"}, False),
    ("empty.ns.svc." + Z, "A", "NXDOMAIN", set(), True),  # SPEC 2.4.1
    ("portless.ns.svc." + Z, "A", "NOERROR", {f"portless.ns.svc.{Z} 5 A 172.0.0.20"}, False),
    ("portless.ns.svc." + Z, "SRV", "NOERROR", set(), True),
    ("ep1.c1.hdls.ns.svc." + Z, "A", "NOERROR", {f"ep1.c1.hdls.ns.svc.{Z} 5 A 172.0.0.2"}, False),
    ("EP1.C1.HDLS.ns.svc." + Z, "A", "NOERROR", {f"ep1.c1.hdls.ns.svc.{Z} 5 A 172.0.0.2"}, False),
    (
        "172-0-0-3.c1.hdls.ns.svc." + Z,
        "A",
        "NOERROR",
        {f"172-0-0-3.c1.hdls.ns.svc.{Z} 5 A 172.0.0.3"},
        False,
    ),
    (
        "5678-abcd--1.c2.hdls.ns.svc." + Z,
        "AAAA",
        "NOERROR",
        {f"5678-abcd--1.c2.hdls.ns.svc.{Z} 5 AAAA 5678:abcd::1"},
        False,
    ),
    ("172-0-0-4.c1.hdls.ns.svc." + Z, "A", "NXDOMAIN", set(), True),  # not ready
    ("ep1.c2.hdls.ns.svc." + Z, "A", "NXDOMAIN", set(), True),  # wrong cluster
    ("ep1.hdls.ns.svc." + Z, "A", "NXDOMAIN", set(), True),  # no cluster label
    ("c1.hdls.ns.svc." + Z, "A", "NXDOMAIN", set(), True),  # MUST NOT exist
    (
        "x.c1.dupname.ns.svc." + Z,
        "A",
        "NOERROR",
        {f"x.c1.dupname.ns.svc.{Z} 5 A 172.0.0.30", f"x.c1.dupname.ns.svc.{Z} 5 A 172.0.0.31"},
        False,
    ),
    ("a.b.c.hdls.ns.svc." + Z, "A", "NXDOMAIN", set(), True),
    ("ep1.c1.svc1.ns.svc." + Z, "A", "NXDOMAIN", set(), True),  # spec: headless only
    ("dns-version." + Z, "TXT", "NOERROR", {f'dns-version.{Z} 28800 TXT "1.0.0"'}, False),
    ("dns-version." + Z, "A", "NOERROR", set(), True),
    (Z, "A", "NOERROR", set(), True),
    ("svc." + Z, "A", "NOERROR", set(), True),
    ("pod." + Z, "A", "NOERROR", set(), True),
    ("ns.svc." + Z, "A", "NOERROR", set(), True),
    ("empty-ns.svc." + Z, "TXT", "NOERROR", set(), True),
    ("nons.svc." + Z, "A", "NXDOMAIN", set(), True),
    ("foo." + Z, "A", "NXDOMAIN", set(), True),
    ("svc1.ns.pod." + Z, "A", "NXDOMAIN", set(), True),
    ("svc1.ns.svc." + Z, "TXT", "NOERROR", set(), True),
    ("svc1.ns.svc." + Z, "MX", "NOERROR", set(), True),
    ("svc1.ns.svc." + Z, "SOA", "NOERROR", set(), True),
    ("_http._tcp.svc1.ns.svc." + Z, "A", "NOERROR", set(), True),
    ("_tcp.svc1.ns.svc." + Z, "A", "NXDOMAIN", set(), True),  # CoreDNS decision
    ("_smtp._tcp.svc1.ns.svc." + Z, "SRV", "NXDOMAIN", set(), True),
    ("_http._udp.svc1.ns.svc." + Z, "SRV", "NXDOMAIN", set(), True),
]


@pytest.mark.parametrize(
    ("name", "qtype", "want_rcode", "answer", "soa"),
    CASES,
    ids=[f"{c[0].removesuffix('.' + Z) or '@'}/{c[1]}" for c in CASES],
)
def test_answer(name: str, qtype: str, want_rcode: str, answer: set[str], soa: bool) -> None:
    r = ask(ZONE, name, qtype)
    assert rcode(r) == want_rcode
    assert rrs(r.answer) == answer
    if soa:
        assert [rr.rdtype for rr in r.authority] == [6]
        assert len(r.authority[0]) == 1
    else:
        assert r.authority == []
    assert r.flags & 0x0400  # AA
    assert not r.flags & 0x0080  # RA clear


def test_apex_soa_and_ns() -> None:
    r = ask(ZONE, Z, "SOA")
    assert rrs(r.answer) == {f"{Z} 5 SOA ns.dns.{Z} hostmaster.{Z} 42 7200 1800 86400 5"}
    r = ask(ZONE, Z, "NS")
    assert rrs(r.answer) == {f"{Z} 5 NS ns.dns.{Z}"}


def test_apex_ns_glue_when_addresses_are_known() -> None:
    zone = compile_view(VIEW, ns_addresses=("10.96.0.53", "fd00::53"))
    r = ask(zone, Z, "NS")
    assert rrs(r.additional) == {f"ns.dns.{Z} 5 A 10.96.0.53", f"ns.dns.{Z} 5 AAAA fd00::53"}
    assert rrs(ask(zone, "ns.dns." + Z, "A").answer) == {f"ns.dns.{Z} 5 A 10.96.0.53"}


def test_srv_clusterset_ip_named_port_with_glue() -> None:
    r = ask(ZONE, "_https._tcp.svc1.ns.svc." + Z, "SRV")
    assert rrs(r.answer) == {f"_https._tcp.svc1.ns.svc.{Z} 5 SRV 0 100 443 svc1.ns.svc.{Z}"}
    assert rrs(r.additional) == {f"svc1.ns.svc.{Z} 5 A 10.0.0.1"}


def test_srv_port_and_proto_labels_match_case_insensitively() -> None:
    r = ask(ZONE, "_HtTp._TcP.sVc1.Ns.SvC.cLuStErSeT.LoCaL.", "SRV")
    assert len(r.answer) == 1
    assert r.answer[0].name.to_text() == "_HtTp._TcP.sVc1.Ns.SvC.cLuStErSeT.LoCaL."


def test_bare_srv_lists_every_port() -> None:
    r = ask(ZONE, "svc1.ns.svc." + Z, "SRV")
    assert rrs(r.answer) == {
        f"svc1.ns.svc.{Z} 5 SRV 0 50 80 svc1.ns.svc.{Z}",
        f"svc1.ns.svc.{Z} 5 SRV 0 50 443 svc1.ns.svc.{Z}",
    }


def test_bare_srv_dedupes_same_port_different_protocol() -> None:
    """mcs-api conformance: ports {tcp/42/TCP, udp/42/UDP} give exactly one SRV, port 42."""
    v = view(imports=(imported("hello", ports=(port(42, "tcp"), port(42, "udp", "UDP"))),))
    r = ask(compile_view(v), "hello.ns.svc." + Z, "SRV")
    assert rrs(r.answer) == {f"hello.ns.svc.{Z} 5 SRV 0 50 42 hello.ns.svc.{Z}"}


def test_dual_stack_srv_is_one_record_with_a_and_aaaa_glue() -> None:
    r = ask(ZONE, "_http._tcp.dual.ns.svc." + Z, "SRV")
    assert rrs(r.answer) == {f"_http._tcp.dual.ns.svc.{Z} 5 SRV 0 50 80 dual.ns.svc.{Z}"}
    assert rrs(r.additional) == {f"dual.ns.svc.{Z} 5 A 10.0.0.2", f"dual.ns.svc.{Z} 5 AAAA fd00::2"}


def test_headless_srv_one_per_ready_endpoint_and_port() -> None:
    """Ready and unknown-ready endpoints of every cluster; weight floor(100/4)."""
    r = ask(ZONE, "_http._tcp.hdls.ns.svc." + Z, "SRV")
    assert rrs(r.answer) == {
        f"_http._tcp.hdls.ns.svc.{Z} 5 SRV 0 25 80 ep1.c1.hdls.ns.svc.{Z}",
        f"_http._tcp.hdls.ns.svc.{Z} 5 SRV 0 25 80 172-0-0-3.c1.hdls.ns.svc.{Z}",
        f"_http._tcp.hdls.ns.svc.{Z} 5 SRV 0 25 80 172-0-0-5.c1.hdls.ns.svc.{Z}",
        f"_http._tcp.hdls.ns.svc.{Z} 5 SRV 0 25 80 5678-abcd--1.c2.hdls.ns.svc.{Z}",
    }


def test_headless_srv_includes_unknown_readiness_endpoints() -> None:
    r = ask(ZONE, "hdls.ns.svc." + Z, "SRV")
    targets = {rd.target.to_text() for rd in r.answer[0]}
    assert f"172-0-0-5.c1.hdls.ns.svc.{Z}" in targets
    assert len(targets) == 4
    assert {rd.weight for rd in r.answer[0]} == {25}
    glue = rrs(r.additional)
    assert f"ep1.c1.hdls.ns.svc.{Z} 5 A 172.0.0.2" in glue
    assert f"5678-abcd--1.c2.hdls.ns.svc.{Z} 5 AAAA 5678:abcd::1" in glue


def test_query_case_is_echoed_in_owner_and_soa() -> None:
    r = ask(ZONE, "SvC1.nS.sVc.ClUsTeRsEt.LoCaL.", "A")
    assert r.answer[0].name.to_text() == "SvC1.nS.sVc.ClUsTeRsEt.LoCaL."
    r = ask(ZONE, "NoPe.nS.sVc.ClUsTeRsEt.LoCaL.", "A")
    assert r.authority[0].name.to_text() == "ClUsTeRsEt.LoCaL."
    assert r.authority[0][0].mname.to_text() == "ns.dns.ClUsTeRsEt.LoCaL."


def test_outside_zone_is_refused_and_cluster_local_is_not_ours() -> None:
    for name in ("svc1.ns.svc.cluster.local.", "example.com.", "local.", "xclusterset.local."):
        r = ask(ZONE, name, "A")
        assert rcode(r) == "REFUSED"
        assert not r.answer and not r.authority


def test_servfail_before_first_load_never_nxdomain() -> None:
    r = ask(None, "svc1.ns.svc." + Z, "A")
    assert rcode(r) == "SERVFAIL"
    assert rcode(ask(None, "example.com.", "A")) == "REFUSED"


def test_custom_zone_and_ttl() -> None:
    zone = compile_view(VIEW, zone="mcs.example", ttl=30)
    r = ask(zone, "svc1.ns.svc.mcs.example.", "A", origin=b"\x03mcs\x07example\x00")
    assert rrs(r.answer) == {"svc1.ns.svc.mcs.example. 30 A 10.0.0.1"}
    assert rcode(ask(zone, "svc1.ns.svc." + Z, "A", origin=b"\x03mcs\x07example\x00")) == "REFUSED"


def test_soa_serial_follows_generation() -> None:
    r = ask(ZONE, "nope.ns.svc." + Z, "A")
    assert r.authority[0][0].serial == 42


@pytest.mark.parametrize("qtype", ["AXFR", "IXFR"])
def test_zone_transfer_refused(qtype: str) -> None:
    assert rcode(ask(ZONE, Z, qtype, tcp=True)) == "REFUSED"


def test_ports_helper_types() -> None:
    assert ServicePort(53, Protocol.UDP, "dns").protocol is Protocol.UDP


def test_unsynced_zone_is_servfail_with_soa_even_for_names_it_will_have() -> None:
    from clusterset.zone.wire import CompiledZone

    unsynced = CompiledZone(ZONE.state, synced=False)
    for name in ("svc1.ns.svc." + Z, "nosuch.ns.svc." + Z, Z):
        r = ask(unsynced, name, "A")
        assert rcode(r) == "SERVFAIL"
        assert [rr.rdtype for rr in r.authority] == [6]


def test_clusterset_ip_without_ips_has_no_srv_but_names_exist() -> None:
    for name in ("noip.ns.svc." + Z, "_http._tcp.noip.ns.svc." + Z):
        r = ask(ZONE, name, "SRV")
        assert rcode(r) == "NOERROR"
        assert r.answer == []


def test_duplicate_hostnames_keep_every_address_in_glue() -> None:
    r = ask(ZONE, "dupname.ns.svc." + Z, "SRV")
    assert len(r.answer[0]) == 1
    assert rrs(r.additional) == {
        f"x.c1.dupname.ns.svc.{Z} 5 A 172.0.0.30",
        f"x.c1.dupname.ns.svc.{Z} 5 A 172.0.0.31",
    }
