"""canonical_ip's dotted-quad fast path accepts and writes exactly what ipaddress does."""

from __future__ import annotations

import ipaddress

import pytest

from clusterset.model.objects import canonical_ip

CASES = [
    "1.2.3.4", "0.0.0.0", "255.255.255.255", "01.2.3.4", "1.2.3.04", "1.2.3", "1.2.3.4.5",
    "256.1.1.1", " 1.2.3.4", "1.2.3.4 ", "1..3.4", "a.b.c.d", "1.2.3.4\x00", "1e1.1.1.1",
    "0x1.1.1.1", "1.2.3.-4", "+1.2.3.4", "\u0967.2.3.4", "", "1.2.3.4/32",
    "1.2.3.4\n", "::1", "::ffff:1.2.3.4", "FD00::0001", "fe80::1%eth0",
]  # fmt: skip


@pytest.mark.parametrize("text", CASES)
def test_same_as_ipaddress(text: str) -> None:
    try:
        want: str | None = str(ipaddress.ip_address(text))
    except ValueError:
        want = None
    try:
        got: str | None = canonical_ip(text)
    except ValueError:
        got = None
    assert got == want
