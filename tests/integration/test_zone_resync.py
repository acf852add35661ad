"""The server's zone feed: incremental compiles, and the periodic full rebuild (safety net)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

from clusterset.model.state import ImportedView
from clusterset.server.app import DnsOptions, DnsServer
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import CompiledZone
from tests.factories import endpoint, eslice, imported, view


def _view() -> ImportedView:
    return view(
        imports=(imported("a"), imported("b"), imported("c")),
        slices=(eslice("a", endpoints=(endpoint("10.1.0.1"),), source="c1"),),
    )


def _rebuilt_per_swap(
    every: float, views: list[ImportedView], seconds: float
) -> tuple[list[int], float]:
    """Feed `views` to a server on 127.0.0.1:0, keep the feed open `seconds`; return how many
    services each installed zone built (the rest were reused), and how many changes the
    change-to-answer histogram counted."""

    async def feed() -> AsyncIterator[ImportedView]:
        for v in views:
            yield v
        await asyncio.sleep(3600)

    async def main() -> tuple[list[int], float]:
        server = DnsServer(
            DnsOptions(ZoneSettings(), listen="127.0.0.1:0", full_rebuild_every=every)
        )
        rebuilt: list[int] = []

        def seen(zone: CompiledZone, _v: ImportedView) -> None:
            rebuilt.append(zone.state.rebuilt)

        server.on_swap.append(seen)
        await server.start()
        task = asyncio.create_task(server.serve_views(feed()))
        await asyncio.sleep(seconds)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await server.stop()
        count = server.registry.get_sample_value("clusterset_dns_change_to_answer_seconds_count")
        return rebuilt, count or 0.0

    return asyncio.run(main())


def test_an_edit_rebuilds_only_its_service() -> None:
    first = _view()
    second = dataclasses.replace(
        first,
        imports={**first.imports, **view(imports=(imported("b", ips=("10.0.0.9",)),)).imports},
    )
    assert _rebuilt_per_swap(600, [first, second], 0.5)[0] == [3, 1]


def test_a_full_rebuild_runs_periodically_without_changes() -> None:
    seen = dataclasses.replace(_view(), observed_at=time.time() - 100)
    rebuilt, changes = _rebuilt_per_swap(0.2, [seen], 1.0)
    assert len(rebuilt) >= 3 and all(n == 3 for n in rebuilt), rebuilt
    assert changes == 1  # the resyncs of the same view are not changes
