"""The essence of the Kubernetes objects that reconcile and DNS need.

Converted from API JSON at the edges (manifests, kube); only the fields used
here are kept (CoreDNS learned the memory lesson in coredns/coredns#2095).
"""

from __future__ import annotations

import ipaddress
import operator
import re
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, TypeVar

from clusterset.model.clusterselect import ALL_CLUSTERS, ClusterSelector
from clusterset.model.ids import ClusterId, ServiceKey


class Protocol(StrEnum):
    TCP = "TCP"
    UDP = "UDP"
    SCTP = "SCTP"


class ImportType(StrEnum):
    """ServiceImport.spec.type."""

    CLUSTER_SET_IP = "ClusterSetIP"
    HEADLESS = "Headless"


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"
    EXTERNAL_NAME = "ExternalName"


class IPFamily(StrEnum):
    IPV4 = "IPv4"
    IPV6 = "IPv6"


def family_of(address: str) -> IPFamily:
    return IPFamily.IPV6 if ":" in address else IPFamily.IPV4


_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


def canonical_ip(address: str) -> str:
    """Normalise an IP literal; raises ValueError on anything else.

    Dotted quads are matched first: a cold start converts every endpoint address, and
    ipaddress was a tenth of it (profiled). The pattern accepts exactly ipaddress's IPv4
    (four decimal octets, no leading zeros), which is already canonical (tested)."""
    if _IPV4.fullmatch(address):
        return address
    return str(ipaddress.ip_address(address))


T = TypeVar("T")


def _pickled_by_fields(cls: type[T]) -> type[T]:
    """Pickle as a call of the constructor with the fields in order. A parse worker sends
    every object it converted; dataclass(slots=True)'s own __getstate__/__setstate__ call
    fields() on every object, and cost twice as much (measured: bench/yaml_read.py)."""
    get = operator.attrgetter(*(f.name for f in fields(cls)))  # type: ignore[arg-type]

    def reduce(self: T) -> tuple[type[T], tuple[Any, ...]]:
        return cls, get(self)

    cls.__reduce__ = reduce  # type: ignore[assignment,method-assign]
    return cls


@_pickled_by_fields
@dataclass(frozen=True, slots=True, order=True)
class ServicePort:
    port: int
    protocol: Protocol = Protocol.TCP
    name: str = ""
    app_protocol: str = ""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port {self.port} out of range 1-65535")


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Endpoint:
    """One EndpointSlice endpoint. ready=None means unknown, which consumers treat as ready."""

    addresses: tuple[str, ...]
    hostname: str = ""
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None
    zone: str = ""

    @property
    def is_ready(self) -> bool:
        return self.ready is not False


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class EndpointSlice:
    """An EndpointSlice: in a source cluster (owned by its Service) or an MCS one."""

    namespace: str
    name: str
    service: str
    address_type: str = "IPv4"
    ports: tuple[ServicePort, ...] = ()
    endpoints: tuple[Endpoint, ...] = ()
    source_cluster: ClusterId | None = None
    managed_by: str = ""

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.service)


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class Service:
    """A Service's exportable properties (what KEP-1645 merges or compares)."""

    namespace: str
    name: str
    type: ServiceType = ServiceType.CLUSTER_IP
    headless: bool = False
    cluster_ips: tuple[str, ...] = ()
    ports: tuple[ServicePort, ...] = ()
    session_affinity: str = "None"
    session_affinity_timeout: int | None = None
    ip_families: tuple[IPFamily, ...] = ()
    internal_traffic_policy: str = ""
    traffic_distribution: str = ""

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.name)


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class ServiceExport:
    namespace: str
    name: str
    created: float  # creationTimestamp, seconds since the epoch (seconds granularity)
    exported_labels: tuple[tuple[str, str], ...] = ()
    exported_annotations: tuple[tuple[str, str], ...] = ()
    annotations: tuple[tuple[str, str], ...] = ()
    # KEP-5939 (spec, else the clusterset.io/cluster-selectors annotation).
    cluster_selectors: tuple[ClusterSelector, ...] = ()
    cluster_selectors_fallback_policy: str = ALL_CLUSTERS
    # Why those fields cannot be used (names the field; they are then the defaults): the
    # export is Valid=False, InvalidClusterSelector, rather than an object lost at the edge.
    cluster_selectors_problem: str = ""
    # clusterset.io/export-to (kubernetes/enhancements#6329): the clusters the service is
    # exported to; None: every cluster. A bad value is kept as the problem (Valid=False,
    # InvalidExportTo), naming the annotation and the item.
    export_to: frozenset[ClusterId] | None = None
    export_to_problem: str = ""

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.name)


@_pickled_by_fields
@dataclass(frozen=True, slots=True)
class ServiceImport:
    """ServiceImport as DNS reads it (and as reconcile writes it)."""

    namespace: str
    name: str
    type: ImportType
    ports: tuple[ServicePort, ...] = ()
    ips: tuple[str, ...] = ()
    ip_families: tuple[IPFamily, ...] = ()
    session_affinity: str = "None"
    session_affinity_timeout: int | None = None
    internal_traffic_policy: str = ""
    traffic_distribution: str = ""
    clusters: tuple[ClusterId, ...] = ()
    annotations: tuple[tuple[str, str], ...] = field(default=())
    labels: tuple[tuple[str, str], ...] = ()  # the oldest export's spec.exportedLabels
    # KEP-5939, resolved across the exports (the oldest's when they disagree).
    cluster_selectors: tuple[ClusterSelector, ...] = ()
    cluster_selectors_fallback_policy: str = ALL_CLUSTERS

    @property
    def key(self) -> ServiceKey:
        return ServiceKey(self.namespace, self.name)
