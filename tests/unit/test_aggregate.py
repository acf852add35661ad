"""KEP-1645 aggregation rules, one table row per rule (mcs-api conformance cases included)."""

from __future__ import annotations

import pytest

from clusterset.model.conditions import Condition, ConditionType, Status
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import (
    ImportType,
    IPFamily,
    Service,
    ServiceExport,
    ServicePort,
    ServiceType,
)
from clusterset.model.state import ClusterSetState
from clusterset.reconcile.aggregate import Aggregate, aggregate, merge_ports
from tests.factories import cluster, clusterset, export, port, service

KEY = ServiceKey("ns", "svc")
A, B = ClusterId("a"), ClusterId("b")


def cond(agg: Aggregate, cid: ClusterId, kind: ConditionType) -> Condition:
    return next(c for c in agg.conditions[cid] if c.type is kind)


def two(
    svc_a: Service | None,
    svc_b: Service | None,
    *,
    t_a: float = 1.0,
    t_b: float = 2.0,
    ex_a: ServiceExport | None = None,
    ex_b: ServiceExport | None = None,
) -> ClusterSetState:
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
def test_conflicts_are_raised_on_every_export_and_oldest_wins(
    svc_a: Service, svc_b: Service, reason: str, ports: tuple[ServicePort, ...] | None
) -> None:
    agg = aggregate(two(svc_a, svc_b), KEY)
    for cid in (A, B):
        c = cond(agg, cid, ConditionType.CONFLICT)
        assert c.status is Status.TRUE
        assert reason in c.reason.split(",")
        assert "the oldest export's" in c.message
        assert c.message.endswith("1/2 clusters disagree.")
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
def test_invalid_exports_are_valid_false_and_do_not_contribute(
    svc_b: Service | None, reason: str
) -> None:
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


V4, V6 = IPFamily.IPV4, IPFamily.IPV6
DUAL4, DUAL6 = (V4, V6), (V6, V4)


@pytest.mark.parametrize(
    ("oldest", "newer", "families", "conflict"),
    [
        pytest.param((V4,), (V4,), (V4,), False, id="same"),
        pytest.param(DUAL4, DUAL4, DUAL4, False, id="same-dual"),
        # The same families in another order are no conflict; the primary is the oldest's.
        pytest.param(DUAL4, DUAL6, DUAL4, False, id="dual-other-order"),
        pytest.param(DUAL6, DUAL4, DUAL6, False, id="dual-other-order-v6-primary"),
        # The oldest's, not the intersection: a cluster that joins later never takes a
        # family (and its ClusterSetIP) away from the clients already using it...
        pytest.param(DUAL4, (V4,), DUAL4, True, id="newer-single-stack"),
        # ...nor adds one the oldest does not serve.
        pytest.param((V4,), DUAL4, (V4,), True, id="newer-dual-stack"),
        # Disjoint families: an intersection would be empty; the oldest's still serves.
        pytest.param((V4,), (V6,), (V4,), True, id="disjoint"),
        pytest.param((V6,), (V4,), (V6,), True, id="disjoint-v6-oldest"),
    ],
)
def test_ip_families_are_the_oldest_exports(
    oldest: tuple[IPFamily, ...],
    newer: tuple[IPFamily, ...],
    families: tuple[IPFamily, ...],
    conflict: bool,
) -> None:
    """The rule for ipFamilies, as for every other field but ports: the oldest export's,
    with IPFamilyConflict on every export when any differs (docs/reference.md)."""
    ips = {V4: "10.96.0.1", V6: "fd00::1"}
    agg = aggregate(
        two(
            service(families=oldest, ips=tuple(ips[f] for f in oldest)),
            service(families=newer, ips=tuple(ips[f] for f in newer)),
        ),
        KEY,
    )
    assert agg.ip_families == families
    for cid in (A, B):
        c = cond(agg, cid, ConditionType.CONFLICT)
        assert ("IPFamilyConflict" in c.reason.split(",")) is conflict
    if conflict:
        want = (
            f"Conflicting ipFamilies: {','.join(f.value for f in newer)} of b differs from the "
            f"oldest export's (a, {','.join(f.value for f in oldest)}); using the oldest's."
        )
        assert want in cond(agg, B, ConditionType.CONFLICT).message


@pytest.mark.parametrize(
    ("svc_a", "svc_b", "ex_b", "message"),
    [
        pytest.param(
            service(ports=(port(80, "http"),)),
            service(ports=(port(8080, "http"),)),
            None,
            "Conflicting ports: port http:8080/TCP of b differs from the oldest export's "
            "(a, http:80/TCP); using the oldest's. 1/2 clusters disagree.",
            id="port-same-name",
        ),
        pytest.param(
            service(ports=(port(80, "http"),)),
            service(ports=(port(80, "web"),)),
            None,
            "Conflicting ports: port web:80/TCP of b differs from the oldest export's "
            "(a, http:80/TCP); using the oldest's. 1/2 clusters disagree.",
            id="port-same-number",
        ),
        pytest.param(
            service(ports=(port(80, "http"),)),
            service(ports=(port(80, "http"), port(9090, "metrics"))),
            None,
            "Conflicting ports: port metrics:9090/TCP of b is not among the oldest export's "
            "(a: http:80/TCP). 1/2 clusters disagree.",
            id="port-extra",
        ),
        pytest.param(
            service(ports=(port(80, "http"), port(9090, "metrics"))),
            service(ports=(port(80, "http"),)),
            None,
            "Conflicting ports: the oldest export's port metrics:9090/TCP (a) is missing in b. "
            "1/2 clusters disagree.",
            id="port-missing",
        ),
        pytest.param(
            service(headless=True),
            service(),
            None,
            "Conflicting type: ClusterSetIP of b differs from the oldest export's "
            "(a, Headless); using the oldest's. 1/2 clusters disagree.",
            id="type",
        ),
        pytest.param(
            service(affinity="ClientIP", affinity_timeout=60),
            service(affinity="ClientIP", affinity_timeout=30),
            None,
            "Conflicting sessionAffinityConfig: timeoutSeconds 30 of b differs from the oldest "
            "export's (a, timeoutSeconds 60); using the oldest's. 1/2 clusters disagree.",
            id="affinity-config",
        ),
        pytest.param(
            service(itp="Local"),
            service(),
            None,
            "Conflicting internalTrafficPolicy: Cluster of b differs from the oldest export's "
            "(a, Local); using the oldest's. 1/2 clusters disagree.",
            id="itp",
        ),
        pytest.param(
            service(),
            service(),
            export(created=2, labels=(("tier", "b"),)),
            "Conflicting exportedLabels: label tier=b of b differs from the oldest export's "
            "(a, label tier=(unset)); using the oldest's. 1/2 clusters disagree.",
            id="labels",
        ),
    ],
)
def test_conflict_messages_name_the_field_and_both_values(
    svc_a: Service, svc_b: Service, ex_b: ServiceExport | None, message: str
) -> None:
    c = cond(aggregate(two(svc_a, svc_b, ex_b=ex_b), KEY), A, ConditionType.CONFLICT)
    assert c.message == message
