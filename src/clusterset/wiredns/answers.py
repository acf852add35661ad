"""The two questions the canary and the grace period ask a DNS server: a cluster.local
name every cluster has, and the clusterset zone's SOA."""

from __future__ import annotations

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

# A cluster.local name every cluster has (the apiserver's Service).
CLUSTER_NAME = "kubernetes.default.svc"


async def ask(
    server: tuple[str, int], name: str, rdtype: str, *, wait: float = 1.0
) -> tuple[str, int]:
    """(rcode text, answer count) of one UDP query, or ('TIMEOUT', 0)."""
    q = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    try:
        r = await dns.asyncquery.udp(q, server[0], port=server[1], timeout=wait)
    except (dns.exception.Timeout, OSError):
        return "TIMEOUT", 0
    return dns.rcode.to_text(r.rcode()), len(r.answer)


async def answers(
    server: tuple[str, int], *, zone: str, cluster_domain: str
) -> tuple[bool, bool, str]:
    """(cluster.local answered, clusterset zone answered, what was seen)."""
    rc1, n1 = await ask(server, f"{CLUSTER_NAME}.{cluster_domain}", "A")
    rc2, n2 = await ask(server, zone, "SOA")
    seen = f"{CLUSTER_NAME}.{cluster_domain} A: {rc1}/{n1}; {zone} SOA: {rc2}/{n2}"
    return rc1 == "NOERROR" and n1 > 0, rc2 == "NOERROR" and n2 > 0, seen
