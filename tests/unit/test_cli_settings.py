"""Zone and server settings as the flags make them."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from clusterset.cli.common import ServeFlags, zone_settings
from clusterset.cli.dns import dns
from clusterset.cli.run import run


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


def test_dns_and_run_declare_every_serving_flag_alike() -> None:
    """Both commands collect their serving flags into ServeFlags: each field is a parameter
    of both, of the same flag type and default, so that the two cannot drift apart."""
    for field in dataclasses.fields(ServeFlags):
        on_dns = inspect.signature(dns).parameters[field.name]
        on_run = inspect.signature(run).parameters[field.name]
        assert (on_dns.annotation, on_dns.default) == (on_run.annotation, on_run.default)
