"""Leader election against a real kube-apiserver: two candidates, each on its own event loop
in its own thread (as two processes would be), a leader that is paused or cut off, and a
leader whose wall clock is wrong. The property: the two never write at the same time
(issue 11 item 16)."""

from __future__ import annotations

import asyncio
import datetime as dt
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clusterset.kube import api as k
from clusterset.kube.lease import LeaderElector
from tests.conftest import eventually
from tests.controlplane import ControlPlane
from tests.integration.servers import TEXT_ERROR

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]

TIMING: dict[str, Any] = {"lease_duration": 3.0, "renew_deadline": 2.0, "retry_period": 0.3}


class Partitionable:
    """The real API of one cluster, with a switch that blackholes it (requests get no answer,
    like a cut link): fault injection around the real client, not a stand-in."""

    def __init__(self, api: k.KubeApi) -> None:
        self.api = api
        self.name = api.name
        self.cut = False

    async def _gate(self) -> None:
        if self.cut:
            await asyncio.Event().wait()

    async def get(self, path: str) -> dict[str, Any]:
        await self._gate()
        got = await self.api.get(path)
        await self._gate()
        return got

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        await self._gate()
        made = await self.api.create(path, obj)
        await self._gate()
        return made

    async def replace(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        await self._gate()
        written = await self.api.replace(path, obj)
        await self._gate()
        return written


class Candidate:
    """One replica: an elector and a writer that writes (records the time) whenever the
    elector says it may, every 20 ms, the way the hub checks before each pass."""

    def __init__(
        self,
        cp: ControlPlane,
        identity: str,
        lease: str,
        *,
        wall_clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.cp, self.identity, self.lease = cp, identity, lease
        self.wall_clock = wall_clock
        self.writes: list[float] = []
        self.stopped_leading: float | None = None
        self.api: Partitionable | None = None
        self.elector: LeaderElector | None = None
        self.loop = asyncio.new_event_loop()
        self._done = threading.Event()
        self.thread = threading.Thread(target=self._main, name=identity, daemon=True)

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._run())
        finally:
            self.loop.close()
            self._done.set()

    async def _run(self) -> None:
        config = k.load_contexts(self.cp.kubeconfig_path, ["member1"])["member1"]
        real = k.KubeApi.from_config("member1", config)
        self.api = Partitionable(real)
        extra: dict[str, Any] = {} if self.wall_clock is None else {"wall_clock": self.wall_clock}
        self.elector = LeaderElector(
            self.api,  # type: ignore[arg-type]
            namespace="default",
            name=self.lease,
            identity=self.identity,
            **TIMING,
            **extra,
        )
        elector = self.elector

        async def writer() -> None:
            while True:
                if elector.is_leading():
                    self.writes.append(time.monotonic())
                await asyncio.sleep(0.02)

        writing = asyncio.create_task(writer())
        try:
            await elector.run()
            self.stopped_leading = time.monotonic()
            await asyncio.sleep(3600)  # stay alive (as a process would until restarted)
        except asyncio.CancelledError:
            pass
        finally:
            writing.cancel()
            await real.close()

    def start(self) -> None:
        self.thread.start()

    def leads(self) -> bool:
        return self.elector is not None and self.elector.leading.is_set()

    def pause(self, seconds: float) -> None:
        """Freeze this replica's whole event loop, as SIGSTOP or a long GC pause would."""
        self.loop.call_soon_threadsafe(time.sleep, seconds)

    def stop(self) -> None:
        if self.thread.is_alive():

            def cancel_all() -> None:
                for t in asyncio.all_tasks(self.loop):
                    t.cancel()

            self.loop.call_soon_threadsafe(cancel_all)
            self._done.wait(10)


def _run_pair(
    cp: ControlPlane, lease: str, scenario: Callable[[Candidate, Candidate], None], **a_kw: Any
) -> tuple[Candidate, Candidate]:
    a, b = Candidate(cp, "a", lease, **a_kw), Candidate(cp, "b", lease)
    try:
        a.start()
        eventually("a leads", a.leads, timeout=30)
        b.start()
        eventually("b is running", lambda: b.elector is not None, timeout=30)
        scenario(a, b)
    finally:
        a.stop()
        b.stop()
    return a, b


def _never_both(a: Candidate, b: Candidate) -> None:
    assert a.writes and b.writes
    assert max(a.writes) < min(b.writes), (
        f"a wrote {max(a.writes) - min(b.writes):.2f}s after b had started writing"
    )


def test_a_paused_leader_writes_nothing_after_it_resumes(control_plane: ControlPlane) -> None:
    def scenario(a: Candidate, b: Candidate) -> None:
        time.sleep(1.0)
        assert not b.leads()
        a.pause(6.0)
        paused = time.monotonic()
        eventually("b takes over", b.leads, timeout=15)
        took = time.monotonic() - paused
        assert took >= TIMING["lease_duration"] - TIMING["retry_period"] - 0.1, took
        eventually("a noticed it stopped leading", lambda: a.stopped_leading, timeout=15)
        time.sleep(0.5)  # b keeps writing; a must not

    a, b = _run_pair(control_plane, "le-paused", scenario)
    _never_both(a, b)


def test_a_cut_off_leader_stops_writing_before_another_takes_over(
    control_plane: ControlPlane,
) -> None:
    cut_at: list[float] = []

    def scenario(a: Candidate, b: Candidate) -> None:
        time.sleep(1.0)
        assert a.api is not None
        a.api.cut = True
        cut_at.append(time.monotonic())
        eventually("b takes over", b.leads, timeout=15)
        time.sleep(0.5)

    a, b = _run_pair(control_plane, "le-cut", scenario)
    _never_both(a, b)
    assert a.stopped_leading is not None
    # a gave up within the renew deadline (+ one retry) of its last renewal before the cut.
    gave_up = a.stopped_leading - cut_at[0]
    assert gave_up <= TIMING["renew_deadline"] + TIMING["retry_period"] + 0.3, gave_up
    # b waited for the lease to stay unchanged for a whole lease duration.
    assert min(b.writes) - cut_at[0] >= TIMING["lease_duration"] - TIMING["retry_period"] - 0.1


def test_a_leader_with_a_wrong_wall_clock_keeps_the_lease(control_plane: ControlPlane) -> None:
    """Its renewTime is an hour old when written: expiry judged by the follower's own
    observation of changes (client-go's observedTime) must not see it as expired."""

    def an_hour_behind() -> dt.datetime:
        return dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

    def scenario(a: Candidate, b: Candidate) -> None:
        deadline = time.monotonic() + 3 * TIMING["lease_duration"]
        while time.monotonic() < deadline:
            assert not b.leads(), "b took over a healthy leader"
            assert a.leads()
            time.sleep(0.1)

    a, b = _run_pair(control_plane, "le-skew", scenario, wall_clock=an_hour_behind)
    assert a.writes and not b.writes


def test_a_controller_that_loses_its_lease_says_why_once_and_exits_1(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """End to end (issue 11 items 3 and 16): another holder keeps the leader Lease fresh, the
    controller cannot renew within its deadline, stops, logs why once and exits 1 (Kubernetes
    restarts it; it then waits as a follower)."""
    cp = control_plane
    lease = "/apis/coordination.k8s.io/v1/namespaces/default/leases/le-stolen"
    log = tmp_path / "controller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "clusterset",
                "controller",
                *("--kubeconfig", str(cp.kubeconfig_path), "--context", "member1"),
                *("--lease-namespace", "default", "--lease-name", "le-stolen"),
                *("--identity", "ours", "--leader-elect-lease-duration", "3"),
                *("--leader-elect-renew-deadline", "2", "--leader-elect-retry-period", "0.3"),
            ],
            stdout=out,
            stderr=out,
        )
    try:

        def holder() -> str:
            status, body = cp.request("member1", "GET", lease)
            return str(body["spec"].get("holderIdentity")) if status == 200 else ""

        eventually("the controller leads", lambda: holder() == "ours", timeout=60)
        stolen = time.monotonic()
        while proc.poll() is None and time.monotonic() - stolen < 15:
            status, body = cp.request("member1", "GET", lease)
            if status == 200:
                body["spec"]["holderIdentity"] = "thief"
                body["spec"]["renewTime"] = dt.datetime.now(dt.UTC).strftime(
                    "%Y-%m-%dT%H:%M:%S.%fZ"
                )
                cp.request("member1", "PUT", lease, body)  # a 409 just means: try again
            time.sleep(0.2)
        code = proc.wait(timeout=10)
        exited_after = time.monotonic() - stolen
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = log.read_text(errors="replace")
    errors = [line for line in output.splitlines() if TEXT_ERROR.match(line)]
    assert code == 1, output[-3000:]
    assert exited_after < 2 + 0.3 + 3, f"exited {exited_after:.1f}s after the lease was taken"
    assert "Traceback" not in output, output[-3000:]
    assert len(errors) == 1, output[-3000:]
    assert "controller stopped, exiting" in errors[0], errors
    assert "lost the leader lease (not renewed within 2s)" in errors[0], errors
