"""Zone swaps keep the collector off the hot path without keeping cyclic garbage forever."""

from __future__ import annotations

import gc
import sys
import weakref
from collections.abc import Iterator

import pytest

from clusterset.model.state import ImportedView
from clusterset.server.holder import ZoneHolder
from clusterset.zone import build
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import CompiledZone

ORIGIN = b"\x0aclusterset\x05local\x00"


class _Cycle:
    """Stands for any old-zone object in a reference cycle: only the collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture(autouse=True)
def _thaw() -> Iterator[None]:
    yield
    gc.unfreeze()  # leave the test process as we found it


def test_cycles_alive_at_a_swap_are_collected_once_the_frozen_heap_grows() -> None:
    """Garbage frozen at some swap is not left forever, and a stable heap never pays a
    full collection (~0.7 s on a fleet: the stall of issue 23)."""
    holder = ZoneHolder(ORIGIN)
    zone = CompiledZone(
        build.build(ImportedView(None, {}, {}, frozenset()), ZoneSettings(), serial=1)
    )
    holder.swap(zone)  # the first install collects everything once
    cycles = [_Cycle() for _ in range(100)]
    refs = [weakref.ref(c) for c in cycles]
    holder.swap(zone)  # the cycles are alive, so this swap freezes them
    del cycles
    for _ in range(20):  # swaps over a stable heap: no full collection
        holder.swap(zone)
    assert sum(r() is not None for r in refs) == 100
    grown = [[i] for i in range(sys.getallocatedblocks() // 3)]  # the heap grows by a third
    holder.swap(zone)
    assert sum(r() is not None for r in refs) == 0
    del grown
