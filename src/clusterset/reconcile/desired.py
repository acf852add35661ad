"""The whole reconcile: observed ClusterSetState -> what every member cluster should hold.

Per consuming cluster (every member where the service's namespace exists):
a ServiceImport with `ips` filled, a derived Service that gives the
ClusterSetIP a data path (kube-proxy programs it from the MCS EndpointSlices,
which also carry `kubernetes.io/service-name=<derived>`), and the MCS
EndpointSlices. Per exporting cluster: ServiceExport conditions.

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
from collections.abc import Mapping
from dataclasses import dataclass, field

from clusterset.model.bag import ALWAYS_NAMESPACES
from clusterset.model.conditions import Condition
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import EndpointSlice, ImportType, IPFamily, ServiceImport
from clusterset.model.state import ClusterSetState, ImportedView
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
            regions={c: cs.region for c, cs in state.clusters.items() if cs.region},
        )


def namespaces_of(state: ClusterSetState, cluster: ClusterId) -> frozenset[str]:
    return state.clusters[cluster].namespaces | ALWAYS_NAMESPACES


def reconcile(
    state: ClusterSetState,
    *,
    ips: Mapping[tuple[ClusterId, ServiceKey], tuple[str, ...]],
    aggregates: Mapping[ServiceKey, Aggregate] | None = None,
    create_namespaces: bool = False,
) -> Desired:
    """Deterministic and level-based. `ips`: each consumer's ClusterSetIPs, allocated outside
    (by the manifest allocator, or read back from the derived Service in real clusters)."""
    if aggregates is None:
        aggregates = aggregate_all(state)
    conditions: dict[tuple[ClusterId, ServiceKey], tuple[Condition, ...]] = {}
    for key, agg in aggregates.items():
        for cid, conds in agg.conditions.items():
            conditions[(cid, key)] = conds
    slices = {
        key: imported_slices(state, agg) for key, agg in aggregates.items() if agg.type is not None
    }
    clusters: dict[ClusterId, ClusterDesired] = {}
    wanted_ns = frozenset(k.namespace for k, a in aggregates.items() if a.type is not None)
    for cid in sorted(state.clusters):
        cs = state.clusters[cid]
        existing = namespaces_of(state, cid)
        # Opt-in: a consumer lacking a service's namespace gets it, so a service can be
        # consumed where it was never deployed (KEP: "may or may not ... create").
        missing = (wanted_ns - existing) if create_namespaces else frozenset()
        nss = existing | missing
        imports: dict[ServiceKey, ServiceImport] = {}
        derived: dict[ServiceKey, str] = {}
        for key, agg in aggregates.items():
            if agg.type is None or key.namespace not in nss:
                continue
            headless = agg.type is ImportType.HEADLESS
            # KEP: only spec.exportedAnnotations/exportedLabels of the oldest export are
            # propagated (never metadata), plus our own clusterset.io/* policy settings.
            annotations = {**dict(agg.exported_annotations), **dict(agg.annotations)}
            if not headless:
                derived[key] = cs.foreign_derived.get(key) or derived_name(key)
                annotations[DERIVED_SERVICE_ANNOTATION] = derived[key]
            imports[key] = ServiceImport(
                namespace=key.namespace,
                name=key.name,
                type=agg.type,
                ports=agg.ports,
                ips=() if headless else ips.get((cid, key), ()),
                ip_families=agg.ip_families,
                session_affinity=agg.session_affinity,
                session_affinity_timeout=agg.session_affinity_timeout,
                internal_traffic_policy=agg.internal_traffic_policy,
                traffic_distribution=agg.traffic_distribution,
                clusters=agg.clusters,
                annotations=tuple(sorted(annotations.items())),
                labels=agg.exported_labels,
            )
        clusters[cid] = ClusterDesired(
            cluster=cid,
            imports=imports,
            slices={k: slices[k] for k in imports},
            derived=derived,
            namespaces=nss,
            create_namespaces=missing,
            foreign_imports=frozenset(k for k in imports if k in cs.foreign_imports),
            foreign_derived=frozenset(k for k in derived if k in cs.foreign_derived),
        )
    unsynced = frozenset(c for c, cs in state.clusters.items() if not cs.synced)
    return Desired(clusters, conditions, aggregates, unsynced)


def aggregate_all(state: ClusterSetState) -> dict[ServiceKey, Aggregate]:
    return {key: aggregate(state, key) for key in state.exported_keys()}


def wanted_ips(
    aggregates: Mapping[ServiceKey, Aggregate],
) -> list[tuple[ServiceKey, tuple[IPFamily, ...]]]:
    """(key, ipFamilies) of every ClusterSetIP import, for the allocator."""
    return [
        (key, agg.ip_families)
        for key, agg in aggregates.items()
        if agg.type is ImportType.CLUSTER_SET_IP
    ]
