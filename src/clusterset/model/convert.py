"""Raw Kubernetes JSON (as decoded from YAML or the API) -> model, with field-named errors.

Both edges (manifests, kube) convert here, so a bad object reads the same
wherever it came from: `ServiceImport default/serve: spec.ports[0].port: ...`.
Only the fields reconcile and DNS use are read; everything else is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, TypeGuard

from clusterset.model import clusterselect, exportto
from clusterset.model.ids import ClusterId, InvalidName, cluster_id
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
    canonical_ip,
)

MCS_GROUP = "multicluster.x-k8s.io"
LABEL_SERVICE_NAME = "multicluster.kubernetes.io/service-name"
LABEL_SOURCE_CLUSTER = "multicluster.kubernetes.io/source-cluster"
LABEL_K8S_SERVICE_NAME = "kubernetes.io/service-name"
LABEL_MANAGED_BY = "endpointslice.kubernetes.io/managed-by"
CLUSTER_ID_PROPERTY = "cluster.clusterset.k8s.io"

Raw = Mapping[str, Any]


class ObjectError(ValueError):
    """An object that cannot be used; the message names kind, namespace/name and field."""

    def __init__(self, obj: Raw, field: str, problem: str) -> None:
        self.kind = str(obj.get("kind", "?")) if isinstance(obj, Mapping) else "?"
        meta = obj.get("metadata") if isinstance(obj, Mapping) else None
        meta = meta if isinstance(meta, Mapping) else {}
        ns, name = meta.get("namespace"), meta.get("name", "?")
        self.ref = _short(f"{ns}/{name}" if ns else str(name), 100)
        self.field = _short(field, 200)
        super().__init__(
            f"{_short(self.kind, 60)} {self.ref}: {self.field}: {_short(problem, 300)}"
        )


def _short(text: str, limit: int) -> str:
    """One printable line of at most about `limit` characters (error lines quote input)."""
    if not text.isprintable():
        text = text.encode("unicode_escape").decode("ascii")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def _is_map(value: Any) -> TypeGuard[Raw]:
    """isinstance(value, Mapping), without the ABC check for the dicts every parser makes
    (a cold read converts hundreds of thousands of fields: measured, bench/yaml_read.py)."""
    return type(value) is dict or isinstance(value, Mapping)


def kind_of(obj: Raw) -> tuple[str, str]:
    """(group, kind) of a raw object; group is '' for the core API."""
    api = str(obj.get("apiVersion", ""))
    group = api.split("/", 1)[0] if "/" in api else ""
    return group, str(obj.get("kind", ""))


def _get(obj: Raw, path: str, typ: type | tuple[type, ...], *, default: Any = None) -> Any:
    cur: Any = obj
    for part in path.split("."):
        if not _is_map(cur):
            raise ObjectError(obj, path, "parent is not an object")
        cur = cur.get(part)
        if cur is None:
            return default
    if not isinstance(cur, typ) or (typ is int and isinstance(cur, bool)):
        names = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
        raise ObjectError(obj, path, f"expected {_kube_type(names)}, got {type(cur).__name__}")
    return cur


def _kube_type(pytype: str) -> str:
    return {"str": "string", "int": "integer", "list": "list", "dict": "object"}.get(pytype, pytype)


def _required(obj: Raw, path: str, typ: type | tuple[type, ...]) -> Any:
    value = _get(obj, path, typ)
    if value is None or value == "":
        raise ObjectError(obj, path, "required field is missing")
    return value


# The apiserver's name rules (k8s.io/apimachinery/pkg/util/validation).
_DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
MAX_ANNOTATIONS_BYTES = 256 * 1024  # TotalAnnotationSizeLimitB


def name_problem(value: str, rule: str = "subdomain") -> str | None:
    """Why `value` is not a valid name under `rule` (label | label1035 | subdomain), or None."""
    limit, pattern, what = {
        "label": (63, _DNS1123_LABEL, "an RFC 1123 label"),
        "label1035": (63, _DNS1035_LABEL, "an RFC 1035 label"),
        "subdomain": (253, _DNS1123_SUBDOMAIN, "an RFC 1123 subdomain"),
    }[rule]
    if len(value) > limit:
        return f"{value[:20]!r}... is {len(value)} characters, more than {limit}"
    if not pattern.fullmatch(value):
        return f"{value!r} is not {what} (lowercase letters, digits and '-')"
    return None


def metadata(obj: Raw, *, namespaced: bool = True, rule: str = "subdomain") -> tuple[str, str]:
    """(namespace, name), validated as the apiserver does (`rule` for the name)."""
    name = _required(obj, "metadata.name", str)
    problem = name_problem(name, rule)
    if problem:
        raise ObjectError(obj, "metadata.name", problem)
    if not namespaced:
        return "", name
    ns = _get(obj, "metadata.namespace", str, default="default") or "default"
    problem = name_problem(ns, "label")
    if problem:
        raise ObjectError(obj, "metadata.namespace", problem)
    return ns, name


def _string_map(obj: Raw, path: str, *, labels: bool) -> dict[str, str]:
    """Labels or annotations: a map of strings to strings (anything else is rejected, never
    turned into a string: a nested alias structure would expand without bound)."""
    raw = _get(obj, path, dict, default={})
    size = 0
    for k, v in raw.items():
        if not isinstance(k, str):
            raise ObjectError(obj, path, f"key {k!r} is not a string")
        if not isinstance(v, str):
            raise ObjectError(obj, f"{path}[{k}]", f"expected string, got {type(v).__name__}")
        prefix, _, name = k.rpartition("/")
        if (
            not _QUALIFIED_NAME.fullmatch(name)
            or len(name) > 63
            or (prefix and name_problem(prefix, "subdomain"))
        ):
            raise ObjectError(obj, path, f"key {k[:80]!r} is not a qualified name")
        if labels and (len(v) > 63 or not _LABEL_VALUE.fullmatch(v)):
            raise ObjectError(obj, f"{path}[{k}]", f"{v[:80]!r} is not a valid label value")
        size += len(k) + len(v)
    if size > MAX_ANNOTATIONS_BYTES:
        raise ObjectError(obj, path, f"{size} bytes, more than {MAX_ANNOTATIONS_BYTES}")
    return dict(raw)


def labels(obj: Raw, path: str = "metadata.labels") -> dict[str, str]:
    """metadata.labels, validated (strings, label syntax)."""
    return _string_map(obj, path, labels=True)


def creation_time(obj: Raw) -> float:
    ts = _get(obj, "metadata.creationTimestamp", str, default=None)
    if ts is None:
        return 0.0
    try:
        return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise ObjectError(obj, "metadata.creationTimestamp", f"not RFC 3339: {ts!r}") from exc


def _ports(obj: Raw, path: str, *, service: bool = False) -> tuple[ServicePort, ...]:
    """Ports by the apiserver's rules: 1-65535, names RFC 1123 labels and unique; for a
    Service also every port named when there are several, and (port, protocol) unique."""
    raw = _get(obj, path, list, default=[])
    out: list[ServicePort] = []
    names: set[str] = set()
    numbers: set[tuple[int, Protocol]] = set()
    for i, p in enumerate(raw):
        where = f"{path}[{i}]"
        if not _is_map(p):
            raise ObjectError(obj, where, "expected object")
        port = p.get("port")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ObjectError(obj, f"{where}.port", f"expected integer 1-65535, got {port!r}")
        proto = p.get("protocol", "TCP") or "TCP"
        try:
            protocol = Protocol(proto)
        except (ValueError, TypeError) as exc:
            raise ObjectError(obj, f"{where}.protocol", f"unknown protocol {proto!r}") from exc
        name = p.get("name") or ""
        app = p.get("appProtocol") or ""
        if not isinstance(name, str) or not isinstance(app, str):
            raise ObjectError(obj, where, "name and appProtocol must be strings")
        if name:
            problem = name_problem(name, "label")
            if problem:
                raise ObjectError(obj, f"{where}.name", problem)
            if name in names:
                raise ObjectError(obj, f"{where}.name", f"duplicate port name {name!r}")
            names.add(name)
        elif service and len(raw) > 1:
            raise ObjectError(obj, f"{where}.name", "required when there is more than one port")
        if service and (port, protocol) in numbers:
            raise ObjectError(obj, where, f"duplicate port {port}/{protocol.value}")
        numbers.add((port, protocol))
        out.append(ServicePort(port, protocol, name, app))
    return tuple(out)


def service_families(cidrs: Iterable[Raw]) -> tuple[IPFamily, ...]:
    """The IP families a cluster's Services can have: those of its ServiceCIDRs' ranges
    (networking.k8s.io/v1), the default `kubernetes` one first (the primary family first).
    A ServiceCIDR being deleted is left out (what still holds it is to move off it). None
    seen: () for unknown (an apiserver before 1.33, or no permission to read them)."""
    ordered = sorted(cidrs, key=lambda o: (o.get("metadata") or {}).get("name") != "kubernetes")
    out: dict[IPFamily, None] = {}
    for obj in ordered:
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            continue
        for cidr in (obj.get("spec") or {}).get("cidrs") or ():
            if isinstance(cidr, str):
                out[IPFamily.IPV6 if ":" in cidr else IPFamily.IPV4] = None
    return tuple(out)


def _families(obj: Raw, path: str) -> tuple[IPFamily, ...]:
    raw = _get(obj, path, list, default=[])
    try:
        return tuple(IPFamily(f) for f in raw)
    except ValueError as exc:
        raise ObjectError(obj, path, f"expected IPv4 or IPv6, got {raw!r}") from exc


def _ips(obj: Raw, path: str, *, single: bool = False) -> tuple[str, ...]:
    if single:
        one = _get(obj, path, str, default="")
        raw = [one] if one else []
    else:
        raw = _get(obj, path, list, default=[])
    out = []
    for i, ip in enumerate(raw):
        if not isinstance(ip, str):
            raise ObjectError(obj, f"{path}[{i}]", "expected an IP address string")
        if ip in ("None", ""):
            continue
        try:
            out.append(canonical_ip(ip))
        except ValueError as exc:
            raise ObjectError(obj, f"{path}[{i}]", f"not an IP address: {ip!r}") from exc
    return tuple(out)


def _pairs(obj: Raw, path: str, *, labels: bool = False) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(_string_map(obj, path, labels=labels).items()))


def service_import(obj: Raw) -> ServiceImport:
    """v1alpha1 / v1beta1 ServiceImport; also the flattened (spec-less) fork some vendors ship."""
    ns, name = metadata(obj, rule="label")  # one label of <svc>.<ns>.svc.<zone>
    spec_path = "spec" if isinstance(obj.get("spec"), Mapping) else ""
    at = (lambda f: f"{spec_path}.{f}") if spec_path else (lambda f: f)
    typ = _get(obj, at("type"), str, default="ClusterSetIP") or "ClusterSetIP"
    try:
        itype = ImportType(typ)
    except ValueError as exc:
        raise ObjectError(
            obj, at("type"), f"expected ClusterSetIP or Headless, got {typ!r}"
        ) from exc
    clusters: list[ClusterId] = []
    for i, c in enumerate(_get(obj, "status.clusters", list, default=[])):
        cid = c.get("cluster") if isinstance(c, Mapping) else None
        try:
            clusters.append(cluster_id(str(cid)))
        except InvalidName as exc:
            raise ObjectError(obj, f"status.clusters[{i}].cluster", str(exc)) from exc
    timeout = _get(obj, at("sessionAffinityConfig.clientIP.timeoutSeconds"), int, default=None)
    annotations = _pairs(obj, "metadata.annotations")
    spec = _get(obj, spec_path, dict, default={}) if spec_path else obj
    selection = clusterselect.parse(
        spec, spec_path, dict(annotations).get(clusterselect.ANNOTATION)
    )
    if selection.problem:  # DNS would answer beyond what the selectors allow: refuse it
        path, _, why = selection.problem.partition(": ")
        raise ObjectError(obj, path, why)
    return ServiceImport(
        namespace=ns,
        name=name,
        type=itype,
        ports=_ports(obj, at("ports")),
        ips=_ips(obj, at("ips")),
        ip_families=_families(obj, at("ipFamilies")),
        session_affinity=_get(obj, at("sessionAffinity"), str, default="None") or "None",
        session_affinity_timeout=timeout,
        internal_traffic_policy=_get(obj, at("internalTrafficPolicy"), str, default="") or "",
        traffic_distribution=_get(obj, at("trafficDistribution"), str, default="") or "",
        clusters=tuple(clusters),
        annotations=annotations,
        cluster_selectors=selection.selectors,
        cluster_selectors_fallback_policy=selection.fallback,
    )


def _condition(obj: Raw, ep: Raw, where: str, name: str) -> bool | None:
    conds = ep.get("conditions")
    if conds is None:
        return None
    if not _is_map(conds):
        raise ObjectError(obj, f"{where}.conditions", "expected object")
    v = conds.get(name)
    if v is None or isinstance(v, bool):
        return v
    raise ObjectError(obj, f"{where}.conditions.{name}", f"expected boolean, got {v!r}")


def _address(obj: Raw, where: str, a: Any, address_type: str) -> str:
    """One endpoint address, of the slice's addressType (an IPv6 address in an IPv4 slice
    is rejected, as the apiserver does)."""
    if not isinstance(a, str):
        raise ObjectError(obj, where, f"expected string, got {type(a).__name__}")
    if address_type == "FQDN":
        if problem := name_problem(a, "subdomain"):
            raise ObjectError(obj, where, problem)
        return a
    try:
        ip = canonical_ip(a)
    except ValueError as exc:
        raise ObjectError(obj, where, f"not an IP: {a!r}") from exc
    if (":" in ip) != (address_type == "IPv6"):
        raise ObjectError(obj, where, f"{a!r} is not an {address_type} address")
    return ip


def endpoint_slice(obj: Raw, *, mcs: bool) -> EndpointSlice:
    """discovery.k8s.io/v1 EndpointSlice: MCS-labelled (mcs=True) or a local Service's."""
    ns, name = metadata(obj)
    found = labels(obj)
    label = LABEL_SERVICE_NAME if mcs else LABEL_K8S_SERVICE_NAME
    service = found.get(label)
    if not service:
        raise ObjectError(obj, f"metadata.labels[{label}]", "required label is missing")
    source: ClusterId | None = None
    if LABEL_SOURCE_CLUSTER in found:
        try:
            source = cluster_id(found[LABEL_SOURCE_CLUSTER])
        except InvalidName as exc:
            raise ObjectError(obj, f"metadata.labels[{LABEL_SOURCE_CLUSTER}]", str(exc)) from exc
    address_type = _get(obj, "addressType", str, default="IPv4") or "IPv4"
    if address_type not in ("IPv4", "IPv6", "FQDN"):
        raise ObjectError(obj, "addressType", f"expected IPv4, IPv6 or FQDN, got {address_type!r}")
    endpoints = []
    for i, ep in enumerate(_get(obj, "endpoints", list, default=[]) or []):
        where = f"endpoints[{i}]"
        if not _is_map(ep):
            raise ObjectError(obj, where, "expected object")
        addrs = ep.get("addresses")
        if not isinstance(addrs, list) or not addrs or len(addrs) > 100:
            raise ObjectError(obj, f"{where}.addresses", "required, a list of 1-100 addresses")
        clean = []
        for j, a in enumerate(addrs):
            clean.append(_address(obj, f"{where}.addresses[{j}]", a, address_type))
        hostname = ep.get("hostname") or ""
        if not isinstance(hostname, str):
            raise ObjectError(obj, f"{where}.hostname", "expected string")
        if hostname and (problem := name_problem(hostname, "label")):
            raise ObjectError(obj, f"{where}.hostname", problem)
        endpoints.append(
            Endpoint(
                addresses=tuple(clean),
                hostname=hostname,
                ready=_condition(obj, ep, where, "ready"),
                serving=_condition(obj, ep, where, "serving"),
                terminating=_condition(obj, ep, where, "terminating"),
                zone=str(ep.get("zone") or ""),
            )
        )
    return EndpointSlice(
        namespace=ns,
        name=name,
        service=service,
        address_type=address_type,
        ports=_ports(obj, "ports"),
        endpoints=tuple(endpoints),
        source_cluster=source,
        managed_by=found.get(LABEL_MANAGED_BY, ""),
    )


def service(obj: Raw) -> Service:
    ns, name = metadata(obj, rule="label1035")
    typ = _get(obj, "spec.type", str, default="ClusterIP") or "ClusterIP"
    try:
        stype = ServiceType(typ)
    except ValueError as exc:
        raise ObjectError(obj, "spec.type", f"unknown Service type {typ!r}") from exc
    cluster_ip = _get(obj, "spec.clusterIP", str, default="") or ""
    ips = _ips(obj, "spec.clusterIPs") or _ips(obj, "spec.clusterIP", single=True)
    ports = _ports(obj, "spec.ports", service=True)
    headless = cluster_ip == "None"
    if not ports and not headless and stype is not ServiceType.EXTERNAL_NAME:
        raise ObjectError(obj, "spec.ports", "required: at least one port")
    return Service(
        namespace=ns,
        name=name,
        type=stype,
        headless=headless,
        cluster_ips=ips,
        ports=ports,
        session_affinity=_get(obj, "spec.sessionAffinity", str, default="None") or "None",
        session_affinity_timeout=_get(
            obj, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", int, default=None
        ),
        ip_families=_families(obj, "spec.ipFamilies"),
        internal_traffic_policy=_get(obj, "spec.internalTrafficPolicy", str, default="") or "",
        traffic_distribution=_get(obj, "spec.trafficDistribution", str, default="") or "",
    )


def service_export(obj: Raw) -> ServiceExport:
    """A bad clusterSelector or export-to is kept as the export's problem (Valid=False), not
    raised."""
    ns, name = metadata(obj, rule="label")  # names a Service: one DNS label
    annotations = _pairs(obj, "metadata.annotations")
    selection = clusterselect.parse(
        _get(obj, "spec", dict, default={}),
        "spec",
        dict(annotations).get(clusterselect.ANNOTATION),
    )
    export_to = exportto.parse(dict(annotations).get(exportto.ANNOTATION))
    return ServiceExport(
        namespace=ns,
        name=name,
        created=creation_time(obj),
        exported_labels=_pairs(obj, "spec.exportedLabels", labels=True),
        exported_annotations=_pairs(obj, "spec.exportedAnnotations"),
        annotations=annotations,
        cluster_selectors=selection.selectors,
        cluster_selectors_fallback_policy=selection.fallback,
        cluster_selectors_problem=selection.problem,
        export_to=export_to.clusters,
        export_to_problem=export_to.problem,
    )


def cluster_property(obj: Raw) -> tuple[str, str]:
    """(name, value) of an about.k8s.io ClusterProperty."""
    _, name = metadata(obj, namespaced=False)
    value = _required(obj, "spec.value", str)
    if name == CLUSTER_ID_PROPERTY:
        try:
            cluster_id(value)
        except InvalidName as exc:
            raise ObjectError(obj, "spec.value", str(exc)) from exc
    return name, value
