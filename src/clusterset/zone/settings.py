"""The settings of one clusterset zone: the server's flags, as the zone build reads them."""

from __future__ import annotations

from dataclasses import dataclass

from clusterset.zone import policy


@dataclass(frozen=True, slots=True)
class ZoneSettings:
    zone: str = "clusterset.local"
    ttl: int = 5
    version: str = "1.0.0"
    version_ttl: int = 28800
    ns_addresses: tuple[str, ...] = ()
    default_policy: str = policy.KEP
    # Opt-in: also answer <svc>.<ns>.svc.<unified_zone> (e.g. cluster.local) for imported
    # services, local-first; everything else there is forwarded upstream by the server.
    unified_zone: str | None = None
    # Honour the source clusters' liveness Leases: a source whose Lease expired
    # (view.leases) stops counting, its endpoints are not answered.
    source_leases: bool = False
