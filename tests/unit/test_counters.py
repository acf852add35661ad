"""Counters: one writer per object, summed at scrape time (`ZoneHolder.total`)."""

from __future__ import annotations

from dataclasses import fields

from clusterset.server.holder import Counters, ZoneHolder

ORIGIN = b"\x0aclusterset\x05local\x00"


def test_total_sums_the_event_loop_and_every_thread() -> None:
    holder = ZoneHolder(ORIGIN)
    a, b = holder.thread_counters(), holder.thread_counters()
    assert a is not b and a is not holder.counters
    holder.counters.queries_tcp += 2
    holder.counters.rcodes[0] += 2
    a.queries_udp += 3
    a.rcodes[3] += 1
    a.truncated += 1
    b.queries_udp += 4
    b.dropped += 1
    b.forwarded += 1
    b.rcodes[0] += 2
    total = holder.total()
    assert (total.queries_udp, total.queries_tcp, total.dropped) == (7, 2, 1)
    assert (total.truncated, total.forwarded, total.tcp_evicted) == (1, 1, 0)
    assert total.rcodes[:4] == [4, 0, 0, 1] and len(total.rcodes) == 24
    total.queries_udp += 100  # a copy: the threads' counters are untouched
    assert holder.total().queries_udp == 7


def test_add_covers_every_field() -> None:
    names = [f.name for f in fields(Counters) if f.name != "rcodes"]
    one = Counters(rcodes=list(range(24)))
    for i, name in enumerate(names, 1):
        setattr(one, name, i)
    total = Counters()
    total.add(one)
    total.add(one)
    assert [getattr(total, name) for name in names] == [2 * i for i in range(1, len(names) + 1)]
    assert total.rcodes == [2 * i for i in range(24)]
