"""KEP-5939 cluster selection end to end in the pure core, as tables: the KEP's own user
stories, each tier's answer (fallback AllClusters / None, expired and probed sources,
serving endpoints, weights), conflict resolution and what reconcile carries to DNS."""

from __future__ import annotations

import dataclasses

import dns.rcode
import pytest

from clusterset.model import clusterselect
from clusterset.model.clusterselect import ClusterSelector
from clusterset.model.conditions import Condition, ConditionType, Status
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.labels import REGION_PROPERTY
from clusterset.model.objects import ImportType, ServiceExport
from clusterset.model.state import ClusterSetState, ImportedView
from clusterset.reconcile import desired
from clusterset.reconcile.aggregate import aggregate
from clusterset.zone import build, policy
from clusterset.zone.settings import ZoneSettings
from tests.dnsutil import ask, compile_view
from tests.factories import (
    cluster,
    clusterset,
    endpoint,
    eslice,
    export,
    imported,
    selector,
    service,
    view,
)

KEY = ServiceKey("ns", "svc")
ME = clusterselect.SAME_AS_IMPORTER
ID = "cluster.clusterset.k8s.io"
REGION = "region.topology.k8s.io"
CONTINENT = "continent.topology.k8s.io"
GPU = "gpu-tier.mycompany.com"
CLUSTERSET_IP = "10.250.0.1"
LOCAL_IP = "10.96.0.7"

# KEP-5939 "User Stories", as written there.
STORY1 = (
    selector(exprs=((ID, "In", (ME,)),)),
    selector(labels=((REGION, ME),)),
    selector(labels=((CONTINENT, ME),)),
)
STORY2 = (
    selector(labels=((CONTINENT, ME), (GPU, "high"))),
    selector(labels=((CONTINENT, ME),), exprs=((GPU, "Exists", ()),)),
    selector(exprs=((GPU, "Exists", ()),)),
)
STORY3 = (selector(labels=(("compliance.mycompany.com", "gdpr"),)),)

PROPERTIES = {
    "eu1": {REGION: "eu-west", CONTINENT: "eu"},  # the asking cluster
    "eu2": {REGION: "eu-west", CONTINENT: "eu", GPU: "high"},
    "eu3": {REGION: "eu-central", CONTINENT: "eu", GPU: "low", "compliance.mycompany.com": "gdpr"},
    "us1": {REGION: "us-east", CONTINENT: "na", GPU: "high"},
}


def mkview(
    selectors: tuple[ClusterSelector, ...],
    *,
    down: tuple[str, ...] = (),
    fallback: str = clusterselect.ALL_CLUSTERS,
    annotations: tuple[tuple[str, str], ...] = (),
    serving: tuple[str, ...] = (),
    asker: str | None = "eu1",
    **kw: object,
) -> ImportedView:
    """Every cluster of PROPERTIES exports two endpoints, 10.<n>.0.1-2; `down` ones are not
    ready, `serving` ones are not ready but serving."""
    slices = tuple(
        eslice(
            source=c,
            endpoints=tuple(
                endpoint(
                    f"10.{n}.0.{i}",
                    ready=c not in down and c not in serving,
                    serving=True if c in serving else None,
                )
                for i in (1, 2)
            ),
        )
        for n, c in enumerate(sorted(PROPERTIES), start=1)
    )
    imp = imported(
        ips=(CLUSTERSET_IP,), selectors=selectors, fallback=fallback, annotations=annotations
    )
    v = view(imports=(imp,), slices=slices, cluster=asker)
    return dataclasses.replace(
        v,
        local_services={KEY: service(ips=(LOCAL_IP,))},
        properties={ClusterId(c): p for c, p in PROPERTIES.items()},
        **kw,  # type: ignore[arg-type]
    )


def select(v: ImportedView) -> policy.Selection:
    return policy.select(v, v.imports[KEY], v.slices.get(KEY, ()))


def answer(s: policy.Selection) -> tuple[str, ...]:
    return s.addresses or tuple(sorted({e.address for e in s.endpoints}))


EU2 = ("10.2.0.1", "10.2.0.2")
EU3 = ("10.3.0.1", "10.3.0.2")
US1 = ("10.4.0.1", "10.4.0.2")


@pytest.mark.parametrize(
    ("selectors", "down", "fallback", "want", "reason"),
    [
        # Story 1: own cluster, then the same region, then the same continent, then all.
        pytest.param(STORY1, (), "AllClusters", (LOCAL_IP,), f"cluster selector 1 ({ID}=eu1): eu1 has 2 ready endpoint(s): its own ClusterIP", id="story1-own"),
        pytest.param(STORY1, ("eu1",), "AllClusters", EU2, f"cluster selector 2 ({REGION}=eu-west): eu2 has 2 ready endpoint(s)", id="story1-region"),
        pytest.param(STORY1, ("eu1", "eu2"), "AllClusters", EU3, f"cluster selector 3 ({CONTINENT}=eu): eu3 has 2 ready endpoint(s)", id="story1-continent"),
        pytest.param(STORY1, ("eu1", "eu2", "eu3"), "AllClusters", (CLUSTERSET_IP,), "no cluster selector has an available endpoint; clusterSelectorsFallbackPolicy AllClusters: the ClusterSetIP (spec.ips)", id="story1-all"),
        # Story 2: same continent with a high-end GPU, then any GPU there, then any GPU.
        pytest.param(STORY2, (), "AllClusters", EU2, f"cluster selector 1 ({CONTINENT}=eu,{GPU}=high): eu2 has 2 ready endpoint(s)", id="story2-high"),
        pytest.param(STORY2, ("eu2",), "AllClusters", EU3, f"cluster selector 2 ({CONTINENT}=eu,{GPU}): eu3 has 2 ready endpoint(s)", id="story2-any-gpu-near"),
        pytest.param(STORY2, ("eu2", "eu3"), "AllClusters", US1, f"cluster selector 3 ({GPU}): us1 has 2 ready endpoint(s)", id="story2-any-gpu"),
        pytest.param(STORY2, ("eu2", "eu3", "us1"), "AllClusters", (CLUSTERSET_IP,), "no cluster selector", id="story2-fallback"),
        # Story 3: data sovereignty; no fallback, even with endpoints ready elsewhere.
        pytest.param(STORY3, (), "None", EU3, "cluster selector 1 (compliance.mycompany.com=gdpr): eu3 has 2", id="story3-gdpr"),
        pytest.param(STORY3, ("eu3",), "None", (), "no cluster selector has an available endpoint; clusterSelectorsFallbackPolicy None: no address", id="story3-nowhere"),
    ],
)  # fmt: skip
def test_the_keps_user_stories(
    selectors: tuple[ClusterSelector, ...],
    down: tuple[str, ...],
    fallback: str,
    want: tuple[str, ...],
    reason: str,
) -> None:
    s = select(mkview(selectors, down=down, fallback=fallback))
    assert s.policy == policy.CLUSTER_SELECTORS
    assert answer(s) == want
    assert s.reason.startswith(reason)


def test_story3_without_fallback_is_nodata_on_the_wire() -> None:
    zone = compile_view(mkview(STORY3, down=("eu3",), fallback="None"))
    reply = ask(zone, "svc.ns.svc.clusterset.local.")
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer  # NODATA, not NXDOMAIN
    zone = compile_view(mkview(STORY3, fallback="None"))
    assert {rr.address for rr in ask(zone, "svc.ns.svc.clusterset.local.").answer[0]} == set(EU3)


@pytest.mark.parametrize(
    ("kw", "want", "part"),
    [
        # A source whose lease expired, or whose endpoints fail probes, has none available.
        pytest.param({"expired": frozenset({ClusterId("eu2")})}, EU3, "selector 3", id="expired-source"),
        pytest.param({"probe_failed": frozenset({(KEY, ClusterId("eu2"))})}, EU3, "selector 3", id="probes-failing"),
        # Serving but not ready (terminating) endpoints count as available (KEP-5939).
        pytest.param({"serving": ("eu2",)}, EU2, "eu2 has 2 serving endpoint(s)", id="serving-counts"),
        # ... but a tier's ready endpoints are answered before its serving ones.
        pytest.param({"serving": ("eu3",), "selectors": (selector(labels=((CONTINENT, ME),)),)}, EU2, "eu2 has 2 ready", id="ready-before-serving"),
        # weight 0 drains a cluster: its tier has nothing left.
        pytest.param({"annotations": (("clusterset.io/weights", "eu2=0"),)}, EU3, "selector 3", id="drained"),
    ],
)  # fmt: skip
def test_what_counts_as_available(kw: dict[str, object], want: tuple[str, ...], part: str) -> None:
    selectors = kw.pop("selectors", STORY1)
    assert isinstance(selectors, tuple)
    s = select(mkview(selectors, down=("eu1",), **kw))  # type: ignore[arg-type]
    assert answer(s) == want
    assert part in s.reason


def test_weights_order_the_answers_within_the_tier() -> None:
    s = select(
        mkview(
            (selector(labels=((CONTINENT, ME),)),),
            down=("eu1",),
            annotations=(("clusterset.io/weights", "eu2=3,eu3=1"),),
        )
    )
    assert answer(s) == (*EU2, *EU3)
    firsts = [order[0] for order in s.rotations]
    assert sum(f in EU2 for f in firsts) == 3 * sum(f in EU3 for f in firsts)


def test_explain_names_each_tier_and_the_candidates() -> None:
    s = select(mkview(STORY1, down=("eu1", "eu2"), expired=frozenset({ClusterId("us1")})))
    assert s.notes == (
        "lease expired for: us1",
        f"cluster selector 1 ({ID}=eu1): eu1: no available endpoint",
        f"cluster selector 2 ({REGION}=eu-west): eu1, eu2: no available endpoint",
    )
    tiers = {c.cluster: (c.tier, c.eligible, c.note) for c in s.candidates}
    assert tiers == {
        "eu1": (1, False, ""),
        "eu2": (2, False, ""),
        "eu3": (3, True, ""),
        "us1": (4, False, "lease expired"),  # matches none: the fallback's
    }


def test_selectors_take_precedence_over_the_dns_policy_and_skip_headless() -> None:
    lf = (("clusterset.io/dns-policy", "local-first"),)
    s = select(mkview(STORY1, down=("eu1",), annotations=lf))
    assert answer(s) == EU2  # local-first would answer the ClusterSetIP
    assert "clusterSelectors take precedence over clusterset.io/dns-policy=local-first" in s.notes
    v = mkview(STORY1)
    v = dataclasses.replace(
        v, imports={KEY: dataclasses.replace(v.imports[KEY], type=ImportType.HEADLESS)}
    )
    s = select(v)
    assert s.policy == policy.KEP and len(s.endpoints) == 8
    assert "clusterSelectors ignored: they apply to ClusterSetIP services only" in s.notes


def test_an_unknown_asking_cluster_has_no_properties() -> None:
    s = select(mkview(STORY1, asker=None))
    assert s.reason.startswith("no cluster selector")  # eu1 is not "the same" as nobody
    assert answer(s) == (CLUSTERSET_IP,)


def test_changing_properties_rebuild_the_zone() -> None:
    v = mkview(STORY1, down=("eu1",))
    first = build.build(v, ZoneSettings(), serial=1)
    moved = {**v.properties, ClusterId("eu2"): {**PROPERTIES["eu2"], REGION: "eu-north"}}
    second = build.build(
        dataclasses.replace(v, properties=moved), ZoneSettings(), serial=2, previous=first
    )
    assert second.rebuilt == 1
    assert second.explain[KEY].reason.startswith("cluster selector 3")


# Conflict resolution (KEP-5939 "Conflict Resolution"): oldest wins, both reasons.
A, B = ClusterId("a"), ClusterId("b")


def two(ex_a: ServiceExport, ex_b: ServiceExport, *, headless_b: bool = False) -> ClusterSetState:
    return clusterset(
        cluster("a", services=(service(),), exports=(ex_a,)),
        cluster("b", services=(service(headless=headless_b),), exports=(ex_b,)),
    )


def conditions(state: ClusterSetState, cid: ClusterId) -> dict[ConditionType, Condition]:
    return {c.type: c for c in aggregate(state, KEY).conditions[cid]}


@pytest.mark.parametrize(
    ("ex_b", "reasons", "message"),
    [
        pytest.param(export(created=2, selectors=STORY1), "", "", id="same"),
        pytest.param(
            export(created=2, selectors=STORY1[:2]),
            "ClusterSelectorsConflict",
            "Conflicting clusterSelectors: clusterSelectors[2] (unset) of b differs from the "
            f"oldest export's (a, clusterSelectors[2] {CONTINENT}={ME}); using the oldest's. "
            "1/2 clusters disagree.",
            id="shorter-list",
        ),
        pytest.param(
            export(created=2, selectors=(STORY1[1], STORY1[0], STORY1[2])),
            "ClusterSelectorsConflict",
            f"Conflicting clusterSelectors: clusterSelectors[0] {REGION}={ME} of b differs from "
            f"the oldest export's (a, clusterSelectors[0] {ID}={ME}); using the oldest's. "
            "1/2 clusters disagree.",
            id="order-matters",
        ),
        pytest.param(
            export(created=2, selectors=STORY1, fallback="None"),
            "ClusterSelectorsFallbackPolicyConflict",
            "Conflicting clusterSelectorsFallbackPolicy: None of b differs from the oldest "
            "export's (a, AllClusters); using the oldest's. 1/2 clusters disagree.",
            id="fallback",
        ),
        pytest.param(
            export(created=2, fallback="None"),
            "ClusterSelectorsConflict,ClusterSelectorsFallbackPolicyConflict",
            "",
            id="both",
        ),
    ],
)
def test_conflicts_oldest_wins(ex_b: ServiceExport, reasons: str, message: str) -> None:
    state = two(export(created=1, selectors=STORY1), ex_b)
    agg = aggregate(state, KEY)
    assert (agg.cluster_selectors, agg.cluster_selectors_fallback_policy) == (STORY1, "AllClusters")
    for cid in (A, B):
        c = conditions(state, cid)[ConditionType.CONFLICT]
        assert c.status is (Status.TRUE if reasons else Status.FALSE)
        if reasons:
            assert c.reason == reasons
        if message:
            assert c.message == message
    # The youngest is the oldest now: its values win.
    state = two(export(created=3, selectors=STORY1), ex_b)
    want = ex_b.cluster_selectors, ex_b.cluster_selectors_fallback_policy
    got = aggregate(state, KEY)
    assert (got.cluster_selectors, got.cluster_selectors_fallback_policy) == want


@pytest.mark.parametrize(
    ("ex_b", "headless", "reason", "message"),
    [
        pytest.param(
            export(created=0, problem="spec.clusterSelectors[1].propertySelector: empty"),
            False,
            "InvalidClusterSelector",
            "spec.clusterSelectors[1].propertySelector: empty",
            id="invalid-selector",
        ),
        pytest.param(
            export(created=0, selectors=STORY3),
            True,
            "InvalidServiceType",
            "spec.clusterSelectors: cluster selection applies to ClusterIP Services only, "
            "not to a headless one",
            id="headless",
        ),
    ],
)
def test_invalid_exports_do_not_contribute(
    ex_b: ServiceExport, headless: bool, reason: str, message: str
) -> None:
    state = two(export(created=1, selectors=STORY1), ex_b, headless_b=headless)
    valid = conditions(state, B)[ConditionType.VALID]
    assert (valid.status, valid.reason, valid.message) == (Status.FALSE, reason, message)
    agg = aggregate(state, KEY)
    assert agg.clusters == (A,) and agg.cluster_selectors == STORY1  # the older, valid one
    assert conditions(state, A)[ConditionType.CONFLICT].status is Status.FALSE


def test_reconcile_carries_them_to_every_import_and_properties_to_the_view() -> None:
    raw = clusterselect.ANNOTATION, '{"clusterSelectors": []}'  # an input, not carried as is
    state = clusterset(
        cluster(
            "a",
            services=(service(),),
            exports=(export(selectors=STORY3, fallback="None", annotations=(raw,)),),
            properties={"compliance.mycompany.com": "gdpr"},
        ),
        cluster("b", properties={REGION_PROPERTY: "eu"}),
    )
    d = desired.reconcile(state, ips={})
    for cid in (A, B):
        imp = d.clusters[cid].imports[KEY]
        assert (imp.cluster_selectors, imp.cluster_selectors_fallback_policy) == (STORY3, "None")
        assert dict(imp.annotations)[clusterselect.ANNOTATION] == clusterselect.annotation(
            STORY3, "None"
        )
    v = d.view(B, state, 1)
    assert v.properties == {
        A: {"compliance.mycompany.com": "gdpr"},
        B: {REGION_PROPERTY: "eu"},
    }
