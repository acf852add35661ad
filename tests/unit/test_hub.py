"""The hub controller's loop around the pure reconcile: metrics, and what must not block."""

from __future__ import annotations

import asyncio
import copy
import itertools
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from clusterset.cli.controller import hub_stats
from clusterset.controller.hub import Hub
from clusterset.kube import api as k
from clusterset.kube.lease import LeaderElector
from clusterset.reconcile import desired as rd
from clusterset.server.http import HubCollector, reconcile_histogram

RENEW_EVERY_50MS: dict[str, Any] = {
    "lease_duration": 1.0,
    "renew_deadline": 0.8,
    "retry_period": 0.05,
}


def test_every_reconcile_pass_lands_in_the_exported_histogram() -> None:
    registry = CollectorRegistry()
    hub = Hub({}, on_duration=reconcile_histogram(registry).observe)
    registry.register(HubCollector(lambda: hub_stats(hub)))

    async def three_passes() -> None:
        for _ in range(3):
            assert await hub.reconcile_once()

    asyncio.run(three_passes())
    text = generate_latest(registry).decode()
    assert "clusterset_reconcile_duration_seconds_count 3.0" in text
    assert 'clusterset_reconcile_duration_seconds_bucket{le="+Inf"} 3.0' in text
    assert "clusterset_reconcile_total 3.0" in text
    assert "clusterset_leader 1.0" in text
    assert not hasattr(hub, "durations"), "an unbounded list of every pass's duration"


class FakeLeaseApi:
    """In-memory stand-in for the Lease calls of one apiserver (get/create/replace with a
    resourceVersion check); it records when each write arrived, in loop time."""

    def __init__(self) -> None:
        self.lease: dict[str, Any] | None = None
        self.version = 0
        self.writes: list[float] = []

    async def get(self, path: str) -> dict[str, Any]:
        if self.lease is None:
            raise k.ApiError(404, "not found", path=path)
        return copy.deepcopy(self.lease)

    async def create(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        if self.lease is not None:
            raise k.ApiError(409, "exists", path=path)
        return self._store(obj)

    async def replace(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        assert self.lease is not None
        if obj["metadata"].get("resourceVersion") != self.lease["metadata"]["resourceVersion"]:
            raise k.ApiError(409, "conflict", path=path)
        return self._store(obj)

    def _store(self, obj: dict[str, Any]) -> dict[str, Any]:
        self.version += 1
        self.lease = copy.deepcopy(obj)
        self.lease["metadata"]["resourceVersion"] = str(self.version)
        self.writes.append(asyncio.get_running_loop().time())
        return copy.deepcopy(self.lease)


def test_a_slow_reconcile_does_not_delay_lease_renewal(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 11 item 3: the pure reconcile ran on the event loop, so a long pass held back
    the leader's renewals (and could cost it the lease)."""

    def slow_reconcile(*args: Any, **kwargs: Any) -> Any:
        time.sleep(0.6)  # a big clusterset's pure pass: CPU, no awaits
        return real_reconcile(*args, **kwargs)

    real_reconcile = rd.reconcile
    monkeypatch.setattr(rd, "reconcile", slow_reconcile)
    api = FakeLeaseApi()
    elector = LeaderElector(
        api,  # type: ignore[arg-type]
        namespace="kube-system",
        name="clusterset-controller",
        identity="a",
        **RENEW_EVERY_50MS,
    )
    hub = Hub({}, elector=elector)

    async def scenario() -> None:
        leading = asyncio.create_task(elector.run())
        await asyncio.wait_for(elector.leading.wait(), 2)
        start = len(api.writes)
        await hub.reconcile_once()
        await hub.reconcile_once()
        renewals = api.writes[start:]
        leading.cancel()
        await asyncio.gather(leading, return_exceptions=True)
        gaps = [b - a for a, b in itertools.pairwise(renewals)]
        assert len(renewals) >= 10, renewals
        assert max(gaps) < 0.3, f"a renewal waited {max(gaps):.2f}s for the reconcile"

    asyncio.run(scenario())


def test_the_hub_stops_when_cancelled_as_a_change_arrives() -> None:
    """A controller under a stream of watch events never exited on SIGTERM: 3.11's
    asyncio.wait_for swallowed the cancellation that arrived as the wake event was set, and
    the reconcile loop (so the TaskGroup, so main) went on forever."""

    async def scenario() -> None:
        for _ in range(20):
            hub = Hub({}, resync=60.0)
            running = asyncio.create_task(hub.run())
            await asyncio.sleep(0.01)
            hub._wake.set()  # what a member's watch event does (on_change)
            running.cancel()
            done, _ = await asyncio.wait({running}, timeout=2)
            assert done, "the hub went on after its cancellation"

    asyncio.run(scenario())
