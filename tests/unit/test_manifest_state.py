"""Manifest mode's state and folders (issue 11, items 1, 9-12, 14, 15): what a restart, a bad
state file, a second writer, an exhausted range or a duplicated folder must never change."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from clusterset.controller import manifest
from clusterset.controller.manifest import MAX_ERROR_LINES, ClusterSetFeed
from clusterset.manifests import allocations
from clusterset.manifests.load import SourceError
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import IPFamily

CIDRS = {
    IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/16"),
    IPFamily.IPV6: ipaddress.IPv6Network("fd63:6c75:7374::/112"),
}


def exported(name: str, *, ns: str = "default", ip: str = "10.96.0.10") -> str:
    return f"""\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec:
  clusterIP: {ip}
  ports: [{{name: http, port: 80}}]
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: {ns}}}
"""


def cluster_property(cid: str) -> str:
    return (
        "apiVersion: about.k8s.io/v1alpha1\nkind: ClusterProperty\n"
        f"metadata: {{name: cluster.clusterset.k8s.io}}\nspec: {{value: {cid}}}\n"
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "clusters"
    (r / "member1").mkdir(parents=True)
    (r / "member2").mkdir()
    (r / "member1" / "svc.yaml").write_text(
        exported("serve") + "---\n" + exported("api") + "---\n" + exported("db")
    )
    (r / "member2" / "id.yaml").write_text(cluster_property("member2"))
    return r


def feed(root: Path, state: Path, **kw: object) -> ClusterSetFeed:
    return ClusterSetFeed(root, cidrs=kw.pop("cidrs", CIDRS), state_file=state, **kw)  # type: ignore[arg-type]


def ips_of(f: ClusterSetFeed) -> dict[str, tuple[str, ...]]:
    obs = f.observe()
    return {
        f"{cid}/{k}": imp.ips
        for cid, cd in obs.desired.clusters.items()
        for k, imp in cd.imports.items()
    }


def test_truncated_state_file_keeps_readable_allocations_and_is_kept_aside(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "alloc.json"
    first = ips_of(feed(root, state))
    text = state.read_text()
    # Cut the file inside its last cluster's entries: everything before the cut is readable.
    cut = text.rindex('"default/serve"')
    state.write_text(text[:cut])
    caplog.set_level(logging.ERROR)
    again = ips_of(feed(root, state))
    lost = {k for k in first if k.startswith("member2/") and k.endswith("/serve")}
    assert {k: v for k, v in again.items() if k not in lost} == {
        k: v for k, v in first.items() if k not in lost
    }
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("alloc.json.corrupt-")]
    assert len(aside) == 1 and aside[0].read_text() == text[:cut]
    assert any("corrupt" in r.getMessage() for r in caplog.records)
    assert all("\n" not in r.getMessage() for r in caplog.records)
    json.loads(state.read_text())  # rewritten whole


def test_state_entry_not_an_ip_is_dropped_with_one_line(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "alloc.json"
    first = ips_of(feed(root, state))
    raw = json.loads(state.read_text())
    raw["member1"]["default/api"] = ["not-an-ip"]
    state.write_text(json.dumps(raw))
    got, problems = allocations.load(state, keep_aside=False)
    assert any("default/api" in p and "not an IP" in p for p in problems)
    assert ServiceKey("default", "api") not in got[ClusterId("member1")]
    again = ips_of(feed(root, state))  # no traceback; the others keep their address
    assert again["member1/default/serve"] == first["member1/default/serve"]
    assert again["member1/default/db"] == first["member1/default/db"]


def test_duplicate_ip_in_state_file_first_service_keeps_it(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "alloc.json"
    first = ips_of(feed(root, state))
    raw = json.loads(state.read_text())
    raw["member1"]["default/serve"] = raw["member1"]["default/api"]
    state.write_text(json.dumps(raw))
    again = ips_of(feed(root, state))
    assert again["member1/default/api"] == first["member1/default/api"]  # api < serve keeps it
    assert again["member1/default/serve"] != again["member1/default/api"]
    assert again["member1/default/db"] == first["member1/default/db"]


def test_two_writers_never_share_a_temporary_file(root: Path, tmp_path: Path) -> None:
    state = tmp_path / "alloc.json"
    f = feed(root, state)
    f.observe()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(200):
                allocations.save(state, f.allocations)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    json.loads(state.read_text())
    assert [p.name for p in tmp_path.iterdir() if p.name != "clusters"] == ["alloc.json"]


def test_read_only_commands_never_write_state_and_agree_with_run(
    root: Path, tmp_path: Path
) -> None:
    state = tmp_path / "alloc.json"
    small = {**CIDRS, IPFamily.IPV4: ipaddress.IPv4Network("10.99.0.0/24")}
    ro = ips_of(feed(root, state, cidrs=small, read_only=True))
    assert not state.exists()
    run = ips_of(feed(root, state, cidrs=small))
    assert ro == run and all(ip.startswith("10.99.0.") for v in run.values() for ip in v)
    state.write_text("{ corrupt")
    ips_of(feed(root, state, cidrs=small, read_only=True))
    assert state.read_text() == "{ corrupt"
    assert [p.name for p in tmp_path.iterdir() if "corrupt-" in p.name] == []


def test_exhausted_range_sets_a_condition_and_logs_once(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    tiny = {**CIDRS, IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/30")}  # 2 addresses
    f = feed(root, tmp_path / "alloc.json", cidrs=tiny)
    caplog.set_level(logging.ERROR)
    obs = f.observe()
    f.observe()
    starved = [
        (cid, k)
        for (cid, k), conds in obs.desired.conditions.items()
        if any(c.type.value == "Ready" and c.status.value == "False" for c in conds)
    ]
    assert starved == [(ClusterId("member1"), ServiceKey("default", "serve"))]
    (cond,) = [c for c in obs.desired.conditions[starved[0]] if c.type.value == "Ready"]
    assert cond.reason == "Failed" and "no free ClusterSetIP" in cond.message
    assert "10.250.0.0/30" in cond.message
    lines = [r.getMessage() for r in caplog.records if "no free ClusterSetIP" in r.getMessage()]
    assert len(lines) == 2  # one per consuming cluster, not again on the second pass


def test_new_folder_cannot_take_over_a_served_cluster_id(root: Path, tmp_path: Path) -> None:
    f = feed(root, tmp_path / "alloc.json")
    before = f.observe()
    assert before.state.clusters[ClusterId("member2")].cluster == "member2"
    # "a-new" sorts before "member2" and claims its ID.
    (root / "a-new").mkdir()
    (root / "a-new" / "id.yaml").write_text(
        cluster_property("member2") + "---\n" + exported("intruder")
    )
    after = f.observe()
    assert (
        ServiceKey("default", "intruder") not in after.state.clusters[ClusterId("member2")].exports
    )
    (line,) = [e for e in after.errors if "member2" in e and "already used" in e]
    assert line.startswith(str(root / "a-new"))
    # A fresh start picks the folder named like the ID, not the first by name.
    fresh = feed(root, tmp_path / "alloc.json").observe()
    assert (
        ServiceKey("default", "intruder") not in fresh.state.clusters[ClusterId("member2")].exports
    )


def test_run_start_rejects_an_unknown_cluster(root: Path, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="--cluster member9: no folder"):
        feed(root, tmp_path / "alloc.json").check(ClusterId("member9"))


def test_root_gone_is_a_source_error_not_a_crash(root: Path, tmp_path: Path) -> None:
    f = feed(root, tmp_path / "alloc.json")
    f.observe()
    root.rename(tmp_path / "elsewhere")
    with pytest.raises(SourceError, match="cannot read folder"):
        f.observe()


def test_flood_of_errors_is_summarised_and_only_changes_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    r = tmp_path / "clusters"
    (r / "member1").mkdir(parents=True)
    bad = "".join(
        f"---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{ports: []}}\n"
        for i in range(500)
    )
    (r / "member1" / "bad.yaml").write_text(bad)
    f = feed(r, tmp_path / "alloc.json")
    caplog.set_level(logging.INFO)
    f.observe()
    assert len(f.errors) == 500
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING]  # not start-up lines
    assert len(problems) == MAX_ERROR_LINES + 1
    assert "480 more" in problems[-1].getMessage()
    caplog.clear()
    (r / "member1" / "bad.yaml").write_text(bad)  # re-read, same problems: not logged again
    (r / "member1" / "one.yaml").write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: Bad_Name}\nspec: {ports: [{port: 1}]}\n"
    )
    f.observe()
    messages = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(messages) == 1 and "Bad_Name" in messages[0]


def test_unwritable_state_file_is_said_once_and_retried(
    root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    f = feed(root, blocker / "alloc.json")  # its parent is a file: every save fails
    caplog.set_level(logging.WARNING)
    for i in range(3):
        (root / "member1" / f"extra{i}.yaml").write_text(exported(f"extra{i}"))
        f.observe()
    assert sum("cannot save" in r.getMessage() for r in caplog.records) == 1


def test_a_bug_while_reading_costs_one_pass_not_the_feed(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def three_changes(paths: object, *, stop: object = None) -> AsyncIterator[None]:
        for i in range(3):
            if i == 2:  # something new for the pass after the failed one to serve
                (root / "member1" / "more.yaml").write_text(exported("more"))
            yield None

    monkeypatch.setattr(manifest, "changes", three_changes)
    f = feed(root, tmp_path / "alloc.json")
    real, calls = f.observe, []

    def flaky(**kw: object) -> manifest.Observed:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("boom")
        return real(**kw)  # type: ignore[arg-type]

    monkeypatch.setattr(f, "observe", flaky)

    async def collect() -> list[object]:
        return [v async for v in f.views(ClusterId("member2"))]

    caplog.set_level(logging.ERROR)
    assert len(asyncio.run(collect())) == 2
    assert any("internal error" in r.getMessage() for r in caplog.records)
