"""zone.build: wire answers byte-identical to dnspython's rendering, and incremental
builds byte-identical to full rebuilds after thousands of random edits."""

from __future__ import annotations

import dataclasses
import random

import pytest

from clusterset.model import clusterselect
from clusterset.model.clusterselect import ClusterSelector
from clusterset.model.convert import CLUSTER_ID_PROPERTY
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.labels import REGION_PROPERTY
from clusterset.model.objects import (
    Endpoint,
    EndpointSlice,
    ImportType,
    Protocol,
    Service,
    ServiceImport,
    ServicePort,
)
from clusterset.model.state import ImportedView, Track
from clusterset.zone import build, encode, policy
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import CompiledZone, respond
from tests import zone_oracle
from tests.conformance.test_vectors import FIXTURES, load_view
from tests.factories import selector

CLUSTERS = ("c1", "c2", "c3")
NAMESPACES = ("ns0", "ns1", "ns2", "n" * 63)
PORTS = (
    ServicePort(80, Protocol.TCP, "http"),
    ServicePort(53, Protocol.UDP, "dns"),
    ServicePort(8080, Protocol.TCP, ""),
    ServicePort(81, Protocol.TCP, "http"),  # same name as 80: one SRV owner, two ports
    ServicePort(9090, Protocol.SCTP, "P" * 63),  # "_ppp..." is 64 octets: cannot be named
)
ANNOTATIONS = (
    (),
    ((policy.ANNOTATION, policy.LOCAL_FIRST),),
    ((policy.ANNOTATION, policy.LOCAL_FIRST), (policy.HYSTERESIS, "0")),
    ((policy.ANNOTATION, policy.LOCAL_FIRST), (policy.HYSTERESIS, "10")),
    ((policy.ANNOTATION, policy.LOCAL_FIRST), (policy.FAILOVER, "endpoints")),
    (
        (policy.ANNOTATION, policy.LOCAL_FIRST),
        (policy.FAILOVER, "endpoints"),
        (policy.WEIGHTS, "c2=3,c3=1"),
        (policy.MIN_READY, "2"),
    ),
    ((policy.ANNOTATION, "bogus"),),
)
# KEP-5939: none (most imports), the locality tiers of story 1, GPU tiers, no fallback.
_ME, _REGION = clusterselect.SAME_AS_IMPORTER, REGION_PROPERTY
SELECTORS: tuple[tuple[tuple[ClusterSelector, ...], str], ...] = (
    ((), clusterselect.ALL_CLUSTERS),
    ((), clusterselect.ALL_CLUSTERS),
    (
        (
            selector(exprs=((CLUSTER_ID_PROPERTY, "In", (_ME,)),)),
            selector(labels=((_REGION, _ME),)),
        ),
        clusterselect.ALL_CLUSTERS,
    ),
    ((selector(labels=(("gpu", "high"),)), selector(exprs=(("gpu", "Exists", ()),))), "None"),
)
PROPERTIES: tuple[dict[ClusterId, dict[str, str]], ...] = (
    {},
    {
        ClusterId("c1"): {REGION_PROPERTY: "eu", "gpu": "high"},
        ClusterId("c2"): {REGION_PROPERTY: "eu"},
        ClusterId("c3"): {REGION_PROPERTY: "us", "gpu": "low"},
    },
    {
        ClusterId("c1"): {REGION_PROPERTY: "us"},
        ClusterId("c2"): {REGION_PROPERTY: "eu", "gpu": "high"},
        ClusterId("c3"): {REGION_PROPERTY: "us"},
    },
)
SETTINGS = (
    ZoneSettings(),
    ZoneSettings(ns_addresses=("10.96.0.53", "fd00::53"), ttl=30),
    ZoneSettings(zone="mcs.example", unified_zone="cluster.local"),
    ZoneSettings(default_policy=policy.LOCAL_FIRST, source_leases=True),
)


def _address(rng: random.Random, v6: bool) -> str:
    n = rng.randrange(1, 40)
    return f"fd00::{n:x}" if v6 else f"10.1.0.{n}"


def _slice(rng: random.Random, key: ServiceKey, source: str | None) -> EndpointSlice:
    v6 = rng.random() < 0.2
    eps = []
    for i in range(rng.randrange(0, 5)):
        host = rng.choice(("", "", f"pod-{i}", "h" * 63, "Web"))
        ready = rng.choice((True, True, False, None))
        serving = rng.choice((None, True)) if ready is False else None
        eps.append(Endpoint((_address(rng, v6),), hostname=host, ready=ready, serving=serving))
    ports = tuple(rng.sample(PORTS[:4], rng.randrange(0, 3)))
    return EndpointSlice(
        key.namespace,
        f"{key.name}-{source or 'x'}",
        key.name,
        address_type="IPv6" if v6 else rng.choice(("IPv4", "IPv4", "FQDN")),
        ports=ports,
        endpoints=tuple(eps),
        source_cluster=ClusterId(source) if source else None,
    )


def _import(rng: random.Random, key: ServiceKey) -> ServiceImport:
    headless = rng.random() < 0.4
    ips = () if headless else tuple(_address(rng, rng.random() < 0.2) for _ in range(2))
    selectors, fallback = rng.choice(SELECTORS)
    return ServiceImport(
        key.namespace,
        key.name,
        ImportType.HEADLESS if headless else ImportType.CLUSTER_SET_IP,
        ports=tuple(rng.sample(PORTS, rng.randrange(0, 4))),
        ips=ips[: rng.randrange(0, 3)],
        annotations=rng.choice(ANNOTATIONS),
        cluster_selectors=selectors,
        cluster_selectors_fallback_policy=fallback,
    )


def _slices(rng: random.Random, key: ServiceKey) -> tuple[EndpointSlice, ...]:
    sources = [c for c in (*CLUSTERS, None) if rng.random() < 0.6]
    return tuple(_slice(rng, key, s) for s in sources)


def _local(rng: random.Random, key: ServiceKey) -> Service:
    return Service(key.namespace, key.name, cluster_ips=(f"10.96.0.{rng.randrange(1, 9)}",))


def _key(rng: random.Random) -> ServiceKey:
    name = rng.choice(("s" * 63, "Caps")) if rng.random() < 0.05 else f"svc{rng.randrange(30)}"
    return ServiceKey(rng.choice(NAMESPACES), name)


def random_view(rng: random.Random, size: int = 14) -> ImportedView:
    keys = {_key(rng) for _ in range(rng.randrange(1, size))}
    return ImportedView(
        cluster=ClusterId("c1") if rng.random() < 0.7 else None,
        imports={k: _import(rng, k) for k in keys},
        slices={k: _slices(rng, k) for k in keys},
        namespaces=frozenset(n for n in NAMESPACES if rng.random() < 0.8),
        local_services={k: _local(rng, k) for k in keys if rng.random() < 0.5},
        now=1000.0,
        properties=rng.choice(PROPERTIES),
        leases={ClusterId("c2"): 1010.0, ClusterId("c3"): 900.0} if rng.random() < 0.3 else {},
    )


def _edit(rng: random.Random, v: ImportedView, fed: build.ZoneState) -> ImportedView:
    """One random change of the kind the feeds and the server make."""
    imports, slices, local = dict(v.imports), dict(v.slices), dict(v.local_services)
    key = rng.choice(sorted(imports)) if imports and rng.random() < 0.85 else _key(rng)
    what = rng.randrange(13)
    tracks = fed.tracks  # as the server does: the last build's health history goes back in
    if what <= 3:  # an EndpointSlice of one source changes
        got = list(slices.get(key, ()))
        source = rng.choice((*CLUSTERS, None))
        got = [s for s in got if s.source_cluster != source]
        if rng.random() < 0.8:
            got.append(_slice(rng, key, source))
        slices[key] = tuple(sorted(got, key=lambda s: s.name))
        imports.setdefault(key, _import(rng, key))
    elif what <= 5:
        imports[key] = _import(rng, key)
    elif what == 6:
        imports.pop(key, None)
        slices.pop(key, None)
    elif what == 7:
        if key in local and rng.random() < 0.5:
            del local[key]
        else:
            local[key] = _local(rng, key)
    elif what == 8:
        ns = rng.choice(NAMESPACES)
        return dataclasses.replace(v, namespaces=v.namespaces ^ {ns}, tracks=tracks)
    elif what == 9:  # time passes (hysteresis windows close, leases lapse); the clock may step back
        return dataclasses.replace(v, now=v.now + rng.choice((0.5, 3, 11, 40, -20)), tracks=tracks)
    elif what == 10:  # an active probe changes its verdict
        pair = (key, ClusterId(rng.choice(CLUSTERS)))
        return dataclasses.replace(v, probe_failed=v.probe_failed ^ {pair}, tracks=tracks)
    elif what == 11:  # a health history that did not come from the last build
        t = Track(rng.random() < 0.5, v.now - rng.choice((0, 5, 50)))
        return dataclasses.replace(v, tracks={**tracks, (key, ClusterId("c1")): t})
    elif rng.random() < 0.5:  # something every answer depends on
        return dataclasses.replace(v, properties=rng.choice(PROPERTIES))
    else:
        return dataclasses.replace(v, cluster=None if v.cluster else ClusterId("c1"))
    return dataclasses.replace(
        v, imports=imports, slices=slices, local_services=local, tracks=tracks
    )


def assert_same(got: build.ZoneState, want: build.ZoneState) -> None:
    assert got.names == want.names
    assert got.answers.keys() == want.answers.keys()
    for key, answer in want.answers.items():
        assert got.answers[key] == answer, key
    assert (got.serial, got.soa_ttl, got.soa_fixed) == (want.serial, want.soa_ttl, want.soa_fixed)
    assert got.tracks == want.tracks
    assert got.wake_at == want.wake_at
    assert got.warnings == want.warnings
    assert got.explain == want.explain
    assert got.explain_unified == want.explain_unified


def assert_like_oracle(state: build.ZoneState, want: zone_oracle.Rendered) -> None:
    assert set(state.names) == want.names
    assert state.answers.keys() == want.answers.keys()
    for key, answer in want.answers.items():
        assert state.answers[key] == answer, key
    assert (state.soa_ttl, state.soa_fixed) == want.soa_tail
    assert state.tracks == want.recs.tracks
    assert state.wake_at == want.recs.wake_at
    assert state.warnings == want.recs.warnings
    assert state.explain == want.recs.explain
    assert state.explain_unified == want.recs.explain_unified


@pytest.mark.parametrize("fixture", sorted(p.stem for p in FIXTURES.glob("*.yaml")))
@pytest.mark.parametrize(
    "settings",
    [
        ZoneSettings(zone="cluster.local."),
        ZoneSettings(zone="clusterset.local", ns_addresses=("127.0.0.1",)),
        ZoneSettings(zone="Inter.Webs.Tests", unified_zone="cluster.local"),
    ],
    ids=["cluster.local", "glue", "unified"],
)
def test_every_answer_of_the_conformance_fixtures_is_dnspythons(
    fixture: str, settings: ZoneSettings
) -> None:
    view = load_view(fixture)
    state = build.build(view, settings, serial=1499347823)
    assert_like_oracle(state, zone_oracle.render(view, settings, serial=1499347823))


def test_every_answer_of_random_zones_is_dnspythons() -> None:
    rng = random.Random(12)
    answers = rotations = warnings = 0
    for i in range(150):
        view = random_view(rng)
        settings = SETTINGS[i % len(SETTINGS)]
        state = build.build(view, settings, serial=i)
        assert_like_oracle(state, zone_oracle.render(view, settings, serial=i))
        answers += len(state.answers)
        rotations += sum(isinstance(a, encode.Rotation) for a in state.answers.values())
        warnings += len(state.warnings)
    # The generator is not degenerate: many answers, round-robin ones, unnameable names.
    assert answers > 2000 and rotations > 20 and warnings > 20


def test_an_answer_over_64k_is_the_subset_dnspython_fits() -> None:
    key = ServiceKey("ns", "huge")
    eps = tuple(
        Endpoint((f"10.7.{i // 250}.{i % 250 + 1}",), hostname=f"pod-with-a-long-name-{i}")
        for i in range(800)
    )
    view = ImportedView(
        cluster=None,
        imports={key: ServiceImport("ns", "huge", ImportType.HEADLESS, ports=PORTS[:2])},
        slices={key: (EndpointSlice("ns", "h", "huge", ports=PORTS[:2], endpoints=eps,
                                    source_cluster=ClusterId("c1")),)},
        namespaces=frozenset({"ns"}),
    )  # fmt: skip
    state = build.build(view, ZoneSettings(), serial=1)
    srv = state.answers[b"\x04huge\x02ns\x03svc\x0aclusterset\x05local\x00\x00\x21"]
    assert isinstance(srv, encode.Prebuilt)
    assert 0 < srv.counts[0] < 1600
    assert_like_oracle(state, zone_oracle.render(view, ZoneSettings(), serial=1))


def _queries(state: build.ZoneState, rng: random.Random) -> list[bytes]:
    """Plain queries (no EDNS) for a few names of the zone and two that are not in it."""
    names = rng.sample(sorted(state.names), min(5, len(state.names)))
    names += [b"\x04nope" + state.origin, b"\x01x\x03svc\x07cluster\x05local\x00"]
    head = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    return [head + n + t + b"\x00\x01" for n in names for t in (b"\x00\x01", b"\x00\x1c",
            b"\x00\x21", b"\x00\x10")]  # fmt: skip


@pytest.mark.parametrize("settings", SETTINGS, ids=["default", "glue", "unified", "local-first"])
def test_incremental_builds_equal_full_rebuilds_after_random_edits(settings: ZoneSettings) -> None:
    rng = random.Random(7)
    view = random_view(rng, 40)
    incremental = build.build(view, settings, serial=0)
    rebuilt = kept = 0
    for serial in range(1, 1001):
        view = _edit(rng, view, incremental)
        incremental = build.build(view, settings, serial=serial, previous=incremental)
        full = build.build(view, settings, serial=serial)
        assert_same(incremental, full)
        # ... and so are the replies, NXDOMAIN and NODATA included.
        a, b = CompiledZone(incremental), CompiledZone(full)
        for answer in (*incremental.answers.values(), *full.answers.values()):
            if isinstance(answer, encode.Rotation):
                answer.i = -1  # a kept rotation goes on turning where it was: start both over
        for q in _queries(full, rng):
            assert respond(a, full.origin, q) == respond(b, full.origin, q)
        rebuilt += incremental.rebuilt
        kept += len(incremental.fragments) - incremental.rebuilt
    assert kept > 2 * rebuilt  # it is incremental: most services were not built again


def test_an_incremental_build_rebuilds_only_the_changed_service() -> None:
    rng = random.Random(3)
    view = random_view(rng)
    view = dataclasses.replace(view, namespaces=frozenset(NAMESPACES), cluster=None)
    first = build.build(view, ZoneSettings(), serial=1)
    key = sorted(view.imports)[0]
    changed = dataclasses.replace(
        view,
        imports={**view.imports, key: dataclasses.replace(view.imports[key], ips=("10.9.9.9",))},
    )
    second = build.build(changed, ZoneSettings(), serial=2, previous=first)
    assert second.rebuilt == 1
    for k, frag in second.fragments.items():
        for answer_key in frag.keys:
            reused = second.answers[answer_key] is first.answers.get(answer_key)
            assert reused == (k != key), (k, answer_key)


def test_settings_or_asking_cluster_changes_rebuild_everything() -> None:
    view = random_view(random.Random(5))
    first = build.build(view, ZoneSettings(), serial=1)
    again = build.build(view, ZoneSettings(ttl=9), serial=2, previous=first)
    assert again.rebuilt == len(again.fragments) > 0


def test_wire_labels_are_lowercase_and_checked() -> None:
    assert encode.labels_wire(["Web", "NS"], b"\x00") == b"\x03web\x02ns\x00"
    with pytest.raises(encode.LabelTooLong):
        encode.labels_wire(["a" * 64], b"\x00")
    with pytest.raises(encode.NameTooLong):
        encode.labels_wire(["a" * 63] * 4, b"\x00")
    with pytest.raises(encode.EmptyLabel):
        encode.labels_wire(["a", ""], b"\x00")


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("10.0.0.1", (1, b"\x0a\x00\x00\x01")),
        ("255.255.255.255", (1, b"\xff" * 4)),
        ("fd00::1", (28, b"\xfd" + b"\x00" * 14 + b"\x01")),
        ("::ffff:10.0.0.1", (28, b"\x00" * 10 + b"\xff\xff\x0a\x00\x00\x01")),
    ],
)
def test_addresses_pack_as_dnspython_does(text: str, want: tuple[int, bytes]) -> None:
    assert encode.address(text) == want


@pytest.mark.parametrize("text", ["010.0.0.1", "1.2.3.256", "1.2.3", "1.2.3.4.5", "-1.2.3.4", "x"])
def test_addresses_that_are_not_canonical_literals_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        encode.address(text)


def test_warnings_are_new_only_for_what_was_built() -> None:
    long = ServiceKey("ns0", "s" * 63)
    ok = ServiceKey("ns0", "fine")
    slices = {
        k: (
            EndpointSlice(
                "ns0",
                f"{k.name[:20]}-c1",
                k.name,
                ports=(PORTS[4],),  # its SRV owner label is 64 octets: a warning
                endpoints=(Endpoint(("10.1.0.1",), hostname="h"),),
                source_cluster=ClusterId("c1"),
            ),
        )
        for k in (long, ok)
    }
    v = ImportedView(
        cluster=None,
        imports={k: ServiceImport("ns0", k.name, ImportType.HEADLESS) for k in (long, ok)},
        slices=slices,
        namespaces=frozenset({"ns0", "n" * 64}),
    )
    first = build.build(v, ZoneSettings(), serial=1)
    assert len(first.new_warnings) == 3 and sorted(first.new_warnings) == sorted(first.warnings)
    touched = dataclasses.replace(
        v, imports={**v.imports, ok: dataclasses.replace(v.imports[ok], ips=())}
    )
    assert build.build(touched, ZoneSettings(), serial=2, previous=first).new_warnings == []
    changed = dataclasses.replace(
        v, imports={**v.imports, ok: dataclasses.replace(v.imports[ok], labels=(("a", "b"),))}
    )
    again = build.build(changed, ZoneSettings(), serial=3, previous=first)
    assert again.new_warnings == [w for w in first.warnings if "ns0/fine" in w]
    assert again.warnings == first.warnings
