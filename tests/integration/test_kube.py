"""Hub and member modes against real kube-apiservers (etcd + kube-apiserver per cluster)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import dns.rcode
import dns.rdatatype
import pytest

from clusterset.kube import api as k
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
    import urllib.error
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

    def ready() -> bool:
        # The first pass runs once one member has synced; /ready waits for every informer
        # of every member.
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/ready", timeout=5) as r:
                return bool(r.status == 200)
        except urllib.error.HTTPError:
            return False

    eventually("every member synced: /ready", ready)


def writes(port: int) -> tuple[dict[tuple[str, str], float], float] | None:
    """A controller's clusterset_member_writes_total by (cluster, kind), and its passes."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:  # not listening yet
        return None
    out: dict[tuple[str, str], float] = {}
    passes = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "clusterset_member_writes_total":
                key = (s.labels["cluster"], s.labels["kind"])
                out[key] = out.get(key, 0.0) + s.value
            elif s.name == "clusterset_reconcile_total":
                passes = s.value
    return out, passes


def settled_writes(port: int, quiet: float = 2.0) -> dict[tuple[str, str], float]:
    """The writes once the controller has passed and written nothing for `quiet` seconds."""
    seen: list[tuple[float, dict[tuple[str, str], float]]] = []

    def settled() -> tuple[dict[tuple[str, str], float]] | None:
        got = writes(port)
        if got is None or got[1] < 1:
            return None
        if not seen or seen[-1][1] != got[0]:
            seen.append((time.monotonic(), got[0]))
            return None
        return (got[0],) if time.monotonic() - seen[-1][0] >= quiet else None  # {} is an answer

    result: tuple[dict[tuple[str, str], float]] = eventually(
        "the controller's writes settle", settled
    )
    return result[0]


def test_a_first_pass_writes_each_object_once_and_a_restart_writes_nothing(
    hub: ControlPlane, metrics_port: int
) -> None:
    """An import is written in final form (with the derived Service's ClusterIP as spec.ips)
    in the pass that makes the Service, not once without and again with it; a second
    controller over the converged clusters writes nothing (issue 23)."""
    cp = hub
    before = settled_writes(metrics_port)
    names = [f"once-{i}" for i in range(6)]
    for name in names:
        export_service(cp, "member1", "default", name)

    def imported() -> bool:
        return all(
            (
                (get(cp, c, f"{MCS}/namespaces/default/serviceimports/{n}") or {}).get("spec") or {}
            ).get("ips")
            for c in ("member1", "member2", "member3")
            for n in names
        )

    eventually("every member imports every once-* with ips", imported)
    after = settled_writes(metrics_port)
    delta = {key: n - before.get(key, 0.0) for key, n in after.items() if n != before.get(key)}
    for c in ("member1", "member2", "member3"):
        for kind in ("ServiceImport", "ServiceImport/status", "Service", "EndpointSlice"):
            assert delta.get((c, kind)) == len(names), (c, kind, delta)
    assert delta.get(("member1", "ServiceExport/status")) == len(names), delta
    assert sum(delta.values()) == 13 * len(names), delta  # nothing else

    port = free_port()
    contexts = [a for c in ("member1", "member2", "member3") for a in ("--context", c)]
    # No election: it writes beside the fixture's leader, and finds nothing to write.
    with process("controller", "--kubeconfig", str(cp.kubeconfig_path), *contexts,
                 "--metrics-listen", f"127.0.0.1:{port}", "--no-leader-elect"):  # fmt: skip
        assert settled_writes(port) == {}


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
        # Fallback AllClusters (both exports agree, else the oldest's None would stay): the
        # ClusterSetIP, which kube-proxy balances over every cluster's endpoints.
        for cluster in ("member1", "member3"):
            apply(
                cp,
                cluster,
                f"{MCS}/namespaces/default/serviceexports/api-sel",
                {
                    "apiVersion": "multicluster.x-k8s.io/v1beta1",
                    "kind": "ServiceExport",
                    "metadata": {"name": "api-sel", "namespace": "default"},
                    "spec": {
                        "clusterSelectors": selectors,
                        "clusterSelectorsFallbackPolicy": "AllClusters",
                    },
                },
            )
        ips = eventually(
            "the import with fallback AllClusters",
            lambda: (
                (get(cp, "member2", path) or {})
                .get("spec", {})
                .get("clusterSelectorsFallbackPolicy")
                == "AllClusters"
                and get(cp, "member2", path)["spec"].get("ips")
            ),
        )
        eventually("the ClusterSetIP once no tier is available", lambda: answer() == ips[:1])


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


def dual_stack_service(
    cp: ControlPlane,
    cluster: str,
    name: str,
    families: list[str],
    *,
    ns: str = "default",
    headless: bool = False,
    endpoints: dict[str, list[dict[str, Any]]] | None = None,
) -> None:
    """`<ns>/<name>` with `families` (RequireDualStack when two, else SingleStack), one
    EndpointSlice per family (`endpoints`: addressType -> its endpoints), and its export.
    Applied again with other families, the Service moves as the apiserver allows (a
    secondary family added or dropped), so the export keeps its creationTimestamp."""
    spec: dict[str, Any] = {
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "ipFamilies": families,
        "ipFamilyPolicy": "RequireDualStack" if len(families) > 1 else "SingleStack",
    }
    if headless:
        spec["clusterIP"] = "None"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": spec}
    apply(cp, cluster, f"/api/v1/namespaces/{ns}/services/{name}", svc)
    for family, eps in (endpoints or {}).items():
        slice_name = f"{name}-{family.lower()}"
        apply(
            cp,
            cluster,
            f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{slice_name}",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {"name": slice_name, "labels": {"kubernetes.io/service-name": name}},
                "addressType": family,
                "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                "endpoints": eps,
            },
        )
    apply(
        cp,
        cluster,
        f"{MCS}/namespaces/{ns}/serviceexports/{name}",
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceExport",
            "metadata": {"name": name},
        },
    )


def _family(ip: str) -> str:
    return "IPv6" if ":" in ip else "IPv4"


def test_dual_stack_export_imports_one_clustersetip_per_family(hub: ControlPlane) -> None:
    """mcs-api conformance v0.5.0 (kubernetes-sigs/mcs-api#143) on real apiservers, member1
    and member2 dual-stack, member3 IPv4 only. member1 exports `ds` (IPv4, IPv6), `ds6`
    (IPv6 only, in a namespace member3 lacks) and `dsh` (headless, a pod of each family).
    member2's imports have `ipFamilies` and one ClusterSetIP per family, in that order,
    from member2's own ranges (its derived Services' ClusterIPs); its MCS EndpointSlices
    keep each addressType; its member DNS answers A, AAAA, and SRV with both glue records.
    member3 imports `ds` as IPv4 (its ServiceCIDRs have no IPv6). Then the families move:
    IPv6 dropped (member2's derived Service downgraded), and the primary family changed
    (made again: a ClusterIP never changes family)."""
    cp = hub
    ready = {"ready": True}
    apply(
        cp, "member1", "/api/v1/namespaces/ipv6",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ipv6"}},
    )  # fmt: skip
    apply(
        cp, "member2", "/api/v1/namespaces/ipv6",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ipv6"}},
    )  # fmt: skip
    dual_stack_service(
        cp, "member1", "ds", ["IPv4", "IPv6"],
        endpoints={"IPv4": [{"addresses": ["10.244.1.30"], "conditions": ready}],
                   "IPv6": [{"addresses": ["fd00:10:244:1::30"], "conditions": ready}]},
    )  # fmt: skip
    dual_stack_service(
        cp, "member1", "ds6", ["IPv6"], ns="ipv6",
        endpoints={"IPv6": [{"addresses": ["fd00:10:244:1::31"], "conditions": ready}]},
    )  # fmt: skip
    pod = {"hostname": "db-0", "conditions": ready}
    dual_stack_service(
        cp, "member1", "dsh", ["IPv4", "IPv6"], headless=True,
        endpoints={"IPv4": [{"addresses": ["10.244.1.32"], **pod}],
                   "IPv6": [{"addresses": ["fd00:10:244:1::32"], **pod}]},
    )  # fmt: skip

    def imported(cluster: str, name: str, count: int, ns: str = "default") -> Any:
        si = get(cp, cluster, f"{MCS}/namespaces/{ns}/serviceimports/{name}")
        return si if si and len(si["spec"].get("ips") or []) == count else None

    si = eventually("ds in member2 with two ClusterSetIPs", lambda: imported("member2", "ds", 2))
    ips = si["spec"]["ips"]
    assert si["spec"]["ipFamilies"] == ["IPv4", "IPv6"]
    assert [_family(ip) for ip in ips] == si["spec"]["ipFamilies"]  # the suite's check
    assert ips[0].startswith("10.97.") and ips[1].startswith("fd00:10:97::")  # member2's ranges
    derived = si["metadata"]["annotations"]["multicluster.kubernetes.io/derived-service"]
    svc = get(cp, "member2", f"/api/v1/namespaces/default/services/{derived}")["spec"]
    assert (svc["ipFamilies"], svc["ipFamilyPolicy"], svc["clusterIPs"]) == (
        ["IPv4", "IPv6"],
        "PreferDualStack",
        ips,
    )

    # The import is written in final form before its slices (the same pass): wait for them.
    def both_slices() -> list[Any] | None:
        items: list[Any] = get(
            cp,
            "member2",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
            "?labelSelector=multicluster.kubernetes.io/service-name%3Dds",
        )["items"]
        return items if len(items) == 2 else None

    slices = eventually("ds's two MCS slices in member2", both_slices)
    assert sorted((s["addressType"], s["endpoints"][0]["addresses"][0]) for s in slices) == [
        ("IPv4", "10.244.1.30"),
        ("IPv6", "fd00:10:244:1::30"),
    ]
    assert {s["metadata"]["labels"]["kubernetes.io/service-name"] for s in slices} == {derived}
    si6 = eventually(
        "ds6 with one IPv6 ClusterSetIP", lambda: imported("member2", "ds6", 1, "ipv6")
    )
    assert si6["spec"]["ipFamilies"] == ["IPv6"]
    assert si6["spec"]["ips"][0].startswith("fd00:10:97::")
    # member3 serves IPv4 only: its import of `ds` is IPv4, with an address of its range.
    si3 = eventually("ds in member3 with one ClusterSetIP", lambda: imported("member3", "ds", 1))
    assert si3["spec"]["ipFamilies"] == ["IPv4"]
    assert si3["spec"]["ips"][0].startswith("10.98.")
    svc3 = get(cp, "member3", f"/api/v1/namespaces/default/services/{derived}")["spec"]
    assert (svc3["ipFamilies"], svc3["ipFamilyPolicy"]) == (["IPv4"], "SingleStack")

    port = free_port()
    name, name6 = "ds.default.svc.clusterset.local", "ds6.ipv6.svc.clusterset.local"
    headless, pod_name = (
        "dsh.default.svc.clusterset.local",
        "db-0.member1.dsh.default.svc.clusterset.local",
    )
    with process(
        "dns", "--kubeconfig", str(cp.kubeconfig_path), "--context", "member2",
        "--listen", f"127.0.0.1:{port}",
    ):  # fmt: skip
        wait_answering(port, timeout=30)

        def addresses(qname: str, rdtype: str) -> list[str]:
            r = query(port, qname, rdtype)
            assert r.rcode() == dns.rcode.NOERROR
            return sorted(rd.address for rrset in r.answer for rd in rrset)

        eventually("ds's A", lambda: addresses(name, "A") == ips[:1])
        assert addresses(name, "AAAA") == ips[1:]
        eventually("ds6's AAAA", lambda: addresses(name6, "AAAA") == si6["spec"]["ips"])
        assert addresses(name6, "A") == []  # NODATA: no IPv4 ClusterSetIP
        r = query(port, name, "SRV")
        assert [rd.target.to_text() for rrset in r.answer for rd in rrset] == [name + "."]
        glue = {(rs.rdtype, rd.address) for rs in r.additional for rd in rs}
        assert glue == {(dns.rdatatype.A, ips[0]), (dns.rdatatype.AAAA, ips[1])}
        eventually("dsh's AAAA", lambda: addresses(headless, "AAAA") == ["fd00:10:244:1::32"])
        assert addresses(headless, "A") == ["10.244.1.32"]
        assert addresses(pod_name, "AAAA") == ["fd00:10:244:1::32"]
        r = query(port, headless, "SRV")
        glue = {(rs.rdtype, rd.address) for rs in r.additional for rd in rs}
        assert glue == {(dns.rdatatype.A, "10.244.1.32"), (dns.rdatatype.AAAA, "fd00:10:244:1::32")}

        # IPv6 dropped: member2's derived Service goes single-stack, keeping its IPv4 address.
        dual_stack_service(cp, "member1", "ds", ["IPv4"])

        def dropped() -> Any:
            si = imported("member2", "ds", 1)
            return si if si and si["spec"]["ipFamilies"] == ["IPv4"] else None

        si = eventually("ds with its IPv4 ClusterSetIP only", dropped)
        assert si["spec"]["ips"] == ips[:1]
        eventually("no AAAA once IPv6 is dropped", lambda: addresses(name, "AAAA") == [])
        assert addresses(name, "A") == ips[:1]

    # The primary family changed (member1's Service made again as IPv6, IPv4): a ClusterIP
    # never changes family, so member2's derived Service is made again.
    status, _ = cp.request("member1", "DELETE", "/api/v1/namespaces/default/services/ds")
    assert status == 200
    dual_stack_service(cp, "member1", "ds", ["IPv6", "IPv4"])

    def flipped() -> Any:
        si = imported("member2", "ds", 2)
        return si if si and si["spec"]["ipFamilies"] == ["IPv6", "IPv4"] else None

    si = eventually("ds imported again IPv6 first", flipped)
    assert [_family(ip) for ip in si["spec"]["ips"]] == ["IPv6", "IPv4"]
    si3 = eventually("member3's ds still IPv4", lambda: imported("member3", "ds", 1))
    assert si3["spec"]["ipFamilies"] == ["IPv4"]


def test_delete_with_a_uid_keeps_an_object_made_again(control_plane: ControlPlane) -> None:
    """What the hub's remake of a derived Service relies on (its store may still show the
    old one for a pass): a delete for the old uid leaves the Service made again under the
    name since (409, no error), and one for its own uid deletes it."""
    cp = control_plane
    path = "/api/v1/namespaces/default/services/remade"
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "remade"},
           "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}  # fmt: skip
    old = apply(cp, "member1", path, svc)["metadata"]["uid"]
    assert cp.request("member1", "DELETE", path)[0] == 200
    new = apply(cp, "member1", path, svc)["metadata"]["uid"]

    async def delete(uid: str) -> None:
        config = k.load_contexts(cp.kubeconfig_path, ["member1"])["member1"]
        api = k.KubeApi.from_config("member1", config)
        try:
            await api.delete(path, uid=uid)
        finally:
            await api.close()

    asyncio.run(delete(old))
    assert get(cp, "member1", path)["metadata"]["uid"] == new
    asyncio.run(delete(new))
    eventually("the Service deleted", lambda: get(cp, "member1", path) is None)
