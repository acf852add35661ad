"""Builders with sane defaults for table tests."""

from __future__ import annotations

from clusterset.model.clusterselect import (
    ClusterSelector,
    LabelSelector,
    LabelSelectorRequirement,
)
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import (
    Endpoint,
    EndpointSlice,
    ImportType,
    IPFamily,
    Protocol,
    Service,
    ServiceExport,
    ServiceImport,
    ServicePort,
    ServiceType,
)
from clusterset.model.state import ClusterSetState, ClusterState, ImportedView


def port(number: int, name: str = "", protocol: str = "TCP") -> ServicePort:
    return ServicePort(number, Protocol(protocol), name)


def service(
    name: str = "svc",
    ns: str = "ns",
    *,
    ports: tuple[ServicePort, ...] = (ServicePort(80, Protocol.TCP, "http"),),
    headless: bool = False,
    type: ServiceType = ServiceType.CLUSTER_IP,
    ips: tuple[str, ...] = ("10.96.0.1",),
    affinity: str = "None",
    affinity_timeout: int | None = None,
    families: tuple[IPFamily, ...] = (),
    itp: str = "",
    td: str = "",
) -> Service:
    return Service(
        namespace=ns,
        name=name,
        type=type,
        headless=headless,
        cluster_ips=() if headless else ips,
        ports=ports,
        session_affinity=affinity,
        session_affinity_timeout=affinity_timeout,
        ip_families=families,
        internal_traffic_policy=itp,
        traffic_distribution=td,
    )


def export(
    name: str = "svc",
    ns: str = "ns",
    created: float = 0.0,
    *,
    labels: tuple[tuple[str, str], ...] = (),
    annotations: tuple[tuple[str, str], ...] = (),
    selectors: tuple[ClusterSelector, ...] = (),
    fallback: str = "AllClusters",
    problem: str = "",
    export_to: tuple[str, ...] | None = None,
    export_to_problem: str = "",
) -> ServiceExport:
    return ServiceExport(
        ns,
        name,
        created,
        exported_labels=labels,
        annotations=annotations,
        cluster_selectors=selectors,
        cluster_selectors_fallback_policy=fallback,
        cluster_selectors_problem=problem,
        export_to=None if export_to is None else frozenset(map(ClusterId, export_to)),
        export_to_problem=export_to_problem,
    )


def selector(
    *,
    labels: tuple[tuple[str, str], ...] = (),
    exprs: tuple[tuple[str, str, tuple[str, ...]], ...] = (),
) -> ClusterSelector:
    """One clusterSelectors entry: matchLabels pairs and (key, operator, values) expressions."""
    return ClusterSelector(
        LabelSelector(
            tuple(sorted(labels)), tuple(LabelSelectorRequirement(k, o, v) for k, o, v in exprs)
        )
    )


def endpoint(
    address: str,
    *,
    hostname: str = "",
    ready: bool | None = True,
    zone: str = "",
    serving: bool | None = None,
) -> Endpoint:
    return Endpoint((address,), hostname=hostname, ready=ready, zone=zone, serving=serving)


def eslice(
    name: str = "svc",
    ns: str = "ns",
    *,
    endpoints: tuple[Endpoint, ...] = (),
    ports: tuple[ServicePort, ...] = (ServicePort(80, Protocol.TCP, "http"),),
    source: str | None = None,
    slice_name: str | None = None,
    address_type: str = "IPv4",
) -> EndpointSlice:
    return EndpointSlice(
        namespace=ns,
        name=slice_name or f"{name}-{source or 'local'}",
        service=name,
        address_type=address_type,
        ports=ports,
        endpoints=endpoints,
        source_cluster=ClusterId(source) if source else None,
    )


def cluster(
    cid: str,
    *,
    services: tuple[Service, ...] = (),
    exports: tuple[ServiceExport, ...] = (),
    slices: tuple[EndpointSlice, ...] = (),
    namespaces: tuple[str, ...] = ("ns",),
    synced: bool = True,
    properties: dict[str, str] | None = None,
) -> ClusterState:
    grouped: dict[ServiceKey, tuple[EndpointSlice, ...]] = {}
    for s in slices:
        grouped[s.key] = (*grouped.get(s.key, ()), s)
    return ClusterState(
        cluster=ClusterId(cid),
        services={s.key: s for s in services},
        exports={e.key: e for e in exports},
        slices=grouped,
        namespaces=frozenset(namespaces),
        synced=synced,
        properties=properties or {},
    )


def clusterset(*clusters: ClusterState) -> ClusterSetState:
    return ClusterSetState({c.cluster: c for c in clusters})


def imported(
    name: str = "svc",
    ns: str = "ns",
    *,
    type: ImportType = ImportType.CLUSTER_SET_IP,
    ips: tuple[str, ...] = ("10.0.0.1",),
    ports: tuple[ServicePort, ...] = (ServicePort(80, Protocol.TCP, "http"),),
    annotations: tuple[tuple[str, str], ...] = (),
    selectors: tuple[ClusterSelector, ...] = (),
    fallback: str = "AllClusters",
) -> ServiceImport:
    return ServiceImport(
        ns,
        name,
        type,
        ports=ports,
        ips=() if type is ImportType.HEADLESS else ips,
        annotations=annotations,
        cluster_selectors=selectors,
        cluster_selectors_fallback_policy=fallback,
    )


def view(
    imports: tuple[ServiceImport, ...] = (),
    slices: tuple[EndpointSlice, ...] = (),
    *,
    namespaces: tuple[str, ...] = ("ns",),
    cluster: str | None = "c1",
) -> ImportedView:
    grouped: dict[ServiceKey, tuple[EndpointSlice, ...]] = {}
    for s in slices:
        grouped[s.key] = (*grouped.get(s.key, ()), s)
    return ImportedView(
        cluster=ClusterId(cluster) if cluster else None,
        imports={i.key: i for i in imports},
        slices=grouped,
        namespaces=frozenset(namespaces),
        generation=7,
    )
