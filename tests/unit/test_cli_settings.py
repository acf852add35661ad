"""Zone settings as the flags make them."""

from __future__ import annotations

import pytest

from clusterset.cli.common import zone_settings


@pytest.mark.parametrize(
    ("listen", "ns", "glue"),
    [
        ("10.96.0.53:53", None, ("10.96.0.53",)),  # one address: its own glue, as CoreDNS
        ("[fd00::53]:53", None, ("fd00::53",)),
        ("0.0.0.0:53", None, ()),  # every address: none is the one to publish
        ("127.0.0.1:5300", None, ()),  # loopback: CoreDNS does not publish it either
        ("10.96.0.53:53", ["10.96.0.10"], ("10.96.0.10",)),  # --ns-address wins
    ],
)
def test_apex_ns_glue_defaults_to_the_listen_address(
    listen: str, ns: list[str] | None, glue: tuple[str, ...]
) -> None:
    settings = zone_settings("clusterset.local", 5, "kep", ns, listen=listen)
    assert settings.ns_addresses == glue
