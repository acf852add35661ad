"""Short form of bench/dns_fuzz.py: mutated and random packets against the running server."""

from __future__ import annotations

import pytest
from bench.dns_fuzz import fuzz

pytestmark = pytest.mark.stress


def test_mutated_and_random_packets_leave_the_server_answering_correctly() -> None:
    report = fuzz(20_000, seed=1645, tcp_share=0.1, rss_bound_mib=32, check_every=5_000)
    assert report.failures == []
    assert report.sent == 20_000 and report.tcp_sent > 1_000
    assert report.checks == 4 and report.probes_lost == 0
    assert report.server_received >= report.udp_sent  # paced: no UDP packet lost unread


def test_fuzz_through_the_forwarder_leaves_forwarding_and_answers_intact() -> None:
    """Unified mode: out-of-zone packets go through the forwarder to knotd (kube-dns)."""
    report = fuzz(10_000, seed=7, tcp_share=0.1, rss_bound_mib=32, check_every=2_500, unified=True)
    assert report.failures == []
    assert report.server_forwarded > 100
    assert report.server_received >= report.udp_sent
