"""The hub controller's loop around the pure reconcile: metrics, and what must not block."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, generate_latest

from clusterset.cli.main import hub_stats
from clusterset.controller.hub import Hub
from clusterset.server.http import HubCollector, reconcile_histogram


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
