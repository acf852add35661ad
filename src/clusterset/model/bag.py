"""A bag of converted objects of one cluster, whatever edge they came from (folder, API)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterset.model import convert, labels
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
    # Imports Karmada applied here from a Work (it owns them; clusterset only fills spec.ips).
    karmada_imports: set[ServiceKey] = field(default_factory=set)
    # Karmada-managed Services named derived-<svc>: Karmada's derived Service of import <svc>
    # when such an import is Karmada's too (see karmada_derived()).
    karmada_derived_candidates: dict[ServiceKey, str] = field(default_factory=dict)
    # Services clusterset made (derived Services): never a cluster's own.
    own_services: set[ServiceKey] = field(default_factory=set)

    def merge(self, other: Objects) -> None:
        self.imports.update(other.imports)
        self.mcs_slices.update(other.mcs_slices)
        self.slices.update(other.slices)
        self.services.update(other.services)
        self.exports.update(other.exports)
        self.namespaces |= other.namespaces
        self.properties.update(other.properties)
        self.karmada_imports |= other.karmada_imports
        self.karmada_derived_candidates.update(other.karmada_derived_candidates)
        self.own_services |= other.own_services

    def unmerge(self, other: Objects) -> None:
        """Take out what merge(other) put in (entries another object replaced are kept)."""
        pairs: tuple[tuple[dict[Any, Any], dict[Any, Any]], ...] = (
            (self.imports, other.imports),
            (self.mcs_slices, other.mcs_slices),
            (self.slices, other.slices),
            (self.services, other.services),
            (self.exports, other.exports),
            (self.properties, other.properties),
            (self.karmada_derived_candidates, other.karmada_derived_candidates),
        )
        for mine, theirs in pairs:
            for key, value in theirs.items():
                if mine.get(key) is value:
                    del mine[key]
        self.namespaces -= other.namespaces
        self.karmada_imports -= other.karmada_imports
        self.own_services -= other.own_services

    def copy(self) -> Objects:
        """Another Objects with copies of every collection (a C-level copy each)."""
        return Objects(
            imports=dict(self.imports),
            mcs_slices=dict(self.mcs_slices),
            slices=dict(self.slices),
            services=dict(self.services),
            exports=dict(self.exports),
            namespaces=set(self.namespaces),
            properties=dict(self.properties),
            karmada_imports=set(self.karmada_imports),
            karmada_derived_candidates=dict(self.karmada_derived_candidates),
            own_services=set(self.own_services),
        )

    def karmada_derived(self) -> dict[ServiceKey, str]:
        """Import key -> Karmada's derived Service, for the imports Karmada manages here."""
        return {
            k: n for k, n in self.karmada_derived_candidates.items() if k in self.karmada_imports
        }

    def local_services(self) -> dict[ServiceKey, Service]:
        """The cluster's own Services: neither ours nor Karmada's derived ones."""
        theirs = {ServiceKey(k.namespace, n) for k, n in self.karmada_derived().items()}
        return {
            k: s for k, s in self.services.items() if k not in self.own_services and k not in theirs
        }


def add_object(objs: Objects, obj: Any) -> None:
    """Convert one raw object into `objs`; raises ObjectError. Unknown kinds raise too."""
    if not isinstance(obj, Mapping):
        raise convert.ObjectError({}, "(document)", "expected a Kubernetes object (a mapping)")
    group, kind = convert.kind_of(obj)
    if not kind or "apiVersion" not in obj:
        raise convert.ObjectError(obj, "apiVersion/kind" if kind else "kind", "required")
    meta = obj.get("metadata") or {}
    if group == convert.MCS_GROUP and kind == "ServiceImport":
        si = convert.service_import(obj)
        objs.imports[si.key] = si
        if isinstance(meta, Mapping) and labels.karmada_managed(meta):
            objs.karmada_imports.add(si.key)
    elif group == convert.MCS_GROUP and kind == "ServiceExport":
        se = convert.service_export(obj)
        objs.exports[se.key] = se
    elif group == "discovery.k8s.io" and kind == "EndpointSlice":
        mcs = convert.LABEL_SERVICE_NAME in convert.labels(obj)
        es = convert.endpoint_slice(obj, mcs=mcs)
        if mcs:
            objs.mcs_slices[f"{es.namespace}/{es.name}"] = es
        elif es.managed_by in labels.LOCAL_SLICE_MANAGERS:
            objs.slices[f"{es.namespace}/{es.name}"] = es
        # else another controller's copy of some cluster's endpoints (Karmada's
        # MultiClusterService dispatch, its imported-* slices): not this cluster's own.
    elif group == "" and kind == "Service":
        svc = convert.service(obj)
        objs.services[svc.key] = svc
        svc_labels = (meta.get("labels") or {}) if isinstance(meta, Mapping) else {}
        if svc_labels.get(labels.LABEL_OWNED) == "true":
            objs.own_services.add(svc.key)
        imported = labels.karmada_derived_of(svc.name)
        if imported and labels.karmada_managed(meta):
            objs.karmada_derived_candidates[ServiceKey(svc.namespace, imported)] = svc.name
    elif group == "" and kind == "Namespace":
        objs.namespaces.add(convert.metadata(obj, namespaced=False, rule="label")[1])
    elif group == "about.k8s.io" and kind == "ClusterProperty":
        name, value = convert.cluster_property(obj)
        objs.properties[name] = value
    elif group in ("apps", "") and kind in ("Deployment", "StatefulSet", "Pod", "ConfigMap"):
        pass  # workloads may sit beside their Services; nothing here reads them
    else:
        raise convert.ObjectError(obj, "kind", f"unknown kind {obj.get('apiVersion')}/{kind}")


Grouped = Mapping[ServiceKey, tuple[EndpointSlice, ...]]


def group_slices(
    slices: Mapping[str, EndpointSlice],
    previous: tuple[Mapping[str, EndpointSlice], Grouped] | None = None,
) -> Grouped:
    """Slices by service, each group in name order. `previous`: the slices and grouping of
    the last call; only services whose slices differ (by identity) are grouped again, and
    when none does the last grouping itself is returned."""
    if previous is None:
        out: dict[ServiceKey, list[EndpointSlice]] = {}
        for name in sorted(slices):
            s = slices[name]
            out.setdefault(s.key, []).append(s)
        return {k: tuple(v) for k, v in out.items()}
    old, grouped = previous
    names: dict[ServiceKey, set[str]] = {}
    for name, s in slices.items():
        was = old.get(name)
        if was is not s:
            names.setdefault(s.key, set()).add(name)
            if was is not None:
                names.setdefault(was.key, set())
    for name in old.keys() - slices.keys():
        names.setdefault(old[name].key, set())
    if not names:
        return grouped
    regrouped = dict(grouped)
    for key, mine in names.items():
        mine.update(f"{s.namespace}/{s.name}" for s in grouped.get(key, ()))
        group = tuple(slices[n] for n in sorted(mine) if n in slices and slices[n].key == key)
        if group:
            regrouped[key] = group
        else:
            regrouped.pop(key, None)
    return regrouped


def implied_namespaces(objs: Objects) -> frozenset[str]:
    """Declared Namespaces, plus every namespace an object sits in (folders rarely list them)."""
    nss = set(objs.namespaces) | ALWAYS_NAMESPACES
    nss.update(k.namespace for k in objs.imports)
    nss.update(k.namespace for k in objs.services)
    nss.update(k.namespace for k in objs.exports)
    nss.update(s.namespace for s in objs.mcs_slices.values())
    nss.update(s.namespace for s in objs.slices.values())
    return frozenset(nss)
