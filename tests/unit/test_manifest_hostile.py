"""Hostile input, second round (issue 20, items 5 and 6): an oversize manifest file, a file
made unreadable while running, a truncated or out-of-range state file, and a rescan that
finds nothing."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest

from clusterset.controller.manifest import ClusterSetFeed, FolderFeed
from clusterset.manifests import load
from clusterset.manifests.load import MAX_FILE_BYTES, FolderReader
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import IPFamily
from clusterset.reconcile.allocate import Network
from tests.unit.test_manifest_state import cluster_property, exported

SVC = """apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default, annotations: {{note: {note}}}}}
spec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}
"""
WEB = ServiceKey("default", "web")


class _Counting:
    """A file whose reads are counted (in `read`), to show what the reader took in."""

    def __init__(self, f: Any, read: list[int]) -> None:
        self._f, self._read = f, read

    def __enter__(self) -> _Counting:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()

    def fileno(self) -> int:
        return int(self._f.fileno())

    def read(self, size: int = -1) -> Any:
        data = self._f.read(size)
        self._read.append(len(data))
        return data


def _count_reads(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    read: list[int] = []

    def counting_open(path: str, *args: Any, **kw: Any) -> _Counting:
        return _Counting(open(path, *args, **kw), read)  # closed by __exit__

    monkeypatch.setattr(load, "open", counting_open, raising=False)
    return read


def test_oversize_file_is_one_line_keeps_its_last_good_content_and_is_not_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(SVC.format(note="small", ip="10.0.0.1"))
    feed = FolderFeed(tmp_path)
    assert feed.snapshot().local_services[WEB].cluster_ips == ("10.0.0.1",)
    path.write_text(SVC.format(note="a" * MAX_FILE_BYTES, ip="10.0.0.2"))
    read = _count_reads(monkeypatch)
    with caplog.at_level(logging.ERROR):
        view = feed.snapshot()
        feed.snapshot(None)  # the next rescan: no second line
    assert view.local_services[WEB].cluster_ips == ("10.0.0.1",)  # the last good content
    assert sum(read) == 0  # refused on its size, before reading
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and str(path) in lines[0] and str(MAX_FILE_BYTES) in lines[0]


def test_a_file_that_grows_after_its_size_was_checked_is_read_no_further_than_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "svc.yaml"
    path.write_text(SVC.format(note="small", ip="10.0.0.1"))
    reader = FolderReader(tmp_path)
    reader.read()
    path.write_text(SVC.format(note="a" * (2 * MAX_FILE_BYTES), ip="10.0.0.2"))
    real_fstat = os.fstat
    monkeypatch.setattr(  # as if it was small when checked, and grew before the read
        os, "fstat", lambda fd: os.stat_result((*real_fstat(fd)[:6], 10, 0, 0, 0))
    )
    read = _count_reads(monkeypatch)
    objs, errors = reader.read()
    assert sum(read) <= MAX_FILE_BYTES + 1
    assert objs.services[WEB].cluster_ips == ("10.0.0.1",)
    assert len(errors) == 1 and str(MAX_FILE_BYTES) in errors[0]


def test_a_file_over_the_inline_size_is_parsed_in_a_worker_the_same_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "svc.yaml"
    good = SVC.format(note="a" * load.INLINE_MAX, ip="10.0.0.1")
    path.write_text(good + "---\n" + exported("api"))
    aside: list[str] = []
    real = load._parse_aside

    def spy(p: str) -> load.Parsed | None:
        parsed = real(p)
        assert parsed is not None  # a worker parsed it
        aside.append(p)
        return parsed

    monkeypatch.setattr(load, "_parse_aside", spy)
    try:
        reader = FolderReader(tmp_path)
        objs, errors = reader.read()
        assert aside == [str(path)] and errors == []
        assert set(objs.services) == {WEB, ServiceKey("default", "api")}
        # A bad second document keeps its last good objects, as when parsed here.
        path.write_text(good + "---\nkind: Service\nmetadata: {name: api, namespace: [x]}\n")
        objs, errors = reader.read()
        assert len(aside) == 2 and len(errors) == 1 and "document 1" in errors[0]
        assert set(objs.services) == {WEB, ServiceKey("default", "api")}
    finally:
        load.release_workers()


def _unreadable_scenario() -> list[tuple[list[str], list[str]]] | None:
    """Read a folder, chmod 000 its file, rescan twice: (services, errors) of each rescan;
    None when this user reads the file anyway."""
    folder = Path(tempfile.mkdtemp())
    path = folder / "svc.yaml"
    path.write_text(SVC.format(note="x", ip="10.0.0.1"))
    reader = FolderReader(folder)
    reader.read()
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            return None
        rescans = [reader.read() for _ in range(2)]  # the 60 s rescan: a full look, twice
        return [(sorted(map(str, objs.services)), errors) for objs, errors in rescans]
    finally:
        shutil.rmtree(folder)


def test_a_file_made_unreadable_while_running_is_reported_on_the_rescan_and_kept() -> None:
    """chmod 000 changes neither mtime nor size nor inode. Root reads the file anyway, so
    as root the scenario runs in a forked child that became nobody (uid 65534), for whom
    chmod 000 really bars the file."""
    if os.geteuid() != 0:
        got = _unreadable_scenario()
    else:
        out, into = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never back into pytest
            code = 1
            try:
                os.setgid(65534)
                os.setuid(65534)
                os.write(into, json.dumps(_unreadable_scenario()).encode())
                code = 0
            finally:
                os._exit(code)
        os.close(into)
        with os.fdopen(out, "rb") as f:
            raw = f.read()
        assert os.waitpid(pid, 0)[1] == 0
        got = json.loads(raw)
    if got is None:
        pytest.skip("this user reads a file whatever its mode")
    for services, errors in got:
        assert services == [str(WEB)]  # its last good content
        assert len(errors) == 1 and "svc.yaml: unreadable: " in errors[0]
        assert "Permission denied" in errors[0]


CIDRS: dict[IPFamily, Network] = {
    IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/28"),  # small: s1 and s2 collide
    IPFamily.IPV6: ipaddress.IPv6Network("fd63:6c75:7374::/112"),
}


def _root(tmp_path: Path, *names: str) -> Path:
    root = tmp_path / "clusters"
    (root / "member1").mkdir(parents=True, exist_ok=True)
    (root / "member2").mkdir(exist_ok=True)
    (root / "member1" / "svc.yaml").write_text("---\n".join(exported(n) for n in names))
    (root / "member2" / "id.yaml").write_text(cluster_property("member2"))
    return root


def _ips(feed: ClusterSetFeed, cluster: str) -> dict[str, tuple[str, ...]]:
    view = feed.view(feed.observe(), ClusterId(cluster))
    return {str(k): imp.ips for k, imp in view.imports.items()}


def test_a_consumer_cut_off_a_truncated_state_file_takes_the_others_addresses(
    tmp_path: Path,
) -> None:
    state = tmp_path / "alloc.json"
    root = _root(tmp_path, "s2")
    ClusterSetFeed(root, cidrs=CIDRS, state_file=state).observe()
    _root(tmp_path, "s2", "s1")  # s1 hashes to s2's address: it takes the next one
    before = _ips(ClusterSetFeed(root, cidrs=CIDRS, state_file=state), "member2")
    assert before["default/s1"] != before["default/s2"]
    text = state.read_text()
    state.write_text(text[: text.index('"member2"')])  # a full disk: member2's section lost
    after = _ips(ClusterSetFeed(root, cidrs=CIDRS, state_file=state), "member2")
    assert after == before  # not swapped


def test_addresses_outside_a_changed_range_are_dropped_with_one_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "alloc.json"
    root = _root(tmp_path, "s1", "s2")
    state.write_text(
        json.dumps(
            {
                "member1": {"default/s1": ["10.9.0.5"], "default/s2": ["10.250.0.9"]},
                "member2": {"default/s1": ["10.9.0.5"], "default/s2": ["10.250.0.9"]},
            }
        )
    )
    with caplog.at_level(logging.WARNING):
        ips = _ips(ClusterSetFeed(root, cidrs=CIDRS, state_file=state), "member2")
    lines = [r.getMessage() for r in caplog.records if "10.9.0.5" in r.getMessage()]
    assert len(lines) == 1 and "member2 default/s1" in lines[0] and "outside" in lines[0]
    assert ips["default/s2"] == ("10.250.0.9",)  # in range: kept
    assert ipaddress.ip_address(ips["default/s1"][0]) in CIDRS[IPFamily.IPV4]
    assert not list(tmp_path.glob("alloc.json.corrupt-*"))  # a range change is no corruption


def test_a_rescan_that_finds_nothing_makes_no_new_generation(tmp_path: Path) -> None:
    """The generation is the zone's SOA serial: an unchanged rescan keeps it (and the
    server's answer memo); a change still makes a new one."""
    root = _root(tmp_path, "s1")
    feed = ClusterSetFeed(root, cidrs=CIDRS, state_file=tmp_path / "alloc.json")
    member2 = ClusterId("member2")
    first = feed.view(feed.observe(), member2)
    again = feed.view(feed.observe(changed=None), member2)  # the 60 s rescan
    assert again is first and again.generation == first.generation
    _root(tmp_path, "s1", "s2")
    changed = feed.view(feed.observe(changed=None), member2)
    assert changed.generation > first.generation and len(changed.imports) == 2

    folder = FolderFeed(root / "member1")
    view = folder.snapshot()
    assert folder.snapshot(None) is view and folder.generation == view.generation
