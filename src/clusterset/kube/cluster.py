"""One member cluster seen through informers, converted to the model on demand."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any

import httpx2 as httpx

from clusterset.kube import api as k
from clusterset.kube.informer import Informer
from clusterset.model import convert, liveness
from clusterset.model.bag import (
    Grouped,
    Objects,
    add_object,
    group_slices,
    implied_namespaces,
)
from clusterset.model.ids import ClusterId, InvalidName, ServiceKey, cluster_id
from clusterset.model.objects import EndpointSlice, ImportType, ServiceImport
from clusterset.model.state import ClusterState, ImportedView
from clusterset.reconcile.desired import clusterset_ips

log = logging.getLogger(__name__)
Obj = dict[str, Any]

HUB = "hub"  # reads what the controller needs, and what it wrote (to prune)
MEMBER = "member"  # reads what the member DNS server needs


class MemberCluster:
    def __init__(
        self,
        name: str,
        api: k.KubeApi,
        *,
        mode: str,
        on_change: Callable[[], None],
        lease_namespace: str = liveness.NAMESPACE,
        lease_grace: float | None = None,  # None: each Lease's own leaseDurationSeconds
    ) -> None:
        self.lease_grace = lease_grace
        # kube.sink's memo of objects found to hold what was wanted (see sink._Verified).
        self.verified: dict[tuple[str, str, bool], tuple[object, str]] = {}
        # Writes the hub made here, (kind, verb) -> count: clusterset_member_writes_total.
        self.writes: collections.Counter[tuple[str, str]] = collections.Counter()
        self._grouped: dict[str, tuple[Mapping[str, EndpointSlice], Grouped]] = {}
        self.name = name
        self.api = api
        self.mode = mode

        def inf(res: k.Resource, **kw: Any) -> Informer:
            return Informer(api, res, on_change=on_change, **kw)

        if mode == HUB:
            self.informers = {
                "services": inf(k.SERVICES),
                "endpointslices": inf(k.ENDPOINT_SLICES),
                "serviceexports": inf(k.SERVICE_EXPORTS),
                "serviceimports": inf(k.SERVICE_IMPORTS),
                "namespaces": inf(k.NAMESPACES),
                "clusterproperties": inf(k.CLUSTER_PROPERTIES, optional=True),
                # Which families a derived Service may ask (apiservers before 1.33: none).
                "servicecidrs": inf(k.SERVICE_CIDRS, optional=True),
            }
        else:
            self.informers = {
                "serviceimports": inf(k.SERVICE_IMPORTS),
                "endpointslices": inf(k.ENDPOINT_SLICES, label_selector=convert.LABEL_SERVICE_NAME),
                "namespaces": inf(k.NAMESPACES),
                "services": inf(k.SERVICES),
                # The cluster's own ID (KEP-2149), for local-first; the DNS RBAC grants the read.
                "clusterproperties": inf(k.CLUSTER_PROPERTIES, optional=True),
                "leases": inf(
                    k.LEASES,
                    label_selector=liveness.SOURCE_LABEL,
                    optional=True,
                    namespace=lease_namespace,
                ),
            }
        # The multicluster.x-k8s.io version this cluster serves, found by discovery in run().
        self.mcs_version: str | None = None
        # Whether its ServiceImport schema keeps status.endpointSliceObjects (an older
        # v1beta1 CRD prunes it: then it is left out, not re-sent on every pass).
        self.slice_presence = True
        # Whether its ServiceImport schema keeps spec.clusterSelectors (KEP-5939; a CRD from
        # before it prunes them: the annotation clusterset.io/cluster-selectors carries them).
        self.cluster_selection = True
        # Whether its ServiceExport schema keeps status.clusters (enhancements#6329; Karmada's
        # v1alpha1 and older CRDs prune it: then it is left out, not re-sent on every pass).
        self.export_clusters = True
        # Karmada's imports whose empty spec.ips was explained (once each: kube/sink.py).
        self.unfilled: set[str] = set()
        # Conversion is cached per object and resourceVersion: a change converts one object.
        self._converted: dict[tuple[str, str], tuple[str, Objects | str]] = {}
        self._reported: set[str] = set()
        self._merged: Objects | None = None  # every converted object together
        self._errors: dict[tuple[str, str], str] = {}
        self._bad_property: object = None  # an invalid cluster ID property, warned about once

    @property
    def reachable(self) -> bool:
        return all(i.connected for i in self.informers.values())

    @property
    def synced(self) -> bool:
        return all(i.synced.is_set() for i in self.informers.values())

    async def wait_synced(self) -> None:
        await asyncio.gather(*(i.synced.wait() for i in self.informers.values()))

    def resource(self, name: str) -> k.Resource:
        """The resource as this cluster serves it (ServiceImports may be v1alpha1 only)."""
        return self.informers[name].resource

    async def discover_mcs(self) -> str:
        """The MCS API version this cluster serves: v1beta1, else v1alpha1 (Karmada's CRDs).

        Waits, saying so once, while the group is not served (CRDs not installed yet)."""
        backoff = 1.0
        said = ""
        while True:
            try:
                group = await self.api.get(f"/apis/{k.MCS_GROUP}")
                version = k.served_version(group, k.MCS_VERSIONS)
                problem = f"serves none of {', '.join(k.MCS_VERSIONS)} of {k.MCS_GROUP}"
            except k.ApiError as exc:
                version = None
                problem = (
                    f"{k.MCS_GROUP} is not served (install the ServiceExport/ServiceImport CRDs)"
                    if exc.status == 404
                    else f"discovery of {k.MCS_GROUP}: {exc}"
                )
            except (httpx.HTTPError, OSError) as exc:
                version = None
                problem = f"discovery of {k.MCS_GROUP}: {type(exc).__name__}: {exc}"
            if version is not None:
                if said:
                    log.info("cluster %s: %s/%s is served now", self.name, k.MCS_GROUP, version)
                return version
            if problem != said:
                log.error("cluster %s: %s; waiting", self.name, problem)
                said = problem
            await asyncio.sleep(backoff)
            backoff = min(30.0, backoff * 2)

    async def run(self) -> None:
        self.mcs_version = await self.discover_mcs()
        # A new run (a reconnect) looks at the schema again.
        self.slice_presence = self.cluster_selection = self.export_clusters = True
        for i in self.informers.values():
            if i.resource.group == k.MCS_GROUP and i.resource.version != self.mcs_version:
                i.retarget(dataclasses.replace(i.resource, version=self.mcs_version))
        async with asyncio.TaskGroup() as tg:
            for name, i in self.informers.items():
                tg.create_task(i.run(), name=f"informer {self.name}/{name}")

    def store(self, resource: str) -> dict[str, Obj]:
        return self.informers[resource].store

    def objects(self) -> tuple[Objects, list[str]]:
        """Everything usable (a copy the caller may keep), and one line per object that
        cannot be converted.

        Level-based, at the cost of the change: the informers say which keys changed since
        the last call, and only those objects are converted and swapped in the merged
        result; after a relist (or on the first call) everything is looked at again."""
        changes = {
            name: i.take_changes()
            for name, i in self.informers.items()
            # Not converted: read by source_leases() and cluster_state().
            if i.resource not in (k.LEASES, k.SERVICE_CIDRS)
        }
        if self._merged is None or any(c is None for c in changes.values()):
            self._merged, self._errors = Objects(), {}
            live: set[tuple[str, str]] = set()
            for resource in changes:
                for key in self.informers[resource].store:
                    live.add((resource, key))
                    self._convert(resource, key)
            for gone in set(self._converted) - live:
                del self._converted[gone]
        else:
            for resource, keys in changes.items():
                for key in keys or ():
                    self._convert(resource, key)
        errors = list(self._errors.values())
        for e in errors:
            if e not in self._reported:
                log.error("%s", e)
        self._reported = set(errors)
        return self._merged.copy(), errors

    def _convert(self, resource: str, key: str) -> None:
        """Swap object `key` of `resource` in the merged result (converted once per
        resourceVersion)."""
        assert self._merged is not None
        ck = (resource, key)
        informer = self.informers[resource]
        raw = informer.store.get(key)
        cached = self._converted.get(ck)
        if cached is not None and not isinstance(cached[1], str):
            self._merged.unmerge(cached[1])
        self._errors.pop(ck, None)
        if raw is None:
            self._converted.pop(ck, None)
            return
        rv = str((raw.get("metadata") or {}).get("resourceVersion", ""))
        if cached is None or cached[0] != rv:
            one = Objects()
            try:
                add_object(one, _with_kind(raw, informer.resource))
                cached = (rv, one)
            except convert.ObjectError as exc:
                cached = (rv, f"cluster {self.name}: {exc}")
            self._converted[ck] = cached
        if isinstance(cached[1], str):
            self._errors[ck] = cached[1]
        else:
            self._merged.merge(cached[1])

    def _group(self, which: str, slices: Mapping[str, EndpointSlice]) -> Grouped:
        """group_slices, grouping again only the services whose slices changed."""
        grouped = group_slices(slices, self._grouped.get(which))
        self._grouped[which] = (slices, grouped)
        return grouped

    def cluster_id(self, objs: Objects) -> ClusterId:
        """ClusterProperty cluster.clusterset.k8s.io, else the context name."""
        value = objs.properties.get(convert.CLUSTER_ID_PROPERTY, self.name)
        try:
            return cluster_id(value)
        except InvalidName as exc:
            raise InvalidName(f"cluster {self.name}: {exc}") from exc

    def cluster_state(self) -> ClusterState:
        objs, _ = self.objects()
        return ClusterState(
            cluster=self.cluster_id(objs),
            services=objs.local_services(),
            exports=dict(objs.exports),
            slices=self._group("slices", objs.slices),
            namespaces=frozenset(objs.namespaces),
            synced=self.synced,
            properties=dict(objs.properties),
            foreign_imports=frozenset(objs.karmada_imports),
            foreign_derived=objs.karmada_derived(),
            service_families=convert.service_families(self.store("servicecidrs").values())
            if "servicecidrs" in self.informers
            else (),
        )

    def source_leases(self) -> tuple[dict[ClusterId, float], dict[ClusterId, Mapping[str, str]]]:
        """When each source cluster's liveness Lease (written here by the hub) expires:
        renewTime + leaseDurationSeconds, as for node Leases (or + the lease grace, if set);
        and each source's ClusterProperties as the hub wrote them on its Lease."""
        expiry: dict[ClusterId, float] = {}
        properties: dict[ClusterId, Mapping[str, str]] = {}
        informer = self.informers.get("leases")
        for raw in informer.store.values() if informer is not None else ():
            lease = liveness.parse(raw)
            try:
                source = cluster_id(lease.source)
            except InvalidName:
                continue
            expires = lease.expires(self.lease_grace)
            if expires is not None:
                expiry[source] = expires
            if lease.properties:
                properties[source] = lease.properties
        return expiry, properties

    def identity(self) -> tuple[ClusterId, str] | None:
        """This cluster's own ID as a member DNS learns it, and where from: its ClusterProperty
        cluster.clusterset.k8s.io (KEP-2149), else the consumer the most recently renewed of
        the hub's Leases here names (the ID the hub gave it); None while neither is there."""
        properties = self.informers.get("clusterproperties")
        prop = properties.store.get(convert.CLUSTER_ID_PROPERTY) if properties else None
        value = ((prop or {}).get("spec") or {}).get("value")
        if value is not None:
            try:
                return cluster_id(str(value)), f"ClusterProperty {convert.CLUSTER_ID_PROPERTY}"
            except InvalidName as exc:
                if self._bad_property != value:  # said once per value
                    self._bad_property = value
                    log.warning("cluster %s: ClusterProperty %s ignored: %s",
                                self.name, convert.CLUSTER_ID_PROPERTY, exc)  # fmt: skip
        informer = self.informers.get("leases")
        named = []
        for key, raw in informer.store.items() if informer is not None else ():
            lease = liveness.parse(raw)
            with contextlib.suppress(InvalidName):
                named.append((lease.renewed or 0.0, key, cluster_id(lease.consumer)))
        if not named:
            return None
        _, key, cid = max(named)
        return cid, f"the hub's Lease {key}"

    def imported_view(self, cluster: ClusterId | None, generation: int) -> ImportedView:
        objs, _ = self.objects()
        leases, properties = self.source_leases()
        if cluster is not None and objs.properties:  # its own objects say it first-hand
            properties[cluster] = dict(objs.properties)
        return ImportedView(
            leases=leases,
            properties=properties,
            cluster=cluster,
            imports=karmada_filled(objs),
            slices=self._group("mcs_slices", objs.mcs_slices),
            namespaces=frozenset(objs.namespaces) or implied_namespaces(objs),
            local_services=objs.local_services(),
            generation=generation,
        )


def karmada_filled(objs: Objects) -> dict[ServiceKey, ServiceImport]:
    """The cluster's imports, those Karmada manages with an empty spec.ips given the
    ClusterIPs of Karmada's derived-<svc> (what the hub fills in where Karmada keeps it:
    without the retention rule, Karmada puts its template back, and DNS answers the same)."""
    imports = dict(objs.imports)
    for key, name in objs.karmada_derived().items():
        imp = imports.get(key)
        svc = objs.services.get(ServiceKey(key.namespace, name))
        if imp is None or imp.ips or imp.type is not ImportType.CLUSTER_SET_IP or svc is None:
            continue
        families = imp.ip_families or svc.ip_families  # Karmada's v1alpha1 import has none
        ips = clusterset_ips(svc.cluster_ips, families) if families else svc.cluster_ips
        if ips:
            imports[key] = dataclasses.replace(imp, ips=ips)
    return imports


def _with_kind(raw: Obj, res: k.Resource) -> Obj:
    """Watch and list items lack apiVersion/kind on some servers; add them."""
    if raw.get("kind") and raw.get("apiVersion"):
        return raw
    return {**raw, "apiVersion": res.api_version, "kind": res.kind}
