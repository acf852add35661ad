"""Answer policies, as tables: kep, local-first, hysteresis, tiers, weights, leases."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import pytest

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.labels import REGION_PROPERTY
from clusterset.model.objects import ImportType
from clusterset.model.state import ImportedView, Track
from clusterset.zone import policy
from tests.dnsutil import ask, compile_view
from tests.factories import endpoint, eslice, imported, service, view

KEY = ServiceKey("ns", "svc")
ME = ClusterId("m2")
Z = "clusterset.local."


def lf(**ann: str) -> tuple[tuple[str, str], ...]:
    return (
        ("clusterset.io/dns-policy", "local-first"),
        *((f"clusterset.io/{k.replace('_', '-')}", v) for k, v in ann.items()),
    )


def mkview(
    *,
    local_ready: int = 2,
    local_total: int = 2,
    ann: tuple[tuple[str, str], ...] | None = None,
    type: ImportType = ImportType.CLUSTER_SET_IP,
    remotes: dict[str, int] | None = None,
    regions: dict[str, str] | None = None,
    now: float = 1000.0,
    tracks: Mapping[tuple[ServiceKey, ClusterId], Track] | None = None,
    expired: frozenset[ClusterId] = frozenset(),
) -> ImportedView:
    remotes = {"m1": 2, "m3": 1} if remotes is None else remotes
    ann = lf() if ann is None else ann
    slices = (
        [
            eslice(
                source="m2",
                endpoints=tuple(
                    endpoint(f"10.2.0.{i}", ready=i <= local_ready)
                    for i in range(1, local_total + 1)
                ),
            )
        ]
        if local_total
        else []
    )
    for n, (c, count) in enumerate(sorted(remotes.items()), start=1):
        slices.append(
            eslice(
                source=c,
                endpoints=tuple(endpoint(f"10.{10 + n}.0.{i}") for i in range(1, count + 1)),
            )
        )
    v = view(
        imports=(imported(type=type, ips=("10.250.0.1",), annotations=ann),),
        slices=tuple(slices),
        cluster="m2",
    )
    return dataclasses.replace(
        v,
        local_services={KEY: service(ips=("10.96.0.7",))},
        now=now,
        tracks=tracks or {},
        properties={ClusterId(k): {REGION_PROPERTY: r} for k, r in (regions or {}).items()},
        expired=expired,
    )


def sel(v: ImportedView, default: str = policy.KEP) -> policy.Selection:
    return policy.select(v, v.imports[KEY], v.slices.get(KEY, ()), default=default)


@pytest.mark.parametrize(
    ("kwargs", "addresses", "reason_part"),
    [
        pytest.param({}, ("10.96.0.7",), "is healthy", id="local-healthy-local-clusterip"),
        pytest.param(
            {"local_ready": 0}, ("10.250.0.1",), "ClusterSetIP", id="local-down-clustersetip"
        ),
        pytest.param(
            {"local_total": 0}, ("10.250.0.1",), "ClusterSetIP", id="not-exported-locally"
        ),
        pytest.param(
            {"local_ready": 1, "local_total": 4, "ann": lf(min_ready="50%")},
            ("10.250.0.1",),
            "not preferred",
            id="below-min-ready-pct",
        ),
        pytest.param(
            {"local_ready": 2, "local_total": 4, "ann": lf(min_ready="50%")},
            ("10.96.0.7",),
            "healthy",
            id="at-min-ready-pct",
        ),
        pytest.param(
            {"local_ready": 2, "ann": lf(min_ready="3")},
            ("10.250.0.1",),
            "not preferred",
            id="below-min-ready-count",
        ),
        pytest.param({"ann": ()}, ("10.250.0.1",), "spec.ips", id="kep-default"),
        pytest.param(
            {"expired": frozenset({ME})}, ("10.250.0.1",), "not preferred", id="own-lease-expired"
        ),
    ],
)
def test_local_first_clusterset_ip(kwargs, addresses, reason_part) -> None:  # type: ignore[no-untyped-def]
    s = sel(mkview(**kwargs))
    assert s.addresses == addresses
    assert reason_part in s.reason


def test_global_default_policy_applies_without_annotation() -> None:
    assert sel(mkview(ann=()), default=policy.LOCAL_FIRST).addresses == ("10.96.0.7",)


def test_headless_local_first_and_failover_endpoints() -> None:
    s = sel(mkview(type=ImportType.HEADLESS))
    assert {e.address for e in s.endpoints} == {"10.2.0.1", "10.2.0.2"}
    s = sel(mkview(type=ImportType.HEADLESS, local_ready=0))
    assert {e.cluster for e in s.endpoints} == {"m1", "m3"}
    assert "failover to tier" in s.reason


def test_failover_endpoints_prefers_same_region_tier() -> None:
    s = sel(
        mkview(
            local_ready=0,
            ann=lf(failover="endpoints"),
            regions={"m2": "eu", "m3": "eu", "m1": "us"},
        )
    )
    assert {e.cluster for e in s.endpoints} == {"m3"}
    s = sel(
        mkview(
            local_ready=0,
            ann=lf(failover="endpoints", tiers="any"),
            regions={"m2": "eu", "m3": "eu"},
        )
    )
    assert {e.cluster for e in s.endpoints} == {"m1", "m3"}


def test_weight_zero_drains_a_cluster() -> None:
    s = sel(mkview(type=ImportType.HEADLESS, local_ready=0, ann=lf(weights="m1=0")))
    assert {e.cluster for e in s.endpoints} == {"m3"}
    assert any(c.note == "drained (weight 0)" for c in s.candidates)


def test_weights_shape_rotation_of_first_answers() -> None:
    s = sel(
        mkview(
            type=ImportType.HEADLESS,
            local_ready=0,
            remotes={"m1": 1, "m3": 1},
            ann=lf(weights="m1=3,m3=1"),
        )
    )
    firsts = [order[0] for order in s.rotations]
    assert firsts.count("10.11.0.1") == 3 and firsts.count("10.12.0.1") == 1
    assert all(set(o) == {"10.11.0.1", "10.12.0.1"} for o in s.rotations)  # full set every time


def test_round_robin_among_equals_in_the_live_answer() -> None:
    v = mkview(type=ImportType.HEADLESS, local_ready=0, remotes={"m1": 1, "m3": 1})
    zone = compile_view(v)
    firsts = {ask(zone, "svc.ns.svc." + Z).answer[0][0].address for _ in range(4)}
    assert firsts == {"10.11.0.1", "10.12.0.1"}


def test_expired_remote_lease_removes_its_endpoints() -> None:
    s = sel(mkview(type=ImportType.HEADLESS, local_ready=0, expired=frozenset({ClusterId("m1")})))
    assert {e.cluster for e in s.endpoints} == {"m3"}
    s = sel(mkview(type=ImportType.HEADLESS, ann=(), expired=frozenset({ClusterId("m1")})))
    assert "m1" not in {e.cluster for e in s.endpoints}


HYST = lf(hysteresis="30")


@pytest.mark.parametrize(
    ("track", "ready", "now", "local", "wake"),
    [
        pytest.param(None, 2, 1000, True, None, id="first-sight-healthy"),
        pytest.param(Track(False, 900), 0, 1000, False, None, id="still-down"),
        pytest.param(Track(False, 900), 2, 1000, False, 1030, id="just-recovered-waits"),
        pytest.param(Track(True, 990), 2, 1000, False, 1020, id="recovering-10s"),
        pytest.param(Track(True, 960), 2, 1000, True, None, id="recovered-40s-preferred"),
        pytest.param(Track(True, 500), 0, 1000, False, None, id="fails-fast"),
    ],
)
def test_hysteresis(track, ready, now, local, wake) -> None:  # type: ignore[no-untyped-def]
    tracks = {(KEY, ME): track} if track else {}
    s = sel(mkview(local_ready=ready, ann=HYST, now=now, tracks=tracks))
    assert (s.addresses == ("10.96.0.7",)) is local
    assert s.wake_at == wake
    new = s.tracks[(KEY, ME)]
    assert new.healthy is (ready > 0)


def test_bad_annotations_are_noted_and_defaults_used() -> None:
    s = sel(mkview(ann=lf(min_ready="lots", hysteresis="soon", failover="magic", weights="m1=x")))
    assert s.addresses == ("10.96.0.7",)
    assert len(s.notes) == 4


def test_swrr_sequence() -> None:
    assert policy.swrr({"a": 3, "b": 1}, 4) == ["a", "a", "b", "a"]
    assert policy.swrr({"a": 0}, 3) == []


def test_lease_expiry_is_computed_from_now_and_each_leases_expiry() -> None:
    from clusterset.zone.settings import ZoneSettings
    from tests import zone_records as records

    base = mkview(type=ImportType.HEADLESS, ann=(), remotes={"m1": 1, "m3": 1}, now=1000.0)
    # view.leases: when each Lease expires (renewTime + leaseDurationSeconds).
    v = dataclasses.replace(base, leases={ClusterId("m1"): 990.0, ClusterId("m3"): 1025.0})
    recs = records.build(v, ZoneSettings(source_leases=True), serial=1)
    sel = recs.explain[KEY]
    assert {e.cluster for e in sel.endpoints} == {"m2", "m3"}  # m1's lease lapsed 10 s ago
    assert recs.wake_at == 1025.0  # m3 lapses then: rebuild then
    assert "lease expired for: m1" in sel.notes
    recs = records.build(v, ZoneSettings(source_leases=False), serial=1)
    assert {e.cluster for e in recs.explain[KEY].endpoints} == {"m1", "m2", "m3"}


def test_failing_probes_take_a_cluster_out() -> None:
    v = dataclasses.replace(
        mkview(local_ready=2, ann=lf(failover="endpoints")), probe_failed=frozenset({(KEY, ME)})
    )
    s = sel(v)
    assert s.addresses == ()
    assert {e.cluster for e in s.endpoints} == {"m1", "m3"}
    assert any(c.note == "probes failing" for c in s.candidates)
    v = dataclasses.replace(
        mkview(type=ImportType.HEADLESS, ann=()), probe_failed=frozenset({(KEY, ClusterId("m1"))})
    )
    assert "m1" not in {e.cluster for e in sel(v).endpoints}


@pytest.mark.parametrize(
    ("groups", "weights"),
    [
        ({"a": ("10.0.0.1",), "b": ("10.0.0.1", "10.0.0.2")}, {}),
        ({"a": ("10.0.0.1", "10.0.0.2"), "b": ("10.0.0.2",), "c": ("10.0.0.3",)}, {"a": 2}),
        ({"a": ("10.0.0.1",), "b": ("10.0.0.1",)}, {}),
    ],
    ids=["shared-address", "weighted", "same-address-everywhere"],
)
def test_rotations_answer_a_shared_address_once(
    groups: dict[str, tuple[str, ...]], weights: dict[str, int]
) -> None:
    """Two clusters with the same endpoint address: every turn holds each address once, and
    the same set as the base answer (found by the lookup-vs-oracle test, issue 22)."""
    everything = set().union(*groups.values())
    for turn in policy.rotations(groups, weights):
        assert len(turn) == len(set(turn)), turn
        assert set(turn) == everything
