"""clusterset as users run it: the chart on real kubelets, real pods asking real CoreDNS pods.

tests/fleet.py brings up member1 and member2 (apiserver, controller-manager, scheduler, one
node each with containerd, kubelet and kube-proxy, CoreDNS as kubeadm deploys it); the
module's fixture installs clusterset the way docs/quickstart.md says (helm install in every
member, the controller in member1 with the chart's hub tokens, `clusterset wire-dns` on each
CoreDNS). Then the seed: `serve` runs in member1 only, and a pod in member2 curls
`serve.default.svc.clusterset.local:8080`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import eventually
from tests.fleet import Fleet, install_clusterset

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(900)]

CLIENT_IMAGE = "docker.io/nicolaka/netshoot:v0.15"
SERVE_IMAGE = "localhost/clusterset-fleet/serve:1"


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    with Fleet(("member1", "member2")) as f:
        install_clusterset(f)
        yield f


def serve_objects(
    cluster: str, replicas: int = 2, namespace: str = "default"
) -> list[dict[str, Any]]:
    """The seed article's `serve`: Deployment, Service on 8080, ServiceExport."""
    env = [
        {"name": "CLUSTER", "value": cluster},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    labels = {"app": "serve"}
    return [
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "serve", "namespace": namespace},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {"metadata": {"labels": labels}, "spec": {
                    "terminationGracePeriodSeconds": 5,
                    "containers": [{
                        "name": "serve", "image": SERVE_IMAGE, "imagePullPolicy": "Never",
                        "env": env, "ports": [{"containerPort": 8080, "name": "http"}],
                        "readinessProbe": {"httpGet": {"path": "/", "port": 8080},
                                           "periodSeconds": 1},
                    }],
                }},
            },
        },
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "serve", "namespace": namespace},
            "spec": {"selector": labels,
                     "ports": [{"name": "http", "port": 8080, "targetPort": 8080}]},
        },
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
            "metadata": {"name": "serve", "namespace": namespace},
        },
    ]  # fmt: skip


def client_pod(name: str = "client", namespace: str = "default") -> dict[str, Any]:
    """A pod with curl and dig, dnsPolicy ClusterFirst (the default): it asks kube-dns."""
    return {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "dnsPolicy": "ClusterFirst",
            "containers": [{"name": "client", "image": CLIENT_IMAGE, "imagePullPolicy": "Never",
                            "command": ["sleep", "infinity"]}],
        },
    }  # fmt: skip


def curl(fleet: Fleet, cluster: str, url: str, pod: str = "client") -> str:
    return fleet.exec(cluster, "default", pod, "curl", "-sS", "--max-time", "3", url)


def test_seed_curl_from_a_member2_pod_is_answered_by_member1(fleet: Fleet) -> None:
    fleet.apply("member1", *serve_objects("member1"))
    fleet.apply("member2", client_pod())
    fleet.wait_rollout("member1", "default", "deployment/serve")
    fleet.kubectl("member2", "wait", "--for=condition=Ready", "pod/client", "--timeout=90s")

    def imported() -> list[str]:
        out = fleet.kubectl("member2", "get", "serviceimports.multicluster.x-k8s.io", "serve",
                            "-o", "jsonpath={.spec.ips}", check=False)  # fmt: skip
        return [out] if out.strip() not in ("", "[]") else []

    eventually("member2's ServiceImport serve with spec.ips", imported, timeout=60)

    def answered() -> str:
        try:
            out = curl(fleet, "member2", "http://serve.default.svc.clusterset.local:8080/")
        except Exception as exc:
            raise AssertionError(str(exc)) from exc
        return out if "hello from cluster member1" in out else ""

    started = time.monotonic()
    out = eventually("curl from member2's pod answered by member1", answered, timeout=90)
    assert out.startswith("hello from cluster member1 (Node: member1-node Pod: serve-"), out
    print(f"seed curl answered after {time.monotonic() - started:.1f} s: {out.strip()}")
    # The answer came through kube-dns (CoreDNS pods, wired by wire-dns) and kube-proxy:
    # member2's pod resolves the name to the ClusterSetIP, the derived Service's ClusterIP.
    ips = fleet.kubectl("member2", "get", "serviceimports.multicluster.x-k8s.io", "serve",
                        "-o", "jsonpath={.spec.ips[0]}")  # fmt: skip
    resolved = fleet.exec("member2", "default", "client", "dig", "+short",
                          "serve.default.svc.clusterset.local")  # fmt: skip
    assert resolved.split() == [ips], (resolved, ips)
