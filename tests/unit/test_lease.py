"""Leader election rules on an in-memory Lease (tests/integration/test_leader_election.py
runs the same properties against a real kube-apiserver)."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import pytest

from clusterset.kube.lease import LeaderElector, check_timing
from tests.unit.test_hub import FakeLeaseApi

FAST: dict[str, Any] = {"lease_duration": 0.6, "renew_deadline": 0.4, "retry_period": 0.05}


class Cuttable:
    """Passes calls to the fake until cut; then they never answer (a partitioned link)."""

    def __init__(self, api: FakeLeaseApi) -> None:
        self.api, self.cut = api, False

    def __getattr__(self, name: str) -> Any:
        call = getattr(self.api, name)

        async def gated(*args: Any) -> Any:
            if self.cut:
                await asyncio.Event().wait()
            return await call(*args)

        return gated


def elector(api: Any, identity: str, **kw: Any) -> LeaderElector:
    return LeaderElector(api, namespace="ns", name="lead", identity=identity, **FAST, **kw)


async def _writes_while(e: LeaderElector, out: list[float], stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        if e.is_leading():
            out.append(loop.time())
        await asyncio.sleep(0.01)


def test_a_cut_off_leader_stops_writing_before_the_other_takes_over() -> None:
    async def scenario() -> tuple[list[float], list[float], float]:
        store = FakeLeaseApi()
        link = Cuttable(store)
        a, b = elector(link, "a"), elector(store, "b")
        stop = asyncio.Event()
        wa: list[float] = []
        wb: list[float] = []
        tasks = [
            asyncio.create_task(a.run()),
            asyncio.create_task(_writes_while(a, wa, stop)),
        ]
        await asyncio.wait_for(a.leading.wait(), 2)
        tasks += [
            asyncio.create_task(b.run()),
            asyncio.create_task(_writes_while(b, wb, stop)),
        ]
        await asyncio.sleep(0.3)
        assert not b.leading.is_set()
        link.cut = True
        cut = asyncio.get_running_loop().time()
        await asyncio.wait_for(b.leading.wait(), 3)
        await asyncio.sleep(0.2)
        stop.set()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return wa, wb, cut

    wa, wb, cut = asyncio.run(scenario())
    assert wa and wb
    assert max(wa) < min(wb), "both wrote at once"
    assert max(wa) - cut <= FAST["renew_deadline"] + 0.05  # gave up at the renew deadline
    assert min(wb) - cut >= FAST["lease_duration"] - FAST["retry_period"] - 0.05


def test_a_leader_with_a_skewed_wall_clock_is_not_taken_over() -> None:
    def an_hour_behind() -> dt.datetime:
        return dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)

    async def scenario() -> None:
        store = FakeLeaseApi()
        a, b = elector(store, "a", wall_clock=an_hour_behind), elector(store, "b")
        ta = asyncio.create_task(a.run())
        await asyncio.wait_for(a.leading.wait(), 2)
        tb = asyncio.create_task(b.run())
        await asyncio.sleep(3 * FAST["lease_duration"])
        assert a.is_leading() and not b.leading.is_set()
        for t in (ta, tb):
            t.cancel()
        await asyncio.gather(ta, tb, return_exceptions=True)

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"),
    [
        pytest.param(10, 10, 2, id="deadline-not-below-lease"),
        pytest.param(15, 10, 9, id="retry-too-long"),
        pytest.param(15, 10, 0, id="no-retry-period"),
    ],
)
def test_client_go_timing_rules(duration: float, deadline: float, retry: float) -> None:
    with pytest.raises(ValueError, match="--leader-elect-"):
        check_timing(lease_duration=duration, renew_deadline=deadline, retry_period=retry)
