"""Export to a subset of clusters (kubernetes/enhancements#6329, behind the annotation
clusterset.io/export-to until it merges), as tables: parsing, validity, conflicts (oldest
wins, ExportToConflict), who imports (the set and the exporting clusters), what the others
answer (NXDOMAIN), ServiceExport status.clusters, ClusterSetIPs in manifest mode, pre-flight,
and held-out vectors over random clustersets checked against an oracle written here."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import random
from typing import Any

import dns.rcode
import pytest

from clusterset.controller import admission
from clusterset.controller.hub import Hub
from clusterset.kube.api import ApiError
from clusterset.kube.sink import contains
from clusterset.model import convert, exportto
from clusterset.model.bag import ALWAYS_NAMESPACES
from clusterset.model.conditions import Condition, ConditionType, Status
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import IPFamily, ServiceExport, ServiceType
from clusterset.model.state import ClusterSetState
from clusterset.reconcile import allocate, clustersetips, desired, preflight, render
from clusterset.reconcile.aggregate import aggregate
from clusterset.zone.lookup import service_answer
from tests.dnsutil import ask, compile_view
from tests.factories import cluster, clusterset, endpoint, eslice, export, port, service
from tests.unit.test_hub_membership import FakeApiserver, _exporting

KEY = ServiceKey("ns", "svc")
A, B, C, D = (ClusterId(c) for c in "abcd")
FIELD = "metadata.annotations[clusterset.io/export-to]"


def raw_export(annotation: str | None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": "svc", "namespace": "ns"}
    if annotation is not None:
        meta["annotations"] = {exportto.ANNOTATION: annotation}
    return {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceExport",
        "metadata": meta,
    }


@pytest.mark.parametrize(
    ("value", "clusters", "problem"),
    [
        (None, None, ""),
        ("member2", {"member2"}, ""),
        (" member2 ,\tmember3 ", {"member2", "member3"}, ""),
        ("member3,member2,member3", {"member2", "member3"}, ""),  # a set
        ("", None, f"{FIELD}: empty (unset it to export to every cluster)"),
        ("  ", None, f"{FIELD}: empty (unset it to export to every cluster)"),
        ("member2,,member3", None, f"{FIELD}: item 1: cluster ID '' is not an RFC-1123 DNS label"),
        ("member2,", None, f"{FIELD}: item 1: cluster ID '' is not an RFC-1123 DNS label"),
        ("Member2", None, f"{FIELD}: item 0: cluster ID 'Member2' is not an RFC-1123 DNS label"),
        ("a,eu.west", None, f"{FIELD}: item 1: cluster ID 'eu.west' is not an RFC-1123 DNS label"),
        ("a b", None, f"{FIELD}: item 0: cluster ID 'a b' is not an RFC-1123 DNS label"),
        ("x" * 64, None, f"{FIELD}: item 0: cluster ID '{'x' * 64}' is not an RFC-1123 DNS label"),
        ("y" * 500, None, f"{FIELD}: item 0: cluster ID '{'y' * 108}..."),  # cut to 120
    ],
)  # fmt: skip
def test_the_annotation_is_read_at_the_edge(
    value: str | None, clusters: set[str] | None, problem: str
) -> None:
    got = convert.service_export(raw_export(value))
    assert got.export_to == (None if clusters is None else frozenset(clusters))
    assert got.export_to_problem == problem


def conditions(state: ClusterSetState, cid: ClusterId) -> dict[ConditionType, Condition]:
    return {c.type: c for c in aggregate(state, KEY).conditions[cid]}


def test_a_bad_value_is_invalid_and_does_not_contribute() -> None:
    problem = f"{FIELD}: item 0: cluster ID 'B' is not an RFC-1123 DNS label"
    state = clusterset(
        cluster("a", services=(service(),), exports=(export(created=2, export_to=("c",)),)),
        cluster(
            "b", services=(service(),), exports=(export(created=1, export_to_problem=problem),)
        ),
        cluster("c"),
        cluster("d"),
    )
    valid = conditions(state, B)[ConditionType.VALID]
    assert (valid.status, valid.reason, valid.message) == (Status.FALSE, "InvalidExportTo", problem)
    ready = conditions(state, B)[ConditionType.READY]
    assert (ready.status, ready.reason) == (Status.FALSE, "Failed")
    agg = aggregate(state, KEY)
    assert agg.clusters == (A,) and agg.consumers == frozenset({A, C})  # b is not an exporter
    assert conditions(state, A)[ConditionType.CONFLICT].status is Status.FALSE
    d = desired.reconcile(state, ips={})
    assert {cid for cid, cd in d.clusters.items() if KEY in cd.imports} == {A, C}
    assert d.exported_to(A, KEY) == (A, C)
    assert d.exported_to(B, KEY) == ()  # an invalid export is exported nowhere


def two(ex_a: ServiceExport, ex_b: ServiceExport, *, port_b: int = 80) -> ClusterSetState:
    return clusterset(
        cluster("a", services=(service(),), exports=(ex_a,)),
        cluster("b", services=(service(ports=(port(port_b, "http"),)),), exports=(ex_b,)),
        cluster("c"),
        cluster("d"),
    )


@pytest.mark.parametrize(
    ("ex_b", "port_b", "reasons", "message"),
    [
        pytest.param(export(created=2, export_to=("d", "c", "d")), 80, "", "", id="same-set"),
        pytest.param(
            export(created=2, export_to=("c",)),
            80,
            "ExportToConflict",
            "Conflicting clusterset.io/export-to: c of b differs from the oldest export's "
            "(a, c,d); using the oldest's. 1/2 clusters disagree.",
            id="another-set",
        ),
        pytest.param(
            export(created=2),
            80,
            "ExportToConflict",
            "Conflicting clusterset.io/export-to: (unset) of b differs from the oldest export's "
            "(a, c,d); using the oldest's. 1/2 clusters disagree.",
            id="unset",
        ),
        pytest.param(
            export(created=2, export_to=("c",)),
            8080,
            "PortConflict,ExportToConflict",
            "",
            id="joined-with-ports",
        ),
    ],
)
def test_conflicts_oldest_wins(
    ex_b: ServiceExport, port_b: int, reasons: str, message: str
) -> None:
    state = two(export(created=1, export_to=("c", "d")), ex_b, port_b=port_b)
    for cid in (A, B):
        c = conditions(state, cid)[ConditionType.CONFLICT]
        assert c.status is (Status.TRUE if reasons else Status.FALSE)
        if reasons:
            assert c.reason == reasons
        if message:
            assert c.message == message
    assert aggregate(state, KEY).consumers == frozenset({A, B, C, D})
    # b is the oldest now: its set wins (with a and b, the exporters).
    state = two(export(created=3, export_to=("c", "d")), ex_b, port_b=port_b)
    want = None if ex_b.export_to is None else ex_b.export_to | {A, B}
    assert aggregate(state, KEY).consumers == want


# Who holds the import. Exporters: (cluster, created, export-to); every cluster has "ns"
# unless listed in `lacking`.
@pytest.mark.parametrize(
    ("exporters", "lacking", "importers"),
    [
        pytest.param((("a", 1, None),), (), "abcd", id="unset-everywhere"),
        pytest.param((("a", 1, ("b",)),), (), "ab", id="the-set-and-the-exporter"),
        pytest.param((("a", 1, ("a",)),), (), "a", id="only-itself"),
        pytest.param((("a", 1, ("b",)), ("c", 2, ("b",))), (), "abc", id="every-exporter"),
        pytest.param((("a", 1, ("b",)), ("c", 2, None)), (), "abc", id="conflict-oldest-set"),
        pytest.param((("a", 2, ("b",)), ("c", 1, None)), (), "abcd", id="conflict-oldest-unset"),
        pytest.param((("a", 1, ("b", "zz")),), (), "ab", id="unknown-id-is-no-cluster"),
        pytest.param((("a", 1, ("b", "d")),), ("d",), "ab", id="namespace-still-needed"),
    ],
)  # fmt: skip
def test_only_consumers_hold_the_import(
    exporters: tuple[tuple[str, float, tuple[str, ...] | None], ...],
    lacking: tuple[str, ...],
    importers: str,
) -> None:
    by = {cid: (created, to) for cid, created, to in exporters}
    state = clusterset(
        *(
            cluster(
                cid,
                services=(service(),) if cid in by else (),
                exports=(export(created=by[cid][0], export_to=by[cid][1]),) if cid in by else (),
                slices=(eslice(source=None, endpoints=(endpoint(f"10.1.0.{i}"),)),),
                namespaces=() if cid in lacking else ("ns",),
            )
            for i, cid in enumerate("abcd", start=1)
        )
    )
    d = desired.reconcile(state, ips={(ClusterId(c), KEY): ("10.250.0.9",) for c in "abcd"})
    want = tuple(ClusterId(c) for c in importers)
    for cid, cd in d.clusters.items():
        holds = cid in want
        assert (KEY in cd.imports, KEY in cd.derived, KEY in cd.slices) == (holds,) * 3, cid
    assert d.importers[KEY] == want
    for exporter in by:
        assert d.exported_to(ClusterId(exporter), KEY) == want


def test_a_non_consumer_answers_nxdomain() -> None:
    state = clusterset(
        cluster(
            "a",
            services=(service(),),
            exports=(export(export_to=("b",)),),
            slices=(eslice(endpoints=(endpoint("10.1.0.1"),)),),
        ),
        cluster("b"),
        cluster("c"),
    )
    d = desired.reconcile(state, ips={(cid, KEY): ("10.250.0.9",) for cid in (A, B, C)})
    name = "svc.ns.svc.clusterset.local."
    got = ask(compile_view(d.view(B, state, 1)), name)
    assert got.rcode() == dns.rcode.NOERROR
    assert [rd.address for rr in got.answer for rd in rr] == ["10.250.0.9"]
    got = ask(compile_view(d.view(C, state, 1)), name)
    assert got.rcode() == dns.rcode.NXDOMAIN and not got.answer
    assert service_answer(d.view(C, state, 1), KEY) == ("NXDOMAIN",)


def test_create_namespaces_only_where_it_is_consumed() -> None:
    state = clusterset(
        cluster("a", services=(service(),), exports=(export(export_to=("b",)),)),
        cluster("b", namespaces=()),
        cluster("c", namespaces=()),
    )
    d = desired.reconcile(state, ips={}, create_namespaces=True)
    assert d.clusters[B].create_namespaces == {"ns"} and KEY in d.clusters[B].imports
    assert d.clusters[C].create_namespaces == frozenset() and not d.clusters[C].imports


@pytest.mark.parametrize(
    ("clusters", "want"),
    [
        ((), []),
        ((A, C), [{"cluster": "a"}, {"cluster": "c"}]),
        (None, None),  # the member's schema has no status.clusters
    ],
)
def test_the_export_status_lists_the_clusters(
    clusters: tuple[ClusterId, ...] | None, want: list[dict[str, str]] | None
) -> None:
    valid = Condition(ConditionType.VALID, Status.TRUE, "Valid", "ok")
    now = "2026-01-01T00:00:00Z"
    status = render.service_export_status(KEY, (valid,), None, now, clusters=clusters)["status"]
    assert status.get("clusters") == want
    assert status["conditions"][0]["reason"] == "Valid"


def test_an_empty_list_is_held_by_no_field() -> None:
    """The apiserver stores an applied `clusters: []` as no field: that holds what we want
    (else the write would be sent on every pass), and a stale list does not."""
    assert contains({"status": {"clusters": []}}, {"status": {}})
    assert contains({"status": {"clusters": []}}, {"status": {"clusters": []}})
    assert not contains({"status": {"clusters": []}}, {"status": {"clusters": [{"cluster": "a"}]}})
    assert not contains({"status": {"clusters": [{"cluster": "a"}]}}, {"status": {}})


def test_manifest_mode_gives_clustersetips_to_consumers_only() -> None:
    state = clusterset(
        cluster("a", services=(service(),), exports=(export(export_to=("b",)),)),
        cluster("b"),
        cluster("c"),
    )
    aggs = desired.aggregate_all(state)
    cidrs: dict[IPFamily, allocate.Network] = {IPFamily.IPV4: ipaddress.IPv4Network("10.9.0.0/24")}
    nss = {cid: desired.namespaces_of(state, cid) for cid in state.clusters}
    got = clustersetips.assign(aggs, nss, cidrs=cidrs, allocations={})
    assert set(got.ips) == {(A, KEY), (B, KEY)}
    assert got.ips[(A, KEY)] == got.ips[(B, KEY)]
    # c joins the set: it gets the others' address, a pass from the last one allocates again.
    moved = clusterset(
        cluster("a", services=(service(),), exports=(export(export_to=("b", "c")),)),
        cluster("b"),
        cluster("c"),
    )
    again = clustersetips.assign(
        desired.aggregate_all(moved),
        nss,
        cidrs=cidrs,
        allocations=got.allocations,
        before=got,
        changed={KEY},
    )
    assert set(again.ips) == {(A, KEY), (B, KEY), (C, KEY)}
    assert again.ips[(C, KEY)] == got.ips[(A, KEY)]


def test_preflight_shows_who_would_stop_seeing_the_service() -> None:
    state = clusterset(
        cluster("a", services=(service(),), exports=(export(created=1),)),
        cluster("b", services=(service(),)),
        cluster("c"),
    )
    ips = {(cid, KEY): ("10.250.0.9",) for cid in (A, B, C)}
    finding = preflight.check(
        state,
        cluster=B,
        key=KEY,
        export=export(created=2, export_to=("b",)),
        ips=ips,
        answer=service_answer,
    )
    assert [c.reasons for c in finding.conflicts] == [("ExportToConflict",)] * 2
    assert finding.winner == A  # a's (unset) wins: c keeps the service
    answers = {a.consumer: a.after for a in finding.answers}
    assert answers[C] != ("NXDOMAIN",)
    # Alone, b's export-to decides: c does not see the service.
    state = clusterset(cluster("a"), cluster("b", services=(service(),)), cluster("c"))
    finding = preflight.check(
        state, cluster=B, key=KEY, export=export(export_to=("a",)), ips=ips, answer=service_answer
    )
    after = {a.consumer: a.after for a in finding.answers}
    assert after[C] == ("NXDOMAIN",) and after[A] != ("NXDOMAIN",) and after[B] != ("NXDOMAIN",)
    bad = export(export_to_problem=f"{FIELD}: empty (unset it to export to every cluster)")
    finding = preflight.check(state, cluster=B, key=KEY, export=bad, ips=ips, answer=service_answer)
    assert (
        finding.invalid == f"InvalidExportTo: {FIELD}: empty (unset it to export to every cluster)"
    )


@pytest.mark.parametrize(
    ("value", "warning"),
    [
        ("b", "would report Conflict (ExportToConflict); the oldest export, in a, wins"),
        ("b,", f"would be invalid: InvalidExportTo: {FIELD}: item 1: cluster ID ''"),
    ],
)
def test_the_admission_webhook_warns(value: str, warning: str) -> None:
    state = clusterset(
        cluster("a", services=(service(),), exports=(export(created=1, export_to=("a",)),)),
        cluster("b", services=(service(),)),
    )
    view = admission.View(state, {"ctx-b": B}, True, lambda key: {})
    obj = raw_export(value)
    request = {"uid": "u", "kind": {"group": "multicluster.x-k8s.io", "kind": "ServiceExport"}}
    request |= {"operation": "CREATE", "object": obj}
    out = admission.review({"request": request}, "ctx-b", view, deny=False, now=2e9)
    assert out["response"]["allowed"] is True
    assert any(warning in w for w in out["response"]["warnings"]), out


# The hub writes status.clusters; a schema that prunes it costs one write, not one a pass.
ALPHA = "/apis/multicluster.x-k8s.io/v1alpha1"


class PruningApiserver(FakeApiserver):
    """Its ServiceExport schema lacks status.clusters (Karmada's v1alpha1)."""

    async def apply(self, path: str, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if "/serviceexports/" in path and path.endswith("/status"):
            obj = {**obj, "status": {k: v for k, v in obj["status"].items() if k != "clusters"}}
        return await super().apply(path, obj, **kw)


class RefusingApiserver(FakeApiserver):
    """Its ServiceExport schema lacks status.clusters, and server-side apply refuses the
    field, as a real apiserver does (Karmada's v1alpha1 CRD: a 500, "field not declared")."""

    async def apply(self, path: str, obj: dict[str, Any], **kw: Any) -> dict[str, Any]:
        if "/serviceexports/" in path and path.endswith("/status") and "clusters" in obj["status"]:
            raise ApiError(
                500,
                "failed to create typed patch object: .status.clusters: field not declared "
                "in schema",
                path=path,
            )
        return await super().apply(path, obj, **kw)


@pytest.mark.parametrize(
    "schema", ["has-it", "prunes-it", "refuses-it"], ids=lambda s: f"schema-{s}"
)
def test_the_hub_writes_where_the_service_is_exported_to(schema: str) -> None:
    source = _exporting("member1", "web")
    prunes = schema != "has-it"
    if schema == "prunes-it":
        source = PruningApiserver("member1", *source.objects.items())
    if schema == "refuses-it":  # the conditions must still be written (they were not)
        source = RefusingApiserver("member1", *source.objects.items())
    ns = {"kind": "Namespace", "metadata": {"name": "ns"}}
    member = FakeApiserver("member2", ("/api/v1/namespaces/ns", ns))
    path = f"{ALPHA}/namespaces/ns/serviceexports/web"

    async def scenario() -> list[tuple[str, str]]:
        hub = Hub({"member1": source, "member2": member}, debounce=0.01)  # type: ignore[dict-item]
        task = asyncio.create_task(hub.run())
        try:
            for _ in range(250):
                if (source.objects[path].get("status") or {}).get("conditions"):
                    break
                await asyncio.sleep(0.02)
            for _ in range(3):  # more passes over the same state
                assert await hub.reconcile_once(full=True)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return [w for w in source.writes if w == ("apply", path + "/status")]

    writes = asyncio.run(scenario())
    status = source.objects[path]["status"]
    want = None if prunes else [{"cluster": "member1"}, {"cluster": "member2"}]
    assert status.get("clusters") == want
    assert len(writes) <= 2, writes  # not one per pass


# Held-out vectors: random clustersets; a cluster holds an import iff the oracle below,
# written from the rules and not from the code, says it consumes the service.
IDS = [ClusterId(f"m{i}") for i in range(5)]
KEYS = [ServiceKey(ns, f"s{i}") for ns in ("x", "y") for i in range(4)]


def _random_state(rng: random.Random) -> ClusterSetState:
    clusters = []
    for cid in IDS:
        services, exports = [], []
        for key in KEYS:
            roll = rng.random()
            if roll < 0.5:
                continue
            typ = ServiceType.EXTERNAL_NAME if rng.random() < 0.05 else ServiceType.CLUSTER_IP
            if rng.random() < 0.9:
                services.append(service(key.name, key.namespace, type=typ))
            if roll < 0.8:
                to = rng.choice([None, None, *(tuple(rng.sample([*IDS, "m9"], k)) for k in (1, 2))])
                bad = "bad" if rng.random() < 0.05 else ""
                exports.append(
                    export(
                        key.name,
                        key.namespace,
                        float(rng.randrange(3)),
                        export_to=None if bad else to,
                        export_to_problem=bad,
                    )
                )
        nss = tuple(ns for ns in ("x", "y") if rng.random() < 0.8)
        clusters.append(
            cluster(cid, services=tuple(services), exports=tuple(exports), namespaces=nss)
        )
    return clusterset(*clusters)


def _oracle(
    state: ClusterSetState, key: ServiceKey
) -> tuple[tuple[ClusterId, ...], set[ClusterId]]:
    """The clusters that should hold `key`'s import (every cluster with the namespace, or
    only those in the oldest valid export's set or exporting it), and the valid exporters."""
    valid = []
    for cid, cs in sorted(state.clusters.items()):
        ex, svc = cs.exports.get(key), cs.services.get(key)
        if ex and svc and svc.type is not ServiceType.EXTERNAL_NAME and not ex.export_to_problem:
            valid.append((ex.created, cid, ex.export_to))
    if not valid:
        return (), set()
    to = min(valid)[2]
    exporters = {cid for _, cid, _ in valid}
    importers = tuple(
        cid
        for cid, cs in sorted(state.clusters.items())
        if key.namespace in cs.namespaces | ALWAYS_NAMESPACES
        and (to is None or cid in to or cid in exporters)
    )
    return importers, exporters


@pytest.mark.parametrize("seed", range(40))
def test_held_out_a_cluster_imports_iff_it_consumes(seed: int) -> None:
    rng = random.Random(seed)
    state = _random_state(rng)
    d = desired.reconcile(state, ips={})
    for key in KEYS:
        want, exporters = _oracle(state, key)
        got = tuple(cid for cid, cd in d.clusters.items() if key in cd.imports)
        assert got == want, (seed, key)
        assert d.importers.get(key, ()) == want
        for cid in IDS:  # status.clusters: only a valid export is exported somewhere
            assert d.exported_to(cid, key) == (want if cid in exporters else ()), (seed, key)
        outside = [cid for cid in IDS if cid not in want]
        if want and outside:
            assert service_answer(d.view(outside[0], state, 1), key) == ("NXDOMAIN",)


def test_held_out_edits_of_the_set_converge() -> None:
    """The incremental reconcile follows the set as it changes (a level-based pass)."""
    rng = random.Random(7)
    state = _random_state(rng)
    before = desired.reconcile(state, ips={})
    for _ in range(300):
        cid = rng.choice(IDS)
        cs = state.clusters[cid]
        exports = dict(cs.exports)
        key = rng.choice(KEYS)
        if key in exports:
            to = rng.choice([None, (rng.choice(IDS),), tuple(rng.sample(IDS, 2))])
            exports[key] = dataclasses.replace(
                exports[key], export_to=None if to is None else frozenset(to)
            )
        new = ClusterSetState({**state.clusters, cid: dataclasses.replace(cs, exports=exports)})
        changed = desired.changed_keys(state, new)
        aggs = desired.aggregate_all(new, previous=before.aggregates, changed=changed)
        inc = desired.reconcile(new, ips={}, aggregates=aggs, previous=before, changed=changed)
        assert dict(inc.importers) == {k: v for k in KEYS if (v := _oracle(new, k)[0])}
        state, before = new, inc
