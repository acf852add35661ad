"""TCP slots against clients that start a message and never finish it (issue 20, items 4
and 8): half-sent queries must not hold the pool, nor a lone length byte the idle timeout."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.servers import clusterset

pytestmark = pytest.mark.integration

QUERY = dns.message.make_query("dns-version.clusterset.local.", "TXT")


def test_clients_holding_half_a_message_cannot_lock_out_others(tmp_path: Path) -> None:
    """300 connections from one source, each sending 3 bytes of a 64-byte query, then
    stalling (before: every slot held until the 3 s I/O timeout, 7/60 answered). Clients
    from another source and from that one are answered at once."""
    with clusterset("dns", "--manifests", str(tmp_path)) as (port, _):
        held: list[socket.socket] = []
        try:
            for _ in range(300):
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                s.sendall(b"\x00\x40\x12")
                held.append(s)
            time.sleep(0.2)
            answered = 0
            for i in range(20):
                source = "127.0.0.2" if i % 2 else "127.0.0.1"
                started_at = time.monotonic()
                try:
                    r = dns.query.tcp(QUERY, "127.0.0.1", port=port, timeout=1, source=source)
                except (EOFError, OSError, dns.exception.Timeout):
                    continue
                if r.rcode() == dns.rcode.NOERROR and time.monotonic() - started_at < 1:
                    answered += 1
            assert answered == 20
        finally:
            for s in held:
                s.close()


def test_one_byte_of_a_length_prefix_is_dropped_after_the_io_timeout(tmp_path: Path) -> None:
    """A lone length byte is held for the 3 s I/O timeout, not the 10 s idle one: on a new
    connection and on one that has already been answered."""
    with clusterset("dns", "--manifests", str(tmp_path)) as (port, _):
        fresh = socket.create_connection(("127.0.0.1", port), timeout=7)
        used = socket.create_connection(("127.0.0.1", port), timeout=7)
        try:
            dns.query.send_tcp(used, QUERY)
            reply, _ = dns.query.receive_tcp(used)
            assert reply.rcode() == dns.rcode.NOERROR
            started_at = time.monotonic()
            fresh.sendall(b"\x00")
            used.sendall(b"\x00")
            assert fresh.recv(1) == b""
            assert used.recv(1) == b""
            assert time.monotonic() - started_at < 4.5
        finally:
            fresh.close()
            used.close()


def test_one_source_cannot_take_the_slots_of_others(tmp_path: Path) -> None:
    """Past its 64 slots, a source's newcomers replace its own connections: another
    client's connection, opened before a flood of 300 and the oldest, is left alone."""
    with clusterset("dns", "--manifests", str(tmp_path)) as (port, _):
        other = socket.socket()
        other.settimeout(2)
        other.bind(("127.0.0.2", 0))
        other.connect(("127.0.0.1", port))
        flood: list[socket.socket] = []
        try:
            flood.extend(
                socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(300)
            )
            time.sleep(0.2)
            dns.query.send_tcp(other, QUERY)
            reply, _ = dns.query.receive_tcp(other, expiration=time.time() + 1)
            assert reply.rcode() == dns.rcode.NOERROR
            assert flood[0].recv(1) == b""  # the flood's oldest made room for its newest
        finally:
            other.close()
            for s in flood:
                s.close()
