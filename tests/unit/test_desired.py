"""Whole reconcile: where imports go, what they hold, MCS slices, ClusterSetIP allocation."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import ImportType, IPFamily
from clusterset.model.state import ClusterSetState
from clusterset.reconcile import allocate, render
from clusterset.reconcile.desired import derived_name, reconcile
from clusterset.reconcile.slices import MANAGED_BY, MAX_ENDPOINTS
from tests.factories import cluster, clusterset, endpoint, eslice, export, service

KEY = ServiceKey("ns", "svc")
M1, M2, M3 = ClusterId("member1"), ClusterId("member2"), ClusterId("member3")
ROOT = Path(__file__).resolve().parents[2]


def seed(**kw: Any) -> ClusterSetState:
    return clusterset(
        cluster(
            "member1",
            services=(service(),),
            exports=(export(),),
            slices=(eslice(endpoints=(endpoint("10.1.0.1"), endpoint("10.1.0.2", ready=False))),),
        ),
        cluster("member2", namespaces=()),
        cluster("member3", namespaces=("other",), **kw),
    )


def test_every_cluster_with_the_namespace_imports_including_the_exporter() -> None:
    d = reconcile(seed(), ips={(M2, KEY): ("10.250.0.9",)})
    # member2 lists no namespaces but "default"-like ones always exist; ns must exist: not there.
    assert KEY in d.clusters[M1].imports
    assert KEY not in d.clusters[M2].imports
    assert KEY not in d.clusters[M3].imports


def test_import_has_ips_ports_clusters_and_derived_service() -> None:
    state = clusterset(
        cluster(
            "member1",
            services=(service(),),
            exports=(export(),),
            slices=(eslice(endpoints=(endpoint("10.1.0.1"),)),),
        ),
        cluster("member2"),
    )
    d = reconcile(state, ips={(M2, KEY): ("10.250.0.9",)})
    imp = d.clusters[M2].imports[KEY]
    assert imp.type is ImportType.CLUSTER_SET_IP
    assert imp.ips == ("10.250.0.9",)
    assert imp.ip_families == (IPFamily.IPV4,)
    assert imp.clusters == (M1,)
    assert d.clusters[M2].derived[KEY] == derived_name(KEY)
    assert dict(imp.annotations)["multicluster.kubernetes.io/derived-service"] == derived_name(KEY)
    objs = render.cluster_objects(d.clusters[M2])
    kinds = [o["kind"] for o in objs]
    assert kinds == ["ServiceImport", "Service", "EndpointSlice"]
    es = objs[2]
    assert es["metadata"]["labels"]["multicluster.kubernetes.io/service-name"] == "svc"
    assert es["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"] == "member1"
    assert es["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"] == MANAGED_BY
    assert es["metadata"]["labels"]["kubernetes.io/service-name"] == derived_name(KEY)
    assert objs[1]["spec"]["clusterIP"] == "10.250.0.9"


# Golden names of the mcs-api reference controller (kubernetes-sigs/mcs-api,
# pkg/controllers/common.go derivedName: "derived-" + the first 10 characters of
# lowercase unpadded base32hex(sha256(NamespacedName.String())), that is of "ns/name").
# Computed outside this project with Go's crypto/sha256 and encoding/base32, and again
# with `printf %s ns/name | sha256sum | xxd -r -p | basenc --base32hex`.
@pytest.mark.parametrize(
    ("namespace", "name", "golden"),
    [
        pytest.param("default", "serve", "derived-0p6lqce99d", id="default/serve"),
        pytest.param("ns", "svc", "derived-eoric1rhri", id="ns/svc"),
        pytest.param("kube-system", "kube-dns", "derived-bnmpvejc1s", id="kube-system/kube-dns"),
    ],
)
def test_derived_name_matches_mcs_api_reference_controller(
    namespace: str, name: str, golden: str
) -> None:
    assert derived_name(ServiceKey(namespace, name)) == golden


def test_headless_import_has_no_ips_and_no_derived_service() -> None:
    state = clusterset(cluster("a", services=(service(headless=True),), exports=(export(),)))
    d = reconcile(state, ips={(ClusterId("a"), KEY): ("10.250.0.1",)})
    imp = d.clusters[ClusterId("a")].imports[KEY]
    assert imp.type is ImportType.HEADLESS
    assert imp.ips == ()
    assert KEY not in d.clusters[ClusterId("a")].derived


def test_endpoint_conditions_hostname_zone_are_carried_and_slices_hold_at_most_100() -> None:
    eps = tuple(
        endpoint(f"10.2.{i // 250}.{i % 250 + 1}", hostname=f"h{i}", zone="z1", ready=i % 2 == 0)
        for i in range(250)
    )
    state = clusterset(
        cluster(
            "a",
            services=(service(headless=True),),
            exports=(export(),),
            slices=(eslice(endpoints=eps),),
        )
    )
    d = reconcile(state, ips={})
    slices = d.clusters[ClusterId("a")].slices[KEY]
    assert [len(s.endpoints) for s in slices] == [MAX_ENDPOINTS, MAX_ENDPOINTS, 50]
    assert len({s.name for s in slices}) == 3
    carried = {e.addresses[0]: e for s in slices for e in s.endpoints}
    assert carried["10.2.0.1"].hostname == "h0"
    assert carried["10.2.0.1"].zone == "z1"
    assert carried["10.2.0.2"].ready is False


def test_removed_export_removes_import_everywhere() -> None:
    state = clusterset(cluster("a", services=(service(),)), cluster("b"))
    d = reconcile(state, ips={})
    assert all(not cd.imports for cd in d.clusters.values())


def test_conditions_are_reported_per_exporting_cluster() -> None:
    d = reconcile(seed(), ips={})
    assert set(d.conditions) == {(M1, KEY)}


def test_unsynced_clusters_are_reported() -> None:
    d = reconcile(seed(synced=False), ips={})
    assert d.unsynced == {M3}


_RECONCILE_AND_PRINT = """
import json
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.reconcile import render
from clusterset.reconcile.desired import reconcile
from tests.factories import cluster, clusterset, endpoint, eslice, export, port, service

names = ("a", "b", "c", "d", "e", "f")
nss = ("ns", "x", "y")
state = clusterset(*(
    cluster(
        cid,
        services=tuple(service(n, ns, ports=(port(80 + i, "http"),)) for n in names for ns in nss),
        exports=tuple(export(n, ns, created=float(i % 2)) for n in names for ns in nss),
        slices=tuple(
            eslice(n, ns, endpoints=(endpoint(f"10.{i}.0.1"), endpoint(f"10.{i}.0.2")))
            for n in names for ns in nss
        ),
        namespaces=nss,
    )
    for i, cid in enumerate(("member3", "member1", "member2"))
))
ips = {(ClusterId(c), ServiceKey(ns, n)): ("10.250.0.1",)
       for c in ("member1", "member2", "member3") for n in names for ns in nss}
d = reconcile(state, ips=ips)
print(json.dumps({
    "objects": {c: render.cluster_objects(cd) for c, cd in d.clusters.items()},
    "conditions": [[c, str(k), [repr(x) for x in conds]] for (c, k), conds in d.conditions.items()],
}))
"""


def test_reconcile_is_deterministic_across_hash_seeds() -> None:
    # Two processes with different string hashing: any set or dict iterated in hash order
    # on the way to the output shows up as a difference (one process cannot show it).
    outs = [
        subprocess.run(
            [sys.executable, "-c", _RECONCILE_AND_PRINT],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        for seed in ("1", "2")
    ]
    assert json.loads(outs[0])["objects"], "nothing reconciled: the test would prove nothing"
    assert outs[0] == outs[1]


CIDRS: dict[IPFamily, allocate.Network] = {
    IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/24"),
    IPFamily.IPV6: ipaddress.IPv6Network("fd00::/120"),
}


def test_allocation_is_stable_and_keeps_previous() -> None:
    k1, k2 = ServiceKey("a", "x"), ServiceKey("b", "y")
    first = allocate.allocate([(k1, (IPFamily.IPV4,))], cidrs=CIDRS, previous={})
    second = allocate.allocate(
        [(k2, (IPFamily.IPV4,)), (k1, (IPFamily.IPV4,))], cidrs=CIDRS, previous=first
    )
    assert second[k1] == first[k1]
    assert second[k2] != second[k1]
    again = allocate.allocate([(k1, (IPFamily.IPV4,))], cidrs=CIDRS, previous={})
    assert again == first  # same key hashes to the same slot across restarts


def test_allocation_is_dual_stack_in_family_order_and_unique() -> None:
    keys = [(ServiceKey("ns", f"s{i}"), (IPFamily.IPV6, IPFamily.IPV4)) for i in range(200)]
    got = allocate.allocate(keys, cidrs=CIDRS, previous={})
    assert all(":" in ips[0] and "." in ips[1] for ips in got.values())
    v4 = [ips[1] for ips in got.values()]
    assert len(set(v4)) == 200
    assert all(ipaddress.ip_address(ip) in CIDRS[IPFamily.IPV4] for ip in v4)


@pytest.mark.parametrize("bad_previous", [("10.9.9.9",), ("fd00::5",)])
def test_allocation_ignores_previous_outside_range_or_family(bad_previous: tuple[str, ...]) -> None:
    k = ServiceKey("ns", "s")
    got = allocate.allocate([(k, (IPFamily.IPV4,))], cidrs=CIDRS, previous={k: bad_previous})
    assert ipaddress.ip_address(got[k][0]) in CIDRS[IPFamily.IPV4]
