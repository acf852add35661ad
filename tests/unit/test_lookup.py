"""zone.lookup: the pre-flight answer of one service, read from its zone.build fragment,
is the text of the whole dnspython zone (the oracle) for every service of many zones."""

from __future__ import annotations

import random

import pytest

from clusterset.model.ids import ServiceKey
from clusterset.model.state import ImportedView
from clusterset.zone import lookup
from clusterset.zone.settings import ZoneSettings
from tests import zone_oracle
from tests.conformance.test_vectors import FIXTURES, load_view
from tests.unit.test_zone_build import SETTINGS, random_view

ABSENT = (ServiceKey("ns0", "never-imported"), ServiceKey("n" * 63, "s" * 63))


def _assert_like_oracle(view: ImportedView, settings: ZoneSettings) -> int:
    """Every imported key (and two that are not) answers as the oracle; returns how many
    had records."""
    with_records = 0
    for key in (*sorted(view.imports), *ABSENT):
        got = lookup.service_answer(view, key, settings)
        assert got == zone_oracle.service_answer(view, key, settings), (key, settings)
        with_records += got not in (("NXDOMAIN",), ("NODATA",))
    return with_records


@pytest.mark.parametrize("fixture", sorted(p.stem for p in FIXTURES.glob("*.yaml")))
def test_conformance_fixtures_answer_as_the_oracle(fixture: str) -> None:
    view = load_view(fixture)
    for settings in (ZoneSettings(), ZoneSettings(zone="Inter.Webs.Tests", unified_zone="x.y")):
        _assert_like_oracle(view, settings)


def test_random_zones_answer_as_the_oracle() -> None:
    """Headless and ClusterSetIP, dual stack, local-first (hysteresis, failover, weights),
    expired source leases, unnameable names, namespaces missing, a unified zone."""
    rng = random.Random(22)
    with_records = 0
    for i in range(120):
        with_records += _assert_like_oracle(random_view(rng), SETTINGS[i % len(SETTINGS)])
    assert with_records > 300  # not only NXDOMAIN and NODATA
