"""Every answer policy and annotation of the README on the running server (issue 11, item 20),
and `clusterset resolve` giving the very same answer from the same folder.

Three clusters; asked as member2 (region eu). member1 is in region us, member3 in eu.
Hysteresis on the live server is `test_failover.py`; probes across cut links are
`test_partition.py`; here probes meet a closed and an open port on loopback.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import dns.rdatatype
import pytest

from tests.integration.servers import clusterset, free_port, query

pytestmark = pytest.mark.integration
ZONE = "default.svc.clusterset.local"


def cluster_files(cid: str, region: str) -> str:
    return "".join(
        "---\napiVersion: about.k8s.io/v1alpha1\nkind: ClusterProperty\n"
        f"metadata: {{name: {name}}}\nspec: {{value: {value}}}\n"
        for name, value in (("cluster.clusterset.k8s.io", cid), ("region.clusterset.io", region))
    )


def service(
    name: str,
    cluster_ip: str,
    endpoints: list[tuple[str, bool]],
    annotations: dict[str, str],
    *,
    port: int = 8080,
) -> str:
    eps = "".join(
        f"  - addresses: [{ip}]\n    conditions: {{ready: {str(ready).lower()}}}\n"
        for ip, ready in endpoints
    )
    ann = "".join(f'    {k}: "{v}"\n' for k, v in annotations.items())
    return f"""---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  clusterIP: {cluster_ip}
  ports: [{{name: http, port: 80}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-x
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints:
{eps}---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: {name}
  namespace: default
  creationTimestamp: "2026-11-01T10:00:00Z"
  annotations:
{ann}"""


LF = {"clusterset.io/dns-policy": "local-first"}
EP = {**LF, "clusterset.io/failover": "endpoints"}
W = {**EP, "clusterset.io/weights": "member1=3,member3=1", "clusterset.io/tiers": "any"}


@pytest.fixture
def listener() -> Iterator[int]:
    """A real TCP listener on 127.0.0.3: the only probe target that accepts."""
    s = socket.socket()
    s.bind(("127.0.0.3", 0))
    s.listen(16)
    try:
        yield s.getsockname()[1]
    finally:
        s.close()


@pytest.fixture
def root(tmp_path: Path, listener: int) -> Path:
    closed = free_port()  # nothing listens on 127.0.0.2:closed
    probe = {**EP, "clusterset.io/probe": "tcp", "clusterset.io/probe-interval": "1"}
    per_cluster: dict[str, tuple[str, list[str]]] = {
        "member1": (
            "us",
            [
                service("lf", "10.96.1.1", [("10.244.1.1", True)], LF),
                service("plain", "10.96.1.9", [("10.244.1.9", True)], {}),
                service(
                    "minready",
                    "10.96.1.2",
                    [("10.244.1.2", True)],
                    {**LF, "clusterset.io/min-ready": "2"},
                ),
                service("foep", "10.96.1.3", [("10.244.1.3", True), ("10.244.1.4", True)], EP),
                service(
                    "tiers",
                    "10.96.1.4",
                    [("10.244.1.5", True)],
                    {**EP, "clusterset.io/tiers": "region,any"},
                ),
                service("weights", "10.96.1.5", [("10.244.1.6", True)], W),
                service("probed", "10.96.1.6", [("127.0.0.2", True)], probe, port=closed),
            ],
        ),
        "member2": (
            "eu",
            [
                service("lf", "10.96.2.1", [("10.244.2.1", True)], LF),
                service("plain", "10.96.2.9", [("10.244.2.9", True)], {}),
                service(
                    "minready",
                    "10.96.2.2",
                    [("10.244.2.2", True), ("10.244.2.3", False)],
                    {**LF, "clusterset.io/min-ready": "2"},
                ),
                service("foep", "10.96.2.3", [("10.244.2.4", False)], EP),
                service(
                    "tiers",
                    "10.96.2.4",
                    [("10.244.2.5", False)],
                    {**EP, "clusterset.io/tiers": "region,any"},
                ),
                service("weights", "10.96.2.5", [("10.244.2.6", False)], W),
                service("probed", "10.96.2.6", [("10.244.2.7", False)], probe),
            ],
        ),
        "member3": (
            "eu",
            [
                service(
                    "tiers",
                    "10.96.3.4",
                    [("10.244.3.5", True)],
                    {**EP, "clusterset.io/tiers": "region,any"},
                ),
                service("weights", "10.96.3.5", [("10.244.3.6", True)], W),
                service("probed", "10.96.3.6", [("127.0.0.3", True)], probe, port=listener),
            ],
        ),
    }
    r = tmp_path / "clusters"
    for cid, (region, docs) in per_cluster.items():
        (r / cid).mkdir(parents=True)
        (r / cid / "cluster.yaml").write_text(cluster_files(cid, region))
        (r / cid / "services.yaml").write_text("".join(docs))
    return r


def live(port: int, name: str) -> list[str]:
    reply = query(port, f"{name}.{ZONE}")
    assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())
    return [rr.address for rrset in reply.answer for rr in rrset]


def resolved(root: Path, state: Path, name: str) -> list[str]:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "clusterset",
            "resolve",
            f"{name}.{ZONE}",
            "--manifests",
            str(root),
            "--cluster",
            "member2",
            "--state-file",
            str(state),
            "--default-policy",
            "local-first",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    answer = out.split(";ANSWER", 1)[1].split(";AUTHORITY", 1)[0]
    return [line.split()[-1] for line in answer.splitlines() if " IN A " in line]


def test_every_policy_on_the_live_server_and_resolve_agrees(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "alloc.json"
    expected = {
        "lf": ["10.96.2.1"],  # local copy healthy: its own ClusterIP
        "plain": ["10.96.2.9"],  # no annotation: --default-policy local-first applies
        "foep": ["10.244.1.3", "10.244.1.4"],  # local not ready: member1's pod IPs
        "tiers": ["10.244.3.5"],  # same region (eu) first: member3, not member1
        "weights": ["10.244.1.6", "10.244.3.6"],  # both, in weighted order
        "probed": ["127.0.0.3"],  # member1's endpoint refuses connections
    }
    with clusterset(
        "run",
        "--manifests",
        str(root),
        "--cluster",
        "member2",
        "--state-file",
        str(state),
        "--default-policy",
        "local-first",
    ) as (port, _):
        clusterset_ip = live(port, "minready")
        assert len(clusterset_ip) == 1 and clusterset_ip[0].startswith("10.250.")  # 1 of 2 < 2
        for name, want in expected.items():
            if name == "probed":
                continue
            assert sorted(live(port, name)) == want, name
        # Probes: member1's endpoint refuses, so only member3's answers (first round ~1 s).
        deadline = time.monotonic() + 10
        while sorted(live(port, "probed")) != expected["probed"]:
            assert time.monotonic() < deadline, live(port, "probed")
            time.sleep(0.1)
        # Probe verdicts recompiled the zone: a local copy healthy all along stays preferred
        # (no hysteresis without a flap).
        assert live(port, "lf") == ["10.96.2.1"]
        firsts = Counter(live(port, "weights")[0] for _ in range(40))
        assert firsts["10.244.1.6"] == 30 and firsts["10.244.3.6"] == 10  # 3:1
        for name in [*expected, "minready"]:
            assert sorted(resolved(root, state, name)) == sorted(live(port, name)), name
