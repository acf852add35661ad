"""Cluster loss: per-source-cluster liveness Leases written by the hub, read by member DNS.
A killed member apiserver stops its lease; after the grace its endpoints stop being answered,
nothing is deleted, and they return when it comes back. Also remote-only consumption."""

from __future__ import annotations

import time
from typing import Any

import dns.rcode
import pytest

from tests.conftest import eventually
from tests.controlplane import ControlPlane
from tests.integration.servers import free_port, query, wait_answering
from tests.integration.test_kube import MCS, export_service, get, process

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]


def answers(port: int, name: str) -> list[str]:
    r = query(port, name)
    if r.rcode() != dns.rcode.NOERROR or not r.answer:
        return []
    return sorted(rd.address for rd in r.answer[0])


def test_killed_source_apiserver_expires_its_endpoints_without_deleting(
    control_plane: ControlPlane,
) -> None:
    cp = control_plane
    export_service(
        cp,
        "member1",
        "default",
        "hl",
        headless=True,
        endpoints=[
            {"addresses": ["10.244.9.1"], "hostname": "hl-0", "conditions": {"ready": True}}
        ],
    )
    export_service(
        cp,
        "member3",
        "default",
        "hl",
        headless=True,
        endpoints=[
            {"addresses": ["10.246.9.1"], "hostname": "hl-0", "conditions": {"ready": True}}
        ],
    )
    port = free_port()
    with (
        process(
            "controller",
            "--kubeconfig",
            str(cp.kubeconfig_path),
            "--context",
            "member1",
            "--context",
            "member2",
            "--context",
            "member3",
            "--lease-context",
            "member2",
        ),
        process(
            "dns",
            "--kubeconfig",
            str(cp.kubeconfig_path),
            "--context",
            "member2",
            "--listen",
            f"127.0.0.1:{port}",
            "--lease-grace",
            "4",
        ),
    ):
        wait_answering(port, timeout=60)
        name = "hl.default.svc.clusterset.local"
        eventually(
            "both clusters answered",
            lambda: answers(port, name) == ["10.244.9.1", "10.246.9.1"],
            timeout=60,
        )

        def sources() -> set[str]:
            leases = get(
                cp,
                "member2",
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
                "?labelSelector=clusterset.io/source-cluster",
            )["items"]
            return {item["metadata"]["labels"]["clusterset.io/source-cluster"] for item in leases}

        eventually(
            "a liveness Lease per source in member2",
            lambda: sources() == {"member1", "member2", "member3"},
        )
        cp.stop_cluster("member1")
        killed = time.monotonic()
        try:
            eventually(
                "member1's endpoints expire",
                lambda: answers(port, name) == ["10.246.9.1"],
                timeout=30,
            )
            expired_after = time.monotonic() - killed
            print(
                f"apiserver killed -> endpoints expired: {expired_after:.1f}s (grace 4s, renew 5s)"
            )
            slices = get(
                cp,
                "member2",
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                "?labelSelector=multicluster.kubernetes.io/source-cluster%3Dmember1",
            )["items"]
            assert any(
                s["metadata"]["labels"]["multicluster.kubernetes.io/service-name"] == "hl"
                for s in slices
            ), "deleted!"
        finally:
            cp.start_cluster("member1")
        eventually(
            "member1's endpoints return",
            lambda: answers(port, name) == ["10.244.9.1", "10.246.9.1"],
            timeout=60,
        )


def test_remote_only_consumption_creates_the_namespace(control_plane: ControlPlane) -> None:
    cp = control_plane
    export_service(cp, "member1", "remote-only", "api")
    assert get(cp, "member2", "/api/v1/namespaces/remote-only") is None
    with process(
        "controller",
        "--kubeconfig",
        str(cp.kubeconfig_path),
        "--context",
        "member1",
        "--context",
        "member2",
        "--create-namespaces",
        "--no-leader-elect",
    ):
        si: Any = eventually(
            "import in a namespace member2 never had",
            lambda: get(cp, "member2", f"{MCS}/namespaces/remote-only/serviceimports/api"),
            timeout=60,
        )
        assert si["spec"]["type"] == "ClusterSetIP"
        ns = get(cp, "member2", "/api/v1/namespaces/remote-only")
        assert ns["metadata"]["labels"]["clusterset.io/managed"] == "true"
