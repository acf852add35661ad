"""KEP-1645 aggregation rules, one table row per rule (mcs-api conformance cases included)."""

from __future__ import annotations

import pytest

from clusterset.model.conditions import ConditionType, Status
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import ImportType, IPFamily, ServiceType
from clusterset.reconcile.aggregate import aggregate, merge_ports
from tests.factories import cluster, clusterset, export, port, service

KEY = ServiceKey("ns", "svc")
A, B = ClusterId("a"), ClusterId("b")


def cond(agg, cid, kind):  # type: ignore[no-untyped-def]
    return next(c for c in agg.conditions[cid] if c.type is kind)


def two(svc_a, svc_b, *, t_a=1.0, t_b=2.0, ex_a=None, ex_b=None):  # type: ignore[no-untyped-def]
    return clusterset(
        cluster("a", services=(svc_a,) if svc_a else (), exports=(ex_a or export(created=t_a),)),
        cluster("b", services=(svc_b,) if svc_b else (), exports=(ex_b or export(created=t_b),)),
    )


CONFLICTS = [
    pytest.param(
        service(ports=(port(42, "tcp"), port(42, "udp", "UDP"))),
        service(ports=(port(42, "tcp"), port(142, "stcp", "SCTP"))),
        "PortConflict",
        (port(42, "tcp"), port(42, "udp", "UDP"), port(142, "stcp", "SCTP")),
        id="ports-union-still-conflict",  # mcs-api conformance service_import.go
    ),
    pytest.param(
        service(ports=(port(42, "tcp"), port(42, "udp", "UDP"))),
        service(ports=(port(43, "tcp"),)),
        "PortConflict",
        (port(42, "tcp"), port(42, "udp", "UDP")),
        id="port-name-clash-oldest-wins",
    ),
    pytest.param(service(), service(headless=True), "TypeConflict", None, id="type-oldest-wins"),
    pytest.param(
        service(affinity="ClientIP", affinity_timeout=10),
        service(),
        "SessionAffinityConflict",
        None,
        id="session-affinity",
    ),
    pytest.param(
        service(affinity="ClientIP", affinity_timeout=10),
        service(affinity="ClientIP", affinity_timeout=20),
        "SessionAffinityConfigConflict",
        None,
        id="session-affinity-config",
    ),
    pytest.param(service(itp="Local"), service(), "InternalTrafficPolicyConflict", None, id="itp"),
    pytest.param(
        service(td="PreferClose"), service(), "TrafficDistributionConflict", None, id="td"
    ),
    pytest.param(
        service(families=(IPFamily.IPV4,)),
        service(families=(IPFamily.IPV6,), ips=("fd00::1",)),
        "IPFamilyConflict",
        None,
        id="ip-family",
    ),
]


@pytest.mark.parametrize(("svc_a", "svc_b", "reason", "ports"), CONFLICTS)
def test_conflicts_are_raised_on_every_export_and_oldest_wins(svc_a, svc_b, reason, ports):  # type: ignore[no-untyped-def]
    agg = aggregate(two(svc_a, svc_b), KEY)
    for cid in (A, B):
        c = cond(agg, cid, ConditionType.CONFLICT)
        assert c.status is Status.TRUE
        assert reason in c.reason.split(",")
        assert "from oldest service export in 'a'" in c.message
    assert agg.type is (ImportType.HEADLESS if svc_a.headless else ImportType.CLUSTER_SET_IP)
    assert agg.session_affinity == svc_a.session_affinity
    if ports is not None:
        assert agg.ports == ports


def test_newer_export_in_other_cluster_loses_even_when_listed_first() -> None:
    agg = aggregate(two(service(), service(headless=True), t_a=5.0, t_b=1.0), KEY)
    assert agg.type is ImportType.HEADLESS
    assert agg.contributions[0].cluster == B


def test_creation_time_tie_is_broken_by_cluster_id() -> None:
    agg = aggregate(two(service(headless=True), service(), t_a=1.0, t_b=1.0), KEY)
    assert agg.type is ImportType.HEADLESS  # "a" < "b"


def test_identical_exports_have_no_conflict() -> None:
    agg = aggregate(two(service(), service()), KEY)
    for cid in (A, B):
        c = cond(agg, cid, ConditionType.CONFLICT)
        assert (c.status, c.reason) == (Status.FALSE, "NoConflicts")
        assert cond(agg, cid, ConditionType.VALID).status is Status.TRUE
        assert cond(agg, cid, ConditionType.READY).reason == "Exported"
    assert agg.clusters == (A, B)


@pytest.mark.parametrize(
    ("svc_b", "reason"),
    [
        pytest.param(None, "NoService", id="missing-service"),
        pytest.param(
            service(type=ServiceType.EXTERNAL_NAME), "InvalidServiceType", id="external-name"
        ),
    ],
)
def test_invalid_exports_are_valid_false_and_do_not_contribute(svc_b, reason):  # type: ignore[no-untyped-def]
    agg = aggregate(two(service(), svc_b), KEY)
    valid = cond(agg, B, ConditionType.VALID)
    assert (valid.status, valid.reason) == (Status.FALSE, reason)
    assert cond(agg, B, ConditionType.READY).status is Status.FALSE
    assert agg.clusters == (A,)
    assert agg.type is ImportType.CLUSTER_SET_IP


def test_no_valid_export_means_no_service_import() -> None:
    agg = aggregate(two(None, service(type=ServiceType.EXTERNAL_NAME)), KEY)
    assert agg.type is None
    assert agg.contributions == ()


def test_unexported_service_is_not_aggregated() -> None:
    state = clusterset(
        cluster("a", services=(service(),), exports=(export(),)),
        cluster("b", services=(service(ports=(port(9999, "x"),)),)),  # no ServiceExport
    )
    agg = aggregate(state, KEY)
    assert agg.clusters == (A,)
    assert cond(agg, A, ConditionType.CONFLICT).status is Status.FALSE


def test_exported_labels_oldest_wins_and_conflict() -> None:
    state = two(
        service(),
        service(),
        ex_a=export(created=1, labels=(("tier", "a"),)),
        ex_b=export(created=2, labels=(("tier", "b"),)),
    )
    agg = aggregate(state, KEY)
    assert agg.exported_labels == (("tier", "a"),)
    assert "LabelsConflict" in cond(agg, B, ConditionType.CONFLICT).reason


def test_merge_ports_dedupes_by_name_then_number() -> None:
    merged = merge_ports([(port(80, "http"),), (port(80, "web"), port(81, "http"), port(82, "m"))])
    assert merged == (port(80, "http"), port(82, "m"))
