"""Local-first answers on the live server, and the unified cluster.local mode between real
resolvers: knotd plays kube-dns behind us, unbound plays the cluster DNS in front."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import dns.flags
import dns.rcode
import pytest

from tests.integration.servers import (
    ROOT,
    clusterset,
    knotd_serving,
    query,
    unbound_stub,
)

pytestmark = pytest.mark.integration

LOCAL_IP = "10.97.12.34"  # member2's own Service ClusterIP in examples/failover
NAME = "serve.default.svc.clusterset.local"
UNIFIED = "serve.default.svc.cluster.local"
KUBE_DNS_ZONE = """\
$ORIGIN cluster.local.
$TTL 5
@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 5
@ IN NS ns.dns.cluster.local.
ns.dns IN A 127.0.0.1
serve.default.svc IN A 10.97.12.34
kubernetes.default.svc IN A 10.97.0.1
"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "clusters"
    shutil.copytree(ROOT / "examples" / "failover", r)
    p = r / "member2" / "serve.yaml"
    p.write_text(
        p.read_text().replace('clusterset.io/hysteresis: "10"', 'clusterset.io/hysteresis: "2"')
    )
    (r / "member1" / "serve.yaml").write_text(
        (r / "member1" / "serve.yaml")
        .read_text()
        .replace('clusterset.io/hysteresis: "10"', 'clusterset.io/hysteresis: "2"')
    )
    return r


@pytest.fixture
def kube_dns(tmp_path: Path):  # type: ignore[no-untyped-def]
    """knotd playing the cluster's kube-dns for cluster.local; yields its port."""
    knot_dir = tmp_path / "knot"
    knot_dir.mkdir()
    with knotd_serving("cluster.local", KUBE_DNS_ZONE, knot_dir) as port:
        yield port


def set_member2_ready(root: Path, ready: bool) -> None:
    p = root / "member2" / "serve.yaml"
    text = p.read_text()
    a, b = ("ready: true", "ready: false") if not ready else ("ready: false", "ready: true")
    p.write_text(text.replace(a, b))


def answer(port: int, name: str = NAME) -> str:
    r = query(port, name)
    assert r.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(r.rcode())
    return str(r.answer[0][0].address)


def wait_for(port: int, want: str, within: float, name: str = NAME) -> float:
    start = time.monotonic()
    seen = None
    while time.monotonic() - start < within:
        seen = answer(port, name)
        if seen == want:
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"{name} still {seen}, not {want}, after {within}s")


def test_readiness_flip_fails_over_within_a_second_and_returns_after_hysteresis(
    root: Path, tmp_path: Path
) -> None:
    with clusterset(
        "run",
        "--manifests",
        str(root),
        "--cluster",
        "member2",
        "--state-file",
        str(tmp_path / "alloc.json"),
    ) as (port, _):
        assert answer(port) == LOCAL_IP
        set_member2_ready(root, False)
        deadline = time.monotonic() + 1.0
        while (got := answer(port)) == LOCAL_IP:
            assert time.monotonic() < deadline, "failover took more than 1 s"
            time.sleep(0.01)
        assert got.startswith("10.250.")  # the ClusterSetIP
        set_member2_ready(root, True)
        time.sleep(1.0)
        assert answer(port) == got, "recovered copy preferred before the hysteresis"
        took = wait_for(port, LOCAL_IP, within=3.0)
        assert took < 2.5


def test_resolve_explain_shows_local_then_member1(root: Path, tmp_path: Path) -> None:
    def explain() -> str:
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "clusterset",
                "resolve",
                UNIFIED,
                "--manifests",
                str(root),
                "--cluster",
                "member2",
                "--unified-cluster-local",
                "--explain",
                "--state-file",
                str(tmp_path / "alloc.json"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout

    out = explain()
    assert f"IN A {LOCAL_IP}" in out
    assert "local copy in member2 is healthy (2/2 ready)" in out
    set_member2_ready(root, False)
    out = explain()
    assert f"IN A {LOCAL_IP}" not in out
    assert "local copy in member2 not preferred (0/2 ready)" in out
    assert "candidate cluster member1: 2/2 endpoints ready" in out


def test_unified_mode_in_front_of_kube_dns_and_behind_a_resolver(
    root: Path, tmp_path: Path, kube_dns: int
) -> None:
    with (
        clusterset(
            "run",
            "--manifests",
            str(root),
            "--cluster",
            "member2",
            "--state-file",
            str(tmp_path / "alloc.json"),
            "--unified-cluster-local",
            "--upstream",
            f"127.0.0.1:{kube_dns}",
        ) as (port, _),
    ):
        # Exported service under its old name: answered by us, local-first.
        assert answer(port, UNIFIED) == LOCAL_IP
        # Everything else goes to kube-dns, rcodes and flags passed through.
        r = query(port, "kubernetes.default.svc.cluster.local")
        assert [rd.address for rd in r.answer[0]] == ["10.97.0.1"]
        assert r.flags & dns.flags.AA  # knotd's authoritative answer, unchanged
        r = query(port, "nope.default.svc.cluster.local")
        assert r.rcode() == dns.rcode.NXDOMAIN
        assert r.authority and r.authority[0].name.to_text() == "cluster.local."
        r = query(port, "kubernetes.default.svc.cluster.local", tcp=True)
        assert [rd.address for rd in r.answer[0]] == ["10.97.0.1"]
        # clusterset.local is still ours.
        assert answer(port).startswith(("10.250.", LOCAL_IP))
        # Failover under the unchanged name.
        set_member2_ready(root, False)
        deadline = time.monotonic() + 1.0
        while answer(port, UNIFIED) == LOCAL_IP:
            assert time.monotonic() < deadline, "unified name did not fail over within 1 s"
            time.sleep(0.01)
        assert answer(port, UNIFIED) == answer(port, NAME)  # the ClusterSetIP
        assert answer(port, UNIFIED).startswith("10.250.")
        # A real resolver in front, forwarding cluster.local to us (the CoreDNS deployment).
        with unbound_stub({"cluster.local": port}, tmp_path) as resolver:
            r = query(resolver, UNIFIED)
            assert r.answer[0][0].address.startswith("10.250.")
            assert r.flags & dns.flags.RA
            r = query(resolver, "kubernetes.default.svc.cluster.local")
            assert [rd.address for rd in r.answer[0]] == ["10.97.0.1"]


def test_forwarding_only_for_allowed_clients(root: Path, tmp_path: Path, kube_dns: int) -> None:
    with (
        clusterset(
            "run",
            "--manifests",
            str(root),
            "--cluster",
            "member2",
            "--state-file",
            str(tmp_path / "alloc.json"),
            "--unified-cluster-local",
            "--upstream",
            f"127.0.0.1:{kube_dns}",
            "--allow",
            "10.0.0.0/8",
        ) as (port, _),
    ):
        assert query(port, "kubernetes.default.svc.cluster.local").rcode() == dns.rcode.REFUSED
        assert query(port, "example.com").rcode() == dns.rcode.REFUSED
        assert answer(port, UNIFIED) == LOCAL_IP  # our own answers need no forwarding


def test_default_mode_leaves_cluster_local_local_only(
    root: Path, tmp_path: Path, kube_dns: int
) -> None:
    """Without --unified-cluster-local we never answer cluster.local: behind the cluster DNS,
    serve.default.svc.cluster.local stays the local Service, whatever its readiness."""
    set_member2_ready(root, False)
    with (
        clusterset(
            "run",
            "--manifests",
            str(root),
            "--cluster",
            "member2",
            "--state-file",
            str(tmp_path / "alloc.json"),
        ) as (port, _),
    ):
        assert query(port, UNIFIED).rcode() == dns.rcode.REFUSED
        with unbound_stub(
            {"cluster.local": kube_dns, "clusterset.local": port}, tmp_path
        ) as resolver:
            assert [rd.address for rd in query(resolver, UNIFIED).answer[0]] == [LOCAL_IP]
            assert query(resolver, NAME).answer[0][0].address.startswith("10.250.")
