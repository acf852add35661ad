"""Immutable snapshots of what was observed: one cluster, and the whole clusterset."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import (
    EndpointSlice,
    IPFamily,
    Service,
    ServiceExport,
    ServiceImport,
)


@dataclass(frozen=True, slots=True)
class ClusterState:
    """What one member cluster holds that the controller reads."""

    cluster: ClusterId
    services: Mapping[ServiceKey, Service] = field(default_factory=dict)
    exports: Mapping[ServiceKey, ServiceExport] = field(default_factory=dict)
    # Slices owned by local Services (kubernetes.io/service-name), grouped by service.
    slices: Mapping[ServiceKey, tuple[EndpointSlice, ...]] = field(default_factory=dict)
    namespaces: frozenset[str] = frozenset()
    synced: bool = True
    # Its ClusterProperty map (KEP-2149): what cluster selectors (KEP-5939) and tiers match.
    properties: Mapping[str, str] = field(default_factory=dict)
    # Imports another controller (Karmada) manages here, or is placing here: clusterset fills
    # their spec.ips and never creates, overwrites or prunes them.
    foreign_imports: frozenset[ServiceKey] = frozenset()
    # The derived Service Karmada made here for an import (key -> Service name): its ClusterIP
    # is the ClusterSetIP, and clusterset makes no second one.
    foreign_derived: Mapping[ServiceKey, str] = field(default_factory=dict)
    # The IP families its Services can have (its ServiceCIDRs); (): unknown, any.
    service_families: tuple[IPFamily, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterSetState:
    """Every member's ClusterState; the only input of reconcile."""

    clusters: Mapping[ClusterId, ClusterState]

    def exported_keys(self) -> list[ServiceKey]:
        keys: set[ServiceKey] = set()
        for c in self.clusters.values():
            keys.update(c.exports)
        return sorted(keys)


@dataclass(frozen=True, slots=True)
class ImportedView:
    """What one consuming cluster holds for DNS: its imports and MCS EndpointSlices.

    Also what `clusterset dns --manifests` reads. `local_services` lets policies
    prefer the cluster's own copy of a service (its ClusterIP and readiness).
    """

    cluster: ClusterId | None
    imports: Mapping[ServiceKey, ServiceImport]
    slices: Mapping[ServiceKey, tuple[EndpointSlice, ...]]
    namespaces: frozenset[str]
    local_services: Mapping[ServiceKey, Service] = field(default_factory=dict)
    generation: int = 0
    # Inputs of the answer policies (zone.policy); the clock is read by the edge, not here.
    now: float = 0.0
    tracks: Mapping[tuple[ServiceKey, ClusterId], Track] = field(default_factory=dict)
    # Each cluster's ClusterProperty map: cluster selectors (KEP-5939) and region tiers.
    properties: Mapping[ClusterId, Mapping[str, str]] = field(default_factory=dict)
    # Source clusters whose liveness lease expired: their endpoints do not count (issue 7).
    expired: frozenset[ClusterId] = frozenset()
    # When the edge saw the change this view reflects (for the change-to-answer metric).
    observed_at: float = 0.0
    # Per-source-cluster liveness: when (unix seconds) each source's Lease, as written by the
    # hub into this cluster, expires: its renewTime + leaseDurationSeconds. A source missing
    # here has no lease (not expired).
    leases: Mapping[ClusterId, float] = field(default_factory=dict)
    # (service, source cluster) pairs whose endpoints fail active probes.
    probe_failed: frozenset[tuple[ServiceKey, ClusterId]] = frozenset()
    # Where `cluster` came from (--cluster, the ClusterProperty, the hub's Leases, ...):
    # /ready says it, since local-first is only right with the ID the hub uses.
    cluster_source: str = ""
    # The apex NS's glue as the source found it (the server's own Service's ClusterIPs, for
    # --ns-service); --ns-address, when given, wins.
    ns_addresses: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Track:
    """Health history of one source cluster's copy of a service, for hysteresis."""

    healthy: bool
    since: float  # when `healthy` last changed (or first seen)
