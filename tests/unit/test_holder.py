"""Zone swaps keep the collector off the hot path without keeping cyclic garbage forever."""

from __future__ import annotations

import gc
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


def test_cycles_alive_at_a_swap_are_collected_after_they_become_garbage() -> None:
    now = [0.0]
    holder = ZoneHolder(ORIGIN, clock=lambda: now[0])
    zone = CompiledZone(
        build.build(ImportedView(None, {}, {}, frozenset()), ZoneSettings(), serial=1)
    )
    cycles = [_Cycle() for _ in range(100)]
    refs = [weakref.ref(c) for c in cycles]
    holder.swap(zone)  # the cycles are alive, so this swap freezes them
    del cycles
    for _ in range(20):  # swaps in quick succession: no full collection each time
        now[0] += 0.1
        holder.swap(zone)
    now[0] += 3600  # however long the full-collection interval is
    holder.swap(zone)
    assert sum(r() is not None for r in refs) == 0
