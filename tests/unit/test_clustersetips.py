"""reconcile.clustersetips: which service gets which ClusterSetIP in which consumer (manifest
mode), and what running out looks like. Ranges of two addresses make every row exact."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import pytest

from clusterset.model.conditions import Condition, ConditionType, Reason, Status
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import IPFamily
from clusterset.reconcile import allocate, clustersetips, desired
from clusterset.reconcile.aggregate import Aggregate
from tests.factories import cluster, clusterset, export, service

V4, V6 = IPFamily.IPV4, IPFamily.IPV6
CIDRS: dict[IPFamily, allocate.Network] = {
    V4: ipaddress.IPv4Network("10.0.0.0/30"),  # .1 and .2
    V6: ipaddress.IPv6Network("fd00::/126"),  # ::1 and ::2
}
M1, M2 = ClusterId("m1"), ClusterId("m2")
A, B, C = ServiceKey("ns", "a"), ServiceKey("ns", "b"), ServiceKey("ns", "c")
B2 = ServiceKey("ns2", "b")
NS = frozenset({"ns"})
# The address `a` hashes to in the IPv4 range, and the other one.
A_SLOT = allocate.allocate([(A, (V4,))], cidrs=CIDRS, previous={})[A][0]
A_OTHER = ({"10.0.0.1", "10.0.0.2"} - {A_SLOT}).pop()


def aggregates(
    ns: str = "ns", **families: tuple[IPFamily, ...] | None
) -> dict[ServiceKey, Aggregate]:
    """Services of `ns` exported by one cluster: name -> families (None: headless)."""
    svcs = tuple(
        service(name, ns, headless=fams is None, families=fams or ())
        for name, fams in families.items()
    )
    exps = tuple(export(name, ns) for name in families)
    return desired.aggregate_all(clusterset(cluster("src", services=svcs, exports=exps)))


@dataclass
class Row:
    id: str
    aggregates: dict[ServiceKey, Aggregate]
    allocations: clustersetips.Allocations
    want_ips: dict[ClusterId, dict[ServiceKey, tuple[str, ...]]]
    namespaces: dict[ClusterId, frozenset[str]] = field(default_factory=lambda: {M1: NS})
    cidrs: dict[IPFamily, allocate.Network] = field(default_factory=lambda: dict(CIDRS))
    follow: bool = False
    exhausted: dict[tuple[ClusterId, ServiceKey], str] = field(default_factory=dict)
    lacking: dict[ClusterId, list[ServiceKey]] = field(default_factory=dict)
    updated: bool = False


ROWS = [
    Row(
        "an address held is kept",
        aggregates(a=(V4,)),
        {M1: {A: ("10.0.0.2",)}},
        {M1: {A: ("10.0.0.2",)}},
        lacking={M1: []},
    ),
    Row(
        "a consumer lacking a service takes the address another holds",
        aggregates(a=(V4,)),
        {M1: {A: ("10.0.0.2",)}},
        {M1: {A: ("10.0.0.2",)}, M2: {A: ("10.0.0.2",)}},
        namespaces={M1: NS, M2: NS},
        lacking={M1: [], M2: [A]},
        updated=True,
    ),
    Row(
        "an address given in a pass seeds the consumers after it, collisions and all",
        {**aggregates(a=(V4,)), **aggregates(ns="ns2", b=(V4,))},
        {M1: {B2: (A_SLOT,)}},
        {M1: {A: (A_OTHER,), B2: (A_SLOT,)}, M2: {A: (A_OTHER,)}},
        namespaces={M1: NS | {"ns2"}, M2: NS},  # alone, m2 would give `a` its own slot
        lacking={M1: [A], M2: [A]},
        updated=True,
    ),
    Row(
        "a follower keeps no address of its own and says what it lacks",
        aggregates(a=(V4,)),
        {M1: {A: ("10.0.0.2",)}},
        {M1: {A: ("10.0.0.2",)}, M2: {A: ("10.0.0.2",)}},
        namespaces={M1: NS, M2: NS},
        follow=True,
        lacking={M1: [], M2: [A]},
    ),
    Row(
        "no import where the namespace is not: an empty section all the same",
        aggregates(a=(V4,)),
        {M1: {A: ("10.0.0.2",)}},
        {M1: {A: ("10.0.0.2",)}, M2: {}},
        namespaces={M1: NS, M2: frozenset({"other"})},
        lacking={M1: [], M2: []},
        updated=True,
    ),
    Row(
        "a headless service wants no address",
        aggregates(a=None),
        {},
        {M1: {}},
        lacking={M1: []},
        updated=True,
    ),
    Row(
        "the range run out: the service gets none, and says which range",
        aggregates(a=(V4,), b=(V4,), c=(V4,)),
        {M1: {A: ("10.0.0.1",), B: ("10.0.0.2",)}},
        {M1: {A: ("10.0.0.1",), B: ("10.0.0.2",), C: ()}},
        exhausted={(M1, C): "10.0.0.0/30 (IPv4)"},
        lacking={M1: [C]},
        updated=True,
    ),
    Row(
        "both families run out: both ranges named",
        aggregates(a=(V4, V6), b=(V4, V6), c=(V4, V6)),
        {M1: {A: ("10.0.0.1", "fd00::1"), B: ("10.0.0.2", "fd00::2")}},
        {M1: {A: ("10.0.0.1", "fd00::1"), B: ("10.0.0.2", "fd00::2"), C: ()}},
        exhausted={(M1, C): "10.0.0.0/30 (IPv4), fd00::/126 (IPv6)"},
        lacking={M1: [C]},
        updated=True,
    ),
    Row(
        "a family with no range configured is not exhausted",
        aggregates(a=(V4, V6)),
        {M1: {A: ("10.0.0.1",)}},
        {M1: {A: ("10.0.0.1",)}},
        cidrs={V4: CIDRS[V4]},
        lacking={M1: []},
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_assign(row: Row) -> None:
    got = clustersetips.assign(
        row.aggregates,
        row.namespaces,
        cidrs=row.cidrs,
        allocations=row.allocations,
        follow=row.follow,
    )
    assert {cid: dict(c.ips) for cid, c in got.consumers.items()} == row.want_ips
    assert got.ips == {(cid, k): v for cid, ips in row.want_ips.items() for k, v in ips.items()}
    assert got.exhausted() == row.exhausted
    assert {cid: c.lacking for cid, c in got.consumers.items()} == row.lacking
    assert got.updated == row.updated
    if row.updated:  # every consumer's addresses, to be saved
        assert got.allocations == {**row.allocations, **row.want_ips}
    else:
        assert got.allocations is row.allocations


def test_a_pass_whose_changed_services_want_the_same_allocates_nothing() -> None:
    aggs = aggregates(a=(V4,), b=None)
    first = clustersetips.assign(aggs, {M1: NS}, cidrs=CIDRS, allocations={})
    held = first.allocations
    again = clustersetips.assign(
        aggs, {M1: NS}, cidrs=CIDRS, allocations=held, before=first, changed={A, B}
    )
    assert again.consumers is first.consumers and again.ips is first.ips
    assert not again.updated and again.allocations is held


@pytest.mark.parametrize(
    ("b", "namespaces", "reused"),
    [
        ((V6,), {M1: NS, M2: NS}, {M1: False, M2: False}),  # headless b now wants an address
        (None, {M1: NS, M2: NS, ClusterId("m3"): NS}, {M1: True, M2: True}),
        (None, {M1: NS}, {M1: True}),
    ],
    ids=["a family changed", "a consumer came", "a consumer went"],
)
def test_a_consumer_that_wants_what_it_wanted_keeps_its_addresses(
    b: tuple[IPFamily, ...] | None,
    namespaces: dict[ClusterId, frozenset[str]],
    reused: dict[ClusterId, bool],
) -> None:
    first = clustersetips.assign(
        aggregates(a=(V4,), b=None), {M1: NS, M2: NS}, cidrs=CIDRS, allocations={}
    )
    again = clustersetips.assign(
        aggregates(a=(V4,), b=b),
        namespaces,
        cidrs=CIDRS,
        allocations=first.allocations,
        before=first,
        changed={B},
    )
    assert {cid: again.consumers[cid] is first.consumers[cid] for cid in reused} == reused
    assert again.consumers.keys() == namespaces.keys()


@pytest.mark.parametrize(
    ("allocations", "want"),
    [
        ({M1: {A: ("10.0.0.1",)}, M2: {A: ("10.0.0.2",)}}, "10.0.0.1"),  # its own first
        ({M2: {A: ("10.0.0.2",)}, ClusterId("m3"): {A: ("10.0.0.1",)}}, "10.0.0.2"),  # by ID
        ({}, None),
    ],
)
def test_previous_seeds_a_consumer_from_the_others(
    allocations: clustersetips.Allocations, want: str | None
) -> None:
    got = clustersetips.previous(allocations, M1).get(A)
    assert got == (None if want is None else (want,))


def test_an_exhausted_service_is_not_ready_in_every_cluster_that_exports_it() -> None:
    ready = Condition(ConditionType.READY, Status.TRUE, "Ready", "")
    valid = Condition(ConditionType.VALID, Status.TRUE, "Valid", "")
    before = desired.Desired(
        clusters={}, conditions={(M1, A): (valid, ready), (M1, B): (ready,)}, aggregates={}
    )
    got = clustersetips.with_exhaustion(before, {(M2, A): "10.0.0.0/30 (IPv4)"})
    message = "no free ClusterSetIP (m2: 10.0.0.0/30 (IPv4))"
    failed = Condition(ConditionType.READY, Status.FALSE, Reason.FAILED.value, message)
    assert got.conditions == {(M1, A): (valid, failed), (M1, B): (ready,)}
