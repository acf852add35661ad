"""Policy answers as the zone serves them (issue 11, item 20): what `resolve --explain` says is
what the compiled zone answers, and a second compile does not change a settled answer."""

from __future__ import annotations

import dns.rdatatype

from tests.dnsutil import ask, compile_view
from tests.unit.test_policy import KEY, ME, lf, mkview, sel

NAME = "svc.ns.svc.clusterset.local"


def addresses(v: object) -> list[str]:
    reply = ask(compile_view(v), NAME)  # type: ignore[arg-type]
    return sorted(
        rr.address for rrset in reply.answer for rr in rrset if rrset.rdtype == dns.rdatatype.A
    )


def test_failover_endpoints_is_answered_by_the_zone_not_only_explained() -> None:
    v = mkview(local_ready=0, ann=lf(failover="endpoints"), remotes={"m1": 2})
    explained = sorted(e.address for e in sel(v).endpoints)
    assert explained == ["10.11.0.1", "10.11.0.2"]
    assert addresses(v) == explained


def test_healthy_from_the_start_stays_local_on_the_next_compile() -> None:
    first = sel(mkview(ann=lf(hysteresis="30"), now=1000.0))
    assert first.addresses == ("10.96.0.7",)
    # The server recompiles (an unrelated edit, a probe verdict) 5 s later with that history.
    again = sel(mkview(ann=lf(hysteresis="30"), now=1005.0, tracks=first.tracks))
    assert again.addresses == ("10.96.0.7",)
    assert again.tracks[(KEY, ME)].healthy
