"""The incremental reconcile equals the full one, after thousands of random edits.

Each step edits the observed state the way the sources do (a new ClusterState for a
changed cluster, the same objects for what did not change) and compares
`reconcile(..., previous=, changed=)` with a reconcile from scratch: every consumer's
imports, slices and derived Services (in order), the conditions, the aggregates and who
holds each import (exports name random clusterset.io/export-to sets).
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import (
    Endpoint,
    EndpointSlice,
    Protocol,
    Service,
    ServiceExport,
    ServicePort,
    ServiceType,
)
from clusterset.model.state import ClusterSetState, ClusterState
from clusterset.reconcile.desired import Desired, aggregate_all, changed_keys, reconcile

KEYS = [ServiceKey(ns, f"s{i}") for ns in ("a", "b", "c") for i in range(8)]
IPS = ("10.250.0.1", "10.250.0.2", "fd00::1")


def _service(rng: random.Random, key: ServiceKey) -> Service:
    ports = tuple(
        ServicePort(p, Protocol.TCP, n)
        for p, n in rng.sample([(80, "http"), (81, "http"), (443, "https"), (53, "")], k=2)
    )
    return Service(
        key.namespace,
        key.name,
        type=ServiceType.EXTERNAL_NAME if rng.random() < 0.05 else ServiceType.CLUSTER_IP,
        headless=rng.random() < 0.3,
        ports=ports,
        session_affinity=rng.choice(["None", "ClientIP"]),
    )


def _slices(rng: random.Random, key: ServiceKey) -> tuple[EndpointSlice, ...]:
    return tuple(
        EndpointSlice(
            key.namespace,
            f"{key.name}-{n}",
            key.name,
            ports=(ServicePort(80, Protocol.TCP, "http"),),
            endpoints=tuple(
                Endpoint((f"10.1.{n}.{rng.randrange(5)}",), hostname=rng.choice(["", "h"]))
                for _ in range(rng.randrange(3))
            ),
        )
        for n in range(rng.randrange(3))
    )


def _edit(rng: random.Random, cs: ClusterState) -> ClusterState:
    key = rng.choice(KEYS)
    roll = rng.random()
    if roll < 0.25:
        services = dict(cs.services)
        if key in services and rng.random() < 0.3:
            del services[key]
        else:
            services[key] = _service(rng, key)
        return dataclasses.replace(cs, services=services)
    if roll < 0.45:
        exports = dict(cs.exports)
        if key in exports and rng.random() < 0.4:
            del exports[key]
        else:
            to = rng.choice([None, None, ("c1",), ("c2", "c9")])
            exports[key] = ServiceExport(
                key.namespace,
                key.name,
                created=float(rng.randrange(4)),
                annotations=(("clusterset.io/policy", rng.choice(["a", "b"])),),
                export_to=None if to is None else frozenset(map(ClusterId, to)),
            )
        return dataclasses.replace(cs, exports=exports)
    if roll < 0.75:
        slices = dict(cs.slices)
        new = _slices(rng, key)
        if new:
            slices[key] = new
        else:
            slices.pop(key, None)
        return dataclasses.replace(cs, slices=slices)
    if roll < 0.85:
        return dataclasses.replace(cs, foreign_imports=cs.foreign_imports ^ {key})
    if roll < 0.95:
        derived = dict(cs.foreign_derived)
        if key in derived:
            del derived[key]
        else:
            derived[key] = f"derived-{key.name}"
        return dataclasses.replace(cs, foreign_derived=derived)
    nss = set(cs.namespaces) ^ {rng.choice(["a", "b", "c"])}
    return dataclasses.replace(cs, namespaces=frozenset(nss))


def _ips(
    rng: random.Random,
    state: ClusterSetState,
    old: dict[tuple[ClusterId, ServiceKey], tuple[str, ...]],
) -> dict[tuple[ClusterId, ServiceKey], tuple[str, ...]]:
    ips = dict(old)
    for _ in range(rng.randrange(3)):
        cid = rng.choice(sorted(state.clusters))
        ips[(cid, rng.choice(KEYS))] = (rng.choice(IPS),)
    return ips


def _same(inc: Desired, full: Desired) -> None:
    assert list(inc.aggregates.items()) == list(full.aggregates.items())
    assert dict(inc.conditions) == dict(full.conditions)
    assert inc.unsynced == full.unsynced
    assert dict(inc.imported) == dict(full.imported)
    assert list(inc.clusters) == list(full.clusters)
    assert dict(inc.importers) == dict(full.importers)
    for cid, want in full.clusters.items():
        got = inc.clusters[cid]
        assert list(got.imports.items()) == list(want.imports.items()), cid
        assert list(got.slices.items()) == list(want.slices.items()), cid
        assert list(got.derived.items()) == list(want.derived.items()), cid
        assert got == want, cid


@pytest.mark.parametrize(("seed", "create_namespaces"), [(1, False), (2, False), (3, True)])
def test_incremental_equals_full_after_random_edits(seed: int, create_namespaces: bool) -> None:
    rng = random.Random(seed)
    clusters = {
        ClusterId(f"c{i}"): ClusterState(ClusterId(f"c{i}"), namespaces=frozenset({"a", "b"}))
        for i in range(4)
    }
    state = ClusterSetState(clusters)
    ips: dict[tuple[ClusterId, ServiceKey], tuple[str, ...]] = {}
    before = reconcile(state, ips=ips, create_namespaces=create_namespaces)
    partial = 0
    for _ in range(1500):
        clusters = dict(state.clusters)
        for _ in range(rng.choice([1, 1, 1, 2, 5])):
            cid = rng.choice(sorted(clusters))
            clusters[cid] = _edit(rng, clusters[cid])
        if rng.random() < 0.01:  # a cluster leaves or joins: everything is redone
            gone = rng.choice(sorted(clusters))
            if len(clusters) > 2:
                del clusters[gone]
            clusters[ClusterId("c9")] = ClusterState(ClusterId("c9"), namespaces=frozenset("a"))
        new = ClusterSetState(clusters)
        ips = _ips(rng, new, ips)
        changed = changed_keys(state, new)
        partial += changed is not None
        aggregates = aggregate_all(new, previous=before.aggregates, changed=changed)
        inc = reconcile(
            new,
            ips=ips,
            aggregates=aggregates,
            create_namespaces=create_namespaces,
            previous=before,
            changed=changed,
        )
        full = reconcile(new, ips=ips, create_namespaces=create_namespaces)
        _same(inc, full)
        state, before = new, inc
    assert partial > 1000  # the incremental path was taken, not the full fallback


def test_changed_keys_names_only_what_differs() -> None:
    k1, k2 = KEYS[0], KEYS[1]
    svc = Service(k1.namespace, k1.name)
    a = ClusterState(ClusterId("c1"), services={k1: svc}, namespaces=frozenset({"a"}))
    old = ClusterSetState({a.cluster: a})
    same = ClusterSetState({a.cluster: dataclasses.replace(a, services={k1: svc})})
    assert changed_keys(old, same) == set()
    moved = dataclasses.replace(a, services={k2: Service(k2.namespace, k2.name)})
    assert changed_keys(old, ClusterSetState({a.cluster: moved})) == {k1, k2}
    equal_copy = dataclasses.replace(a, services={k1: Service(k1.namespace, k1.name)})
    assert changed_keys(old, ClusterSetState({a.cluster: equal_copy})) == set()
    new_ns = dataclasses.replace(a, namespaces=frozenset({"b"}))
    assert changed_keys(old, ClusterSetState({a.cluster: new_ns})) is None
    assert changed_keys(old, ClusterSetState({})) is None
