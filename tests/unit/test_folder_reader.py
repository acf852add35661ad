"""FolderReader.read(changed): only the watcher's paths are looked at again."""

from __future__ import annotations

import asyncio
import concurrent.futures
import random
from pathlib import Path

import pytest

from clusterset.manifests import load, watch
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


def test_reading_changed_files_equals_reading_everything(tmp_path: Path) -> None:
    """Random edits (values, new and vanished objects, duplicates across files, broken
    YAML, deleted files): a reader told which file changed, patching its last result,
    gives what a reader that merges every file again gives."""
    rng = random.Random(5)
    names = [f"f{i}" for i in range(6)]

    class AlwaysMerge(FolderReader):
        def _patch(self, swaps: object) -> None:
            return None  # the oracle: every read merges every file again

    hinted, full = FolderReader(tmp_path), AlwaysMerge(tmp_path)
    for name in names:
        _write(tmp_path, name)
    assert hinted.read() == full.read()
    for step in range(400):
        path = tmp_path / f"{rng.choice(names)}.yaml"
        roll = rng.random()
        if roll < 0.6:  # same object, new value (the cheap path)
            text = SVC.format(name=path.stem, ip=f"10.0.{step % 200}.1")
        elif roll < 0.75:  # an object defined in another file too
            text = SVC.format(name=rng.choice(names), ip=f"10.9.{step % 200}.9")
        elif roll < 0.8:
            text = "# nothing here now"
        elif roll < 0.85:
            text = "kind: [unclosed"
        elif roll < 0.95:
            text = SVC.format(name=f"new{step % 3}", ip="10.8.8.8")
        else:
            path.unlink(missing_ok=True)
            text = ""
        if text:
            path.write_text(text + f"# {step}\n")
        got = hinted.read([path])
        want = full.read()
        assert got == want, step


def test_a_first_big_read_parses_on_every_core_and_gives_the_same(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(load.PARALLEL_MIN + 10):
        _write(tmp_path, f"s{i:03d}", f"10.0.{i // 200}.{i % 200 + 1}")
    (tmp_path / "bad.yaml").write_text("kind: [unclosed")
    (tmp_path / "bomb.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
    )
    parallel = FolderReader(tmp_path).read()
    assert load._pool is not None  # the workers did it
    load.release_workers()
    monkeypatch.setattr(load, "PARALLEL_MIN", 10**9)
    serial = FolderReader(tmp_path).read()
    assert parallel == serial
    assert any("bad.yaml" in e for e in serial[1]) and any("bomb.yaml" in e for e in serial[1])


def test_no_worker_processes_means_parsing_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    for i in range(load.PARALLEL_MIN):
        _write(tmp_path, f"s{i:03d}")

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("no /dev/shm")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refuse)
    objs, errors = FolderReader(tmp_path).read()
    assert len(objs.services) == load.PARALLEL_MIN and not errors
    assert [r.getMessage() for r in caplog.records] == [
        "parsing in worker processes failed (no /dev/shm); parsing here"
    ]


@pytest.mark.parametrize(("limit", "named"), [(3, False), (10_000, True)])
def test_a_burst_of_more_paths_than_named_is_a_full_look(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limit: int, named: bool
) -> None:
    monkeypatch.setattr(watch, "MAX_NAMED", limit)
    files = {tmp_path / f"b{i}.yaml" for i in range(40)}

    async def run() -> list[frozenset[Path] | None]:
        stop = asyncio.Event()

        async def burst() -> None:
            await asyncio.sleep(0.3)  # the watcher is waiting for changes by now
            for path in sorted(files):
                _write(tmp_path, path.stem)

        writer: asyncio.Task[None] | None = None
        got: list[frozenset[Path] | None] = []
        async for batch in watch.changes([tmp_path], stop=stop, recheck=5.0):
            if writer is None:
                writer = asyncio.create_task(burst())
                continue
            got.append(batch)
            if batch is None or files <= set().union(*(b for b in got if b is not None)):
                break
        stop.set()
        return got

    got = asyncio.run(asyncio.wait_for(run(), 20))
    if named:
        assert None not in got  # every path named, none lost
    else:
        assert got[-1] is None  # forty files changed, three may be named: look at all
