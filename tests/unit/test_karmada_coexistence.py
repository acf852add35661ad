"""Living beside Karmada's MCS controllers: the pure rules, by table.

What objects count as a cluster's own (slices by manager, Services by label, Karmada's
derived Services by Karmada's pairing), which imports are Karmada's, and what clusterset then
writes: only `spec.ips` of Karmada's imports, no second derived Service, and MCS slices that
do not feed kube-proxy where Karmada's `imported-*` slices already do. The integration tests
on a real Karmada are in tests/integration/test_karmada.py.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import pytest

from clusterset.cli.output import _karmada_keeps
from clusterset.controller.observer import Observer
from clusterset.kube.cluster import karmada_filled
from clusterset.kube.karmada import RETENTION_LUA, placed_imports, retention
from clusterset.model.bag import Objects, add_object
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import IPFamily
from clusterset.reconcile import render
from clusterset.reconcile.desired import derived_name, reconcile
from tests.factories import cluster, clusterset, endpoint, eslice, export, service

KEY = ServiceKey("ns", "svc")
M1, M2 = ClusterId("member1"), ClusterId("member2")
KARMADA_LABELS = {"karmada.io/managed": "true"}
WORK_ANNOTATIONS = {
    "work.karmada.io/name": "svc-7d9f",
    "work.karmada.io/namespace": "karmada-es-m2",
}


def _slice(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "ns", "labels": labels},
        "addressType": "IPv4",
        "ports": [{"port": 80, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.10"], "conditions": {"ready": True}}],
    }


def _service(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": "ns", "labels": labels or {}},
        "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80, "protocol": "TCP"}]},
    }


def _import(meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": "svc", "namespace": "ns", **meta},
        "spec": {"type": "ClusterSetIP", "ports": [{"port": 80, "protocol": "TCP"}]},
    }


def _bag(*objs: dict[str, Any]) -> Objects:
    out = Objects()
    for o in objs:
        add_object(out, o)
    return out


SVC_NAME = "kubernetes.io/service-name"
MANAGED_BY = "endpointslice.kubernetes.io/managed-by"


@pytest.mark.parametrize(
    ("labels", "local"),
    [
        ({SVC_NAME: "svc"}, True),  # hand-made (manifest folders)
        ({SVC_NAME: "svc", MANAGED_BY: "endpointslice-controller.k8s.io"}, True),
        ({SVC_NAME: "svc", MANAGED_BY: "endpointslicemirroring-controller.k8s.io"}, True),
        # Karmada's MultiClusterService dispatch: member1's pods, in member2
        ({SVC_NAME: "svc", MANAGED_BY: "endpointslice-dispatch-controller.karmada.io"}, False),
        # Karmada's imported-<cluster>-<slice> (v1.18)
        ({SVC_NAME: "derived-svc", MANAGED_BY: "endpointslice-controller.karmada.io"}, False),
        ({SVC_NAME: "svc", MANAGED_BY: "some-other-controller.example.com"}, False),
    ],
)
def test_only_kubernetes_own_slices_are_a_clusters_endpoints(
    labels: dict[str, str], local: bool
) -> None:
    objs = _bag(_slice("s", labels))
    assert ("ns/s" in objs.slices) is local
    assert not objs.mcs_slices


@pytest.mark.parametrize(
    ("meta", "karmadas"),
    [
        ({}, False),
        ({"labels": KARMADA_LABELS}, True),
        ({"annotations": WORK_ANNOTATIONS}, True),
        ({"labels": {"karmada.io/managed": "false"}}, False),
        ({"labels": {"clusterset.io/managed": "true"}}, False),
    ],
)
def test_karmadas_imports_by_label_or_work_annotation(meta: dict[str, Any], karmadas: bool) -> None:
    objs = _bag(_import(meta))
    assert (KEY in objs.karmada_imports) is karmadas


@pytest.mark.parametrize(
    ("objects", "local", "karmada_derived"),
    [
        # A user's Service named derived-cache is the user's (no name-prefix guessing).
        ([_service("derived-cache")], {"derived-cache"}, {}),
        # Ours, by label: never a cluster's own.
        ([_service("derived-abc", {"clusterset.io/managed": "true"})], set(), {}),
        # Karmada's derived-svc beside Karmada's import svc: Karmada's data path.
        (
            [_service("derived-svc", KARMADA_LABELS), _import({"labels": KARMADA_LABELS})],
            set(),
            {KEY: "derived-svc"},
        ),
        # A Karmada-propagated user Service derived-svc with no Karmada import: the user's.
        ([_service("derived-svc", KARMADA_LABELS)], {"derived-svc"}, {}),
        # Karmada propagates user Services too (member1's `svc`): still the cluster's own.
        ([_service("svc", KARMADA_LABELS)], {"svc"}, {}),
    ],
)
def test_which_services_are_a_clusters_own(
    objects: list[dict[str, Any]], local: set[str], karmada_derived: dict[ServiceKey, str]
) -> None:
    objs = _bag(*objects)
    assert {k.name for k in objs.local_services()} == local
    assert objs.karmada_derived() == karmada_derived


def _state(**m2: Any):  # type: ignore[no-untyped-def]
    return clusterset(
        cluster(
            "member1",
            services=(service(),),
            exports=(export(),),
            slices=(eslice(endpoints=(endpoint("10.1.0.1"),)),),
        ),
        dataclasses.replace(cluster("member2"), **m2),
    )


def test_karmadas_import_gets_only_ips_and_karmadas_derived_service_is_the_data_path() -> None:
    state = _state(foreign_imports=frozenset({KEY}), foreign_derived={KEY: "derived-svc"})
    d = reconcile(state, ips={(M2, KEY): ("10.13.205.2",)})
    cd = d.clusters[M2]
    assert cd.foreign_imports == {KEY} and cd.foreign_derived == {KEY}
    assert cd.derived[KEY] == "derived-svc"
    assert cd.data_path(KEY) is None
    objs = render.cluster_objects(cd, "v1alpha1")
    imports = [o for o in objs if o["kind"] == "ServiceImport"]
    assert imports == [
        {
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceImport",
            "metadata": {"name": "svc", "namespace": "ns"},
            "spec": {"ips": ["10.13.205.2"]},
        }
    ]
    assert not [o for o in objs if o["kind"] == "Service"]  # no second ClusterIP
    slices = [o for o in objs if o["kind"] == "EndpointSlice"]
    assert slices and all(SVC_NAME not in s["metadata"]["labels"] for s in slices)
    assert all(
        s["metadata"]["labels"]["multicluster.kubernetes.io/service-name"] == "svc" for s in slices
    )


def test_karmadas_import_without_its_derived_service_gets_ours() -> None:
    d = reconcile(_state(foreign_imports=frozenset({KEY})), ips={(M2, KEY): ("10.96.7.7",)})
    cd = d.clusters[M2]
    assert cd.data_path(KEY) == derived_name(KEY)
    kinds = [o["kind"] for o in render.cluster_objects(cd)]
    assert kinds.count("Service") == 1
    # ...while member1, where Karmada places nothing, keeps a whole import of ours.
    own = [o for o in render.cluster_objects(d.clusters[M1]) if o["kind"] == "ServiceImport"]
    assert own[0]["metadata"]["labels"]["clusterset.io/managed"] == "true"


def test_no_ips_yet_means_nothing_applied_to_karmadas_import() -> None:
    d = reconcile(_state(foreign_imports=frozenset({KEY})), ips={})
    objs = render.cluster_objects(d.clusters[M2])
    assert not [o for o in objs if o["kind"] == "ServiceImport"]


@pytest.mark.parametrize(
    ("version", "absent"),
    [
        ("v1alpha1", {"ipFamilies", "internalTrafficPolicy", "trafficDistribution"}),
        ("v1beta1", set()),
    ],
)
def test_import_rendered_as_the_clusters_served_version(version: str, absent: set[str]) -> None:
    state = clusterset(
        cluster(
            "member1",
            services=(
                dataclasses.replace(
                    service(),
                    ip_families=(IPFamily.IPV4,),
                    internal_traffic_policy="Local",
                    traffic_distribution="PreferClose",
                ),
            ),
            exports=(export(),),
        ),
    )
    imp = reconcile(state, ips={(M1, KEY): ("10.250.0.1",)}).clusters[M1].imports[KEY]
    obj = render.service_import(imp, version)
    assert obj["apiVersion"] == f"multicluster.x-k8s.io/{version}"
    fields = {"ipFamilies", "internalTrafficPolicy", "trafficDistribution"}
    assert fields - set(obj["spec"]) == absent


def _binding(
    kind: str, clusters: list[str], api: str = "multicluster.x-k8s.io/v1alpha1"
) -> dict[str, Any]:
    return {
        "spec": {
            "resource": {"apiVersion": api, "kind": kind, "namespace": "ns", "name": "svc"},
            "clusters": [{"name": c} for c in clusters],
        }
    }


def test_placed_imports_from_resource_bindings() -> None:
    got = placed_imports(
        {
            "ns/svc-serviceimport": _binding("ServiceImport", ["member2"]),
            "ns/svc-serviceexport": _binding("ServiceExport", ["member1"]),
            "ns/svc-service": _binding("Service", ["member1"], api="v1"),
            "ns/other": _binding("ServiceImport", [], api="example.com/v1"),
        }
    )
    assert got == {"member2": frozenset({KEY})}


def test_retention_rule_targets_serviceimport_and_keeps_ips() -> None:
    for version in ("v1alpha1", "v1beta1"):
        ric = retention(version)
        assert ric["spec"]["target"] == {
            "apiVersion": f"multicluster.x-k8s.io/{version}",
            "kind": "ServiceImport",
        }
        assert ric["spec"]["customizations"]["retention"]["luaScript"] == RETENTION_LUA
    assert "function Retain(desiredObj, observedObj)" in RETENTION_LUA


def test_member_dns_answers_karmadas_import_with_karmadas_derived_service() -> None:
    """Karmada's import keeps an empty spec.ips where Karmada would revert ours (member
    kubeconfigs, no retention rule): the member's DNS view takes derived-svc's ClusterIP,
    as the hub does; ours, Karmada's with ips, and one without derived-svc stay as they are."""
    derived = _service("derived-svc", KARMADA_LABELS)
    karmadas = _import({"labels": KARMADA_LABELS})
    filled = karmada_filled(_bag(karmadas, derived))
    assert filled[KEY].ips == ("10.96.0.10",)
    with_ips = {**karmadas, "spec": {**karmadas["spec"], "ips": ["10.96.9.9"]}}
    assert karmada_filled(_bag(with_ips, derived))[KEY].ips == ("10.96.9.9",)
    assert karmada_filled(_bag(karmadas))[KEY].ips == ()
    ours = _import({"labels": {"clusterset.io/managed": "true"}})
    assert karmada_filled(_bag(ours, derived))[KEY].ips == ()


# Issue 21 item 3: a MultiClusterService (CrossCluster) is an export of its Service from the
# providers to the consumers, whose ClusterSetIP is each cluster's own Service (Karmada
# dispatches the providers' endpoints into it): no second data path.
def _mcs(
    name: str,
    providers: list[str],
    consumers: list[str],
    types: tuple[str, ...] = ("CrossCluster",),
) -> dict[str, Any]:
    return {
        "apiVersion": "networking.karmada.io/v1alpha1",
        "kind": "MultiClusterService",
        "metadata": {"name": name, "namespace": "ns", "creationTimestamp": "2026-12-01T00:00:00Z"},
        "spec": {
            "types": list(types),
            "providerClusters": [{"name": p} for p in providers],
            "consumerClusters": [{"name": c} for c in consumers],
        },
    }


def _observer(*mcs: dict[str, Any]) -> Observer:
    observer = Observer({}, karmada=object())  # type: ignore[arg-type]  # nothing runs
    assert observer.karmada is not None
    observer.karmada.mcs.store.update({f"ns/{m['metadata']['name']}": m for m in mcs})
    observer.ids.update({"member1": M1, "member2": M2, "member3": ClusterId("member3")})
    return observer


ECHO = ServiceKey("ns", "echo")
M3 = ClusterId("member3")


def _fleet() -> dict[ClusterId, Any]:
    return {
        M1: cluster(
            "member1",
            services=(service("echo", ips=("10.96.1.1",)),),
            slices=(eslice("echo", endpoints=(endpoint("10.244.1.9"),)),),
        ),
        M2: cluster("member2", services=(service("echo", ips=("10.96.2.2",)),)),
        M3: cluster("member3"),  # no echo: Karmada dispatches nothing there
    }


def test_multiclusterservice_exports_from_providers_into_consumers_own_service() -> None:
    observer = _observer(_mcs("echo", ["member1"], ["member2", "member3"]))
    clusters = observer._with_multicluster_services(_fleet())
    made = clusters[M1].exports[ECHO]
    created = datetime(2026, 12, 1, tzinfo=UTC).timestamp()  # the MultiClusterService's
    assert (made.created, made.export_to) == (created, frozenset({M2, M3}))
    assert ECHO not in clusters[M2].exports
    # A provider only: Karmada dispatches nothing there; clusterset's own path, as for exports.
    assert clusters[M1].foreign_derived == {}
    assert clusters[M2].foreign_derived == {ECHO: "echo"}
    assert clusters[M3].foreign_derived == {}  # no Service there: clusterset's own path
    state = clusterset(*clusters.values())
    ips = {(M2, ECHO): ("10.96.2.2",), (M1, ECHO): ("10.96.1.1",)}
    desired = reconcile(state, ips=ips)
    m2 = desired.clusters[M2]
    assert m2.imports[ECHO].ips == ("10.96.2.2",)  # member2's own echo: Karmada's data path
    assert ECHO in m2.foreign_derived and m2.data_path(ECHO) is None  # no derived Service of ours
    (sl,) = m2.slices[ECHO]
    assert [e.addresses for e in sl.endpoints] == [("10.244.1.9",)]
    assert "kubernetes.io/service-name" not in render.endpoint_slice(sl, None).get(
        "metadata", {}
    ).get("labels", {})
    # Observed again with nothing changed: the same maps (the incremental pass sees no change).
    again = observer._with_multicluster_services(_fleet())
    assert again[M1].exports is clusters[M1].exports
    assert again[M2].foreign_derived is clusters[M2].foreign_derived


@pytest.mark.parametrize(
    ("mcs", "m1_export", "m2_export"),
    [
        # Empty providers and consumers: every cluster (with the Service) provides.
        (_mcs("echo", [], []), True, True),
        # Not CrossCluster (LoadBalancer only): nothing.
        (_mcs("echo", ["member1"], ["member2"], types=("LoadBalancer",)), False, False),
        # A provider Karmada names that is no member: left out.
        (_mcs("echo", ["elsewhere"], ["member2"]), False, False),
    ],
)
def test_multiclusterservice_rules(mcs: dict[str, Any], m1_export: bool, m2_export: bool) -> None:
    clusters = _observer(mcs)._with_multicluster_services(_fleet())
    assert (ECHO in clusters[M1].exports, ECHO in clusters[M2].exports) == (m1_export, m2_export)


def test_a_serviceexport_of_the_name_wins_over_the_multiclusterservice() -> None:
    fleet = _fleet()
    own = export("echo", created=5.0)
    fleet[M1] = dataclasses.replace(fleet[M1], exports={ECHO: own})
    clusters = _observer(_mcs("echo", ["member1"], ["member2"]))._with_multicluster_services(fleet)
    assert clusters[M1].exports[ECHO] is own


def test_with_a_serviceexport_elsewhere_clustersets_own_path_carries_every_endpoint() -> None:
    """member3 exports echo with a ServiceExport: Karmada's dispatch into member2 lacks
    member3's endpoints, so member2's ClusterSetIP is not its own echo but clusterset's."""
    fleet = _fleet()
    fleet[M3] = cluster(
        "member3",
        services=(service("echo"),),
        exports=(export("echo", created=5.0),),
        slices=(eslice("echo", endpoints=(endpoint("10.244.3.9"),)),),
    )
    clusters = _observer(_mcs("echo", ["member1"], ["member2"]))._with_multicluster_services(fleet)
    assert ECHO in clusters[M1].exports  # member1 still exports through its MultiClusterService
    assert clusters[M2].foreign_derived == {}
    desired = reconcile(clusterset(*clusters.values()), ips={})
    assert desired.clusters[M2].data_path(ECHO) == derived_name(ECHO)


def test_multiclusterservice_annotations_are_the_answer_policies() -> None:
    mcs = _mcs("echo", ["member1", "member2"], ["member2"])
    mcs["metadata"]["annotations"] = {"clusterset.io/dns-policy": "local-first", "other": "x"}
    fleet = _fleet()
    fleet[M2] = cluster(
        "member2",
        services=(service("echo", headless=True),),
        slices=(eslice("echo", endpoints=(endpoint("10.244.2.9"),)),),
    )
    fleet[M1] = cluster(
        "member1",
        services=(service("echo", headless=True),),
        slices=(eslice("echo", endpoints=(endpoint("10.244.1.9"),)),),
    )
    clusters = _observer(mcs)._with_multicluster_services(fleet)
    desired = reconcile(clusterset(*clusters.values()), ips={})
    imp = desired.clusters[M2].imports[ECHO]
    assert ("clusterset.io/dns-policy", "local-first") in imp.annotations
    assert ("other", "x") not in imp.annotations  # only clusterset.io/* reach the import


def test_status_says_where_karmadas_data_path_keeps_an_expired_source() -> None:
    """Issue 21 item 4: Karmada keeps a lost member's endpoints in its slices, and clusterset
    does not fight it: `status` says so where a source's Lease expired."""
    imports: list[dict[str, Any]] = [
        {"cluster": "member2", "namespace": "default", "name": "serve", "clusters": ["member1"],
         "dataPath": {"service": "derived-serve", "owner": "karmada"}},
        {"cluster": "member2", "namespace": "default", "name": "web", "clusters": ["member1"],
         "dataPath": {"service": "derived-abc", "owner": "clusterset"}},
        {"cluster": "member2", "namespace": "default", "name": "hl", "clusters": ["member1"],
         "dataPath": None},
    ]  # fmt: skip
    leases = [{"consumer": "member2", "source": "member1", "state": "expired"}]
    assert _karmada_keeps(imports, leases) == [
        "note: member2's default/serve: member1's Lease expired, so its endpoints left DNS "
        "answers; the ClusterSetIP goes through Karmada's derived-serve, whose slices Karmada "
        "keeps (clusterset does not rewrite them)"
    ]
    assert _karmada_keeps(imports, [{**leases[0], "state": "fresh"}]) == []
