"""MCS EndpointSlices a consuming cluster gets for one service, from every source cluster.

One group per (source cluster, addressType, ports), at most 100 endpoints a
slice (the EndpointSlice controller's default maximum). Names are derived
from the service, the source cluster and a hash, so that they are stable,
unique, and at most 63 characters.
"""

from __future__ import annotations

import hashlib

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import Endpoint, EndpointSlice, Protocol, ServicePort
from clusterset.model.state import ClusterSetState
from clusterset.reconcile.aggregate import Aggregate

MAX_ENDPOINTS = 100
MANAGED_BY = "controller.clusterset.io"


def slice_name(key: ServiceKey, cluster: ClusterId, group: str, index: int) -> str:
    digest = hashlib.sha256(f"{key}|{cluster}|{group}|{index}".encode()).hexdigest()[:10]
    prefix = f"{key.name}-{cluster}"[:52].rstrip("-")
    return f"{prefix}-{digest}"


def _carried_ports(
    own: tuple[ServicePort, ...], merged: tuple[ServicePort, ...]
) -> set[tuple[str, Protocol]]:
    """The (name, protocol) of a cluster's ports that the ServiceImport serves as the cluster
    does: a port left out by a conflict (same name, another number) carries no traffic there.

    kube-proxy matches a derived Service's port to slice ports by name alone, so without this
    a losing cluster's endpoints would take the winner's traffic (mcs-api conformance,
    "same port name but different port numbers ... only route traffic to the cluster that
    exposes the port").
    """
    served = {(p.name, p.protocol, p.port) for p in merged}
    return {(p.name, p.protocol) for p in own if (p.name, p.protocol, p.port) in served}


def imported_slices(state: ClusterSetState, agg: Aggregate) -> tuple[EndpointSlice, ...]:
    """The MCS slices for `agg`, the same for every consuming cluster."""
    out: list[EndpointSlice] = []
    for contrib in sorted(agg.contributions, key=lambda c: c.cluster):
        cs = state.clusters[contrib.cluster]
        carried = _carried_ports(contrib.service.ports, agg.ports)
        groups: dict[tuple[str, tuple[ServicePort, ...]], list[Endpoint]] = {}
        for s in cs.slices.get(agg.key, ()):
            ports = tuple(sorted(p for p in s.ports if (p.name, p.protocol) in carried))
            eps = groups.setdefault((s.address_type, ports), [])
            seen = {e.addresses for e in eps}
            eps.extend(e for e in s.endpoints if e.addresses not in seen)
        for (address_type, ports), eps in sorted(groups.items(), key=lambda kv: repr(kv[0])):
            eps.sort(key=lambda e: e.addresses)
            group = f"{address_type}|{ports}"
            chunks = [eps[i : i + MAX_ENDPOINTS] for i in range(0, len(eps), MAX_ENDPOINTS)] or [[]]
            for i, chunk in enumerate(chunks):
                out.append(
                    EndpointSlice(
                        namespace=agg.key.namespace,
                        name=slice_name(agg.key, contrib.cluster, group, i),
                        service=agg.key.name,
                        address_type=address_type,
                        ports=ports,
                        endpoints=tuple(chunk),
                        source_cluster=contrib.cluster,
                        managed_by=MANAGED_BY,
                    )
                )
    return tuple(out)
