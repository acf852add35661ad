"""The real control plane (etcd + kube-apiservers) and the project's CRDs on it.

Needs kube-apiserver from scripts/build-peers.sh and Debian's etcd. Missing
binaries fail these tests: they are not skipped.
"""

from __future__ import annotations

import copy
import json
import socket
import ssl
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from ipaddress import ip_address, ip_network
from pathlib import Path
from typing import Any

import lightkube
import pytest
import yaml
from lightkube.resources.core_v1 import Namespace

from tests.controlplane import ControlPlane, ControlPlaneError, cache_bin_dir

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "deploy" / "crds"
CLUSTERS = ("member1", "member2")
CRD_NAMES = (
    "serviceexports.multicluster.x-k8s.io",
    "serviceimports.multicluster.x-k8s.io",
    "clusterproperties.about.k8s.io",
)
CRD_API = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
MCS = "/apis/multicluster.x-k8s.io"
SSA = "application/apply-patch+yaml"


def ok(answer: tuple[int, Any], *expected: int) -> Any:
    status, body = answer
    assert status in (expected or (200, 201)), f"HTTP {status}: {body}"
    return body


def load_crds() -> dict[str, dict[str, Any]]:
    crds: dict[str, dict[str, Any]] = {}
    for path in sorted(CRD_DIR.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                crds[doc["metadata"]["name"]] = doc
    return crds


def apply(cp: ControlPlane, cluster: str, path: str, obj: dict[str, Any]) -> Any:
    """Server-side apply of ``obj`` at ``path`` (the object's own URL)."""
    return ok(
        cp.request(
            cluster,
            "PATCH",
            f"{path}?fieldManager=clusterset-tests&force=true",
            json.dumps(obj).encode(),
            content_type=SSA,
        )
    )


def wait_for(what: str, check: Any, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def established(cp: ControlPlane, cluster: str, name: str) -> bool:
    status, body = cp.request(cluster, "GET", f"{CRD_API}/{name}")
    if status != 200:
        return False
    conditions = {c["type"]: c["status"] for c in body.get("status", {}).get("conditions", [])}
    return conditions.get("Established") == "True" and conditions.get("NamesAccepted") == "True"


def serves(cp: ControlPlane, cluster: str, url: str) -> bool:
    return bool(cp.request(cluster, "GET", url)[0] == 200)


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    plane = ControlPlane(CLUSTERS, watch_cache=False)
    failure = ""
    try:
        plane.start()
    except ControlPlaneError as err:
        failure = str(err)
    if failure:  # outside the except: no chained traceback around the message
        pytest.fail(f"control plane did not start: {failure}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


@pytest.fixture(scope="module")
def crds(cp: ControlPlane) -> dict[str, dict[str, Any]]:
    docs = load_crds()
    assert sorted(docs) == sorted(CRD_NAMES)
    for cluster in CLUSTERS:
        for name, doc in docs.items():
            apply(cp, cluster, f"{CRD_API}/{name}", doc)
    for cluster in CLUSTERS:
        for name in CRD_NAMES:
            wait_for(f"{name} Established in {cluster}", partial(established, cp, cluster, name))
        # Served once discovery has caught up with the Established condition.
        for version in ("v1alpha1", "v1beta1"):
            for url in (
                f"{MCS}/{version}/namespaces/default/serviceimports",
                f"{MCS}/{version}/namespaces/default/serviceexports",
                f"/apis/about.k8s.io/{version}/clusterproperties",
            ):
                wait_for(f"{url} in {cluster}", partial(serves, cp, cluster, url))
    return docs


def service_import(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceImport",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "ClusterSetIP", "ports": [{"port": 80, "name": "http"}], **spec},
    }


# -- (a) the control plane ------------------------------------------------


def test_binaries_are_built() -> None:
    binary = cache_bin_dir() / "kube-apiserver"
    assert binary.is_file(), f"{binary} missing: run scripts/build-peers.sh"
    stamp = cache_bin_dir() / "kube-apiserver.version"
    assert stamp.read_text().startswith("k8s.io/kubernetes v1.")


def test_every_cluster_is_ready_and_current(cp: ControlPlane) -> None:
    assert sorted(cp.servers) == sorted(CLUSTERS)
    assert len(set(cp.servers.values())) == len(CLUSTERS)
    stamp = (cache_bin_dir() / "kube-apiserver.version").read_text().split()[-1]
    for cluster in CLUSTERS:
        assert cp.request(cluster, "GET", "/readyz")[0] == 200
        version = ok(cp.request(cluster, "GET", "/version"))
        assert version["gitVersion"] == stamp
        assert int(version["minor"]) >= 34


def test_clusters_are_separate(cp: ControlPlane) -> None:
    """Own etcd prefix and own service range: an object in one is not in the other."""
    ns = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "only-in-member1"}}
    ok(cp.request("member1", "POST", "/api/v1/namespaces", ns))
    assert cp.request("member2", "GET", "/api/v1/namespaces/only-in-member1")[0] == 404
    for cluster, cidr in zip(CLUSTERS, ("10.96.0.0/16", "10.97.0.0/16"), strict=True):
        svc = {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"ports": [{"port": 80}], "selector": {"app": "web"}},
        }
        made = ok(cp.request(cluster, "POST", "/api/v1/namespaces/default/services", svc))
        assert ip_address(made["spec"]["clusterIP"]) in ip_network(cidr)


def test_kubeconfig_has_one_context_per_cluster(cp: ControlPlane) -> None:
    config = yaml.safe_load(cp.kubeconfig_path.read_text())
    assert [c["name"] for c in config["contexts"]] == list(CLUSTERS)
    servers = {c["name"]: c["cluster"]["server"] for c in config["clusters"]}
    assert servers == cp.servers


def test_kubeconfig_works_with_lightkube(cp: ControlPlane) -> None:
    config = lightkube.KubeConfig.from_file(cp.kubeconfig_path)
    for cluster in CLUSTERS:
        client = lightkube.Client(config.get(context_name=cluster))
        try:
            names = {ns.metadata.name for ns in client.list(Namespace) if ns.metadata}
        finally:
            client.close()
        assert {"default", "kube-system"} <= names


def test_unprivileged_user_is_bound_by_rbac(cp: ControlPlane) -> None:
    config = yaml.safe_load(cp.user_kubeconfig().read_text())
    token = config["users"][0]["user"]["token"]
    assert token == cp.user_token != cp.admin_token
    path = "/api/v1/namespaces/default/configmaps"
    assert cp.request("member1", "GET", path, token=token)[0] == 403
    rbac = "/apis/rbac.authorization.k8s.io/v1/namespaces/default"
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {"name": "cm-reader", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "cm-reader", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-reader"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}],
    }
    ok(cp.request("member1", "POST", f"{rbac}/roles", role))
    ok(cp.request("member1", "POST", f"{rbac}/rolebindings", binding))
    wait_for("alice may list", lambda: cp.request("member1", "GET", path, token=token)[0] == 200)
    assert cp.request("member2", "GET", path, token=token)[0] == 403
    assert cp.request("member1", "GET", "/api/v1/namespaces", token=token)[0] == 403


# -- (b) the CRDs ---------------------------------------------------------


def test_crds_are_established_everywhere(cp: ControlPlane, crds: dict[str, Any]) -> None:
    for cluster in CLUSTERS:
        for name in CRD_NAMES:
            assert established(cp, cluster, name)
            crd = ok(cp.request(cluster, "GET", f"{CRD_API}/{name}"))
            served = {v["name"]: (v["served"], v["storage"]) for v in crd["spec"]["versions"]}
            assert served == {"v1alpha1": (True, False), "v1beta1": (True, True)}
            assert crd["status"]["storedVersions"] == ["v1beta1"]
    discovery = ok(cp.request("member1", "GET", f"{MCS}/v1beta1"))
    short = {r["name"]: sorted(r.get("shortNames", [])) for r in discovery["resources"]}
    assert short["serviceimports"] == ["svcim", "svcimport"]
    assert short["serviceexports"] == ["svcex", "svcexport"]
    assert {"serviceimports/status", "serviceexports/status"} <= set(short)


def test_approval_annotation_is_what_makes_about_k8s_io_acceptable(
    cp: ControlPlane, crds: dict[str, Any]
) -> None:
    doc = copy.deepcopy(crds["clusterproperties.about.k8s.io"])
    del doc["metadata"]["annotations"]
    doc["metadata"]["name"] = "widgets.about.k8s.io"
    doc["spec"]["names"] = {"kind": "Widget", "plural": "widgets", "listKind": "WidgetList"}
    status, body = cp.request("member1", "POST", CRD_API, doc)
    assert status == 422, body
    assert "api-approved.kubernetes.io" in body["message"]


def test_service_import_printer_columns(cp: ControlPlane, crds: dict[str, Any]) -> None:
    crd = ok(cp.request("member1", "GET", f"{CRD_API}/serviceimports.multicluster.x-k8s.io"))
    for version in crd["spec"]["versions"]:
        columns = [c["name"] for c in version["additionalPrinterColumns"]]
        assert columns == ["Type", "IP", "Age"]


# -- (c) v1beta1 written, v1alpha1 read -------------------------------------


def test_service_import_round_trips_between_versions(
    cp: ControlPlane, crds: dict[str, Any]
) -> None:
    obj = service_import(
        "round-trip",
        ips=["10.96.0.10"],
        ipFamilies=["IPv4"],
        sessionAffinity="ClientIP",
        sessionAffinityConfig={"clientIP": {"timeoutSeconds": 300}},
        internalTrafficPolicy="Cluster",
        trafficDistribution="PreferClose",
    )
    base = f"{MCS}/{{}}/namespaces/default/serviceimports"
    made = ok(cp.request("member1", "POST", base.format("v1beta1"), obj))
    assert made["spec"]["ports"] == [{"port": 80, "name": "http", "protocol": "TCP"}]

    old = ok(cp.request("member1", "GET", base.format("v1alpha1") + "/round-trip"))
    assert old["apiVersion"] == "multicluster.x-k8s.io/v1alpha1"
    assert old["spec"] == made["spec"]

    # Status through the subresource, written as v1alpha1, read as v1beta1.
    old["status"] = {
        "clusters": [{"cluster": "member1"}, {"cluster": "member2"}],
        "conditions": [
            {
                "type": "Ready",
                "status": "True",
                "reason": "Exported",
                "message": "",
                "lastTransitionTime": "2026-01-01T00:00:00Z",
            }
        ],
    }
    url = base.format("v1alpha1") + "/round-trip/status"
    ok(cp.request("member1", "PUT", url, old))
    new = ok(cp.request("member1", "GET", base.format("v1beta1") + "/round-trip"))
    assert [c["cluster"] for c in new["status"]["clusters"]] == ["member1", "member2"]
    assert new["status"]["conditions"][0]["reason"] == "Exported"
    assert "round-trip" not in {
        i["metadata"]["name"]
        for i in ok(cp.request("member2", "GET", base.format("v1beta1")))["items"]
    }


def test_service_export_and_cluster_property(cp: ControlPlane, crds: dict[str, Any]) -> None:
    export: dict[str, Any] = {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceExport",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"exportedLabels": {"tier": "web"}, "exportedAnnotations": {"a": "b"}},
    }
    url = f"{MCS}/v1beta1/namespaces/default/serviceexports"
    ok(cp.request("member2", "POST", url, export))
    old = ok(cp.request("member2", "GET", f"{MCS}/v1alpha1/namespaces/default/serviceexports/web"))
    # The schema defaults KEP-5939's fallback policy, as the KEP's kubebuilder marker does.
    assert old["spec"] == {**export["spec"], "clusterSelectorsFallbackPolicy": "AllClusters"}

    prop = {
        "apiVersion": "about.k8s.io/v1beta1",
        "kind": "ClusterProperty",
        "metadata": {"name": "cluster.clusterset.k8s.io"},
        "spec": {"value": "member2"},
    }
    ok(cp.request("member2", "POST", "/apis/about.k8s.io/v1beta1/clusterproperties", prop))
    url = "/apis/about.k8s.io/v1alpha1/clusterproperties/cluster.clusterset.k8s.io"
    assert ok(cp.request("member2", "GET", url))["spec"] == {"value": "member2"}
    assert cp.request("member1", "GET", url)[0] == 404


# -- (d) the schema rejects what is invalid ---------------------------------


INVALID_IMPORTS = {
    "type Foo": service_import("bad-type", type="Foo"),
    "three ips": service_import("bad-ips", ips=["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
    "no ports": {**service_import("bad-ports"), "spec": {"type": "ClusterSetIP"}},
    "no type": {**service_import("bad-no-type"), "spec": {"ports": [{"port": 80}]}},
    "port without number": service_import("bad-port", ports=[{"name": "http"}]),
    "protocol ICMP": service_import("bad-proto", ports=[{"port": 1, "protocol": "ICMP"}]),
    "ip family IPv5": service_import("bad-family", ipFamilies=["IPv5"]),
    "three ip families": service_import("bad-families", ipFamilies=["IPv4", "IPv6", "IPv4"]),
    "affinity Sticky": service_import("bad-affinity", sessionAffinity="Sticky"),
    "traffic policy Global": service_import("bad-itp", internalTrafficPolicy="Global"),
}


@pytest.mark.parametrize("case", sorted(INVALID_IMPORTS))
def test_invalid_service_import_is_rejected(
    cp: ControlPlane, crds: dict[str, Any], case: str
) -> None:
    obj = INVALID_IMPORTS[case]
    for version in ("v1beta1", "v1alpha1"):
        body = {**obj, "apiVersion": f"multicluster.x-k8s.io/{version}"}
        url = f"{MCS}/{version}/namespaces/default/serviceimports"
        status, answer = cp.request("member1", "POST", url, body)
        assert status == 422, f"{case} ({version}) was accepted: {answer}"
        assert answer["reason"] == "Invalid"


def test_invalid_status_and_property_are_rejected(cp: ControlPlane, crds: dict[str, Any]) -> None:
    url = "/apis/about.k8s.io/v1beta1/clusterproperties"
    for spec in ({}, {"value": ""}, {"value": 7}):
        prop = {
            "apiVersion": "about.k8s.io/v1beta1",
            "kind": "ClusterProperty",
            "metadata": {"name": "clusterset.k8s.io"},
            "spec": spec,
        }
        assert cp.request("member1", "POST", url, prop)[0] == 422, spec

    base = f"{MCS}/v1beta1/namespaces/default/serviceimports"
    made = ok(cp.request("member1", "POST", base, service_import("status-check")))
    made["status"] = {"conditions": [{"type": "Ready", "status": "Maybe"}]}
    status, answer = cp.request("member1", "PUT", f"{base}/status-check/status", made)
    assert status == 422, answer


# -- (e) an apiserver restart ------------------------------------------------


def test_apiserver_restart_keeps_port_and_data(cp: ControlPlane, crds: dict[str, Any]) -> None:
    url = f"{MCS}/v1beta1/namespaces/default/serviceimports"
    ok(cp.request("member2", "POST", url, service_import("survives-restart")))
    before = cp.servers["member2"]
    port = int(before.rsplit(":", 1)[1])

    cp.stop_cluster("member2")
    try:
        assert not cp.is_running("member2")
        with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
            pass
        assert cp.request("member1", "GET", "/readyz")[0] == 200
    finally:
        cp.start_cluster("member2")

    assert cp.servers["member2"] == before
    assert cp.request("member2", "GET", "/readyz")[0] == 200
    names = {i["metadata"]["name"] for i in ok(cp.request("member2", "GET", url))["items"]}
    assert "survives-restart" in names


# -- (f) compaction and 410 Gone -----------------------------------------------


def first_watch_event(cp: ControlPlane, cluster: str, path: str) -> tuple[int, dict[str, Any]]:
    """Open a watch; return (HTTP status, the first event or the error Status)."""
    req = urllib.request.Request(
        cp.servers[cluster] + path,
        headers={"Authorization": f"Bearer {cp.admin_token}", "Accept": "application/json"},
    )
    ctx: ssl.SSLContext = cp.ssl_context()
    try:
        with urllib.request.urlopen(req, timeout=15, context=ctx) as resp:
            line = resp.readline()
            return resp.status, json.loads(line) if line else {}
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read() or b"{}")


def is_gone(answer: tuple[int, dict[str, Any]]) -> bool:
    status, body = answer
    if status == 410:
        return True
    return body.get("type") == "ERROR" and body.get("object", {}).get("code") == 410


@pytest.mark.parametrize(
    "collection",
    [
        "/api/v1/namespaces/default/configmaps",
        f"{MCS}/v1beta1/namespaces/default/serviceimports",
    ],
)
def test_watch_from_compacted_revision_is_gone(
    cp: ControlPlane, crds: dict[str, Any], collection: str
) -> None:
    assert not cp.watch_cache
    kind = "ConfigMap" if "configmaps" in collection else "ServiceImport"
    tag = f"compact-{kind.lower()}"

    def make(i: int) -> dict[str, Any]:
        if kind == "ConfigMap":
            return {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": f"{tag}-{i}", "namespace": "default"},
                "data": {"i": str(i)},
            }
        return service_import(f"{tag}-{i}")

    first = ok(cp.request("member1", "POST", collection, make(0)))
    old_rv = first["metadata"]["resourceVersion"]
    for i in range(1, 4):
        ok(cp.request("member1", "POST", collection, make(i)))

    # Before compaction the old revision is still watchable.
    answer = first_watch_event(
        cp, "member1", f"{collection}?watch=1&resourceVersion={old_rv}&timeoutSeconds=5"
    )
    assert answer[0] == 200 and answer[1]["type"] == "ADDED", answer

    revision = cp.compact_etcd()
    assert revision > int(old_rv)
    answer = first_watch_event(
        cp, "member1", f"{collection}?watch=1&resourceVersion={old_rv}&timeoutSeconds=5"
    )
    assert is_gone(answer), answer

    # What a client does next: relist, then watch from the list's version.
    listing = ok(cp.request("member1", "GET", collection))
    rv = listing["metadata"]["resourceVersion"]
    names = {i["metadata"]["name"] for i in listing["items"]}
    assert {f"{tag}-{i}" for i in range(4)} <= names

    ok(cp.request("member1", "POST", collection, make(4)))
    answer = first_watch_event(
        cp, "member1", f"{collection}?watch=1&resourceVersion={rv}&timeoutSeconds=5"
    )
    assert answer[0] == 200, answer
    assert answer[1]["type"] == "ADDED"
    assert answer[1]["object"]["metadata"]["name"] == f"{tag}-4"
