"""The running server under bad folders and a bad state file (issue 11, items 1, 10, 14): it
keeps answering from the last good zone and says what is wrong once; at start, the same
problems are one line and exit 2."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dns.rcode
import pytest

from tests.integration.servers import (
    ROOT,
    TEXT_ERROR,
    clusterset,
    free_port,
    query,
    server_log,
    wait_answering,
)

pytestmark = pytest.mark.integration
NAME = "serve.default.svc.clusterset.local"
NOBODY = 65534


def answer(port: int) -> list[str]:
    r = query(port, NAME)
    assert r.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(r.rcode())
    return [rr.address for rrset in r.answer for rr in rrset]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clusterset", *args], capture_output=True, text=True, timeout=60
    )


@pytest.fixture
def world() -> Iterator[Path]:
    """A copy of examples/clusters that a non-root user can read and write (outside the
    root-only pytest tmp dir), with the state file beside it."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        raise AssertionError("needs root and setpriv to run as uid 65534 (CI runs as root)")
    base = Path(tempfile.mkdtemp(prefix="clusterset-faults-"))
    shutil.copytree(ROOT / "examples" / "clusters", base / "clusters")
    for p in [base, *base.rglob("*")]:
        os.chown(p, NOBODY, NOBODY)
    base.chmod(0o755)
    try:
        yield base
    finally:
        for p in base.rglob("*"):
            with contextlib.suppress(OSError):
                p.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


@contextlib.contextmanager
def as_nobody(*args: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`clusterset ARGS` as uid 65534 (chmod 000 means nothing to root, and CI runs as root)."""
    port = free_port()
    log = tempfile.TemporaryFile()
    cmd = [
        "setpriv",
        f"--reuid={NOBODY}",
        f"--regid={NOBODY}",
        "--clear-groups",
        "--",
        sys.executable,
        "-m",
        "clusterset",
        *args,
        "--listen",
        f"127.0.0.1:{port}",
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, "HOME": "/tmp"})
    proc.log = log  # type: ignore[attr-defined]
    try:
        wait_answering(port, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=10)
        log.close()


def test_unreadable_member_folder_and_lost_root_keep_serving(world: Path) -> None:
    root, state = world / "clusters", world / "alloc.json"
    with as_nobody(
        "run", "--manifests", str(root), "--cluster", "member2", "--state-file", str(state)
    ) as (port, proc):
        good = answer(port)
        assert good
        (root / "member1").chmod(0)
        time.sleep(2.5)  # the change is seen, the read fails, the zone stays
        assert proc.poll() is None and answer(port) == good
        (root / "member1").chmod(0o755)
        root.rename(world / "moved")
        time.sleep(2.5)
        assert proc.poll() is None and answer(port) == good
        (world / "moved").rename(root)
        time.sleep(2.5)
        assert answer(port) == good
        shutil.rmtree(root)
        time.sleep(2.5)
        assert proc.poll() is None and answer(port) == good
        shutil.copytree(ROOT / "examples" / "clusters", root)
        (root / "member1" / "serve.yaml").write_text(
            (root / "member1" / "serve.yaml").read_text().replace("name: serve", "name: serve2")
        )
        deadline = time.monotonic() + 5  # the folder is back: a recreated ROOT is watched again
        while query(port, NAME).rcode() != dns.rcode.NXDOMAIN:
            assert time.monotonic() < deadline, "recreated ROOT not picked up"
            time.sleep(0.1)
        log = server_log(proc)
    problems = [
        line for line in log.splitlines() if TEXT_ERROR.match(line) and "cannot read" in line
    ]
    assert len(problems) == 3, log  # once each: member1 unreadable, ROOT moved, ROOT deleted
    assert "Traceback" not in log


def test_state_entry_not_an_ip_is_one_line_and_the_rest_is_kept(tmp_path: Path) -> None:
    root = ROOT / "examples" / "clusters"
    state = tmp_path / "alloc.json"
    with clusterset(
        "run", "--manifests", str(root), "--cluster", "member2", "--state-file", str(state)
    ) as (port, _):
        first = answer(port)
    raw = json.loads(state.read_text())
    raw["member2"]["default/other"] = ["not-an-ip"]
    state.write_text(json.dumps(raw))
    with clusterset(
        "run", "--manifests", str(root), "--cluster", "member2", "--state-file", str(state)
    ) as (port, proc):
        assert answer(port) == first
        log = server_log(proc)
    assert "not an IP address" in log and "Traceback" not in log
    assert any(p.name.startswith("alloc.json.corrupt-") for p in tmp_path.iterdir())


def test_start_problems_are_one_line_and_exit_2(world: Path) -> None:
    root, state = world / "clusters", world / "alloc.json"
    out = cli("run", "--manifests", str(root), "--cluster", "member9", "--state-file", str(state))
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "--cluster member9: no folder" in out.stderr
    (root / "member1").chmod(0)
    out = subprocess.run(
        [
            "setpriv",
            f"--reuid={NOBODY}",
            f"--regid={NOBODY}",
            "--clear-groups",
            "--",
            sys.executable,
            "-m",
            "clusterset",
            "run",
            "--manifests",
            str(root),
            "--cluster",
            "member2",
            "--state-file",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "HOME": "/tmp"},
    )
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "member1: cannot read folder" in out.stderr


def test_read_only_commands_take_the_allocation_flags_and_never_write(tmp_path: Path) -> None:
    root = ROOT / "examples" / "clusters"
    state = tmp_path / "alloc.json"
    flags = ["--manifests", str(root), "--cluster", "member2", "--state-file", str(state)]
    resolved = cli("resolve", NAME, *flags, "--clusterset-cidr", "10.99.0.0/24")
    assert resolved.returncode == 0, resolved.stderr
    assert not state.exists()
    status = cli(
        "status",
        "--manifests",
        str(root),
        "--state-file",
        str(state),
        "--clusterset-cidr",
        "10.99.0.0/24",
        "-o",
        "json",
    )
    # Exit 1: examples' default/web has a PortConflict, a finding `status` reports as a lint.
    assert status.returncode == 1 and not state.exists(), status.stderr
    rendered = cli("render", *flags, "--clusterset-cidr", "10.99.0.0/24")
    assert rendered.returncode == 0 and not state.exists()
    with clusterset("run", *flags, "--clusterset-cidr", "10.99.0.0/24") as (port, _):
        served = answer(port)
    assert served[0].startswith("10.99.0.")
    assert f"IN A {served[0]}" in resolved.stdout
    assert served[0] in rendered.stdout
    assert served[0] in status.stdout
