"""The whole reconcile: observed ClusterSetState -> what every member cluster should hold.

Per consuming cluster (every member where the service's namespace exists; with
clusterset.io/export-to, only those of the clusters it names and the exporting ones):
a ServiceImport with `ips` filled, a derived Service that gives the ClusterSetIP a data
path (kube-proxy programs it from the MCS EndpointSlices, which also carry
`kubernetes.io/service-name=<derived>`), and the MCS EndpointSlices. Per exporting
cluster: ServiceExport conditions and the clusters the service is exported to.

Beside Karmada: an import Karmada manages (or places) in a cluster is *foreign*
there: only its `spec.ips` is filled. Where Karmada made `derived-<svc>`, that
Service's ClusterIP is the ClusterSetIP and Karmada's `imported-*` slices are
its data path, so no second derived Service is made and the MCS slices carry no
`kubernetes.io/service-name` (no endpoint reaches kube-proxy twice).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from clusterset.model import clusterselect
from clusterset.model.bag import ALWAYS_NAMESPACES
from clusterset.model.conditions import Condition
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import (
    EndpointSlice,
    ImportType,
    IPFamily,
    ServiceImport,
    family_of,
)
from clusterset.model.state import ClusterSetState, ClusterState, ImportedView
from clusterset.reconcile.aggregate import Aggregate, aggregate
from clusterset.reconcile.slices import imported_slices

DERIVED_SERVICE_ANNOTATION = "multicluster.kubernetes.io/derived-service"


@functools.cache  # called per service per consumer on every pass (profiled)
def derived_name(key: ServiceKey) -> str:
    """mcs-api reference naming: 'derived-' + 10 chars of base32hex(sha256('<ns>/<name>'))."""
    digest = hashlib.sha256(f"{key.namespace}/{key.name}".encode()).digest()
    return "derived-" + base64.b32hexencode(digest).decode().lower()[:10]


@dataclass(frozen=True, slots=True)
class ClusterDesired:
    cluster: ClusterId
    imports: Mapping[ServiceKey, ServiceImport]
    slices: Mapping[ServiceKey, tuple[EndpointSlice, ...]]
    derived: Mapping[ServiceKey, str]  # ClusterSetIP imports -> derived Service name
    namespaces: frozenset[str]
    create_namespaces: frozenset[str] = frozenset()  # remote-only consumption (opt-in)
    foreign_imports: frozenset[ServiceKey] = frozenset()  # fill spec.ips only; never own
    foreign_derived: frozenset[ServiceKey] = frozenset()  # derived Service is Karmada's

    def data_path(self, key: ServiceKey) -> str | None:
        """The Service our MCS slices feed through kube-proxy (None: another's slices do)."""
        return None if key in self.foreign_derived else self.derived.get(key)


@dataclass(frozen=True, slots=True)
class Desired:
    clusters: Mapping[ClusterId, ClusterDesired]
    conditions: Mapping[tuple[ClusterId, ServiceKey], tuple[Condition, ...]]
    aggregates: Mapping[ServiceKey, Aggregate]
    unsynced: frozenset[ClusterId] = field(default=frozenset())
    # Each ServiceImport's MCS slices (the same in every consumer), for the next pass.
    imported: Mapping[ServiceKey, tuple[EndpointSlice, ...]] = field(default_factory=dict)
    # The ClusterSetIPs this was reconciled with (a copy), for the next pass.
    ips: Mapping[tuple[ClusterId, ServiceKey], tuple[str, ...]] = field(default_factory=dict)
    # The clusters that hold each ServiceImport, sorted: where the service is exported to.
    importers: Mapping[ServiceKey, tuple[ClusterId, ...]] = field(default_factory=dict)

    def exported_to(self, cluster: ClusterId, key: ServiceKey) -> tuple[ClusterId, ...]:
        """`status.clusters` of `cluster`'s ServiceExport of `key` (enhancements#6329): the
        clusters holding the import when that export is part of it, else none (an invalid
        export is exported nowhere, whoever else exports the service)."""
        agg = self.aggregates.get(key)
        return self.importers.get(key, ()) if agg is not None and cluster in agg.clusters else ()

    def view(self, cluster: ClusterId, state: ClusterSetState, generation: int) -> ImportedView:
        """What DNS serves in `cluster`: its imports and slices, plus its own Services."""
        cd = self.clusters[cluster]
        return ImportedView(
            cluster=cluster,
            imports=cd.imports,
            slices=cd.slices,
            namespaces=cd.namespaces,
            local_services=state.clusters[cluster].services,
            generation=generation,
            properties=cluster_properties(state),
        )


def cluster_properties(state: ClusterSetState) -> dict[ClusterId, Mapping[str, str]]:
    """Each cluster's ClusterProperty map, for the answer policies (tiers, cluster selection)."""
    return {cid: cs.properties for cid, cs in state.clusters.items() if cs.properties}


def namespaces_of(state: ClusterSetState, cluster: ClusterId) -> frozenset[str]:
    return state.clusters[cluster].namespaces | ALWAYS_NAMESPACES


_MISSING = object()


def _diff(
    old: Mapping[ServiceKey, object], new: Mapping[ServiceKey, object], out: set[ServiceKey]
) -> None:
    if old is new:
        return
    for key, value in new.items():
        was = old.get(key, _MISSING)
        if was is not value and was != value:
            out.add(key)
    out.update(old.keys() - new.keys())


def changed_keys(old: ClusterSetState, new: ClusterSetState) -> set[ServiceKey] | None:
    """The service keys whose reconcile inputs differ between two observations; None when
    an input of every key differs (a cluster came or went, or its namespaces changed).

    Level-based: a comparison of two states, never a log of events. Unchanged objects are
    usually the same objects (the sources cache what they converted), so this is mostly
    identity checks: a few milliseconds for 10 clusters x 2,000 services.
    """
    if old.clusters.keys() != new.clusters.keys():
        return None
    dirty: set[ServiceKey] = set()
    for cid, cs in new.clusters.items():
        was = old.clusters[cid]
        if cs is was:
            continue
        if cs.namespaces != was.namespaces or cs.service_families != was.service_families:
            return None
        _diff(was.services, cs.services, dirty)
        _diff(was.exports, cs.exports, dirty)
        _diff(was.slices, cs.slices, dirty)
        _diff(was.foreign_derived, cs.foreign_derived, dirty)
    return dirty


def _exported(state: ClusterSetState, key: ServiceKey) -> bool:
    return any(key in cs.exports for cs in state.clusters.values())


def aggregate_all(
    state: ClusterSetState,
    *,
    previous: Mapping[ServiceKey, Aggregate] | None = None,
    changed: set[ServiceKey] | None = None,
) -> dict[ServiceKey, Aggregate]:
    """Every exported key's Aggregate; with `previous` and `changed` (see changed_keys),
    only the changed keys are aggregated again and the others are reused."""
    if previous is None or changed is None:
        return {key: aggregate(state, key) for key in state.exported_keys()}
    out = dict(previous)
    added = False
    for key in changed:
        if _exported(state, key):
            added |= key not in out
            out[key] = aggregate(state, key)
        else:
            out.pop(key, None)
    return dict(sorted(out.items())) if added else out


def reconcile(
    state: ClusterSetState,
    *,
    ips: Mapping[tuple[ClusterId, ServiceKey], tuple[str, ...]],
    aggregates: Mapping[ServiceKey, Aggregate] | None = None,
    create_namespaces: bool = False,
    previous: Desired | None = None,
    changed: set[ServiceKey] | None = None,
) -> Desired:
    """Deterministic and level-based. `ips`: each consumer's ClusterSetIPs, allocated outside
    (by the manifest allocator, or read back from the derived Service in real clusters).

    With `previous` (the Desired of the state before) and `changed` (changed_keys of the two
    states), only the changed keys, and per consumer the keys whose ClusterSetIPs changed,
    are reconciled again: the result equals a full reconcile (tests compare them after
    thousands of random edits), at the cost of the change.
    """
    if aggregates is None:
        aggregates = aggregate_all(state)
    if previous is None or changed is None or previous.clusters.keys() != state.clusters.keys():
        previous, changed = None, None
    if previous is None or changed is None:
        conditions: dict[tuple[ClusterId, ServiceKey], tuple[Condition, ...]] = {}
        imported: dict[ServiceKey, tuple[EndpointSlice, ...]] = {}
        redo: Iterable[ServiceKey] = aggregates
    else:
        conditions = dict(previous.conditions)
        imported = dict(previous.imported)
        redo = changed
        for key in changed:
            old = previous.aggregates.get(key)
            for cid in old.conditions if old is not None else ():
                conditions.pop((cid, key), None)
            imported.pop(key, None)
    for key in redo:
        agg = aggregates.get(key)
        if agg is None:
            continue
        for cid, conds in agg.conditions.items():
            conditions[(cid, key)] = conds
        if agg.type is not None:
            imported[key] = imported_slices(state, agg)
    # A walk over every import: only when it is asked for.
    wanted_ns = _wanted_namespaces(aggregates) if create_namespaces else (frozenset(), {})
    # Per consumer, the keys whose ClusterSetIPs moved (one set operation, in C).
    moved: dict[ClusterId, set[ServiceKey]] = {}
    ips = dict(ips)
    if previous is not None:
        for (cid, key), _ in ips.items() ^ previous.ips.items():
            moved.setdefault(cid, set()).add(key)
    clusters: dict[ClusterId, ClusterDesired] = {}
    for cid in sorted(state.clusters):
        before = previous.clusters[cid] if previous is not None else None
        clusters[cid] = _cluster(
            state.clusters[cid],
            aggregates,
            imported,
            ips,
            wanted_ns[0] | wanted_ns[1].get(cid, frozenset()),
            before,
            None if changed is None else changed | moved.get(cid, set()),
        )
    unsynced = frozenset(c for c, cs in state.clusters.items() if not cs.synced)
    importers: dict[ServiceKey, tuple[ClusterId, ...]] = (
        {} if previous is None else dict(previous.importers)
    )
    for key in redo:  # only a changed key's importers change (namespaces: a full pass)
        held = tuple(cid for cid, cd in clusters.items() if key in cd.imports)
        if held:
            importers[key] = held
        else:
            importers.pop(key, None)
    return Desired(clusters, conditions, aggregates, unsynced, imported, ips, importers)


def _wanted_namespaces(
    aggregates: Mapping[ServiceKey, Aggregate],
) -> tuple[frozenset[str], dict[ClusterId, frozenset[str]]]:
    """The namespaces of the imports every cluster consumes, and per cluster those of the
    imports only some consume (export-to): what --create-namespaces makes."""
    every: set[str] = set()
    some: dict[ClusterId, set[str]] = {}
    for key, agg in aggregates.items():
        if agg.type is None:
            continue
        if agg.consumers is None:
            every.add(key.namespace)
        else:
            for cid in agg.consumers:
                some.setdefault(cid, set()).add(key.namespace)
    return frozenset(every), {cid: frozenset(nss) for cid, nss in some.items()}


def _cluster(
    cs: ClusterState,
    aggregates: Mapping[ServiceKey, Aggregate],
    imported: Mapping[ServiceKey, tuple[EndpointSlice, ...]],
    ips: Mapping[tuple[ClusterId, ServiceKey], tuple[str, ...]],
    wanted_ns: frozenset[str],
    before: ClusterDesired | None,
    changed: set[ServiceKey] | None,
) -> ClusterDesired:
    """One consumer's desired objects; with `before`, only the `changed` keys are made
    again."""
    cid = cs.cluster
    existing = cs.namespaces | ALWAYS_NAMESPACES
    # Opt-in: a consumer lacking a service's namespace gets it, so a service can be
    # consumed where it was never deployed (KEP: "may or may not ... create").
    missing = wanted_ns - existing
    nss = existing | missing
    imports: dict[ServiceKey, ServiceImport]
    derived: dict[ServiceKey, str]
    slices: dict[ServiceKey, tuple[EndpointSlice, ...]]
    if before is None or changed is None or before.namespaces != nss:
        imports, derived, slices, redo = {}, {}, {}, list(aggregates)
    else:
        imports, derived = dict(before.imports), dict(before.derived)
        slices, redo = dict(before.slices), list(changed)
    added = False
    for key in redo:
        agg = aggregates.get(key)
        if agg is None or agg.type is None or key.namespace not in nss or not agg.consumes(cid):
            imports.pop(key, None)
            derived.pop(key, None)
            slices.pop(key, None)
            continue
        added |= key not in imports
        imp, name = _import(cs, agg, ips.get((cid, key), ()))
        imports[key] = imp
        slices[key] = imported[key]
        if name is None:
            derived.pop(key, None)
        else:
            added |= key not in derived
            derived[key] = name
    if added:
        imports, derived = dict(sorted(imports.items())), dict(sorted(derived.items()))
        slices = {k: slices[k] for k in imports}
    return ClusterDesired(
        cluster=cid,
        imports=imports,
        slices=slices,
        derived=derived,
        namespaces=nss,
        create_namespaces=missing,
        foreign_imports=frozenset(imports.keys() & cs.foreign_imports),
        foreign_derived=frozenset(derived.keys() & cs.foreign_derived.keys()),
    )


def _import(
    cs: ClusterState, agg: Aggregate, ips: tuple[str, ...]
) -> tuple[ServiceImport, str | None]:
    """One consumer's ServiceImport for `agg`, and its derived Service (None: headless)."""
    key = agg.key
    headless = agg.type is ImportType.HEADLESS
    # KEP: only spec.exportedAnnotations/exportedLabels of the oldest export are
    # propagated (never metadata), plus our own clusterset.io/* policy settings.
    annotations = {**dict(agg.exported_annotations), **dict(agg.annotations)}
    if agg.cluster_selectors:
        # The resolved KEP-5939 fields, also where a v1alpha1 CRD prunes them from spec.
        annotations[clusterselect.ANNOTATION] = clusterselect.annotation(
            agg.cluster_selectors, agg.cluster_selectors_fallback_policy
        )
    derived = None
    families = agg.ip_families
    if not headless:
        derived = cs.foreign_derived.get(key) or derived_name(key)
        annotations[DERIVED_SERVICE_ANNOTATION] = derived
        families = served_families(families, cs.service_families)
    assert agg.type is not None
    imp = ServiceImport(
        namespace=key.namespace,
        name=key.name,
        type=agg.type,
        ports=agg.ports,
        ips=() if headless else clusterset_ips(ips, families),
        ip_families=families,
        session_affinity=agg.session_affinity,
        session_affinity_timeout=agg.session_affinity_timeout,
        internal_traffic_policy=agg.internal_traffic_policy,
        traffic_distribution=agg.traffic_distribution,
        clusters=agg.clusters,
        annotations=tuple(sorted(annotations.items())),
        labels=agg.exported_labels,
        cluster_selectors=agg.cluster_selectors,
        cluster_selectors_fallback_policy=agg.cluster_selectors_fallback_policy,
    )
    return imp, derived


def served_families(
    families: tuple[IPFamily, ...], served: tuple[IPFamily, ...]
) -> tuple[IPFamily, ...]:
    """The import's families a consumer's Services can have (`served`: its ServiceCIDRs'), in
    the import's order: a single-stack consumer of a dual-stack service gets the ClusterSetIP
    of its own family, where asking both would get no derived Service at all. Unknown
    (`served` empty), or none in common (no derived Service can be made there: the
    apiserver says why): the import's own."""
    if not served:
        return families
    return tuple(f for f in families if f in served) or families


def clusterset_ips(ips: tuple[str, ...], families: tuple[IPFamily, ...]) -> tuple[str, ...]:
    """`ips` (a derived Service's ClusterIPs, or the allocator's) as the import's `spec.ips`:
    the leading ones that are, one by one, of `families` in order, so that `ips[i]` is
    always of `ipFamilies[i]` (what mcs-api conformance checks, and what the derived
    Service's ClusterIPs must be). A family dropped leaves its address out; a primary
    family changed leaves none (the derived Service is made again: a ClusterIP's family
    never changes)."""
    n = 0
    for ip, family in zip(ips, families, strict=False):
        if family_of(ip) is not family:
            break
        n += 1
    return ips if n == len(ips) else ips[:n]


def wanted_ips(
    aggregates: Mapping[ServiceKey, Aggregate],
) -> list[tuple[ServiceKey, tuple[IPFamily, ...]]]:
    """(key, ipFamilies) of every ClusterSetIP import, for the allocator."""
    return [
        (key, agg.ip_families)
        for key, agg in aggregates.items()
        if agg.type is ImportType.CLUSTER_SET_IP
    ]
