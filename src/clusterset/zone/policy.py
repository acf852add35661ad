"""Which addresses answer for a service, as one consuming cluster sees it.

Chosen per service by annotations on the ServiceExport (the controller
carries `clusterset.io/*` annotations of the oldest export to the
ServiceImport), else by the global default (`--default-policy`):

    clusterset.io/dns-policy      kep | local-first
    clusterset.io/min-ready       local copy healthy when >= N ready endpoints, or N% (default 1)
    clusterset.io/hysteresis      seconds a recovered local copy must stay healthy (default 30)
    clusterset.io/failover        clustersetip | endpoints: what to answer when the local copy
                                  is not healthy (default clustersetip; `endpoints` hands out
                                  remote pod IPs, for flat pod networks)
    clusterset.io/weights         "member1=3,member2=1,member3=0": 0 drains a cluster
    clusterset.io/tiers           "region,any" (default): remote clusters in the asking
                                  cluster's region first, then any

`kep` is the MCS DNS specification: the ServiceImport's ClusterSetIPs, or every
ready endpoint of every cluster for a Headless service. Pure: `now` and the
health history (`tracks`) come in with the view; new tracks go out.

A ClusterSetIP import with `clusterSelectors` (KEP-5939) is answered by them instead
of `clusterset.io/dns-policy` (only `clusterset.io/weights` still applies, within
the chosen tier): the first selector whose clusters have an available endpoint
(ready, or serving) is the tier; the asking cluster alone: its own ClusterIP,
else the tier's endpoints. None: `clusterSelectorsFallbackPolicy` AllClusters
answers the ClusterSetIP, None nothing (NODATA).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from clusterset.model import clusterselect, labels
from clusterset.model.convert import CLUSTER_ID_PROPERTY
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import (
    EndpointSlice,
    ImportType,
    ServiceImport,
    ServicePort,
    canonical_ip,
    family_of,
)
from clusterset.model.state import ImportedView, Track

KEP = "kep"
LOCAL_FIRST = "local-first"
CLUSTER_SELECTORS = "cluster-selectors"  # not a dns-policy value: the import's own spec
POLICIES = (KEP, LOCAL_FIRST)
ANNOTATION = labels.PREFIX + "dns-policy"
MIN_READY = labels.PREFIX + "min-ready"
HYSTERESIS = labels.PREFIX + "hysteresis"
FAILOVER = labels.PREFIX + "failover"
WEIGHTS = labels.PREFIX + "weights"
TIERS = labels.PREFIX + "tiers"
DEFAULT_HYSTERESIS = 30.0
MAX_ROTATIONS = 16


@dataclass(frozen=True, slots=True)
class SelectedEndpoint:
    cluster: ClusterId | None
    address: str
    hostname: str
    ports: tuple[ServicePort, ...]


@dataclass(frozen=True, slots=True)
class Candidate:
    """One source cluster of a service and how ready it is (for --explain and metrics)."""

    cluster: ClusterId | None
    ready: int
    total: int
    weight: int = 1
    tier: int = 0
    eligible: bool = True
    note: str = ""


@dataclass(frozen=True, slots=True)
class Options:
    policy: str = KEP
    min_ready: int = 1
    min_ready_fraction: float | None = None  # "50%" -> 0.5 of all endpoints
    hysteresis: float = DEFAULT_HYSTERESIS
    failover: str = "clustersetip"
    weights: Mapping[str, int] = field(default_factory=dict)
    tiers: tuple[str, ...] = ("region", "any")
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Selection:
    policy: str
    addresses: tuple[str, ...] = ()
    endpoints: tuple[SelectedEndpoint, ...] = ()
    # Alternative orders of `addresses` (or endpoint addresses) served in turn: round-robin
    # among equals, smooth-weighted. Empty: one fixed order.
    rotations: tuple[tuple[str, ...], ...] = ()
    candidates: tuple[Candidate, ...] = ()
    reason: str = ""
    notes: tuple[str, ...] = ()
    tracks: Mapping[tuple[ServiceKey, ClusterId], Track] = field(default_factory=dict)
    wake_at: float | None = None  # when hysteresis may change this answer


def options(imp: ServiceImport, default: str) -> Options:
    """Parse the policy annotations; a bad value is noted and its default used."""
    ann = dict(imp.annotations)
    problems: list[str] = []
    name = ann.get(ANNOTATION, default)
    if name not in POLICIES:
        problems.append(f"{ANNOTATION}={name!r} unknown, using {default!r}")
        name = default
    min_ready, fraction = 1, None
    raw = ann.get(MIN_READY)
    if raw:
        try:
            if raw.endswith("%"):
                fraction = float(raw[:-1]) / 100
                if not 0 <= fraction <= 1:
                    raise ValueError
            else:
                min_ready = int(raw)
                if min_ready < 0:
                    raise ValueError
        except ValueError:
            problems.append(f"{MIN_READY}={raw!r} is not a count or percentage, using 1")
            min_ready, fraction = 1, None
    hysteresis = DEFAULT_HYSTERESIS
    raw = ann.get(HYSTERESIS)
    if raw:
        try:
            hysteresis = float(raw.removesuffix("s"))
            if hysteresis < 0:
                raise ValueError
        except ValueError:
            problems.append(f"{HYSTERESIS}={raw!r} is not seconds, using {DEFAULT_HYSTERESIS}")
    failover = ann.get(FAILOVER, "clustersetip")
    if failover not in ("clustersetip", "endpoints"):
        problems.append(f"{FAILOVER}={failover!r} unknown, using 'clustersetip'")
        failover = "clustersetip"
    weights: dict[str, int] = {}
    for part in filter(None, (p.strip() for p in ann.get(WEIGHTS, "").split(","))):
        cluster, _, w = part.partition("=")
        try:
            weights[cluster.strip()] = max(0, int(w))
        except ValueError:
            problems.append(f"{WEIGHTS}: {part!r} is not cluster=integer")
    tiers = tuple(t.strip() for t in ann.get(TIERS, "region,any").split(",") if t.strip())
    if any(t not in ("region", "any") for t in tiers):
        problems.append(f"{TIERS}={ann.get(TIERS)!r}: tiers are 'region' and 'any'")
        tiers = ("region", "any")
    return Options(
        policy=name,
        min_ready=min_ready,
        min_ready_fraction=fraction,
        hysteresis=hysteresis,
        failover=failover,
        weights=weights,
        tiers=tiers or ("any",),
        problems=tuple(problems),
    )


def ready_endpoints(s: EndpointSlice) -> list[SelectedEndpoint]:
    """Ready (or unknown-ready) endpoints of one slice; one entry per address.

    Addresses are canonical already (model.convert normalises them at the edge), so no
    re-parsing here: this runs for every endpoint at every zone build (profiled hot spot).
    """
    if s.address_type not in ("IPv4", "IPv6"):
        return []  # FQDN slices cannot be answered with A/AAAA
    return [
        SelectedEndpoint(s.source_cluster, addr, ep.hostname, s.ports)
        for ep in s.endpoints
        if ep.is_ready
        for addr in ep.addresses
    ]


def _by_cluster(
    slices: tuple[EndpointSlice, ...], down: frozenset[ClusterId]
) -> dict[ClusterId | None, tuple[list[SelectedEndpoint], int]]:
    """Ready endpoints and total endpoint count per source cluster; `down` clusters (lease
    expired, probes failing) have none ready, but their endpoints are still counted."""
    out: dict[ClusterId | None, tuple[list[SelectedEndpoint], int]] = {}
    for s in slices:
        eps, total = out.get(s.source_cluster, ([], 0))
        if s.source_cluster not in down:
            eps = eps + ready_endpoints(s)
        out[s.source_cluster] = (eps, total + len(s.endpoints))
    return out


def _dedupe(values: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def _ips(values: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for ip in values:
        try:
            out.append(canonical_ip(ip))
        except ValueError:
            continue
    return _dedupe(out)


def swrr(weights: Mapping[str, int], length: int) -> list[str]:
    """Smooth weighted round-robin sequence (nginx's): a, a, b, a for weights 3:1."""
    live = {k: w for k, w in sorted(weights.items()) if w > 0}
    if not live:
        return []
    total = sum(live.values())
    current = dict.fromkeys(live, 0)
    seq = []
    for _ in range(length):
        for k, w in live.items():
            current[k] += w
        best = max(current, key=current.__getitem__)  # ties: the first, as nginx does
        current[best] -= total
        seq.append(best)
    return seq


def rotations(
    groups: Mapping[str, tuple[str, ...]], weights: Mapping[str, int]
) -> tuple[tuple[str, ...], ...]:
    """Answer orders served in turn: each puts the next SWRR group first, rotating inside it.

    The full set is always answered (clients that try the next address still can); only the
    order changes, which is what resolvers and most clients act on.
    """
    if len(groups) <= 1 and all(len(v) <= 1 for v in groups.values()):
        return ()
    total = sum(max(0, weights.get(g, 1)) for g in groups) or 1
    length = min(MAX_ROTATIONS, max(total, max(len(v) for v in groups.values())))
    seq = swrr({g: weights.get(g, 1) for g in groups}, length)
    turn = dict.fromkeys(groups, 0)
    out = []
    for g in seq:
        members = groups[g]
        k = turn[g] % len(members)
        turn[g] += 1
        first = members[k:] + members[:k]
        rest = [a for h in sorted(groups) if h != g for a in groups[h]]
        # An address two clusters share (the same endpoint IP in both) is answered once, as
        # in the base answer: a repeated A record is a wasted byte budget and a skewed order.
        out.append(tuple(dict.fromkeys((*first, *rest))))
    return tuple(out)  # repeats are the weights: a 3:1 split is 3 turns of one order


def select(
    view: ImportedView,
    imp: ServiceImport,
    slices: tuple[EndpointSlice, ...],
    *,
    default: str = KEP,
    force: str | None = None,
) -> Selection:
    """The answer set for `imp` under its policy (or `force`), and the updated health tracks."""
    opts = options(imp, default)
    if force is not None:
        opts = dataclasses.replace(opts, policy=force)
    failing = frozenset(c for k, c in view.probe_failed if k == imp.key)
    per = _by_cluster(slices, view.expired | failing)
    notes = list(opts.problems)
    if view.expired & set(c for c in per if c):
        notes.append("lease expired for: " + ", ".join(sorted(c for c in per if c in view.expired)))
    if failing & set(c for c in per if c):
        notes.append("probes failing for: " + ", ".join(sorted(c for c in per if c in failing)))
    if imp.cluster_selectors:
        if imp.type is not ImportType.HEADLESS:
            if opts.policy != KEP:
                notes.append(f"clusterSelectors take precedence over {ANNOTATION}={opts.policy}")
            return _cluster_selected(view, imp, slices, opts, notes, failing)
        notes.append("clusterSelectors ignored: they apply to ClusterSetIP services only")
    if opts.policy == LOCAL_FIRST and view.cluster is not None:
        return _local_first(view, imp, per, opts, notes, failing)
    cands = tuple(
        Candidate(
            c,
            len(eps),
            total,
            eligible=c not in view.expired and c not in failing,
            note=_down_note(c, view.expired, failing),
        )
        for c, (eps, total) in sorted(per.items(), key=lambda kv: kv[0] or "")
    )
    if imp.type is ImportType.HEADLESS:
        eps = tuple(e for c in sorted(per, key=lambda c: c or "") for e in per[c][0])
        return Selection(
            KEP,
            endpoints=eps,
            candidates=cands,
            reason="every ready endpoint of every cluster",
            notes=tuple(notes),
        )
    return Selection(
        KEP,
        addresses=_ips(imp.ips),
        candidates=cands,
        reason="the ServiceImport's ClusterSetIP (spec.ips)",
        notes=tuple(notes),
    )


def _down_note(
    c: ClusterId | None, expired: frozenset[ClusterId], failing: frozenset[ClusterId]
) -> str:
    if c in expired:
        return "lease expired"
    return "probes failing" if c in failing else ""


def _healthy(opts: Options, ready: int, total: int) -> bool:
    """At least one ready endpoint, and at least min-ready (a count, or a fraction of total)."""
    if ready == 0:
        return False
    if opts.min_ready_fraction is not None:
        return ready >= opts.min_ready_fraction * total
    return ready >= opts.min_ready


def _local_track(
    view: ImportedView, key: ServiceKey, healthy: bool, opts: Options, notes: list[str]
) -> tuple[Track, bool, float | None]:
    """The local copy's health history, whether it is preferred now, and when to look again
    (hysteresis: a copy healthy again is preferred only after it stayed so `hysteresis` s)."""
    me = view.cluster
    assert me is not None
    prev = view.tracks.get((key, me))
    if prev is None:
        # No history: no flap to damp. Recorded as settled for the whole hysteresis, or the
        # next compile (any edit, any probe verdict) would demote a copy healthy all along.
        track, eligible = Track(healthy, view.now - opts.hysteresis), healthy
    elif prev.healthy != healthy:
        track = Track(healthy, view.now)
        eligible = healthy and opts.hysteresis == 0
    else:
        track = prev
        eligible = healthy and view.now - prev.since >= opts.hysteresis
    if not healthy or eligible:
        return track, eligible, None
    notes.append(
        f"local copy healthy again for {view.now - track.since:.1f}s; preferred after "
        f"{opts.hysteresis:g}s (hysteresis)"
    )
    return track, eligible, track.since + opts.hysteresis


def _region(view: ImportedView, c: ClusterId | None) -> str:
    """The cluster's ClusterProperty region.clusterset.io ("" when unknown)."""
    return view.properties.get(c, {}).get(labels.REGION_PROPERTY, "") if c is not None else ""


def _candidates(
    view: ImportedView,
    per: dict[ClusterId | None, tuple[list[SelectedEndpoint], int]],
    opts: Options,
    local_eligible: bool,
    failing: frozenset[ClusterId],
) -> list[Candidate]:
    """Every cluster with its tier (0: this one; then `opts.tiers` in order) and whether it
    may be answered (weight > 0, not down, endpoints ready; this cluster only when preferred)."""
    me = view.cluster
    down = view.expired | failing
    my_region = _region(view, me)

    def tier(c: ClusterId | None) -> int:
        if c == me:
            return 0
        for i, t in enumerate(opts.tiers, start=1):
            same = bool(my_region) and _region(view, c) == my_region
            if t == "any" or (t == "region" and same):
                return i
        return len(opts.tiers) + 1

    cands = []
    for c, (eps, total) in sorted(per.items(), key=lambda kv: kv[0] or ""):
        w = opts.weights.get(c or "", 1)
        ok = (c != me or local_eligible) and w > 0 and c not in down and bool(eps)
        note = "drained (weight 0)" if w == 0 else _down_note(c, view.expired, failing)
        cands.append(Candidate(c, len(eps), total, w, tier(c), ok, note))
    return cands


def _local_then_clusterset(local: tuple[str, ...], clusterset: tuple[str, ...]) -> tuple[str, ...]:
    """The local ClusterIPs, then the ClusterSetIPs of the families the local copy lacks (an
    IPFamilyConflict: an IPv6-only local copy of a dual-stack import still answers A)."""
    have = {family_of(ip) for ip in local}
    return local + tuple(ip for ip in clusterset if family_of(ip) not in have)


def _local_first(
    view: ImportedView,
    imp: ServiceImport,
    per: dict[ClusterId | None, tuple[list[SelectedEndpoint], int]],
    opts: Options,
    notes: list[str],
    failing: frozenset[ClusterId] = frozenset(),
) -> Selection:
    me = view.cluster
    assert me is not None
    key = imp.key
    local_eps, local_total = per.get(me, ([], 0))
    healthy = _healthy(opts, len(local_eps), local_total) and me not in view.expired | failing
    track, eligible, wake = _local_track(view, key, healthy, opts, notes)
    cands = _candidates(view, per, opts, eligible, failing)

    def out(
        reason: str,
        addresses: tuple[str, ...] = (),
        endpoints: tuple[SelectedEndpoint, ...] = (),
        rotations: tuple[tuple[str, ...], ...] = (),
    ) -> Selection:
        return Selection(
            LOCAL_FIRST,
            addresses,
            endpoints,
            rotations,
            tuple(cands),
            reason,
            tuple(notes),
            {(key, me): track},
            wake,
        )

    state = f"{len(local_eps)}/{local_total} ready"
    if eligible:
        if imp.type is ImportType.HEADLESS:
            return out(f"local copy in {me} is healthy ({state})", endpoints=tuple(local_eps))
        local = view.local_services.get(key)
        if local is not None and local.cluster_ips:
            return out(
                f"local copy in {me} is healthy ({state}): its ClusterIP",
                addresses=_local_then_clusterset(_ips(local.cluster_ips), _ips(imp.ips)),
            )
        notes.append(f"local Service {key} in {me} has no ClusterIP to hand out")
    why = f"local copy in {me} not preferred ({state})"
    if imp.type is not ImportType.HEADLESS and opts.failover == "clustersetip":
        return out(f"{why}: the ClusterSetIP (balances over remote endpoints)", _ips(imp.ips))
    remote = [c for c in cands if c.cluster != me and c.eligible]
    if not remote:
        if imp.type is ImportType.HEADLESS:
            return out(f"{why}; no remote cluster is eligible")
        return out(f"{why}; no remote cluster is eligible: the ClusterSetIP", _ips(imp.ips))
    best = min(c.tier for c in remote)
    chosen = [c for c in remote if c.tier == best]
    groups = {c.cluster or "": _dedupe([e.address for e in per[c.cluster][0]]) for c in chosen}
    return out(
        f"{why}: failover to tier {best} ({', '.join(c.cluster or '?' for c in chosen)})",
        endpoints=tuple(e for c in chosen for e in per[c.cluster][0]),
        rotations=rotations(groups, {c.cluster or "": c.weight for c in chosen}),
    )


Available = dict[ClusterId, tuple[list[SelectedEndpoint], list[SelectedEndpoint], int]]


def _available(slices: tuple[EndpointSlice, ...], down: frozenset[ClusterId]) -> Available:
    """Per labelled source cluster: its ready endpoints, its serving but not ready ones (KEP-5939
    counts both as available), and its endpoint count; `down` clusters have none available."""
    out: Available = {}
    for s in slices:
        c = s.source_cluster
        if c is None:
            continue  # no cluster, no ClusterProperties to select it by
        ready, serving, total = out.get(c, ([], [], 0))
        if c not in down and s.address_type in ("IPv4", "IPv6"):
            for ep in s.endpoints:
                group = ready if ep.is_ready else serving if ep.serving else None
                if group is not None:
                    group.extend(SelectedEndpoint(c, a, ep.hostname, s.ports) for a in ep.addresses)
        out[c] = (ready, serving, total + len(s.endpoints))
    return out


def _properties(view: ImportedView, c: ClusterId) -> Mapping[str, str]:
    """`c`'s ClusterProperty map; its ID property is its ID, whether or not an object says so."""
    return {**view.properties.get(c, {}), CLUSTER_ID_PROPERTY: c}


def _cluster_selected(
    view: ImportedView,
    imp: ServiceImport,
    slices: tuple[EndpointSlice, ...],
    opts: Options,
    notes: list[str],
    failing: frozenset[ClusterId],
) -> Selection:
    """KEP-5939's algorithm, evaluated for the asking cluster: the first tier with an
    available endpoint, else the fallback policy."""
    me = view.cluster
    avail = _available(slices, view.expired | failing)
    if me is None:
        notes.append(f"asking cluster unknown: {clusterselect.SAME_AS_IMPORTER} stands for ''")
    importer = _properties(view, me) if me is not None else {}
    tiers = [clusterselect.prepare(s, importer) for s in imp.cluster_selectors]
    props = {c: _properties(view, c) for c in avail}

    def up(c: ClusterId) -> bool:
        ready, serving, _ = avail[c]
        return opts.weights.get(c, 1) > 0 and bool(ready or serving)

    chosen: list[ClusterId] = []
    number = 0
    for number, tier in enumerate(tiers, start=1):
        members = [c for c in sorted(avail) if tier.matches(props[c])]
        chosen = [c for c in members if up(c)]
        if chosen:
            break
        why = f"{', '.join(members)}: no available endpoint" if members else "no exporting cluster"
        notes.append(f"cluster selector {number} ({tier}): {why}")
    fallback = imp.cluster_selectors_fallback_policy
    if not chosen and fallback == clusterselect.ALL_CLUSTERS:
        answered = {c for c in avail if c not in view.expired | failing}  # via the ClusterSetIP
    else:
        # The chosen tier's ready endpoints when there are any, else its serving ones.
        answered = {c for c in chosen if avail[c][0]} or set(chosen)
    ready = any(avail[c][0] for c in chosen)
    fallback_tier = len(tiers) + 1
    cands = tuple(
        Candidate(
            c,
            len(avail[c][0]),
            avail[c][2],
            opts.weights.get(c, 1),
            next((i for i, t in enumerate(tiers, start=1) if t.matches(props[c])), fallback_tier),
            c in answered,
            "drained (weight 0)"
            if opts.weights.get(c, 1) == 0
            else _down_note(c, view.expired, failing),
        )
        for c in sorted(avail)
    )

    def out(
        reason: str,
        addresses: tuple[str, ...] = (),
        endpoints: tuple[SelectedEndpoint, ...] = (),
        orders: tuple[tuple[str, ...], ...] = (),
    ) -> Selection:
        return Selection(
            CLUSTER_SELECTORS, addresses, endpoints, orders, cands, reason, tuple(notes)
        )

    if not chosen:
        why = f"no cluster selector has an available endpoint; {clusterselect.FALLBACK} {fallback}"
        if fallback == clusterselect.NONE:
            return out(f"{why}: no address")
        return out(f"{why}: the ClusterSetIP (spec.ips)", _ips(imp.ips))
    chosen = sorted(answered)
    got = {c: avail[c][0] if ready else avail[c][1] for c in chosen}
    eps = tuple(e for c in chosen for e in got[c])
    state = f"{'has' if len(chosen) == 1 else 'have'} {len(eps)} {'ready' if ready else 'serving'}"
    reason = f"cluster selector {number} ({tiers[number - 1]}): {', '.join(chosen)} {state}"
    reason += " endpoint(s)"
    if chosen == [me]:
        local = view.local_services.get(imp.key)
        if local is not None and local.cluster_ips:
            return out(f"{reason}: its own ClusterIP", _ips(local.cluster_ips))
        notes.append(f"local Service {imp.key} in {me} has no ClusterIP to hand out")
    groups: dict[str, tuple[str, ...]] = {c: _dedupe([e.address for e in got[c]]) for c in chosen}
    weights: dict[str, int] = {c: opts.weights.get(c, 1) for c in chosen}
    return out(reason, endpoints=eps, orders=rotations(groups, weights))
