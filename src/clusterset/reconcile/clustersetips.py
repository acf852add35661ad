"""Every consumer's ClusterSetIPs in manifest mode (in hub mode each member's apiserver
allocates): which service gets which address in which consumer, and what running out of
addresses looks like.

Every consumer is meant to hold the same address for a service: what one consumer's
allocations lack (a section cut off by truncation, or a service it never imported) is
seeded from the others' (`previous`), and an address a consumer is given in a pass seeds
the consumers after it, so that a restart never swaps two services' addresses. A follower
(`run --workers`, every worker but 0) takes no address for itself: it serves only what
the allocator wrote, and `lacking` says what it waits for.
"""

from __future__ import annotations

import dataclasses
from collections import ChainMap
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from clusterset.model.conditions import Condition, ConditionType, Reason, Status
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import ImportType, IPFamily
from clusterset.reconcile import allocate, desired
from clusterset.reconcile.aggregate import Aggregate

IPs = tuple[str, ...]
# Per consumer, per service: its ClusterSetIPs (what the state file holds).
Allocations = dict[ClusterId, dict[ServiceKey, IPs]]
Wanted = list[tuple[ServiceKey, tuple[IPFamily, ...]]]
# What an import asks of the allocator: its families, in which consumers (None: every one).
Wants = tuple[tuple[IPFamily, ...], frozenset[ClusterId] | None]


@dataclass(frozen=True, slots=True)
class Consumer:
    """One consumer's ClusterSetIPs, and what they were allocated for."""

    wanted: Wanted  # its ClusterSetIP imports (those in its namespaces), with their families
    ips: dict[ServiceKey, IPs]
    exhausted: Mapping[ServiceKey, str]  # a service given no address -> the ranges run out
    lacking: list[ServiceKey]  # services its allocations held no address for


@dataclass(frozen=True, slots=True)
class Assigned:
    """One pass's ClusterSetIPs; the next pass starts from it (`before`)."""

    consumers: Mapping[ClusterId, Consumer]
    # Every ClusterSetIP import's families and consumers: a later pass whose changed
    # services ask the same is allocated as this one.
    wants: Mapping[ServiceKey, Wants]
    ips: Mapping[tuple[ClusterId, ServiceKey], IPs]  # every consumer's, for desired.reconcile
    # The allocations given, with the consumers' new addresses (a follower's: as given).
    allocations: Allocations
    updated: bool = False  # `allocations` took new addresses: they are to be saved

    def exhausted(self) -> dict[tuple[ClusterId, ServiceKey], str]:
        """(consumer, service) -> the ranges that had no address left for it."""
        return {(cid, k): r for cid, c in self.consumers.items() for k, r in c.exhausted.items()}


def assign(
    aggregates: Mapping[ServiceKey, Aggregate],
    namespaces: Mapping[ClusterId, frozenset[str]],
    *,
    cidrs: Mapping[IPFamily, allocate.Network],
    allocations: Allocations,
    follow: bool = False,
    before: Assigned | None = None,
    changed: Collection[ServiceKey] | None = None,
) -> Assigned:
    """The ClusterSetIPs of every consumer (`namespaces`: each one's namespaces), by cluster
    ID, from the `allocations` held so far. `follow`: the new addresses are not kept.

    With `before` (the last pass's result, from the same allocations) and `changed` (the
    services whose aggregates changed since: desired.changed_keys), a consumer that wants
    what it wanted keeps its addresses, and a pass where no changed service gained, lost
    or changed a ClusterSetIP family allocates nothing (most edits are endpoints)."""
    if (
        before is not None
        and changed is not None
        and before.consumers.keys() == namespaces.keys()
        and all(before.wants.get(k) == _wants(aggregates.get(k)) for k in changed)
    ):
        return Assigned(before.consumers, before.wants, before.ips, allocations)
    wanted = desired.wanted_ips(aggregates)
    held = dict(allocations)
    updated = False
    consumers: dict[ClusterId, Consumer] = {}
    for cid in sorted(namespaces):
        # Only a consumer is given an address (export-to: not every cluster is one).
        mine = [
            (k, f)
            for k, f in wanted
            if k.namespace in namespaces[cid] and aggregates[k].consumes(cid)
        ]
        was = before.consumers.get(cid) if before is not None else None
        if was is not None and was.wanted == mine and cid in held:
            consumers[cid] = was  # same services, same families: the same addresses
            continue
        consumers[cid] = got = _consumer(cid, mine, cidrs, held)
        if not follow and (cid not in held or got.ips != held[cid]):
            held[cid], updated = got.ips, True
    ips = {(cid, k): v for cid, c in consumers.items() for k, v in c.ips.items()}
    wants = {k: (f, aggregates[k].consumers) for k, f in wanted}
    return Assigned(consumers, wants, ips, held if updated else allocations, updated)


def _wants(agg: Aggregate | None) -> Wants | None:
    """What an import asks of the allocator if ClusterSetIP, else nothing."""
    if agg is None or agg.type is not ImportType.CLUSTER_SET_IP:
        return None
    return agg.ip_families, agg.consumers


def _consumer(
    cid: ClusterId, mine: Wanted, cidrs: Mapping[IPFamily, allocate.Network], held: Allocations
) -> Consumer:
    """`mine` allocated in consumer `cid`; the services no family range had room for."""
    got = allocate.allocate(mine, cidrs=cidrs, previous=previous(held, cid))
    exhausted: dict[ServiceKey, str] = {}
    for k, fams in mine:
        missing = [f for f in fams if f in cidrs and f not in _families(got[k])]
        if missing:
            exhausted[k] = ", ".join(f"{cidrs[f]} ({f.value})" for f in missing)
    own = held.get(cid, {})
    return Consumer(mine, got, exhausted, [k for k, _ in mine if k not in own])


def previous(allocations: Allocations, cluster: ClusterId) -> Mapping[ServiceKey, IPs]:
    """What `cluster` held, then what the other consumers hold for the keys it lacks (by
    cluster ID): a section cut off by a truncated file is seeded from the others, not
    allocated again in another order (which swaps two services that collided)."""
    others = [by_key for cid, by_key in sorted(allocations.items()) if cid != cluster]
    return ChainMap(allocations.get(cluster, {}), *others)


def _families(ips: IPs) -> set[IPFamily]:
    return {IPFamily.IPV6 if ":" in ip else IPFamily.IPV4 for ip in ips}


def with_exhaustion(
    result: desired.Desired, exhausted: Mapping[tuple[ClusterId, ServiceKey], str]
) -> desired.Desired:
    """ServiceExports of a service that got no ClusterSetIP in some consumer: Ready=False,
    reason Failed (the mcs-api Ready vocabulary), saying which range ran out where."""
    by_key: dict[ServiceKey, list[str]] = {}
    for (cid, key), ranges in sorted(exhausted.items()):
        by_key.setdefault(key, []).append(f"{cid}: {ranges}")
    conditions = dict(result.conditions)
    for (cid, key), conds in result.conditions.items():
        if key not in by_key:
            continue
        message = "no free ClusterSetIP (" + "; ".join(by_key[key]) + ")"
        conditions[(cid, key)] = tuple(
            Condition(ConditionType.READY, Status.FALSE, Reason.FAILED.value, message)
            if c.type is ConditionType.READY
            else c
            for c in conds
        )
    return dataclasses.replace(result, conditions=conditions)
