"""The one mutable reference the network loops read: the current compiled zone."""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass, field, fields

from clusterset.zone.wire import CompiledZone


@dataclass(slots=True)
class Counters:
    """Plain ints bumped on the hot path (a prometheus Counter costs a lock per query);
    exported at scrape time by the metrics collector, which sums them (`ZoneHolder.total`).

    Each object has one writer thread: `x += 1` is a read then a write, and from two
    threads an increment is lost when they interleave (CPython 3.11's GIL happens not to
    switch there; nothing promises it, and free-threaded builds do). `ZoneHolder.counters`
    belongs to the event loop (TCP); each UDP thread has its own (`thread_counters`).
    """

    queries_udp: int = 0
    queries_tcp: int = 0
    dropped: int = 0
    truncated: int = 0
    forwarded: int = 0
    tcp_evicted: int = 0  # TCP connections waiting on their client, closed for a newcomer
    tcp_rejected: int = 0  # TCP connections refused: every slot busy mid-query
    rcodes: list[int] = field(default_factory=lambda: [0] * 24)

    def add(self, other: Counters) -> None:
        """Add `other`'s counts to these (at scrape time; `other` may be being written)."""
        for f in _INT_FIELDS:
            setattr(self, f, getattr(self, f) + getattr(other, f))
        self.rcodes = [a + b for a, b in zip(self.rcodes, other.rcodes, strict=True)]


_INT_FIELDS = tuple(f.name for f in fields(Counters) if f.name != "rcodes")


# A full collection (thaw, collect everything, freeze) holds the GIL over the whole heap
# (~0.7 s at 10 clusters x 2,000 services x 10 endpoints), so it never runs on a timer: an
# old zone holds no reference cycle and is freed by reference counting, and what a full
# collection would free is cyclic garbage that was alive at some freeze (a TCP connection's
# objects, say), which can only accumulate by growing the heap. It runs when the heap has
# grown by this share since the last one, measured as pymalloc's allocated blocks (0.7 ms to
# read at 9M blocks; gc.get_freeze_count() walks every frozen object: ~100 ms a swap at a
# fleet's 1.4M, measured by bench/dns_stall.py). A stable heap never stalls for it.
FULL_COLLECT_GROWTH = 0.25


class ZoneHolder:
    """Swapped whole: readers take `holder.zone` once per query and never see half a zone."""

    __slots__ = (
        "_blocks_after_full",
        "_thread_counters",
        "counters",
        "generation",
        "origin",
        "zone",
    )

    def __init__(self, origin: bytes) -> None:
        self.origin = origin
        self.zone: CompiledZone | None = None
        self.generation = 0
        self.counters = Counters()  # the event loop's (TCP); threads take their own
        self._thread_counters: list[Counters] = []
        self._blocks_after_full = 0  # allocated blocks after the last full collection

    def thread_counters(self) -> Counters:
        """New counters for the calling thread alone to write, included in `total()`."""
        counters = Counters()
        self._thread_counters.append(counters)  # one list.append: atomic under the GIL
        return counters

    def total(self) -> Counters:
        """Every thread's counts summed now (scrape time): exact, since none is shared."""
        total = Counters()
        for counters in [self.counters, *self._thread_counters]:
            total.add(counters)
        return total

    def swap(self, zone: CompiledZone) -> None:
        """Install `zone`; keep the collector off the hot path by freezing what is alive.

        Collections then visit only what was made since (the server collects that before
        each compile: server/gcpolicy.py). The first swap, and one after which the heap
        has grown by FULL_COLLECT_GROWTH, runs a full collection after the freeze.
        """
        self.zone = zone
        self.generation += 1
        # No young collection first: it would visit every entry of the zone's new dicts
        # (~50 ms a swap on a fleet, profiled); the server collects before compiling instead.
        gc.freeze()
        if sys.getallocatedblocks() > self._blocks_after_full * (1 + FULL_COLLECT_GROWTH):
            gc.unfreeze()
            gc.collect()
            gc.freeze()
            self._blocks_after_full = sys.getallocatedblocks()
