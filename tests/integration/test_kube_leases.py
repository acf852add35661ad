"""Cluster loss: per-source-cluster liveness Leases written by the hub, read by member DNS.
A killed member apiserver stops its lease; once the Lease expires (renewTime +
leaseDurationSeconds) its endpoints stop being answered, nothing is deleted, and they return
when it comes back. While the hub is healthy nothing flaps. Also remote-only consumption."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.rcode
import pytest
import yaml

from tests.conftest import eventually
from tests.controlplane import ControlPlane
from tests.integration.servers import free_port, query, wait_answering
from tests.integration.test_kube import MCS, apply, export_service, get, process

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]


def answers(port: int, name: str) -> list[str]:
    r = query(port, name)
    if r.rcode() != dns.rcode.NOERROR or not r.answer:
        return []
    return sorted(rd.address for rd in r.answer[0])


@contextmanager
def logged(*args: str) -> Iterator[Callable[[], str]]:
    """A clusterset process whose output the test reads (the callable returns it so far)."""
    log = tempfile.NamedTemporaryFile(prefix="clusterset-", suffix=".log")
    proc = subprocess.Popen([sys.executable, "-m", "clusterset", *args], stdout=log, stderr=log)

    def output() -> str:
        return Path(log.name).read_text(errors="replace")

    try:
        yield output
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


# Short liveness Leases: the hub renews every quarter of them (1 s); the DNS server uses the
# Leases' own leaseDurationSeconds (no --lease-grace), as the defaults (40 s / 10 s) would.
LEASE = ("--source-lease-duration", "4")


def hub_and_member2_dns(cp: ControlPlane, port: int) -> tuple[list[str], list[str]]:
    controller = [
        "controller",
        "--kubeconfig",
        str(cp.kubeconfig_path),
        *("--context", "member1", "--context", "member2", "--context", "member3"),
        *("--lease-context", "member2", *LEASE),
    ]
    dns = [
        "dns",
        *("--kubeconfig", str(cp.kubeconfig_path), "--context", "member2"),
        *("--listen", f"127.0.0.1:{port}", *LEASE),
    ]
    return controller, dns


def steady(port: int, name: str, want: list[str], seconds: float) -> None:
    """Every answer for `seconds` (polled every 50 ms) is `want`: nothing flaps."""
    wrong, polls = 0, 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        polls += 1
        got = answers(port, name)
        wrong += got != want
        time.sleep(0.05)
    assert wrong == 0, f"{wrong} of {polls} answers were not {want} while the hub was healthy"


def conditions_of(cp: ControlPlane, consumer: str, svc: str, source: str) -> list[Any]:
    """(ready, serving) of every endpoint of `source` in `consumer`'s MCS slices of `svc`;
    None when the slices are gone."""
    slices = get(
        cp,
        consumer,
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        f"?labelSelector=multicluster.kubernetes.io/source-cluster%3D{source},"
        f"multicluster.kubernetes.io/service-name%3D{svc}",
    )["items"]
    assert slices, f"{consumer}'s MCS slices of {svc} from {source} deleted!"
    return [
        (e.get("conditions", {}).get("ready"), e.get("conditions", {}).get("serving"))
        for s in slices
        for e in s.get("endpoints") or []
    ]


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
    controller, dns = hub_and_member2_dns(cp, port)
    with logged(*controller), logged(*dns) as dns_output:
        wait_answering(port, timeout=60)
        name = "hl.default.svc.clusterset.local"
        both = ["10.244.9.1", "10.246.9.1"]
        eventually("both clusters answered", lambda: answers(port, name) == both, timeout=60)

        def sources() -> set[str]:
            leases = get(
                cp,
                "member2",
                "/apis/coordination.k8s.io/v1/namespaces/kube-system/leases"
                "?labelSelector=clusterset.io/source-cluster",
            )["items"]
            assert {item["spec"]["leaseDurationSeconds"] for item in leases} <= {4}
            return {item["metadata"]["labels"]["clusterset.io/source-cluster"] for item in leases}

        eventually(
            "a liveness Lease per source in member2",
            lambda: sources() == {"member1", "member2", "member3"},
        )
        # Healthy hub, leases of 4 s renewed every 1 s: two whole lease durations, no flap.
        steady(port, name, both, 8.0)
        cp.stop_cluster("member1")
        killed = time.monotonic()
        try:
            # Expired by renewTime + leaseDurationSeconds: within 4 s of the last renewal
            # (plus the 1-s renewal interval and the watch), not after a fixed 30-s grace.
            eventually(
                "member1's endpoints expire",
                lambda: answers(port, name) == ["10.246.9.1"],
                timeout=12,
            )
            expired_after = time.monotonic() - killed
            print(f"apiserver killed -> endpoints expired: {expired_after:.1f}s (lease 4s)")
            # The data path follows the Lease: member1's endpoints in member2's MCS slices
            # (what kube-proxy routes the ClusterSetIP by) are out of service, not deleted.
            eventually(
                "member1's endpoints in member2's slices neither ready nor serving",
                lambda: conditions_of(cp, "member2", "hl", "member1") == [(False, False)],
                timeout=12,
            )
            print(f"apiserver killed -> out of the data path: {time.monotonic() - killed:.1f}s")
            assert conditions_of(cp, "member2", "hl", "member3") == [(True, None)]  # as exported
        finally:
            cp.start_cluster("member1")
        eventually("member1's endpoints return", lambda: answers(port, name) == both, timeout=60)
        eventually(
            "member1's endpoints back in service in member2's slices",
            lambda: conditions_of(cp, "member2", "hl", "member1") == [(True, None)],
        )
        out = dns_output()
        assert "unknown kind" not in out, out[-2000:]  # issue 11 item 18
        assert "Traceback" not in out, out[-4000:]


def test_local_first_returns_to_its_own_copy_with_a_healthy_hub(
    control_plane: ControlPlane,
) -> None:
    """Issue 11 item 19: lease lapses between renewals restarted the hysteresis, so a
    recovered local copy was never preferred again."""
    cp = control_plane
    ready = [{"addresses": ["10.244.8.1"], "conditions": {"ready": True}}]
    export_service(cp, "member1", "default", "lf", endpoints=ready)
    export_service(
        cp, "member2", "default", "lf", endpoints=[{**ready[0], "addresses": ["10.245.8.1"]}]
    )
    for member in ("member1", "member2"):
        apply(
            cp,
            member,
            f"{MCS}/namespaces/default/serviceexports/lf",
            {
                "apiVersion": "multicluster.x-k8s.io/v1beta1",
                "kind": "ServiceExport",
                "metadata": {
                    "name": "lf",
                    "namespace": "default",
                    "annotations": {
                        "clusterset.io/dns-policy": "local-first",
                        "clusterset.io/hysteresis": "3",
                    },
                },
            },
        )
    own = get(cp, "member2", "/api/v1/namespaces/default/services/lf")["spec"]["clusterIP"]
    port = free_port()
    controller, dns = hub_and_member2_dns(cp, port)
    name = "lf.default.svc.clusterset.local"

    def member2_ready(ok: bool) -> None:
        apply(
            cp,
            "member2",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/lf-abc",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": "lf-abc",
                    "namespace": "default",
                    "labels": {"kubernetes.io/service-name": "lf"},
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.245.8.1"], "conditions": {"ready": ok}}],
            },
        )

    with logged(*controller), logged(*dns):
        wait_answering(port, timeout=60)
        clusterset_ip: Any = eventually(
            "the ServiceImport has its ClusterSetIP",
            lambda: (
                (get(cp, "member2", f"{MCS}/namespaces/default/serviceimports/lf") or {})
                .get("spec", {})
                .get("ips")
            ),
            timeout=60,
        )
        eventually("the local copy answers", lambda: answers(port, name) == [own], timeout=60)
        member2_ready(False)
        eventually(
            "failover to the ClusterSetIP",
            lambda: answers(port, name) == sorted(clusterset_ip),
            timeout=30,
        )
        member2_ready(True)
        recovered = time.monotonic()
        eventually("back to the local copy", lambda: answers(port, name) == [own], timeout=20)
        back_after = time.monotonic() - recovered
        assert back_after >= 2.5, f"preferred again after {back_after:.1f}s: before hysteresis"
        print(f"local copy ready -> answered again after {back_after:.1f}s (hysteresis 3s)")
        steady(port, name, [own], 6.0)


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


def in_cluster_kubeconfig(cp: ControlPlane, cluster: str) -> Path:
    """`cluster`'s kubeconfig with its context named `in-cluster`, as the chart writes it."""
    path = cp.context_kubeconfig(cluster)
    config = yaml.safe_load(path.read_text())
    for ctx in config["contexts"]:
        ctx["name"] = "in-cluster"
    config["current-context"] = "in-cluster"
    path.write_text(yaml.safe_dump(config))
    return path


def ready_text(mport: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{mport}/ready", timeout=5) as r:
        return str(r.read().decode())


def test_member_dns_learns_its_cluster_id_without_being_told(
    control_plane: ControlPlane,
) -> None:
    """Issue 19: the chart's member DNS (context `in-cluster`, no --cluster) answered a
    local-first service by its ClusterSetIP, silently. Now it takes its ID from the hub's
    Leases, and from the cluster's ClusterProperty once there is one; /ready says which."""
    cp = control_plane
    ready = [{"addresses": ["10.244.9.1"], "conditions": {"ready": True}}]
    for member, ip in (("member1", "10.244.9.1"), ("member2", "10.245.9.1")):
        export_service(cp, member, "default", "who", endpoints=[{**ready[0], "addresses": [ip]}])
        apply(cp, member, f"{MCS}/namespaces/default/serviceexports/who", {
            "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
            "metadata": {"name": "who", "namespace": "default",
                         "annotations": {"clusterset.io/dns-policy": "local-first"}},
        })  # fmt: skip
    own = get(cp, "member2", "/api/v1/namespaces/default/services/who")["spec"]["clusterIP"]
    port, mport = free_port(), free_port()
    controller, _ = hub_and_member2_dns(cp, port)
    # --ns-service as the chart passes it: here `who` plays the DNS's own Service.
    dns = ["dns", "--kubeconfig", str(in_cluster_kubeconfig(cp, "member2")),
           "--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}", *LEASE,
           "--ns-service", "default/who"]  # fmt: skip
    name = "who.default.svc.clusterset.local"
    # Earlier tests' hubs left their Leases in member2: the DNS must start without one.
    cp.request("member2", "DELETE", "/apis/coordination.k8s.io/v1/namespaces/kube-system/"
               "leases?labelSelector=clusterset.io%2Fsource-cluster")  # fmt: skip
    prop_path = "/apis/about.k8s.io/v1beta1/clusterproperties/cluster.clusterset.k8s.io"
    with logged(*dns) as dns_output:
        wait_answering(port, timeout=60)
        eventually("the guess is said", lambda: "a guess" in dns_output(), timeout=30)
        # The apex NS's glue: the Service's ClusterIP (it had none without --ns-address).
        assert answers(port, "ns.dns.clusterset.local") == [own]
        assert "cluster ID: in-cluster (from the kubeconfig context name" in ready_text(mport)
        with logged(*controller):
            eventually("the local copy answers", lambda: answers(port, name) == [own], timeout=60)
            about = ready_text(mport)
            assert about.startswith("OK\ncluster ID: member2 (from the hub's Lease kube-system/"), (
                about
            )
            apply(cp, "member2", prop_path, {
                "apiVersion": "about.k8s.io/v1beta1", "kind": "ClusterProperty",
                "metadata": {"name": "cluster.clusterset.k8s.io"}, "spec": {"value": "member2"},
            })  # fmt: skip
            try:
                eventually(
                    "the ClusterProperty is the source",
                    lambda: "(from ClusterProperty cluster.clusterset.k8s.io)" in ready_text(mport),
                    timeout=30,
                )
                assert answers(port, name) == [own]
            finally:
                cp.request("member2", "DELETE", prop_path)
        assert "Traceback" not in dns_output(), dns_output()[-3000:]
