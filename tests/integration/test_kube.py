"""Hub and member modes against real kube-apiservers (etcd + kube-apiserver per cluster)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dns.rcode
import pytest

from tests.conftest import eventually
from tests.controlplane import ControlPlane
from tests.integration.servers import free_port, query, wait_answering

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]
SSA = "application/apply-patch+yaml"
MCS = "/apis/multicluster.x-k8s.io/v1beta1"


def apply(cp: ControlPlane, cluster: str, path: str, obj: dict[str, Any]) -> Any:
    status, body = cp.request(
        cluster, "PATCH", f"{path}?fieldManager=tests&force=true", obj, content_type=SSA
    )
    assert status in (200, 201), body
    return body


def get(cp: ControlPlane, cluster: str, path: str) -> Any:
    status, body = cp.request(cluster, "GET", path)
    return body if status == 200 else None


def export_service(
    cp: ControlPlane,
    cluster: str,
    ns: str,
    name: str,
    *,
    headless: bool = False,
    endpoints: list[dict[str, Any]] | None = None,
    port: int = 80,
    annotations: dict[str, str] | None = None,
) -> None:
    if ns != "default":
        apply(
            cp,
            cluster,
            f"/api/v1/namespaces/{ns}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        )
    spec: dict[str, Any] = {"ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
    if headless:
        spec["clusterIP"] = "None"
    apply(
        cp,
        cluster,
        f"/api/v1/namespaces/{ns}/services/{name}",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        },
    )
    apply(
        cp,
        cluster,
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{name}-abc",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": f"{name}-abc",
                "namespace": ns,
                "labels": {"kubernetes.io/service-name": name},
            },
            "addressType": "IPv4",
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
            "endpoints": endpoints
            or [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
        },
    )
    apply(
        cp,
        cluster,
        f"{MCS}/namespaces/{ns}/serviceexports/{name}",
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceExport",
            "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
        },
    )


@contextmanager
def process(*args: str) -> Iterator[subprocess.Popen[bytes]]:
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "clusterset", *args], stdout=log, stderr=log)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.seek(0)
        output = log.read().decode(errors="replace")
        log.close()
        if "Traceback" in output:
            print(output[-4000:])


@pytest.fixture(scope="module")
def metrics_port() -> int:
    """Picked when the module starts, not at collection (by then, maybe someone's port)."""
    return free_port()


@pytest.fixture(scope="module")
def hub(control_plane: ControlPlane, metrics_port: int) -> Iterator[ControlPlane]:
    cp = control_plane
    with process(
        "controller",
        "--kubeconfig",
        str(cp.kubeconfig_path),
        "--context",
        "member1",
        "--context",
        "member2",
        "--context",
        "member3",
        "--metrics-listen",
        f"127.0.0.1:{metrics_port}",
    ):
        yield cp


def test_controller_metrics_and_readiness(hub: ControlPlane, metrics_port: int) -> None:
    import urllib.request

    def scrape() -> str | None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
                text: str = r.read().decode()
        except OSError:  # not listening yet
            return None
        return (
            text
            if "clusterset_leader 1.0" in text and "clusterset_reconcile_total 0.0" not in text
            else None
        )

    text = eventually("controller metrics", scrape)
    assert 'clusterset_cluster_synced{cluster="member1"} 1.0' in text
    assert 'clusterset_objects{cluster="member2",kind="serviceimports"}' in text
    assert "clusterset_leader 1.0" in text
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/ready", timeout=5) as r:
        assert r.status == 200


def conditions(cp: ControlPlane, cluster: str, ns: str, name: str) -> dict[str, tuple[str, str]]:
    se = get(cp, cluster, f"{MCS}/namespaces/{ns}/serviceexports/{name}") or {}
    return {
        c["type"]: (c["status"], c["reason"])
        for c in (se.get("status") or {}).get("conditions") or []
    }


def test_hub_imports_into_every_member_with_ips_and_conditions(hub: ControlPlane) -> None:
    cp = hub
    export_service(
        cp,
        "member1",
        "default",
        "serve",
        endpoints=[
            {"addresses": ["10.244.1.5"], "conditions": {"ready": True}},
            {"addresses": ["10.244.2.7"], "conditions": {"ready": True}},
        ],
    )

    def imported() -> Any:
        si = get(cp, "member2", f"{MCS}/namespaces/default/serviceimports/serve")
        return si if si and si["spec"].get("ips") else None

    si = eventually("ServiceImport serve with ips in member2", imported)
    assert si["spec"]["type"] == "ClusterSetIP"
    assert si["spec"]["ports"] == [{"name": "http", "port": 80, "protocol": "TCP"}]
    assert si["status"]["clusters"] == [{"cluster": "member1"}]
    assert si["status"]["endpointSliceObjects"] == "Present"  # kept by the apiserver's schema
    derived = si["metadata"]["annotations"]["multicluster.kubernetes.io/derived-service"]
    svc = get(cp, "member2", f"/api/v1/namespaces/default/services/{derived}")
    assert svc["spec"]["clusterIP"] == si["spec"]["ips"][0]
    assert si["spec"]["ips"][0].startswith("10.97.")  # member2's own service range allocated it
    slices = get(
        cp,
        "member2",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        "?labelSelector=multicluster.kubernetes.io/service-name%3Dserve",
    )["items"]
    assert len(slices) == 1
    labels = slices[0]["metadata"]["labels"]
    assert labels["multicluster.kubernetes.io/source-cluster"] == "member1"
    assert labels["endpointslice.kubernetes.io/managed-by"] == "controller.clusterset.io"
    assert labels["kubernetes.io/service-name"] == derived
    assert sorted(e["addresses"][0] for e in slices[0]["endpoints"]) == ["10.244.1.5", "10.244.2.7"]
    # The exporting cluster imports too; a cluster without the namespace does not matter here.
    assert get(cp, "member1", f"{MCS}/namespaces/default/serviceimports/serve") is not None
    conds = eventually(
        "ServiceExport conditions", lambda: conditions(cp, "member1", "default", "serve") or None
    )
    assert conds == {
        "Valid": ("True", "Valid"),
        "Ready": ("True", "Exported"),
        "Conflict": ("False", "NoConflicts"),
    }


def test_member_dns_serves_its_clusters_imports(hub: ControlPlane) -> None:
    cp = hub
    si = eventually(
        "import",
        lambda: (
            (get(cp, "member2", f"{MCS}/namespaces/default/serviceimports/serve") or {})
            .get("spec", {})
            .get("ips")
        ),
    )
    port = free_port()
    with process(
        "dns",
        "--kubeconfig",
        str(cp.kubeconfig_path),
        "--context",
        "member2",
        "--listen",
        f"127.0.0.1:{port}",
    ):
        wait_answering(port, timeout=30)
        r = query(port, "serve.default.svc.clusterset.local")
        assert r.rcode() == dns.rcode.NOERROR
        assert [rd.address for rd in r.answer[0]] == si


def test_conflict_and_headless_across_clusters(hub: ControlPlane) -> None:
    cp = hub
    export_service(
        cp,
        "member1",
        "data",
        "db",
        headless=True,
        port=5432,
        endpoints=[
            {"addresses": ["10.244.1.20"], "hostname": "db-0", "conditions": {"ready": True}}
        ],
    )
    export_service(
        cp,
        "member3",
        "data",
        "db",
        headless=True,
        port=5433,
        endpoints=[
            {"addresses": ["10.246.1.20"], "hostname": "db-0", "conditions": {"ready": True}}
        ],
    )
    eventually(
        "Conflict on both",
        lambda: all(
            conditions(cp, c, "data", "db").get("Conflict", ("", ""))[0] == "True"
            for c in ("member1", "member3")
        ),
    )
    si = get(cp, "member1", f"{MCS}/namespaces/data/serviceimports/db")
    assert si["spec"]["type"] == "Headless"
    assert "ips" not in si["spec"]
    # member2 has no "data" namespace: it does not import.
    assert get(cp, "member2", f"{MCS}/namespaces/data/serviceimports/db") is None


def test_unexport_removes_everything_the_hub_made(hub: ControlPlane) -> None:
    cp = hub
    export_service(cp, "member1", "default", "gone")
    eventually(
        "import of gone",
        lambda: get(cp, "member2", f"{MCS}/namespaces/default/serviceimports/gone"),
    )
    status, _ = cp.request("member1", "DELETE", f"{MCS}/namespaces/default/serviceexports/gone")
    assert status == 200
    eventually(
        "import removed",
        lambda: get(cp, "member2", f"{MCS}/namespaces/default/serviceimports/gone") is None,
        timeout=20,
    )
    eventually(
        "slices removed",
        lambda: (
            not get(
                cp,
                "member2",
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                "?labelSelector=multicluster.kubernetes.io/service-name%3Dgone",
            )["items"]
        ),
        timeout=20,
    )


def test_all_in_one_run_on_real_clusters(control_plane: ControlPlane) -> None:
    cp = control_plane
    export_service(cp, "member1", "default", "allinone")
    port = free_port()
    with process(
        "run",
        "--kubeconfig",
        str(cp.kubeconfig_path),
        "--context",
        "member1",
        "--context",
        "member2",
        "--cluster",
        "member2",
        "--listen",
        f"127.0.0.1:{port}",
        "--default-policy",
        "kep",
    ):
        wait_answering(port, timeout=60)

        def answered() -> Any:
            r = query(port, "allinone.default.svc.clusterset.local")
            return r.answer if r.rcode() == dns.rcode.NOERROR and r.answer else None

        answer = eventually("allinone resolves", answered, timeout=30)
        assert answer[0][0].address.startswith("10.97.")


def test_cluster_selectors_answer_the_region_tier_in_a_member(hub: ControlPlane) -> None:
    """KEP-5939 in hub mode: member1 (us) and member3 (eu) export `api-sel` with
    clusterSelectors [region = @SameAsImporter@] and fallback None. member2 (eu) runs no copy:
    its member DNS answers member3's endpoint while it is ready, and nothing once it is not
    (not member1's, which is ready but outside the tier). member2's DNS reads only member2:
    the sources' regions reach it on their liveness Leases."""
    cp = hub
    for cluster, region in (("member1", "us"), ("member2", "eu"), ("member3", "eu")):
        apply(
            cp,
            cluster,
            "/apis/about.k8s.io/v1alpha1/clusterproperties/region.clusterset.io",
            {
                "apiVersion": "about.k8s.io/v1alpha1",
                "kind": "ClusterProperty",
                "metadata": {"name": "region.clusterset.io"},
                "spec": {"value": region},
            },
        )
    ready = {"ready": True}
    selectors = [
        {"propertySelector": {"matchLabels": {"region.clusterset.io": "@SameAsImporter@"}}}
    ]
    for cluster, address in (("member1", "10.244.1.21"), ("member3", "10.244.3.21")):
        export_service(
            cp, cluster, "default", "api-sel",
            endpoints=[{"addresses": [address], "conditions": ready}],
        )  # fmt: skip
        apply(
            cp,
            cluster,
            f"{MCS}/namespaces/default/serviceexports/api-sel",
            {
                "apiVersion": "multicluster.x-k8s.io/v1beta1",
                "kind": "ServiceExport",
                "metadata": {"name": "api-sel", "namespace": "default"},
                "spec": {"clusterSelectors": selectors, "clusterSelectorsFallbackPolicy": "None"},
            },
        )
    path = f"{MCS}/namespaces/default/serviceimports/api-sel"
    si = eventually(
        "the import with its selectors",
        lambda: (
            (get(cp, "member2", path) or {}).get("spec", {}).get("clusterSelectors")
            and get(cp, "member2", path)
        ),
    )
    assert si["spec"]["clusterSelectors"] == selectors
    assert si["spec"]["clusterSelectorsFallbackPolicy"] == "None"
    lease = "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/clusterset-source-member3"
    eventually(
        "member3's region on its Lease in member2",
        lambda: (
            '"region.clusterset.io":"eu"'
            in ((get(cp, "member2", lease) or {}).get("metadata", {}).get("annotations") or {}).get(
                "clusterset.io/cluster-properties", ""
            )
        ),
    )
    port = free_port()
    with process(
        "dns", "--kubeconfig", str(cp.kubeconfig_path), "--context", "member2",
        "--listen", f"127.0.0.1:{port}",
    ):  # fmt: skip
        wait_answering(port, timeout=30)

        def answer() -> list[str]:
            r = query(port, "api-sel.default.svc.clusterset.local")
            assert r.rcode() == dns.rcode.NOERROR
            return [rd.address for rrset in r.answer for rd in rrset]

        eventually("member3's endpoint (the eu tier)", lambda: answer() == ["10.244.3.21"])
        apply(
            cp,
            "member3",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/api-sel-abc",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "api-sel-abc",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "api-sel"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                "endpoints": [
                    {"addresses": ["10.244.3.21"], "conditions": {"ready": False, "serving": False}}
                ],
            },
        )
        # Fallback None: no address, although member1's copy is ready (data sovereignty).
        eventually("nothing once the eu tier is down", lambda: answer() == [])


def test_export_to_a_subset_of_clusters(hub: ControlPlane) -> None:
    """kubernetes/enhancements#6329 behind clusterset.io/export-to: member1 exports `subset` to
    member2 only. member2 imports it, member3 holds nothing of it; moving the set to member3
    moves the import (member2's is pruned). member1's ServiceExport status lists the clusters
    the service is exported to: its own and the set."""
    cp = hub
    export_service(cp, "member1", "default", "subset", annotations={"clusterset.io/export-to": "member2"})  # fmt: skip
    path = f"{MCS}/namespaces/default/serviceimports/subset"
    slices = (
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        "?labelSelector=multicluster.kubernetes.io/service-name%3Dsubset"
    )

    def exported_to() -> list[str]:
        se = get(cp, "member1", f"{MCS}/namespaces/default/serviceexports/subset") or {}
        return [c["cluster"] for c in (se.get("status") or {}).get("clusters") or []]

    eventually("member2's import", lambda: get(cp, "member2", path))
    deadline = time.monotonic() + 3  # passes go on: member3 must stay empty
    while time.monotonic() < deadline:
        assert get(cp, "member3", path) is None, "member3 imports a service not exported to it"
        assert get(cp, "member3", slices)["items"] == []
        time.sleep(0.2)
    assert get(cp, "member1", path) is not None  # the exporting cluster imports it too
    eventually("member1 and member2 in the status", lambda: exported_to() == ["member1", "member2"])
    apply(
        cp,
        "member1",
        f"{MCS}/namespaces/default/serviceexports/subset",
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceExport",
            "metadata": {
                "name": "subset",
                "namespace": "default",
                "annotations": {"clusterset.io/export-to": "member3"},
            },
        },
    )
    eventually("member3's import", lambda: get(cp, "member3", path))
    eventually("member2's import pruned", lambda: get(cp, "member2", path) is None, timeout=20)
    eventually("member2's slices pruned", lambda: get(cp, "member2", slices)["items"] == [])
    eventually("member1 and member3 in the status", lambda: exported_to() == ["member1", "member3"])
