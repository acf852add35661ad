"""Which addresses answer for a service, as one consuming cluster sees it.

`kep` (default) is the MCS DNS specification: the ServiceImport's ClusterSetIPs,
or every ready endpoint of every cluster for a Headless service. Other policies
are chosen per service with the ServiceExport annotation
`clusterset.io/dns-policy` (carried to the ServiceImport by the controller).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clusterset.model.ids import ClusterId
from clusterset.model.objects import (
    EndpointSlice,
    ImportType,
    ServiceImport,
    ServicePort,
    canonical_ip,
)
from clusterset.model.state import ImportedView

KEP = "kep"
POLICIES = (KEP,)
ANNOTATION = "clusterset.io/dns-policy"


@dataclass(frozen=True, slots=True)
class SelectedEndpoint:
    cluster: ClusterId | None
    address: str
    hostname: str
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One source cluster of a service and how ready it is (for --explain)."""

    cluster: ClusterId | None
    ready: int
    total: int


@dataclass(frozen=True, slots=True)
class Selection:
    policy: str
    addresses: tuple[str, ...] = ()
    endpoints: tuple[SelectedEndpoint, ...] = ()
    candidates: tuple[Candidate, ...] = ()
    reason: str = ""
    notes: tuple[str, ...] = field(default=())


def _dedupe(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def candidates(slices: tuple[EndpointSlice, ...]) -> tuple[Candidate, ...]:
    counts: dict[ClusterId | None, list[int]] = {}
    for s in slices:
        c = counts.setdefault(s.source_cluster, [0, 0])
        for ep in s.endpoints:
            c[1] += 1
            c[0] += ep.is_ready
    return tuple(
        Candidate(cluster, r, t)
        for cluster, (r, t) in sorted(counts.items(), key=lambda kv: kv[0] or "")
    )


def ready_endpoints(slices: tuple[EndpointSlice, ...]) -> tuple[SelectedEndpoint, ...]:
    """Ready (or unknown-ready) endpoints; one entry per address. FQDN slices are skipped."""
    out: list[SelectedEndpoint] = []
    for s in slices:
        if s.address_type not in ("IPv4", "IPv6"):
            continue
        for ep in s.endpoints:
            if not ep.is_ready:
                continue
            for addr in ep.addresses:
                try:
                    ip = canonical_ip(addr)
                except ValueError:
                    continue
                out.append(SelectedEndpoint(s.source_cluster, ip, ep.hostname, s.ports))
    return tuple(out)


def select(
    view: ImportedView,
    imp: ServiceImport,
    slices: tuple[EndpointSlice, ...],
    *,
    default: str = KEP,
) -> Selection:
    """The answer set for `imp` under its policy (annotation, else `default`)."""
    name = imp.annotation(ANNOTATION) or default
    cands = candidates(slices)
    if imp.type is ImportType.HEADLESS:
        eps = ready_endpoints(slices)
        return Selection(KEP, endpoints=eps, candidates=cands, reason="all ready endpoints")
    ips = []
    for ip in imp.ips:
        try:
            ips.append(canonical_ip(ip))
        except ValueError:
            continue
    notes = () if name in POLICIES else (f"unknown policy {name!r}, using kep",)
    return Selection(
        KEP, addresses=_dedupe(ips), candidates=cands, reason="ServiceImport spec.ips", notes=notes
    )
