"""Short form of bench/dns_soak.py: dnsperf at a fixed rate while the folder churns."""

from __future__ import annotations

import pytest
from bench.dns_soak import soak

pytestmark = pytest.mark.stress


def test_no_lost_or_wrong_answer_while_the_folder_changes_every_100_ms() -> None:
    report = soak(8, rate=300, churn_ms=100, window=2.0, rss_bound_mib=16)
    assert report.failures == []
    assert report.dnsperf["sent"] >= 2000 and report.dnsperf["lost"] == 0
    assert report.versions >= 60  # the data really changed ~10 times a second
    assert report.verdicts.checked > 200 and report.verdicts.wrong == []


@pytest.mark.kube
def test_no_lost_or_wrong_answer_while_apiserver_objects_change_every_100_ms() -> None:
    """The same against a real kube-apiserver: member-mode `dns` follows its watches."""
    report = soak(8, rate=300, churn_ms=100, window=2.0, rss_bound_mib=16, apiserver=True)
    assert report.failures == []
    assert report.dnsperf["sent"] >= 2000 and report.dnsperf["lost"] == 0
    assert report.versions >= 40
    assert report.verdicts.checked > 200 and report.verdicts.wrong == []
