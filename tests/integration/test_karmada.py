"""`--karmada-kubeconfig`: the member list from Karmada's Cluster objects, each member reached
through Karmada's cluster proxy, with one kubeconfig.

The session control plane's member3 plays the Karmada control plane: it serves a minimal
cluster.karmada.io/v1alpha1 Cluster CRD holding Cluster objects member1 and member2. In front
of it, tests/karmada_proxy.py (a hand-written stand-in for Karmada's aggregated cluster proxy)
forwards `/apis/cluster.karmada.io/v1alpha1/clusters/<name>/proxy/...` to member <name>'s real
apiserver, and everything else to member3. The controller is given only a kubeconfig for the
proxy.
"""

from __future__ import annotations

import base64
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import eventually
from tests.controlplane import ControlPlane
from tests.integration.test_kube import MCS, apply, export_service, get
from tests.integration.test_kube_faults import Controller, conditions, controller
from tests.karmada_proxy import KarmadaProxy

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]
KARMADA = "member3"  # the apiserver that plays the Karmada control plane
NS = "karmada-e2e"

CLUSTER_CRD: dict[str, Any] = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "clusters.cluster.karmada.io"},
    "spec": {
        "group": "cluster.karmada.io",
        "names": {
            "kind": "Cluster",
            "listKind": "ClusterList",
            "plural": "clusters",
            "singular": "cluster",
        },
        "scope": "Cluster",
        "versions": [
            {
                "name": "v1alpha1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {
                        "type": "object",
                        "properties": {
                            "spec": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                            "status": {
                                "type": "object",
                                "x-kubernetes-preserve-unknown-fields": True,
                            },
                        },
                    }
                },
                "subresources": {"status": {}},
            }
        ],
    },
}


def install_cluster_crd(cp: ControlPlane) -> None:
    apply(
        cp,
        KARMADA,
        "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/clusters.cluster.karmada.io",
        CLUSTER_CRD,
    )
    eventually(
        "cluster.karmada.io served",
        lambda: cp.request(KARMADA, "GET", "/apis/cluster.karmada.io/v1alpha1/clusters")[0] == 200,
    )
    for name in ("member1", "member2"):
        apply(
            cp,
            KARMADA,
            f"/apis/cluster.karmada.io/v1alpha1/clusters/{name}",
            {
                "apiVersion": "cluster.karmada.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": name},
                "spec": {"apiEndpoint": cp.servers[name], "syncMode": "Push"},
            },
        )


def karmada_kubeconfig(path: Path, cp: ControlPlane, server: str) -> Path:
    ca = base64.b64encode(cp.ca_path.read_bytes()).decode()
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "karmada-apiserver",
                        "cluster": {"server": server, "certificate-authority-data": ca},
                    }
                ],
                "users": [{"name": "karmada-admin", "user": {"token": cp.admin_token}}],
                "contexts": [
                    {
                        "name": "karmada-apiserver",
                        "context": {"cluster": "karmada-apiserver", "user": "karmada-admin"},
                    }
                ],
                "current-context": "karmada-apiserver",
            },
            sort_keys=False,
        )
    )
    path.chmod(0o600)
    return path


@pytest.fixture(scope="module")
def karmada(control_plane: ControlPlane) -> Iterator[KarmadaProxy]:
    cp = control_plane
    install_cluster_crd(cp)
    pki = cp.workdir / "pki"
    with KarmadaProxy(
        karmada=cp.servers[KARMADA],
        members={n: cp.servers[n] for n in ("member1", "member2")},
        token=cp.admin_token,
        member_token=cp.admin_token,
        ca=cp.ca_path,
        cert=pki / "serving.crt",
        key=pki / "serving.key",
    ) as proxy:
        yield proxy


def test_proxy_stand_in_answers_like_karmada(
    control_plane: ControlPlane, karmada: KarmadaProxy
) -> None:
    """The fixture itself: Cluster list from the control plane, a member's API through the
    proxy path, 404 for an unknown member, 401 without the token."""
    import json
    import urllib.error
    import urllib.request

    ctx = control_plane.ssl_context()

    def call(path: str, token: str | None = control_plane.admin_token) -> tuple[int, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        req = urllib.request.Request(karmada.url + path, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=10, context=ctx) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as err:
            with err:
                return err.code, json.loads(err.read())

    status, clusters = call("/apis/cluster.karmada.io/v1alpha1/clusters")
    assert status == 200
    assert sorted(c["metadata"]["name"] for c in clusters["items"]) == ["member1", "member2"]
    proxy = "/apis/cluster.karmada.io/v1alpha1/clusters"
    status, ns = call(f"{proxy}/member2/proxy/api/v1/namespaces/kube-system")
    assert (status, ns["metadata"]["name"]) == (200, "kube-system")
    assert call(f"{proxy}/member9/proxy/api/v1/namespaces")[0] == 404
    assert call(f"{proxy}/member1/proxy/api/v1/namespaces", token=None)[0] == 401


def test_controller_through_karmada_imports_into_members(
    control_plane: ControlPlane, karmada: KarmadaProxy, tmp_path: Path
) -> None:
    cp = control_plane
    kk = karmada_kubeconfig(tmp_path / "karmada.yaml", cp, karmada.url)
    for c in ("member1", "member2"):
        apply(
            cp,
            c,
            f"/api/v1/namespaces/{NS}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}},
        )
    export_service(
        cp,
        "member1",
        NS,
        "kweb",
        endpoints=[{"addresses": ["10.244.7.7"], "conditions": {"ready": True}}],
    )
    ctl: Controller
    with controller(
        tmp_path / "controller.log",
        "--karmada-kubeconfig",
        str(kk),
        "--lease-name",
        "karmada-e2e",
    ) as ctl:

        def imported() -> Any:
            ctl.check_alive()
            si = get(cp, "member2", f"{MCS}/namespaces/{NS}/serviceimports/kweb")
            return si if si and si["spec"].get("ips") else None

        si = eventually("kweb imported into member2 through the Karmada proxy", imported, 60)
        assert si["status"]["clusters"] == [{"cluster": "member1"}]
        assert si["spec"]["ips"][0].startswith("10.97.")  # member2's own apiserver allocated it
        derived = si["metadata"]["annotations"]["multicluster.kubernetes.io/derived-service"]
        svc = get(cp, "member2", f"/api/v1/namespaces/{NS}/services/{derived}")
        assert svc["spec"]["clusterIP"] == si["spec"]["ips"][0]
        slices = get(
            cp,
            "member2",
            f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
            "?labelSelector=multicluster.kubernetes.io/service-name%3Dkweb",
        )["items"]
        assert [
            (s["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"],
             [e["addresses"] for e in s["endpoints"]])
            for s in slices
        ] == [("member1", [["10.244.7.7"]])]  # fmt: skip
        conds = eventually(
            "ServiceExport conditions written through the proxy",
            lambda: conditions(cp, "member1", NS, "kweb") or None,
        )
        assert conds == {
            "Valid": ("True", "Valid"),
            "Ready": ("True", "Exported"),
            "Conflict": ("False", "NoConflicts"),
        }
        # member3 is the Karmada control plane, not a member: nothing is written there.
        assert get(cp, KARMADA, f"{MCS}/namespaces/{NS}/serviceimports/kweb") is None
        # Every member request went through the proxy path, watches included.
        seen = {(c, m) for c, m, p in karmada.requests if "watch=1" in p}
        assert {("member1", "GET"), ("member2", "GET")} <= seen
        assert any(c == "karmada" and "/clusters" in p for c, _, p in karmada.requests)
        # Unexport: the hub removes what it made, still through the proxy.
        status, _ = cp.request("member1", "DELETE", f"{MCS}/namespaces/{NS}/serviceexports/kweb")
        assert status == 200
        eventually(
            "kweb import removed from member2",
            lambda: get(cp, "member2", f"{MCS}/namespaces/{NS}/serviceimports/kweb") is None,
        )
    assert "Traceback" not in ctl.output(), ctl.output()[-3000:]


def test_karmada_without_the_named_cluster_is_a_usage_error(
    control_plane: ControlPlane, karmada: KarmadaProxy, tmp_path: Path
) -> None:
    kk = karmada_kubeconfig(tmp_path / "karmada.yaml", control_plane, karmada.url)
    done = subprocess.run(
        [sys.executable, "-m", "clusterset", "controller", "--karmada-kubeconfig", str(kk),
         "--context", "member9"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Karmada has no cluster member9" in done.stderr
