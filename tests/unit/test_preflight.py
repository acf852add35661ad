"""Pre-flight findings (reconcile.preflight): one row per situation `check` must report.

Expected values are written out by hand from the KEP-1645 rules (oldest export wins,
ports merged by name then number), not computed by the code under test.
"""

from __future__ import annotations

import pytest

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import ServiceExport
from clusterset.reconcile import preflight
from clusterset.zone.lookup import service_answer
from tests.factories import cluster, clusterset, endpoint, eslice, export, port, service

KEY = ServiceKey("ns", "svc")
A, B, C = ClusterId("a"), ClusterId("b"), ClusterId("c")
IPS = {(A, KEY): ("10.250.0.1",), (B, KEY): ("10.250.0.2",), (C, KEY): ("10.250.0.3",)}


def world(svc_b, *, b_exports: bool = False, b_created: float = 2.0):  # type: ignore[no-untyped-def]
    """a exports svc (http:80, created 1.0); b has `svc_b` (exported or not); c consumes."""
    return clusterset(
        cluster("a", services=(service(),), exports=(export(created=1.0),)),
        cluster(
            "b",
            services=(svc_b,) if svc_b else (),
            exports=(export(created=b_created),) if b_exports else (),
        ),
        cluster("c"),
    )


def run(state, *, proposed: ServiceExport | None = None, svc=None):  # type: ignore[no-untyped-def]
    return preflight.check(
        state,
        cluster=B,
        key=KEY,
        export=proposed if proposed is not None else export(created=2.0),
        service=svc,
        ips=IPS,
        answer=service_answer,
    )


CASES = [
    pytest.param(
        service(),
        (),
        None,
        (),
        id="same-ports-no-conflict",
    ),
    pytest.param(
        service(ports=(port(8080, "http"),)),
        ("PortConflict",),
        A,
        ("http:8080/TCP",),
        id="seed-web-same-name-other-number-older-wins",
    ),
    pytest.param(
        service(ports=(port(80, "http"), port(443, "https"))),
        ("PortConflict",),
        A,
        (),
        id="extra-port-merged-still-conflict",
    ),
    pytest.param(
        service(headless=True),
        ("TypeConflict",),
        A,
        (),
        id="headless-vs-clustersetip",
    ),
    pytest.param(
        service(affinity="ClientIP", affinity_timeout=30),
        ("SessionAffinityConflict", "SessionAffinityConfigConflict"),
        A,
        (),
        id="session-affinity",
    ),
]


@pytest.mark.parametrize(("svc_b", "reasons", "winner", "dropped"), CASES)
def test_conflicts_name_the_oldest_export(svc_b, reasons, winner, dropped) -> None:  # type: ignore[no-untyped-def]
    f = run(world(svc_b))
    assert f.dropped_ports == dropped
    if not reasons:
        assert f.conflicts == ()
        assert not f.fails
        return
    assert f.fails
    assert {c.cluster for c in f.conflicts} == {A, B}
    for c in f.conflicts:
        assert c.reasons == reasons
        assert c.winner == winner
    assert any(f"the oldest export, in {winner}, wins" in w for w in f.warnings())


def test_before_and_after_of_the_merged_import() -> None:
    f = run(world(service(ports=(port(80, "http"), port(443, "https")))))
    assert f.before is not None and f.after is not None
    assert f.before.ports == ("http:80/TCP",)
    assert f.after.ports == ("http:80/TCP", "https:443/TCP")
    assert f.before.clusters == (A,)
    assert f.after.clusters == (A, B)


def test_answers_change_for_every_consumer_when_srv_ports_grow() -> None:
    f = run(world(service(ports=(port(80, "http"), port(443, "https")))))
    by = {a.consumer: a for a in f.answers}
    assert by[C].before == ("A 10.250.0.3", "SRV 0 100 80 svc.ns.svc.clusterset.local.")
    assert by[C].after == (
        "A 10.250.0.3",
        "SRV 0 50 443 svc.ns.svc.clusterset.local.",
        "SRV 0 50 80 svc.ns.svc.clusterset.local.",
    )
    assert all(a.changed for a in f.answers)


def test_same_ports_leave_answers_unchanged() -> None:
    f = run(world(service()))
    assert [a.changed for a in f.answers] == [False, False, False]


def test_first_export_creates_the_import_with_a_new_clusterset_ip() -> None:
    state = clusterset(cluster("b", services=(service(),)), cluster("c"))
    f = preflight.check(state, cluster=B, key=KEY, export=export(), ips={}, answer=service_answer)
    assert f.before is None
    assert f.after is not None and f.after.type == "ClusterSetIP"
    by = {a.consumer: a for a in f.answers}
    assert by[C].before == ("NXDOMAIN",)
    assert by[C].after[0] == preflight.NEW_CLUSTERSET_IP


def test_headless_answer_lists_every_ready_endpoint() -> None:
    hl = service(headless=True)
    state = clusterset(
        cluster(
            "a",
            services=(hl,),
            exports=(export(created=1.0),),
            slices=(eslice(endpoints=(endpoint("10.244.1.1"),)),),
        ),
        cluster("b", services=(hl,), slices=(eslice(endpoints=(endpoint("10.244.2.1"),)),)),
        cluster("c"),
    )
    f = run(state)
    assert f.conflicts == ()
    by = {a.consumer: a for a in f.answers}
    assert [x for x in by[C].before if x.startswith("A ")] == ["A 10.244.1.1"]
    assert [x for x in by[C].after if x.startswith("A ")] == ["A 10.244.1.1", "A 10.244.2.1"]


def test_missing_service_is_invalid() -> None:
    f = run(world(None))
    assert f.invalid.startswith("NoService")
    assert f.fails


def test_an_older_proposed_export_wins_instead() -> None:
    f = run(world(service(ports=(port(8080, "http"),))), proposed=export(created=0.5))
    assert {c.winner for c in f.conflicts} == {B}
    assert f.after is not None and f.after.ports == ("http:8080/TCP",)


def test_service_only_change_compares_with_the_observed_export() -> None:
    state = world(service(), b_exports=True)
    f = preflight.check(
        state,
        cluster=B,
        key=KEY,
        export=None,
        service=service(ports=(port(9090, "http"),)),
        ips=IPS,
        answer=service_answer,
    )
    assert f.before is not None and f.before.clusters == (A, B)
    assert {c.winner for c in f.conflicts} == {A}
    assert f.dropped_ports == ("http:9090/TCP",)
