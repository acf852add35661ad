"""The metrics/health port against unfinished and slow requests (issue 20, item 5): no
thread per connection, a bounded number of fds, and the probes still answered, a slow
/metrics included."""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clusterset.server.http import OpsServer


@pytest.fixture
def ops() -> Iterator[OpsServer]:
    server = OpsServer(("127.0.0.1", 0), CollectorRegistry(), ready=lambda: True)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_unfinished_requests_hold_no_thread_and_few_fds(ops: OpsServer) -> None:
    """500 requests stalled mid-head (before: 500 threads and fds, kept forever)."""
    threads = threading.active_count()
    fds = len(os.listdir("/proc/self/fd"))
    clients: list[socket.socket] = []
    try:
        for _ in range(500):
            s = socket.create_connection(ops.address, timeout=2)
            s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
            clients.append(s)
        time.sleep(0.5)
        assert threading.active_count() == threads
        server_fds = len(os.listdir("/proc/self/fd")) - fds - len(clients)
        assert server_fds <= 64
        started_at = time.monotonic()
        host, port = ops.address
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=1) as r:
            assert (r.status, r.read()) == (200, b"OK")
        assert time.monotonic() - started_at < 1
    finally:
        for s in clients:
            s.close()


def test_a_request_dribbled_a_byte_at_a_time_is_dropped_after_the_read_timeout(
    ops: OpsServer,
) -> None:
    """The 5 s read timeout bounds the whole request head, not each read."""
    with socket.create_connection(ops.address, timeout=2) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nX-Slow: ")
        started_at = time.monotonic()
        closed = False
        while not closed and time.monotonic() - started_at < 9:
            readable, _, _ = select.select([s], [], [], 0.5)
            try:
                closed = bool(readable) and s.recv(1) == b""
                s.sendall(b"x")
            except ConnectionError:
                closed = True
        assert closed
        assert 4.5 < time.monotonic() - started_at < 6.5


class Slow(Collector):
    """A collector that takes a while (the --workers supervisor's, waiting on a worker)."""

    def collect(self) -> Iterator[Metric]:
        time.sleep(1.5)
        yield GaugeMetricFamily("slow", "Slow.", value=1)


def test_a_slow_metrics_scrape_does_not_hold_the_probes() -> None:
    registry = CollectorRegistry()
    registry.register(Slow())
    server = OpsServer(("127.0.0.1", 0), registry, ready=lambda: True)
    server.start()
    host, port = server.address
    try:
        scrape = threading.Thread(
            target=lambda: urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read()
        )
        scrape.start()
        time.sleep(0.2)  # the scrape is in the collector now
        started_at = time.monotonic()
        with urllib.request.urlopen(f"http://{host}:{port}/ready", timeout=1) as r:
            assert r.status == 200
        assert time.monotonic() - started_at < 0.5
        scrape.join()
    finally:
        server.stop()


def test_scrapes_waiting_their_turn_leave_room_for_the_probes() -> None:
    """More slow scrapes than connections may be open: one renders, the others wait their
    turn evictable, so a probe still gets in (it was refused when every scrape in flight
    held its connection)."""
    registry = CollectorRegistry()
    registry.register(Slow())
    server = OpsServer(("127.0.0.1", 0), registry, ready=lambda: True, max_connections=4)
    server.start()
    host, port = server.address

    def scrape() -> None:
        with contextlib.suppress(OSError):  # an evicted waiter sees its connection closed
            urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=5).read()

    try:
        scrapes = [threading.Thread(target=scrape) for _ in range(8)]
        for t in scrapes:
            t.start()
        time.sleep(0.3)  # one in the collector, the others waiting
        with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=2) as r:
            assert r.status == 200
        for t in scrapes:
            t.join()
    finally:
        server.stop()
