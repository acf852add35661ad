"""The first read of a manifest folder tells a progress bar how far it is: every file once,
on both paths (parsed here, and parsed in worker processes for a big folder); later reads
say nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from clusterset.controller.manifest import FolderFeed
from clusterset.manifests.load import PARALLEL_MIN
from tests.unit.test_manifest_state import feed

SERVICE = "apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default}}\n" \
    "spec: {{clusterIP: 10.96.{hi}.{lo}, ports: [{{port: 80}}]}}\n"  # fmt: skip


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def start(self, total: int) -> None:
        self.calls.append(("start", total))

    def advance(self, files: int) -> None:
        self.calls.append(("advance", files))

    def stop(self) -> None:
        self.calls.append(("stop", 0))


def write(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"s{i}.yaml").write_text(SERVICE.format(i=i, hi=i // 250, lo=i % 250 + 1))


@pytest.mark.parametrize("files", [3, PARALLEL_MIN + 10])  # parsed here / in workers
def test_first_read_reports_every_file_once(files: int, tmp_path: Path) -> None:
    root = tmp_path / "clusters"
    write(root / "member1", files)
    write(root / "member2", 2)
    bar = Recorder()
    f = feed(root, tmp_path / "alloc.json", progress=bar)
    f.observe()
    assert bar.calls[0] == ("start", files + 2) and bar.calls[-1] == ("stop", 0)
    assert sum(n for what, n in bar.calls if what == "advance") == files + 2
    (root / "member1" / "s0.yaml").write_text(SERVICE.format(i=0, hi=9, lo=9))
    f.observe()
    assert bar.calls[-1] == ("stop", 0) and len([c for c in bar.calls if c[0] == "start"]) == 1


def test_one_folder_feed_too(tmp_path: Path) -> None:
    write(tmp_path / "member2", 4)
    bar = Recorder()
    FolderFeed(tmp_path / "member2", progress=bar).snapshot()
    assert bar.calls == [("start", 4), *[("advance", 1)] * 4, ("stop", 0)]
