"""The clusterset zone's records as dnspython objects: the reference model the tests
render (tests/zone_oracle.py) and compare every answer of `zone.build` with, byte for
byte; it also writes the zone file the benchmark's peer servers load (bench/dns_qps.py).
The grammar is zone/build.py's (module docstring).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.NS
import dns.rdtypes.ANY.SOA
import dns.rdtypes.ANY.TXT
import dns.rdtypes.IN.A
import dns.rdtypes.IN.AAAA
import dns.rdtypes.IN.SRV

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import (
    EndpointSlice,
    ImportType,
    IPFamily,
    ServiceImport,
    ServicePort,
    family_of,
)
from clusterset.model.state import ImportedView, Track
from clusterset.zone import policy
from clusterset.zone.build import endpoint_hostname, expire_leases
from clusterset.zone.settings import ZoneSettings

IN = dns.rdataclass.IN
A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
SRV = dns.rdatatype.SRV
TXT = dns.rdatatype.TXT
SOA = dns.rdatatype.SOA
NS = dns.rdatatype.NS


@dataclass(frozen=True, slots=True)
class RR:
    """One record: owner, TTL and rdata (dnspython rdata, built once per zone)."""

    name: dns.name.Name
    ttl: int
    rdata: dns.rdata.Rdata


@dataclass(slots=True)
class Answer:
    answer: list[RR] = field(default_factory=list)
    additional: list[RR] = field(default_factory=list)


@dataclass(slots=True)
class ZoneRecords:
    """Names that exist (lowercase, absolute) and the answers of each (name, type)."""

    origin: dns.name.Name
    serial: int
    ttl: int
    answers: dict[tuple[dns.name.Name, int], Answer] = field(default_factory=dict)
    names: set[dns.name.Name] = field(default_factory=set)
    warnings: list[str] = field(default_factory=list)
    explain: dict[ServiceKey, policy.Selection] = field(default_factory=dict)
    explain_unified: dict[ServiceKey, policy.Selection] = field(default_factory=dict)
    # Alternative answer orders served in turn (round-robin among equals).
    rotations: dict[tuple[dns.name.Name, int], list[list[RR]]] = field(default_factory=dict)
    tracks: dict[tuple[ServiceKey, ClusterId], Track] = field(default_factory=dict)
    wake_at: float | None = None  # the earliest time a policy answer may change by itself

    def add(self, name: dns.name.Name, rdtype: int, rr: RR) -> None:
        self.names.add(name)
        self.answers.setdefault((name, rdtype), Answer()).answer.append(rr)

    def exist(self, name: dns.name.Name) -> None:
        self.names.add(name)

    def soa(self) -> dns.rdtypes.ANY.SOA.SOA:
        rr = self.answers[(self.origin, SOA)].answer[0]
        assert isinstance(rr.rdata, dns.rdtypes.ANY.SOA.SOA)
        return rr.rdata


def _addr_rdata(address: str) -> dns.rdata.Rdata:
    if family_of(address) is IPFamily.IPV6:
        return dns.rdtypes.IN.AAAA.AAAA(IN, AAAA, address)
    return dns.rdtypes.IN.A.A(IN, A, address)


def _rdtype_of(address: str) -> int:
    return AAAA if family_of(address) is IPFamily.IPV6 else A


def _weight(n: int) -> int:
    """CoreDNS SRV weight: floor(100 / n) over the entries before de-duplication, at least 1."""
    return max(1, 100 // n) if n else 100


@dataclass(frozen=True, slots=True)
class _Target:
    name: dns.name.Name
    port: int
    addresses: tuple[str, ...]


def _srv(
    recs: ZoneRecords,
    owner: dns.name.Name,
    targets: Iterable[_Target],
    n: int,
) -> None:
    """Add SRV records for `targets`, deduplicated by (target, port), with A/AAAA glue."""
    weight = _weight(n)
    seen: set[tuple[dns.name.Name, int]] = set()
    glue_seen: set[tuple[dns.name.Name, str]] = set()
    for t in targets:
        if (t.name, t.port) not in seen:
            seen.add((t.name, t.port))
            recs.add(
                owner,
                SRV,
                RR(owner, recs.ttl, dns.rdtypes.IN.SRV.SRV(IN, SRV, 0, weight, t.port, t.name)),
            )
        # Glue is de-duplicated by (target, address), not by SRV: two endpoints sharing a
        # hostname give one SRV and both addresses (CoreDNS does the same).
        answer = recs.answers[(owner, SRV)]
        for addr in t.addresses:
            if (t.name, addr) not in glue_seen:
                glue_seen.add((t.name, addr))
                answer.additional.append(RR(t.name, recs.ttl, _addr_rdata(addr)))


def _port_owner(port: ServicePort, svc_name: dns.name.Name) -> dns.name.Name | None:
    """`_<port>._<proto>.<svc>...`; unnamed ports have no SRV name (SPEC 2.3.2)."""
    if not port.name:
        return None
    return dns.name.Name(
        (b"_" + port.name.lower().encode(), b"_" + port.protocol.value.lower().encode())
    ).concatenate(svc_name)


def build(view: ImportedView, settings: ZoneSettings, *, serial: int) -> ZoneRecords:
    """Every record of the zone as `view.cluster` sees it. Pure: no I/O, no clock."""
    origin = dns.name.from_text(settings.zone.lower())
    recs = ZoneRecords(origin=origin, serial=serial, ttl=settings.ttl)
    if settings.source_leases and view.leases:
        view, recs.wake_at = expire_leases(view)
    ttl = settings.ttl
    ns_name = dns.name.from_text("ns.dns", origin)
    recs.add(
        origin,
        SOA,
        RR(
            origin,
            min(300, ttl),
            dns.rdtypes.ANY.SOA.SOA(
                IN,
                SOA,
                ns_name,
                dns.name.from_text("hostmaster", origin),
                serial & 0xFFFFFFFF,
                7200,
                1800,
                86400,
                ttl,
            ),
        ),
    )
    recs.add(origin, NS, RR(origin, ttl, dns.rdtypes.ANY.NS.NS(IN, NS, ns_name)))
    recs.exist(ns_name)  # our SOA MNAME and NS target exists even without glue addresses
    ns_answer = recs.answers[(origin, NS)]
    for addr in settings.ns_addresses:
        recs.add(ns_name, _rdtype_of(addr), RR(ns_name, ttl, _addr_rdata(addr)))
        ns_answer.additional.append(RR(ns_name, ttl, _addr_rdata(addr)))
    version_name = dns.name.from_text("dns-version", origin)
    recs.add(
        version_name,
        TXT,
        RR(
            version_name,
            settings.version_ttl,
            dns.rdtypes.ANY.TXT.TXT(IN, TXT, [settings.version.encode()]),
        ),
    )
    svc_root = dns.name.from_text("svc", origin)
    recs.exist(svc_root)
    recs.exist(dns.name.from_text("pod", origin))
    for ns in view.namespaces:
        _try(recs, f"namespace {ns}", lambda ns=ns: recs.exist(_child(svc_root, ns)))
    for key in sorted(view.imports):
        imp = view.imports[key]
        if key.namespace not in view.namespaces:
            # KEP: a service is imported only where its namespace exists (CoreDNS checks too).
            continue
        slices = view.slices.get(key, ())
        _try(
            recs,
            f"ServiceImport {key}",
            lambda imp=imp, slices=slices: _service(recs, view, imp, slices, settings, svc_root),
        )
        if settings.unified_zone:
            _try(
                recs,
                f"ServiceImport {key} in {settings.unified_zone}",
                lambda imp=imp, slices=slices: _unified(recs, view, imp, slices, settings),
            )
    return recs


def _unified(
    recs: ZoneRecords,
    view: ImportedView,
    imp: ServiceImport,
    slices: tuple[EndpointSlice, ...],
    settings: ZoneSettings,
) -> None:
    """`<svc>.<ns>.svc.<unified_zone>` A/AAAA, always local-first (the name pods already use)."""
    assert settings.unified_zone is not None
    root = dns.name.from_text("svc", dns.name.from_text(settings.unified_zone.lower()))
    name = _child(root, imp.name, imp.namespace)
    sel = policy.select(view, imp, slices, default=policy.LOCAL_FIRST, force=policy.LOCAL_FIRST)
    recs.explain_unified[imp.key] = sel
    _track(recs, sel)
    ttl = settings.ttl
    addresses = sel.addresses or _dedupe_addresses(sel)
    for ip in addresses:
        rr = RR(name, ttl, _addr_rdata(ip))
        recs.answers.setdefault((name, _rdtype_of(ip)), Answer()).answer.append(rr)
    _rotate(recs, name, sel)


def _dedupe_addresses(sel: policy.Selection) -> tuple[str, ...]:
    return tuple(dict.fromkeys(e.address for e in sel.endpoints))


def _track(recs: ZoneRecords, sel: policy.Selection) -> None:
    recs.tracks.update(sel.tracks)
    if sel.wake_at is not None:
        recs.wake_at = sel.wake_at if recs.wake_at is None else min(recs.wake_at, sel.wake_at)


def _rotate(recs: ZoneRecords, name: dns.name.Name, sel: policy.Selection) -> None:
    """Record the alternative answer orders of `name` (round-robin among equals)."""
    if not sel.rotations:
        return
    for rdtype in (A, AAAA):
        base = recs.answers.get((name, rdtype))
        if base is None:
            continue
        by_addr = {rr.rdata.to_text(): rr for rr in base.answer}
        recs.rotations[(name, rdtype)] = [
            [by_addr[a] for a in order if a in by_addr] for order in sel.rotations
        ]


def _child(parent: dns.name.Name, *labels: str) -> dns.name.Name:
    return dns.name.Name(tuple(label.lower().encode() for label in labels)).concatenate(parent)


def _try(recs: ZoneRecords, what: str, fn: object) -> None:
    """Names longer than 255 octets or labels over 63 cannot exist: warn and go on."""
    try:
        fn()  # type: ignore[operator]
    except (dns.name.NameTooLong, dns.name.LabelTooLong, dns.name.EmptyLabel) as exc:
        recs.warnings.append(f"{what}: cannot be named in DNS ({exc.__class__.__name__})")


def _service(
    recs: ZoneRecords,
    view: ImportedView,
    imp: ServiceImport,
    slices: tuple[EndpointSlice, ...],
    settings: ZoneSettings,
    svc_root: dns.name.Name,
) -> None:
    name = _child(svc_root, imp.name, imp.namespace)
    sel = policy.select(view, imp, slices, default=settings.default_policy)
    recs.explain[imp.key] = sel
    _track(recs, sel)
    ttl = settings.ttl
    if imp.type is ImportType.HEADLESS:
        _headless(recs, name, sel, ttl)
        return
    recs.exist(name)
    # `failover: endpoints` selects remote endpoints instead of the ClusterSetIP.
    addrs = sel.addresses or _dedupe_addresses(sel)
    for ip in addrs:
        recs.add(name, _rdtype_of(ip), RR(name, ttl, _addr_rdata(ip)))
    _rotate(recs, name, sel)
    # No address: the names exist (NODATA), but SRV would point at a target that does not resolve.
    bare = [_Target(name, p.port, addrs) for p in imp.ports for _ in addrs]
    _srv(recs, name, bare, len(bare))
    for port in imp.ports:
        owner = _port_owner(port, name)
        if owner is None:
            continue
        recs.exist(owner)
        same = [p for p in imp.ports if _port_owner(p, name) == owner]
        targets = [_Target(name, p.port, addrs) for p in same for _ in addrs]
        _srv(recs, owner, targets, len(targets))


def _headless(recs: ZoneRecords, name: dns.name.Name, sel: policy.Selection, ttl: int) -> None:
    """Headless: ready endpoints of every selected cluster; none -> NXDOMAIN (SPEC 2.4.1)."""
    if not sel.endpoints:
        return
    recs.exist(name)
    seen: set[str] = set()
    # (target, port-name, protocol, port, address) for SRV; one entry per address x port.
    entries: list[tuple[dns.name.Name, ServicePort, str]] = []
    for ep in sel.endpoints:
        target: dns.name.Name | None = None
        if ep.cluster:
            target = _child(name, endpoint_hostname(ep.hostname, ep.address), ep.cluster)
            recs.add(target, _rdtype_of(ep.address), RR(target, ttl, _addr_rdata(ep.address)))
        if ep.address not in seen:
            seen.add(ep.address)
            recs.add(name, _rdtype_of(ep.address), RR(name, ttl, _addr_rdata(ep.address)))
        if target is not None:
            entries.extend((target, p, ep.address) for p in ep.ports)
    _rotate(recs, name, sel)
    _srv(recs, name, [_Target(t, p.port, (a,)) for t, p, a in entries], len(entries))
    owners: dict[dns.name.Name, list[tuple[dns.name.Name, ServicePort, str]]] = {}
    for t, p, a in entries:
        owner = _port_owner(p, name)
        if owner is not None:
            owners.setdefault(owner, []).append((t, p, a))
    for owner, group in owners.items():
        _srv(recs, owner, [_Target(t, p.port, (a,)) for t, p, a in group], len(group))
