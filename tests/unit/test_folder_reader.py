"""FolderReader.read(changed): only the watcher's paths are looked at again."""

from __future__ import annotations

import asyncio
from pathlib import Path

from clusterset.manifests.load import FolderReader
from clusterset.manifests.watch import changes
from clusterset.model.ids import ServiceKey

SVC = """apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: ns}}
spec: {{clusterIP: {ip}, ports: [{{port: 80}}]}}
"""


def _write(folder: Path, name: str, ip: str = "10.0.0.1") -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(SVC.format(name=name, ip=ip))
    return path


def test_nothing_changed_is_the_same_result_object(tmp_path: Path) -> None:
    _write(tmp_path, "a")
    reader = FolderReader(tmp_path)
    first = reader.read()
    assert reader.read(()) is first
    assert reader.read() is first  # a full look that finds nothing new: the same too


def test_only_the_named_files_are_read_again(tmp_path: Path) -> None:
    a, b = _write(tmp_path, "a"), _write(tmp_path, "b")
    reader = FolderReader(tmp_path)
    reader.read()
    _write(tmp_path, "a", "10.0.0.2")
    _write(tmp_path, "b", "10.0.0.3")
    objs, _ = reader.read([a])
    assert objs.services[ServiceKey("ns", "a")].cluster_ips == ("10.0.0.2",)
    assert objs.services[ServiceKey("ns", "b")].cluster_ips == ("10.0.0.1",)  # not named
    objs, _ = reader.read([b])
    assert objs.services[ServiceKey("ns", "b")].cluster_ips == ("10.0.0.3",)
    assert reader.read() == reader.read([a, b])


def test_named_files_that_appear_or_vanish(tmp_path: Path) -> None:
    a = _write(tmp_path, "a")
    reader = FolderReader(tmp_path)
    reader.read()
    c = _write(tmp_path, "c")
    (tmp_path / "notes.txt").write_text("not a manifest")
    objs, _ = reader.read([c, tmp_path / "notes.txt", tmp_path / "sub" / "x.yaml"])
    assert set(objs.services) == {ServiceKey("ns", "a"), ServiceKey("ns", "c")}
    a.unlink()
    objs, _ = reader.read([a])
    assert set(objs.services) == {ServiceKey("ns", "c")}


def test_the_watcher_names_changed_paths_and_rescans(tmp_path: Path) -> None:
    async def run() -> list[frozenset[Path] | None]:
        got: list[frozenset[Path] | None] = []
        stop = asyncio.Event()
        async for batch in changes([tmp_path], stop=stop, recheck=0.1, rescan=1.0):
            got.append(batch)
            if len(got) == 1:
                _write(tmp_path, "a")
            elif batch is None and any(b is not None for b in got):
                break  # the periodic full look came after the named change
        stop.set()
        return got

    got = asyncio.run(asyncio.wait_for(run(), 20))
    assert got[0] is None
    assert any(b is not None and tmp_path / "a.yaml" in b for b in got[1:])
    assert got[-1] is None
