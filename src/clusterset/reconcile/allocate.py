"""ClusterSetIP allocation for manifest mode (in hub mode each member's apiserver allocates).

Stable: an address once given is kept while the service is imported
(`previous`); a new service takes the slot its key hashes to, probing on
collision, so that the same service gets the same address in every cluster
and across restarts (the edge persists `previous`).
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
from collections.abc import Iterable, Mapping

from clusterset.model.ids import ServiceKey
from clusterset.model.objects import IPFamily, family_of

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@functools.lru_cache(maxsize=1 << 16)  # the same for every consumer (profiled: 10x per key)
def _slot(key: ServiceKey, size: int) -> int:
    digest = hashlib.sha256(f"{key.namespace}/{key.name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % size


def allocate(
    wanted: Iterable[tuple[ServiceKey, tuple[IPFamily, ...]]],
    *,
    cidrs: Mapping[IPFamily, Network],
    previous: Mapping[ServiceKey, tuple[str, ...]],
) -> dict[ServiceKey, tuple[str, ...]]:
    """One address per wanted family per key, from `cidrs` (network/broadcast excluded)."""
    result: dict[ServiceKey, tuple[str, ...]] = {}
    used: dict[IPFamily, set[str]] = {f: set() for f in cidrs}
    todo: list[tuple[ServiceKey, tuple[IPFamily, ...]]] = []
    for key, families in sorted(wanted, key=lambda kv: kv[0]):
        prev = previous.get(key, ())
        fams = tuple(f for f in families if f in cidrs)
        # An address kept must be valid, in range, and not already kept by an earlier key
        # (a hand-edited state file can give one address twice: the first key keeps it).
        kept = [ip for ip in prev if _usable(ip, fams, cidrs) and ip not in used[family_of(ip)]]
        if {family_of(ip) for ip in kept} == set(fams) and len(kept) == len(fams):
            result[key] = tuple(sorted(kept, key=lambda ip: fams.index(family_of(ip))))
            for ip in kept:
                used[family_of(ip)].add(ip)
        else:
            todo.append((key, fams))
    for key, fams in todo:
        ips = []
        for fam in fams:
            net = cidrs[fam]
            size = net.num_addresses - 2
            if size <= 0:
                continue
            start = _slot(key, size)
            for i in range(size):
                ip = str(net.network_address + 1 + (start + i) % size)
                if ip not in used[fam]:
                    used[fam].add(ip)
                    ips.append(ip)
                    break
        result[key] = tuple(ips)
    return result


def _usable(ip: str, fams: tuple[IPFamily, ...], cidrs: Mapping[IPFamily, Network]) -> bool:
    fam = family_of(ip)
    return fam in fams and _in(ip, cidrs[fam])


@functools.lru_cache(maxsize=1 << 16)  # every consumer keeps the same addresses (profiled)
def _in(ip: str, net: Network) -> bool:
    try:
        return ipaddress.ip_address(ip) in net
    except ValueError:
        return False
