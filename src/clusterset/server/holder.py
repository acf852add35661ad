"""The one mutable reference the network loops read: the current compiled zone."""

from __future__ import annotations

import gc
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
    rcodes: list[int] = field(default_factory=lambda: [0] * 24)


class ZoneHolder:
    """Swapped whole: readers take `holder.zone` once per query and never see half a zone."""

    __slots__ = ("counters", "generation", "origin", "zone")

    def __init__(self, origin: bytes) -> None:
        self.origin = origin
        self.zone: CompiledZone | None = None
        self.generation = 0
        self.counters = Counters()

    def swap(self, zone: CompiledZone) -> None:
        self.zone = zone
        self.generation += 1
        # Keep the collector off the hot path: the new zone's objects are long-lived.
        gc.collect(1)
        gc.freeze()
