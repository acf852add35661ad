"""The one mutable reference the network loops read: the current compiled zone."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from clusterset.zone.wire import CompiledZone


@dataclass(slots=True)
class Counters:
    """Plain ints bumped on the hot path (a prometheus Counter costs a lock per query);
    exported at scrape time by the metrics collector."""

    queries_udp: int = 0
    queries_tcp: int = 0
    dropped: int = 0
    truncated: int = 0
    forwarded: int = 0
    tcp_evicted: int = 0  # TCP connections waiting on their client, closed for a newcomer
    tcp_rejected: int = 0  # TCP connections refused: every slot busy mid-query
    rcodes: list[int] = field(default_factory=lambda: [0] * 24)


# Seconds between collections that also look at frozen objects. A full pass over a
# 5,500-service zone (~340k objects) holds the GIL for ~0.1 s on an idle core, over a
# 10-cluster x 2,000-service fleet about a second: as rare as the zone's own full rebuild.
FULL_COLLECT_EVERY = 600.0


class ZoneHolder:
    """Swapped whole: readers take `holder.zone` once per query and never see half a zone."""

    __slots__ = ("_clock", "_full_at", "counters", "generation", "origin", "zone")

    def __init__(
        self,
        origin: bytes,
        *,
        clock: Callable[[], float] = time.monotonic,  # injectable for tests
    ) -> None:
        self.origin = origin
        self.zone: CompiledZone | None = None
        self.generation = 0
        self.counters = Counters()
        self._clock = clock
        self._full_at = float("-inf")

    def swap(self, zone: CompiledZone) -> None:
        """Install `zone`; keep the collector off the hot path by freezing what is alive.

        Frozen objects are never collected, so cyclic garbage of earlier zones would stay
        forever: at most every FULL_COLLECT_EVERY seconds everything is thawed and a full
        collection runs before freezing again, so such garbage lives at most that long.
        """
        self.zone = zone
        self.generation += 1
        now = self._clock()
        if now - self._full_at >= FULL_COLLECT_EVERY:
            self._full_at = now
            gc.unfreeze()
            gc.collect()
        # No young collection first: it would visit every entry of the zone's new dicts
        # (~50 ms a swap on a fleet, profiled); a young cycle frozen here waits for the
        # next full collection.
        gc.freeze()
