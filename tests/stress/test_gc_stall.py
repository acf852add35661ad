"""No collection holds the GIL over the whole zone while the server installs zones (issue
23, "no stall"): at 10 x 2,000 x 10 a full collection of the heap held it ~0.7 s."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
from collections.abc import AsyncIterator, Iterator

import pytest

from clusterset.model.objects import ImportType
from clusterset.model.state import ImportedView
from clusterset.server.app import DnsOptions, DnsServer
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import CompiledZone
from tests.factories import endpoint, eslice, imported, view

pytestmark = pytest.mark.timeout(300)

SERVICES, SOURCES, ENDPOINTS = 1500, 5, 6  # 45,000 endpoints
EDITS = 10


def _big_view() -> ImportedView:
    names = [f"s{i}" for i in range(SERVICES)]
    slices = [
        eslice(
            name,
            endpoints=tuple(
                endpoint(f"10.{c}.{i // 40}.{i % 40 * 6 + e + 1}", hostname=f"h{e}")
                for e in range(ENDPOINTS)
            ),
            source=f"c{c}",
        )
        for i, name in enumerate(names)
        for c in range(SOURCES)
    ]
    headless = tuple(imported(n, type=ImportType.HEADLESS) for n in names)
    return view(imports=headless, slices=tuple(slices))


def _edits(first: ImportedView) -> list[ImportedView]:
    """`first`, then EDITS versions with one more ClusterSetIP service each."""
    views = [first]
    for k in range(EDITS):
        extra = imported(f"new{k}", ips=(f"10.99.0.{k + 1}",))
        views.append(
            dataclasses.replace(
                views[-1], imports={**views[-1].imports, extra.key: extra}, generation=8 + k
            )
        )
    return views


def _longest_collection_after_first_install(views: list[ImportedView]) -> tuple[float, int]:
    """Serve `views` one by one; the longest collection (seconds) once the first zone is
    installed, and how many zones were installed."""
    installed: list[int] = []
    longest = [0.0]
    started = [0.0]

    def timing(phase: str, _info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif installed:
            longest[0] = max(longest[0], time.perf_counter() - started[0])

    async def main() -> None:
        server = DnsServer(DnsOptions(ZoneSettings(), listen="127.0.0.1:0"))
        served = asyncio.Event()

        async def feed() -> AsyncIterator[ImportedView]:
            for v in views:  # the next edit once this one is served
                yield v
                await served.wait()
                served.clear()
            await asyncio.sleep(3600)

        def swapped(zone: CompiledZone, _v: ImportedView) -> None:
            installed.append(zone.serial)
            served.set()

        server.on_swap.append(swapped)
        await server.start()
        task = asyncio.create_task(server.serve_views(feed()))
        async with asyncio.timeout(240):
            while len(installed) < len(views):
                await served.wait()
                await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()

    gc.callbacks.append(timing)
    try:
        asyncio.run(main())
    finally:
        gc.callbacks.remove(timing)
    return longest[0], len(installed)


@pytest.fixture
def _gc_restored() -> Iterator[None]:
    thresholds = gc.get_threshold()
    yield
    gc.set_threshold(*thresholds)
    gc.unfreeze()  # leave the test process as we found it
    gc.collect()


@pytest.mark.usefixtures("_gc_restored")
def test_no_collection_visits_the_zone_after_it_is_installed() -> None:
    views = _edits(_big_view())
    gc.collect()
    t0 = time.perf_counter()
    gc.collect()  # what a collection of everything costs here, the views alive
    everything = time.perf_counter() - t0
    longest, installs = _longest_collection_after_first_install(views)
    assert installs == len(views)
    # Measured on 2 shared cores (bench running): everything 66 ms; before the fix the
    # holder thawed and collected everything at an install every 10 min (here: an install
    # after the interval): 131-168 ms; now 0.03-0.3 ms.
    assert longest < 0.020, f"longest collection {longest * 1e3:.1f} ms ({everything * 1e3:.0f})"
