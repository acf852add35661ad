"""The hub controller's loop around the pure reconcile: metrics, and what must not block."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import time
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from clusterset.controller.admission import AdmissionServer, View
from clusterset.controller.hub import Hub
from clusterset.controller.metrics import HubCollector, hub_stats, reconcile_histogram
from clusterset.kube import api as k
from clusterset.kube.lease import LeaderElector
from clusterset.model.ids import ClusterId
from clusterset.model.state import ClusterSetState
from clusterset.reconcile import desired as rd
from tests.factories import cluster, clusterset, endpoint, eslice, export, service

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


def _fleet(
    services: int, clusters: int, endpoints: int
) -> tuple[ClusterSetState, dict[str, ClusterId]]:
    """`services` headless services in 10 namespaces, each exported by two of `clusters`
    members with `endpoints` endpoints each."""
    members: list[dict[str, list[Any]]] = [
        {"services": [], "exports": [], "slices": []} for _ in range(clusters)
    ]
    for i in range(services):
        name, ns = f"svc-{i:05d}", f"team-{i % 10}"
        for c in (i % clusters, (i + 1) % clusters):
            members[c]["services"].append(service(name, ns, headless=True))
            members[c]["exports"].append(export(name, ns, created=float(c)))
            eps = tuple(
                endpoint(f"10.{20 + c}.{e}.{i % 250 + 1}", hostname=f"pod-{e}")
                for e in range(endpoints)
            )
            members[c]["slices"].append(eslice(name, ns, endpoints=eps))
    namespaces = tuple(f"team-{n}" for n in range(10))
    state = clusterset(
        *(
            cluster(
                f"m{c}",
                services=tuple(m["services"]),
                exports=tuple(m["exports"]),
                slices=tuple(m["slices"]),
                namespaces=namespaces,
            )
            for c, m in enumerate(members)
        )
    )
    return state, {f"m{c}": ClusterId(f"m{c}") for c in range(clusters)}


def _export_review(i: int) -> bytes:
    obj = {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceExport",
        "metadata": {"name": f"svc-{i:05d}", "namespace": f"team-{i % 10}"},
    }
    request = {
        "uid": str(i),
        "kind": {"group": "multicluster.x-k8s.io", "version": "v1beta1", "kind": "ServiceExport"},
        "operation": "CREATE",
        "object": obj,
    }
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "request": request}).encode()


def test_the_leader_keeps_its_lease_while_100_reviews_arrive_at_once() -> None:
    """Issue 22: each admission review built the whole zone twice per consumer on the event
    loop (3.45 s at 1,000 services x 2 exporters x 4 clusters): a `kubectl apply` burst could
    cost the hub its leadership."""
    state, ids = _fleet(1000, 4, endpoints=4)
    view = View(state, ids, True, lambda key: {})
    server = AdmissionServer(lambda: view, host="127.0.0.1", port=0, certs=None)  # type: ignore[arg-type]
    api = FakeLeaseApi()
    elector = LeaderElector(
        api,  # type: ignore[arg-type]
        namespace="kube-system",
        name="clusterset-controller",
        identity="a",
        **RENEW_EVERY_50MS,
    )

    async def scenario() -> None:
        leading = asyncio.create_task(elector.run())
        await asyncio.wait_for(elector.leading.wait(), 2)
        start = len(api.writes)
        # m2 exports services i with i % 4 in (1, 2); for the others it is a new exporter.
        outs = await asyncio.gather(*(server.answer(_export_review(i), "m2") for i in range(100)))
        end = len(api.writes)
        await asyncio.sleep(0.1)  # the renewal after the burst closes the last gap
        renewals = api.writes[start - 1 :]
        leading.cancel()
        await asyncio.gather(leading, return_exceptions=True)
        assert all(o["response"]["allowed"] for o in outs)
        assert sum(bool(o["response"].get("warnings")) for o in outs) >= 25  # real checks ran
        gaps = [b - a for a, b in itertools.pairwise(renewals)]
        # The burst takes ~0.7 s here (4 threads at a time): on the loop, no renewal at all.
        assert end - start >= 5, f"{end - start} renewals during the burst"
        assert max(gaps) < 0.3, f"a renewal waited {max(gaps):.2f}s for the reviews"

    asyncio.run(scenario())
