"""`--workers N`: N processes on one port (SO_REUSEPORT) under a supervisor, end to end,
seen from outside as one server (one /metrics, /health, /ready)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.servers import ROOT, clusterset, free_port
from tests.integration.test_dns_server import IMPORT
from tests.integration.test_ops import get

pytestmark = pytest.mark.integration

NAME = "serve.default.svc.clusterset.local"


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie waits for init to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def answers(port: int, count: int) -> set[str]:
    """`count` queries, each from its own socket (source port), so all workers get some."""
    seen = set()
    for i in range(count):
        q = dns.message.make_query(*[(NAME, "A"), ("_http._tcp." + NAME, "SRV")][i % 2])
        try:
            r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
        except dns.exception.Timeout:
            seen.add(f"query {i}: no answer in 2 s")
            continue
        seen.add(f"{dns.rcode.to_text(r.rcode())} {r.answer}")
    return seen


def per_worker(mport: int, name: str, **labels: str) -> dict[str, float]:
    """The `name` samples (with `labels`) on the supervisor's one /metrics, by worker
    ("" for the supervisor's own)."""
    status, text = get(f"http://127.0.0.1:{mport}/metrics")
    assert status == 200, text
    return {
        s.labels.get("worker", ""): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and labels.items() <= s.labels.items()
    }


def all_ready(mport: int) -> bool:
    """Both workers serve their first zone, by the supervisor's /metrics."""
    try:
        return per_worker(mport, "clusterset_dns_ready") == {"0": 1, "1": 1}
    except OSError:  # not listening yet
        return False


@pytest.mark.parametrize("command", ["run", "dns"])
def test_workers_share_the_port_and_survive_a_kill(command: str, tmp_path: Path) -> None:
    mport = free_port(run=3)  # the supervisor's, then worker i's on mport + 1 + i (loopback)
    args = ["run", "--manifests", str(ROOT / "examples" / "clusters"), "--cluster", "member2"]
    if command == "dns":
        (tmp_path / "imports.yaml").write_text(IMPORT.format(ip="10.250.0.10", db_ip="10.244.1.20"))
        args = ["dns", "--manifests", str(tmp_path)]
    with clusterset(*args, "--workers", "2", "--metrics-listen", f"127.0.0.1:{mport}") as (
        port,
        proc,
    ):
        deadline = time.monotonic() + 15
        serving = (200, "OK\nworkers serving: 2 of 2")  # by their heartbeats
        while not all_ready(mport) or get(f"http://127.0.0.1:{mport}/ready") != serving:
            assert time.monotonic() < deadline, "two ready workers"
            time.sleep(0.1)
        workers = children(proc.pid)
        before = answers(port, 60)
        assert len(before) == 2, before  # one answer per question, whichever worker answered
        # One /metrics for both: each worker's samples, labelled with its index.
        served = per_worker(mport, "clusterset_dns_requests_total", proto="udp")
        assert served.keys() == {"0", "1"}, served
        assert all(n > 0 for n in served.values()), served  # the kernel spread them over both
        assert per_worker(mport, "clusterset_workers") == {"": 2}
        assert per_worker(mport, "clusterset_worker_up") == {"0": 1, "1": 1}

        os.kill(workers[1], signal.SIGKILL)
        deadline = time.monotonic() + 15
        while True:  # the supervisor reaps the dead worker (its socket is closed) and restarts it
            now = children(proc.pid)
            if len(now) == 2 and workers[1] not in now:
                break
            assert time.monotonic() < deadline, f"worker not restarted: {now}"
            time.sleep(0.02)
        # While the new worker loads its zone, the survivor answers everything (a worker
        # joins the port only with a loaded zone: no SERVFAIL from it), the pod stays
        # ready, and the one /metrics still answers, with the restart counted.
        assert answers(port, 60) == before
        assert get(f"http://127.0.0.1:{mport}/ready")[0] == 200
        restarts = per_worker(mport, "clusterset_worker_restarts_total")
        assert restarts == {"0": 0, "1": 1}, restarts
        while not all_ready(mport):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert answers(port, 60) == before

        proc.send_signal(signal.SIGTERM)  # forwarded: every worker exits, then the supervisor
        assert proc.wait(timeout=15) == 0
        assert not any(running(pid) for pid in now)


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--listen", "127.0.0.1:0"], "--workers: give --listen a fixed port"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--metrics-listen", "127.0.0.1:0"], "--workers: give --metrics-listen a fixed port"),
        (["--metrics-listen", "127.0.0.1:65534"], "--workers 2: the workers' metrics ports"),
    ],
)
def test_bad_workers_flags_exit_2(extra: list[str], message: str) -> None:
    cmd = [sys.executable, "-m", "clusterset", "dns", "--manifests", ".", "--workers", "2", *extra]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2
    assert message in out.stderr


def test_busy_port_stops_all_workers_with_exit_2() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:  # no SO_REUSEPORT: exclusive
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "clusterset", "dns", "--manifests", "."]
        cmd += ["--listen", f"127.0.0.1:{port}", "--workers", "2"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert f"--listen 127.0.0.1:{port}" in out.stderr


def test_a_busy_metrics_port_is_exit_2_before_any_worker_starts(tmp_path: Path) -> None:
    with socket.socket() as s:  # the supervisor serves --metrics-listen itself
        s.bind(("127.0.0.1", 0))
        s.listen()
        mport = s.getsockname()[1]
        cmd = [sys.executable, "-m", "clusterset", "dns", "--manifests", str(tmp_path)]
        cmd += ["--listen", f"127.0.0.1:{free_port()}", "--workers", "2"]
        cmd += ["--metrics-listen", f"127.0.0.1:{mport}"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert out.returncode == 2, out.stderr
    assert f"--metrics-listen 127.0.0.1:{mport}" in out.stderr
    assert "worker 0 started" not in out.stderr


def test_workers_exit_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    (tmp_path / "imports.yaml").write_text(IMPORT.format(ip="10.250.0.10", db_ip="10.244.1.20"))
    with clusterset("dns", "--manifests", str(tmp_path), "--workers", "2") as (_port, proc):
        deadline = time.monotonic() + 15
        while len(workers := children(proc.pid)) < 2:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        proc.kill()  # SIGKILL: nothing is forwarded, and the workers may still be starting
        proc.wait()
        deadline = time.monotonic() + 30  # noticed within 1 s, then a graceful exit
        while any(running(pid) for pid in workers):
            assert time.monotonic() < deadline, "orphaned workers still running"
            time.sleep(0.1)


def test_workers_exit_when_the_supervisor_dies_while_they_start(tmp_path: Path) -> None:
    (tmp_path / "imports.yaml").write_text(IMPORT.format(ip="10.250.0.10", db_ip="10.244.1.20"))
    port = free_port()
    cmd = [sys.executable, "-m", "clusterset", "dns", "--manifests", str(tmp_path)]
    proc = subprocess.Popen([*cmd, "--listen", f"127.0.0.1:{port}", "--workers", "2"])
    deadline = time.monotonic() + 15
    while len(workers := children(proc.pid)) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.kill()  # before the workers have even imported the server
    proc.wait()
    deadline = time.monotonic() + 30
    while any(running(pid) for pid in workers):
        assert time.monotonic() < deadline, "orphaned workers still running"
        time.sleep(0.1)


def test_a_stopped_worker_is_killed_and_replaced(tmp_path: Path) -> None:
    """A hung worker keeps its socket, so the kernel keeps giving it its share of the
    flows: without the heartbeat, a SIGSTOPped worker left half the clients unanswered for
    as long as it was stopped (issue 20 item 7). Also `run --workers` with --state-file:
    worker 0 is its one writer now."""
    mport = free_port(run=3)
    args = ["run", "--manifests", str(ROOT / "examples" / "clusters"), "--cluster", "member2"]
    args += ["--state-file", str(tmp_path / "alloc.json")]
    with clusterset(*args, "--workers", "2", "--metrics-listen", f"127.0.0.1:{mport}") as (
        port,
        proc,
    ):
        deadline = time.monotonic() + 15
        while len(children(proc.pid)) < 2 or not all_ready(mport):
            assert time.monotonic() < deadline, "two ready workers"
            time.sleep(0.1)
        workers = children(proc.pid)
        before = answers(port, 20)
        assert len(before) == 2, before
        time.sleep(1)  # a worker that has served a while (and so has sent heartbeats)
        os.kill(workers[1], signal.SIGSTOP)
        stopped = time.monotonic()
        try:
            # The scrape waits for the stopped worker only its timeout (1 s), and says so.
            assert per_worker(mport, "clusterset_worker_up") == {"0": 1, "1": 0}
            lost = answers(port, 20)
            assert any("no answer" in a for a in lost), lost  # the hang is felt meanwhile
            while workers[1] in children(proc.pid):
                assert time.monotonic() - stopped < 20, "the stopped worker is still there"
                time.sleep(0.1)
            replaced = time.monotonic() - stopped
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.kill(workers[1], signal.SIGCONT)
        assert replaced < 10, replaced  # HEARTBEAT_TIMEOUT (5 s) and a poll
        assert answers(port, 40) == before  # the survivor alone, then both
        assert per_worker(mport, "clusterset_worker_restarts_total") == {"0": 0, "1": 1}
        while not all_ready(mport):
            assert time.monotonic() - stopped < 30
            time.sleep(0.1)
        assert answers(port, 40) == before
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
