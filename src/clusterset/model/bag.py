"""A bag of converted objects of one cluster, whatever edge they came from (folder, API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterset.model import convert
from clusterset.model.ids import ServiceKey
from clusterset.model.objects import EndpointSlice, Service, ServiceExport, ServiceImport

# Namespaces every cluster has, whether or not a folder lists them.
ALWAYS_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})


@dataclass(slots=True)
class Objects:
    """Everything usable that one folder holds."""

    imports: dict[ServiceKey, ServiceImport] = field(default_factory=dict)
    mcs_slices: dict[str, EndpointSlice] = field(default_factory=dict)  # by ns/name
    slices: dict[str, EndpointSlice] = field(default_factory=dict)  # local Services' slices
    services: dict[ServiceKey, Service] = field(default_factory=dict)
    exports: dict[ServiceKey, ServiceExport] = field(default_factory=dict)
    namespaces: set[str] = field(default_factory=set)
    properties: dict[str, str] = field(default_factory=dict)

    def merge(self, other: Objects) -> None:
        self.imports.update(other.imports)
        self.mcs_slices.update(other.mcs_slices)
        self.slices.update(other.slices)
        self.services.update(other.services)
        self.exports.update(other.exports)
        self.namespaces |= other.namespaces
        self.properties.update(other.properties)


def add_object(objs: Objects, obj: Any) -> None:
    """Convert one raw object into `objs`; raises ObjectError. Unknown kinds raise too."""
    if not isinstance(obj, Mapping):
        raise convert.ObjectError({}, "(document)", "expected a Kubernetes object (a mapping)")
    group, kind = convert.kind_of(obj)
    if not kind or "apiVersion" not in obj:
        raise convert.ObjectError(obj, "apiVersion/kind" if kind else "kind", "required")
    if group == convert.MCS_GROUP and kind == "ServiceImport":
        si = convert.service_import(obj)
        objs.imports[si.key] = si
    elif group == convert.MCS_GROUP and kind == "ServiceExport":
        se = convert.service_export(obj)
        objs.exports[se.key] = se
    elif group == "discovery.k8s.io" and kind == "EndpointSlice":
        mcs = convert.LABEL_SERVICE_NAME in convert.labels(obj)
        es = convert.endpoint_slice(obj, mcs=mcs)
        (objs.mcs_slices if mcs else objs.slices)[f"{es.namespace}/{es.name}"] = es
    elif group == "" and kind == "Service":
        svc = convert.service(obj)
        objs.services[svc.key] = svc
    elif group == "" and kind == "Namespace":
        objs.namespaces.add(convert.metadata(obj, namespaced=False, rule="label")[1])
    elif group == "about.k8s.io" and kind == "ClusterProperty":
        name, value = convert.cluster_property(obj)
        objs.properties[name] = value
    elif group in ("apps", "") and kind in ("Deployment", "StatefulSet", "Pod", "ConfigMap"):
        pass  # workloads may sit beside their Services; nothing here reads them
    else:
        raise convert.ObjectError(obj, "kind", f"unknown kind {obj.get('apiVersion')}/{kind}")


def group_slices(
    slices: Mapping[str, EndpointSlice],
) -> dict[ServiceKey, tuple[EndpointSlice, ...]]:
    out: dict[ServiceKey, list[EndpointSlice]] = {}
    for name in sorted(slices):
        s = slices[name]
        out.setdefault(s.key, []).append(s)
    return {k: tuple(v) for k, v in out.items()}


def implied_namespaces(objs: Objects) -> frozenset[str]:
    """Declared Namespaces, plus every namespace an object sits in (folders rarely list them)."""
    nss = set(objs.namespaces) | ALWAYS_NAMESPACES
    nss.update(k.namespace for k in objs.imports)
    nss.update(k.namespace for k in objs.services)
    nss.update(k.namespace for k in objs.exports)
    nss.update(s.namespace for s in objs.mcs_slices.values())
    nss.update(s.namespace for s in objs.slices.values())
    return frozenset(nss)
