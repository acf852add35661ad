"""The prober's `concurrency` bounds connects in flight, not targets in flight."""

from __future__ import annotations

import asyncio

import pytest

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.server import probe
from clusterset.server.probe import Prober, Target


def test_at_most_concurrency_connects_in_flight(monkeypatch: pytest.MonkeyPatch) -> None:
    flying, peak = 0, 0

    async def connect(address: str, port: int, limit: float) -> tuple[bool, str]:
        nonlocal flying, peak
        flying += 1
        peak = max(peak, flying)
        await asyncio.sleep(0.01)
        flying -= 1
        return True, f"{address}:{port}: connected"

    monkeypatch.setattr(probe, "tcp_ok", connect)
    addresses = tuple((f"10.0.0.{i}", 80) for i in range(1, 4))  # per_cluster's default: 3

    async def main() -> int:
        prober = Prober(on_change=lambda: None, concurrency=2)
        targets = [
            Target(ServiceKey("ns", f"s{i}"), ClusterId("m1"), addresses, 1.0, 1.0)
            for i in range(4)
        ]
        await asyncio.gather(*(prober._probe(t) for t in targets))
        return prober.probes

    assert asyncio.run(main()) == 12
    assert peak == 2
