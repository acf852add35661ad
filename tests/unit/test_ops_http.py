"""The metrics/health port against unfinished and slow requests (issue 20, item 5): no
thread per connection, a bounded number of fds, and the probes still answered."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

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
