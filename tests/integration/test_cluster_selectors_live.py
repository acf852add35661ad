"""KEP-5939 cluster selectors through `clusterset run` over manifest folders: the live
server's answer for member2 follows its tiers as endpoints turn unready, and `resolve
--explain` names the tier.

member1 (region us-east) exports with the annotation bridge (a v1alpha1 ServiceExport
has no spec.clusterSelectors); member2 and member3 (eu-west) with v1beta1 spec fields.
Tiers: the asking cluster itself, then its region; fallback None (data sovereignty).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dns.rcode
import pytest

from tests.integration.servers import ROOT, clusterset, query

pytestmark = pytest.mark.integration
NAME = "api.default.svc.clusterset.local"
SELECTORS = [
    {
        "propertySelector": {
            "matchExpressions": [
                {"key": "cluster.clusterset.k8s.io", "operator": "In", "values": ["@SameAsImporter@"]}
            ]
        }
    },
    {"propertySelector": {"matchLabels": {"region.clusterset.io": "@SameAsImporter@"}}},
]  # fmt: skip


def files(cid: str, n: int, region: str) -> str:
    properties = "".join(
        "---\napiVersion: about.k8s.io/v1alpha1\nkind: ClusterProperty\n"
        f"metadata: {{name: {name}}}\nspec: {{value: {value}}}\n"
        for name, value in (("cluster.clusterset.k8s.io", cid), ("region.clusterset.io", region))
    )
    fields = {"clusterSelectors": SELECTORS, "clusterSelectorsFallbackPolicy": "None"}
    if cid == "member1":
        export = (
            "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n"
            "metadata: {name: api, namespace: default, creationTimestamp: '2026-11-01T10:00:00Z',"
            f" annotations: {{clusterset.io/cluster-selectors: {json.dumps(json.dumps(fields))}}}}}\n"
        )
    else:
        export = (
            "apiVersion: multicluster.x-k8s.io/v1beta1\nkind: ServiceExport\n"
            "metadata: {name: api, namespace: default, creationTimestamp: '2026-11-01T10:00:00Z'}\n"
            f"spec: {json.dumps(fields)}\n"
        )
    return f"""{properties}---
apiVersion: v1
kind: Service
metadata: {{name: api, namespace: default}}
spec: {{clusterIP: 10.96.{n}.1, ports: [{{name: http, port: 80}}]}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: api-x, namespace: default, labels: {{kubernetes.io/service-name: api}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints:
- addresses: [10.244.{n}.1]
  conditions: {{ready: true}}
---
{export}"""


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "clusters"
    for n, (cid, region) in enumerate(
        (("member1", "us-east"), ("member2", "eu-west"), ("member3", "eu-west")), start=1
    ):
        (r / cid).mkdir(parents=True)
        (r / cid / "api.yaml").write_text(files(cid, n, region))
    return r


def unready(root: Path, cid: str) -> None:
    p = root / cid / "api.yaml"
    p.write_text(p.read_text().replace("ready: true", "ready: false"))


def addresses(port: int) -> list[str]:
    reply = query(port, NAME)
    assert reply.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(reply.rcode())
    return sorted(rr.address for rrset in reply.answer for rr in rrset)


def until(port: int, want: list[str], within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while (got := addresses(port)) != want:
        assert time.monotonic() < deadline, f"{NAME} is {got}, not {want}"
        time.sleep(0.05)


def explain(root: Path, state: Path) -> str:
    return subprocess.run(
        [sys.executable, "-m", "clusterset", "resolve", NAME, "--explain", "--manifests",
         str(root), "--cluster", "member2", "--state-file", str(state)],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip


def test_member2_follows_its_cluster_selectors(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "alloc.json"
    args = ("run", "--manifests", str(root), "--cluster", "member2", "--state-file", str(state))
    with clusterset(*args) as (port, _):
        assert addresses(port) == ["10.96.2.1"]  # tier 1, itself: its own ClusterIP
        unready(root, "member2")
        until(port, ["10.244.3.1"])  # tier 2, its region: member3, not member1 (us-east)
        out = explain(root, state)
        assert "policy: cluster-selectors (cluster selector 2 (region.clusterset.io=eu-west): member3 has 1 ready endpoint(s))" in out, out  # fmt: skip
        assert "note: cluster selector 1 (cluster.clusterset.k8s.io=member2): member2: no available endpoint" in out, out  # fmt: skip
        unready(root, "member3")
        until(port, [])  # fallback None: NODATA, although member1 is ready
        unready(root, "member1")
        (root / "member2" / "api.yaml").write_text(files("member2", 2, "eu-west"))
        until(port, ["10.96.2.1"])  # back to tier 1


def test_the_example_answers_as_its_readme_says(tmp_path: Path) -> None:
    """examples/cluster-selection: tier 1 (member2 itself), then member3 (its region), then
    nothing; the README there tells a user to try exactly this."""
    root = tmp_path / "example"
    shutil.copytree(ROOT / "examples" / "cluster-selection", root)
    state = tmp_path / "alloc.json"
    assert "A 10.96.2.1\n" in explain(root, state)
    unready(root, "member2")
    assert "A 10.244.3.1\n" in explain(root, state)
    unready(root, "member3")
    out = explain(root, state)
    assert ";ANSWER\n;AUTHORITY" in out, out
