"""Which ports a source cluster's MCS slices carry: only those the ServiceImport serves as
that cluster does (kube-proxy matches the derived Service's ports to slices by name)."""

from __future__ import annotations

import pytest

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import ServicePort
from clusterset.model.state import ClusterState
from clusterset.reconcile.aggregate import aggregate
from clusterset.reconcile.slices import imported_slices
from tests.factories import cluster, clusterset, endpoint, eslice, export, port, service

KEY = ServiceKey("ns", "svc")


@pytest.mark.parametrize(
    ("ports_a", "ports_b", "carried_b"),
    [
        # Same ports: both carry everything.
        ((port(42, "tcp"),), (port(42, "tcp"),), {"tcp"}),
        # Same name, other number (conformance "StrictPortConflict"): the oldest (a) wins;
        # b's endpoints must not take a's traffic on tcp.
        ((port(42, "tcp"),), (port(4242, "tcp"),), set()),
        # Other name: the union; each cluster carries its own.
        ((port(42, "tcp"),), (port(4242, "tcp2"),), {"tcp2"}),
        # Same name, other protocol: names are unique in a Service, so a conflict too.
        ((port(42, "p"),), (port(42, "p", "UDP"),), set()),
        # Partly conflicting: the agreeing port stays.
        ((port(42, "tcp"), port(53, "dns")), (port(4242, "tcp"), port(53, "dns")), {"dns"}),
    ],
)
def test_a_losing_port_carries_no_endpoints(
    ports_a: tuple[ServicePort, ...], ports_b: tuple[ServicePort, ...], carried_b: set[str]
) -> None:
    def member(cid: str, ports: tuple[ServicePort, ...], created: float, ip: str) -> ClusterState:
        # Slice ports are the Services' target ports: 42 for every port here.
        target = tuple(ServicePort(42, p.protocol, p.name) for p in ports)
        return cluster(
            cid,
            services=(service(ports=ports),),
            exports=(export(created=created),),
            slices=(eslice(ports=target, endpoints=(endpoint(ip),)),),
        )

    state = clusterset(member("a", ports_a, 1.0, "10.1.0.1"), member("b", ports_b, 2.0, "10.2.0.1"))
    slices = imported_slices(state, aggregate(state, KEY))
    carried = {s.source_cluster: {p.name for p in s.ports} for s in slices if s.endpoints}
    assert carried[ClusterId("a")] == {p.name for p in ports_a}
    assert carried[ClusterId("b")] == carried_b
