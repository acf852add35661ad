"""Step 5 of wire-dns: after applying, the cluster's real DNS must keep answering, or the
run rolls back."""

from __future__ import annotations

import asyncio

from clusterset.wiredns.answers import answers


async def grace(
    probe: tuple[str, int],
    *,
    zone: str,
    seconds: float,
    interval: float = 1.0,
    cluster_domain: str = "cluster.local",
    failures: int = 3,
) -> str:
    """Watch the cluster's real answers; '' when healthy, else why it must roll back.

    Healthy: the clusterset zone answered at least once, and cluster.local never failed
    `failures` times in a row.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    wired = False
    bad = 0
    seen = ""
    while loop.time() < end:
        local, clusterset, seen = await answers(probe, zone=zone, cluster_domain=cluster_domain)
        wired = wired or clusterset
        bad = 0 if local else bad + 1
        if bad >= failures:
            return f"cluster.local stopped answering at {probe[0]}:{probe[1]} ({seen})"
        await asyncio.sleep(interval)
    if not wired:
        return f"{zone} never answered at {probe[0]}:{probe[1]} within {seconds:g}s ({seen})"
    return ""
