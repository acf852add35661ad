"""ClusterSetFeed told which files changed gives what a feed reading everything gives.

Random edits of member folders (services gaining and losing ports, families, headlessness
and exports; slices; files deleted) go to one long-lived feed as the watcher's paths; after
each, a fresh read-only feed over the same folders and state file is the oracle.
"""

from __future__ import annotations

import ipaddress
import random
from pathlib import Path

import pytest

from clusterset.controller.manifest import ClusterSetFeed
from clusterset.manifests import load
from clusterset.model.ids import ClusterId
from clusterset.model.objects import IPFamily
from clusterset.reconcile import allocate

CIDRS: dict[IPFamily, allocate.Network] = {
    IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/16"),
    IPFamily.IPV6: ipaddress.IPv6Network("fd63:6c75:7374::/112"),
}
MEMBERS = ("member1", "member2", "member3")


def _service(rng: random.Random, name: str, ns: str) -> str:
    headless = rng.random() < 0.3
    families = rng.choice(["[IPv4]", "[IPv6]", "[IPv4, IPv6]"])
    port = rng.choice([80, 81])
    docs = [
        f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
        f"spec:\n  clusterIP: {'None' if headless else '10.96.0.9'}\n"
        f"  ipFamilies: {families}\n  ports: [{{name: http, port: {port}}}]\n"
    ]
    if rng.random() < 0.8:
        docs.append(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n"
            f"metadata:\n  name: {name}-x\n  namespace: {ns}\n"
            f"  labels: {{kubernetes.io/service-name: {name}}}\n"
            "addressType: IPv4\nports: [{name: http, port: 80, protocol: TCP}]\n"
            f"endpoints:\n  - addresses: [10.1.{rng.randrange(9)}.{rng.randrange(9)}]\n"
            f"    hostname: h{rng.randrange(3)}\n"
        )
    if rng.random() < 0.8:
        docs.append(
            "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n"
            f"metadata:\n  name: {name}\n  namespace: {ns}\n"
            f'  creationTimestamp: "2026-11-01T10:00:{rng.randrange(3):02d}Z"\n'
        )
    return "---\n".join(docs)


def test_changed_paths_give_what_a_full_read_gives(tmp_path: Path) -> None:
    rng = random.Random(11)
    root = tmp_path / "clusters"
    for m in MEMBERS:
        (root / m).mkdir(parents=True)
        for i in range(6):
            (root / m / f"s{i}.yaml").write_text(_service(rng, f"s{i}", f"ns{i % 2}"))
    state = tmp_path / "state.json"
    feed = ClusterSetFeed(root, cidrs=CIDRS, state_file=state)
    feed.observe()
    for step in range(250):
        paths = set()
        for _ in range(rng.choice([1, 1, 2])):
            path = root / rng.choice(MEMBERS) / f"s{rng.randrange(8)}.yaml"
            if rng.random() < 0.1:
                path.unlink(missing_ok=True)
            else:
                path.write_text(_service(rng, path.stem, rng.choice(["ns0", "ns1"])))
            paths.add(path)
        got = feed.observe(changed=frozenset(paths))
        want = ClusterSetFeed(root, cidrs=CIDRS, state_file=state, read_only=True).observe()
        assert dict(got.desired.conditions) == dict(want.desired.conditions), step
        assert dict(got.desired.aggregates) == dict(want.desired.aggregates), step
        for cid in MEMBERS:
            g, w = got.desired.clusters[ClusterId(cid)], want.desired.clusters[ClusterId(cid)]
            assert list(g.imports.items()) == list(w.imports.items()), (step, cid)
            assert list(g.slices.items()) == list(w.slices.items()), (step, cid)
            assert g == w, (step, cid)


def test_a_first_read_on_worker_processes_equals_one_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(3)
    root = tmp_path / "clusters"
    for m in MEMBERS:
        (root / m).mkdir(parents=True)
        for i in range(8):
            (root / m / f"s{i}.yaml").write_text(_service(rng, f"s{i}", f"ns{i % 2}"))
    (root / "member2" / "broken.yaml").write_text("kind: [unclosed")
    monkeypatch.setattr(load, "PARALLEL_MIN", 5)
    loaded: list[int] = []
    real = load.load_many

    def counting(
        paths: list[Path], progress: load.ReadProgress | None = None
    ) -> dict[Path, load.Loaded] | None:
        got = real(paths, progress)
        loaded.append(len(got) if got is not None else 0)
        return got

    monkeypatch.setattr(load, "load_many", counting)
    parallel = ClusterSetFeed(root, cidrs=CIDRS, state_file=tmp_path / "a.json").observe()
    assert loaded == [8, 9, 8]  # every folder's files came from the workers
    monkeypatch.setattr(load, "PARALLEL_MIN", 10**9)
    serial = ClusterSetFeed(root, cidrs=CIDRS, state_file=tmp_path / "b.json").observe()
    assert parallel.desired == serial.desired
    assert parallel.errors == serial.errors and parallel.errors
