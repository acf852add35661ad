"""Desired model objects -> Kubernetes JSON, for server-side apply and `clusterset render`:
every object the hub writes into a member (its liveness Leases: model.liveness.render)."""

from __future__ import annotations

from typing import Any

from clusterset.model import clusterselect
from clusterset.model.conditions import Condition
from clusterset.model.convert import (
    LABEL_K8S_SERVICE_NAME,
    LABEL_MANAGED_BY,
    LABEL_SERVICE_NAME,
    LABEL_SOURCE_CLUSTER,
    MCS_GROUP,
)
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.labels import LABEL_OWNED
from clusterset.model.objects import EndpointSlice, ServiceImport, ServicePort
from clusterset.reconcile.desired import ClusterDesired

# The MCS API version a cluster serves (Karmada installs and propagates v1alpha1 only).
MCS_VERSION = "v1beta1"
Obj = dict[str, Any]


def _port(p: ServicePort, *, service: bool = False) -> Obj:
    out: Obj = {"port": p.port, "protocol": p.protocol.value}
    if p.name:
        out["name"] = p.name
    if p.app_protocol:
        out["appProtocol"] = p.app_protocol
    if service:
        out["targetPort"] = p.port
    return out


def mcs_api(version: str) -> str:
    return f"{MCS_GROUP}/{version}"


def service_import(
    imp: ServiceImport, version: str = MCS_VERSION, *, selectors: bool = True
) -> Obj:
    """The whole ServiceImport, as `version` defines it: v1alpha1 has no ipFamilies,
    internalTrafficPolicy or trafficDistribution (its schema would prune them, and an apply
    that never sticks is re-sent forever). KEP-5939's clusterSelectors and
    clusterSelectorsFallbackPolicy only where the schema keeps them (`selectors`); the
    annotation clusterset.io/cluster-selectors carries them everywhere."""
    spec: Obj = {"type": imp.type.value, "ports": [_port(p) for p in imp.ports]}
    if imp.ips:
        spec["ips"] = list(imp.ips)
    beta = version != "v1alpha1"
    if imp.ip_families and beta:
        spec["ipFamilies"] = [f.value for f in imp.ip_families]
    spec["sessionAffinity"] = imp.session_affinity
    if imp.session_affinity_timeout is not None:
        spec["sessionAffinityConfig"] = {
            "clientIP": {"timeoutSeconds": imp.session_affinity_timeout}
        }
    if imp.internal_traffic_policy and beta:
        spec["internalTrafficPolicy"] = imp.internal_traffic_policy
    if imp.traffic_distribution and beta:
        spec["trafficDistribution"] = imp.traffic_distribution
    if imp.cluster_selectors and selectors and beta:
        spec["clusterSelectors"] = clusterselect.to_api(imp.cluster_selectors)
        spec["clusterSelectorsFallbackPolicy"] = imp.cluster_selectors_fallback_policy
    meta: Obj = {
        "name": imp.name,
        "namespace": imp.namespace,
        "labels": {**dict(imp.labels), LABEL_OWNED: "true"},
    }
    if imp.annotations:
        meta["annotations"] = dict(imp.annotations)
    return {"apiVersion": mcs_api(version), "kind": "ServiceImport", "metadata": meta, "spec": spec}


def service_import_ips(imp: ServiceImport, version: str = MCS_VERSION) -> Obj:
    """Only `spec.ips` of an import another controller owns (Karmada): the one field
    clusterset fills there, applied under its own field manager."""
    return {
        "apiVersion": mcs_api(version),
        "kind": "ServiceImport",
        "metadata": {"name": imp.name, "namespace": imp.namespace},
        "spec": {"ips": list(imp.ips)},
    }


def service_import_status(
    imp: ServiceImport, version: str = MCS_VERSION, *, presence: bool = True
) -> Obj:
    """`status.clusters`, and that clusterset keeps MCS EndpointSlices for every import it
    writes (`endpointSliceObjects: Present`, KEP-1645) where the schema has the field:
    v1alpha1's and older v1beta1 CRDs prune it (`presence` False)."""
    status: Obj = {"clusters": [{"cluster": c} for c in imp.clusters]}
    if presence and version != "v1alpha1":
        status["endpointSliceObjects"] = "Present"
    return {
        "apiVersion": mcs_api(version),
        "kind": "ServiceImport",
        "metadata": {"name": imp.name, "namespace": imp.namespace},
        "status": status,
    }


def derived_service(imp: ServiceImport, name: str) -> Obj:
    """A selector-less ClusterIP Service; its ClusterIP is the import's ClusterSetIP."""
    spec: Obj = {
        "type": "ClusterIP",
        "ports": [_port(p, service=True) for p in imp.ports],
        "sessionAffinity": imp.session_affinity,
    }
    if imp.ip_families:
        spec["ipFamilies"] = [f.value for f in imp.ip_families]
        spec["ipFamilyPolicy"] = "PreferDualStack" if len(imp.ip_families) > 1 else "SingleStack"
    if imp.ips:
        spec["clusterIP"] = imp.ips[0]
        spec["clusterIPs"] = list(imp.ips)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": name,
            "namespace": imp.namespace,
            "labels": {LABEL_OWNED: "true", LABEL_SERVICE_NAME: imp.name},
        },
        "spec": spec,
    }


def endpoint_slice(s: EndpointSlice, derived: str | None) -> Obj:
    labels = {
        LABEL_SERVICE_NAME: s.service,
        LABEL_MANAGED_BY: s.managed_by,
        LABEL_OWNED: "true",
    }
    if s.source_cluster:
        labels[LABEL_SOURCE_CLUSTER] = s.source_cluster
    if derived:
        labels[LABEL_K8S_SERVICE_NAME] = derived
    eps = []
    for e in s.endpoints:
        ep: Obj = {"addresses": list(e.addresses)}
        conds = {
            k: v
            for k, v in (("ready", e.ready), ("serving", e.serving), ("terminating", e.terminating))
            if v is not None
        }
        if conds:
            ep["conditions"] = conds
        if e.hostname:
            ep["hostname"] = e.hostname
        if e.zone:
            ep["zone"] = e.zone
        eps.append(ep)
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": s.name, "namespace": s.namespace, "labels": labels},
        "addressType": s.address_type,
        "ports": [_port(p) for p in s.ports],
        "endpoints": eps,
    }


def namespace(name: str) -> Obj:
    """A namespace a consumer lacked, made so that it can import a service it never
    deployed (opt-in: ClusterDesired.create_namespaces); labelled ours."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {LABEL_OWNED: "true"}},
    }


def service_export_status(
    key: ServiceKey,
    conds: tuple[Condition, ...],
    have: Obj | None,
    now: str,
    version: str = MCS_VERSION,
    *,
    clusters: tuple[ClusterId, ...] | None = None,
) -> Obj:
    """`status.conditions` of one ServiceExport; `have`: the export as stored, whose
    lastTransitionTimes are kept while a condition's status is unchanged (`now`: a Time).
    `clusters`: `status.clusters`, the clusters the service is exported to (enhancements#6329,
    in the ServiceImport's ClusterStatus format); None where the schema has no such field."""
    status: Obj = {"conditions": _conditions(conds, have, now)}
    if clusters is not None:
        status["clusters"] = [{"cluster": c} for c in clusters]
    return {
        "apiVersion": mcs_api(version),
        "kind": "ServiceExport",
        "metadata": {"name": key.name, "namespace": key.namespace},
        "status": status,
    }


def _conditions(conds: tuple[Condition, ...], have: Obj | None, now: str) -> list[Obj]:
    """metav1.Conditions; lastTransitionTime kept while status is unchanged."""
    previous = {
        c.get("type"): c for c in ((have or {}).get("status") or {}).get("conditions") or []
    }
    out = []
    for c in conds:
        old = previous.get(c.type.value)
        since = (
            old.get("lastTransitionTime") if old and old.get("status") == c.status.value else now
        )
        out.append(
            {
                "type": c.type.value,
                "status": c.status.value,
                "reason": c.reason,
                "message": c.message,
                "lastTransitionTime": since or now,
            }
        )
    return out


def cluster_objects(cd: ClusterDesired, version: str = MCS_VERSION) -> list[Obj]:
    """Every object the controller applies to one cluster, in apply order."""
    out: list[Obj] = []
    for key in sorted(cd.imports):
        imp = cd.imports[key]
        if key in cd.foreign_imports:
            if imp.ips:
                out.append(service_import_ips(imp, version))
        else:
            out.append(service_import(imp, version))
        derived = cd.data_path(key)
        if derived:
            out.append(derived_service(imp, derived))
        out.extend(endpoint_slice(s, derived) for s in cd.slices.get(key, ()))
    return out
