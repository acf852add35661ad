"""Apply what reconcile wants into one member cluster: server-side apply, status, pruning
(the objects themselves are rendered by reconcile.render).

Level-based and idempotent: an object that already holds every field we
want is not written again; what we own (label clusterset.io/managed, or our
EndpointSlice managed-by) and no longer want is deleted — except that
nothing derived from a cluster whose caches have not synced is deleted
(no mass deletion from a partial view), and no ServiceImport is deleted
while any member is unsynced. An import another controller owns (Karmada)
is never created, overwritten or deleted here: only its `spec.ips` is applied.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2 as httpx

from clusterset.kube import api as k
from clusterset.kube.cluster import MemberCluster
from clusterset.model import clusterselect
from clusterset.model.conditions import Condition
from clusterset.model.convert import (
    LABEL_K8S_SERVICE_NAME,
    LABEL_MANAGED_BY,
    LABEL_SOURCE_CLUSTER,
)
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.labels import LABEL_OWNED
from clusterset.model.objects import ImportType, ServiceImport
from clusterset.reconcile import render
from clusterset.reconcile.desired import ClusterDesired, Desired, clusterset_ips
from clusterset.reconcile.slices import MANAGED_BY

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Conds = tuple[Condition, ...]


def contains(want: Any, have: Any) -> bool:
    """Every field of `want` is in `have` with the same value (lists: same length, in order;
    an empty list is also held by no field: the apiserver stores an applied `[]` so)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(contains(v, have.get(key)) for key, v in want.items())
    if isinstance(want, list):
        if not want and have is None:
            return True
        return (
            isinstance(have, list)
            and len(want) == len(have)
            and all(contains(a, b) for a, b in zip(want, have, strict=True))
        )
    return bool(want == have)


def _meta_view(obj: Obj) -> Obj:
    """What of an object we compare: labels/annotations of metadata, and every other section."""
    meta = obj.get("metadata") or {}
    out = {key: v for key, v in obj.items() if key not in ("metadata", "apiVersion", "kind")}
    out["metadata"] = {key: meta[key] for key in ("labels", "annotations") if key in meta}
    return out


@dataclass(slots=True)
class ApplyResult:
    applied: int = 0
    deleted: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)
    # Set at the first transport error: the rest of this pass skips the member, so a
    # blackholed apiserver costs one connect timeout, not one per object.
    unreachable: bool = False


class _Verified:
    """Objects found to hold what we want, per (resource, key, status): the desired input
    they were compared against and the resourceVersion they had then.

    While neither moves, the object is not rendered and compared again: a pass over 2,000
    services of which one changed costs dictionary lookups, not thousands of renders.
    """

    def __init__(self, before: dict[tuple[str, str, bool], tuple[object, str]]) -> None:
        self.before = before
        self.now: dict[tuple[str, str, bool], tuple[object, str]] = {}

    def same(self, key: tuple[str, str, bool], src: object, have: Obj | None) -> bool:
        rv = _resource_version(have)
        seen = self.before.get(key)
        if rv and seen is not None and seen[1] == rv and (seen[0] is src or seen[0] == src):
            self.now[key] = seen
            return True
        return False

    def holds(self, key: tuple[str, str, bool], src: object, have: Obj | None) -> None:
        rv = _resource_version(have)
        if rv:
            self.now[key] = (src, rv)


def _resource_version(obj: Obj | None) -> str:
    return str(((obj or {}).get("metadata") or {}).get("resourceVersion") or "")


class _Pass:
    """One apply_member pass over a member: the stores as the pass began, what it wrote,
    and what it wants kept (what we own beyond that is pruned)."""

    def __init__(self, member: MemberCluster, karmada_retains: bool | None) -> None:
        self.member = member
        self.karmada_retains = karmada_retains
        self.result = ApplyResult()
        self.verified = _Verified(member.verified)
        self.import_res = member.resource("serviceimports")
        self.export_res = member.resource("serviceexports")
        self.imports = member.store("serviceimports")
        self.services = member.store("services")
        self.slices = member.store("endpointslices")
        self.exports = member.store("serviceexports")
        self.want_imports: set[str] = set()
        self.want_services: set[str] = set()
        self.want_slices: set[str] = set()

    async def apply(
        self,
        res: k.Resource,
        skey: str,
        render_obj: Callable[[], Obj],
        have: Obj | None,
        src: object,
        *,
        status: bool = False,
        absent: tuple[str, ...] = (),
        optional: str = "",
    ) -> Obj | None:
        """Apply what `render_obj` makes unless `have` already holds it; the object as
        stored when it was applied. `src`: the desired input it is rendered from (see
        _Verified). `absent`: labels we may have set before that the object no longer
        carries (a subset check alone would never drop them). `optional`: a field path
        (".status.clusters") the caller can leave out: server-side apply refuses a field
        the member's schema does not declare, and that is raised as _Undeclared."""
        r, member = self.result, self.member
        memo = (res.api_version + "/" + res.plural, skey, status)
        if self.verified.same(memo, src, have):
            r.unchanged += 1
            return None
        obj = render_obj()
        meta = obj["metadata"]
        path = res.path(meta.get("namespace"), meta["name"]) + ("/status" if status else "")
        stale = set(absent) & set(((have or {}).get("metadata") or {}).get("labels") or {})
        stale -= set(meta.get("labels") or {})
        if have is not None and not stale and contains(_meta_view(obj), _meta_view(have)):
            r.unchanged += 1
            self.verified.holds(memo, src, have)
            return None
        if r.unreachable:
            return None
        try:
            stored = await member.api.apply(path, obj)
            r.applied += 1
            member.writes[(res.kind + ("/status" if status else ""), "apply")] += 1
            return stored
        except (httpx.HTTPError, OSError) as exc:
            r.unreachable = True
            r.errors.append(f"cluster {member.name}: unreachable: {type(exc).__name__}: {exc}")
        except k.ApiError as exc:
            if optional and _UNDECLARED in str(exc) and optional in str(exc):
                raise _Undeclared(optional) from exc
            r.errors.append(
                f"cluster {member.name}: apply {res.kind} "
                f"{meta.get('namespace')}/{meta['name']}: {exc}"
            )
        return None

    async def delete(self, res: k.Resource, key: str, *, uid: str = "") -> None:
        r, member = self.result, self.member
        ns, _, name = key.rpartition("/")
        if r.unreachable:
            return
        try:
            await member.api.delete(res.path(ns or None, name), uid=uid)
            r.deleted += 1
            member.writes[(res.kind, "delete")] += 1
        except (httpx.HTTPError, OSError) as exc:
            r.unreachable = True
            r.errors.append(f"cluster {member.name}: unreachable: {type(exc).__name__}: {exc}")
        except k.ApiError as exc:
            r.errors.append(f"cluster {member.name}: delete {res.kind} {key}: {exc}")


_UNDECLARED = "field not declared in schema"  # what server-side apply says of such a field


class _Undeclared(Exception):
    """An apply named an optional field the member's schema does not declare."""


def _unfilled(member: MemberCluster, skey: str, imp: ServiceImport) -> None:
    """Say once per import why Karmada's import keeps an empty spec.ips, and the remedy."""
    if skey in member.unfilled:
        return
    member.unfilled.add(skey)
    log.warning(
        "cluster %s: ServiceImport %s is Karmada's (karmada.io/managed) and Karmada puts its "
        "template back over spec.ips unless clusterset's retention rule is in its control "
        "plane: spec.ips left empty (DNS answers the ClusterSetIP %s all the same). To fill "
        "it, give the controller --karmada-control-plane (the karmada-apiserver's kubeconfig) "
        "or run it through Karmada's proxy (--karmada-kubeconfig); with either, see why "
        "its ResourceInterpreterCustomization was refused",
        member.name,
        skey,
        ",".join(imp.ips),
    )


def _left_out(member: MemberCluster, flag: str, what: str) -> None:
    """Stop sending a field the member's schema lacks (the write would fail or never stick),
    and say so once (until a reconnect looks at the schema again)."""
    if getattr(member, flag):
        setattr(member, flag, False)
        log.info("cluster %s: its %s: left out", member.name, what)


async def apply_member(
    member: MemberCluster,
    cid: ClusterId,
    desired: Desired,
    *,
    now: str,
    karmada_retains: bool | None = None,
) -> ApplyResult:
    """Make `member` hold exactly what `desired` says for it (imports, slices, conditions).
    `karmada_retains`: whether Karmada keeps the spec.ips we write into its imports (our
    retention rule is in its control plane); False: not yet; None: it cannot be (no way to
    Karmada's control plane, or the rule was refused there)."""
    p = _Pass(member, karmada_retains)
    cd = desired.clusters.get(cid)
    if cd is not None:
        for ns in sorted(cd.create_namespaces):
            have = member.store("namespaces").get(ns)
            await p.apply(k.NAMESPACES, ns, functools.partial(render.namespace, ns), have, ns)
        await _each(cd.imports, functools.partial(_one_import, p, cd))
    # ServiceExport status of this cluster's exports: conditions, where it is exported to.
    mine = [
        (key, conds, desired.exported_to(cid, key))
        for (ccid, key), conds in desired.conditions.items()
        if ccid == cid
    ]
    await _each(mine, functools.partial(_export_status, p, now))
    member.verified = p.verified.now
    if not desired.unsynced:
        await _prune_owned(p, p.import_res, p.imports, p.want_imports)
        await _prune_owned(p, k.SERVICES, p.services, p.want_services)
    await _prune_slices(p, desired.unsynced)
    return p.result


async def _one_import(p: _Pass, cd: ClusterDesired, key: ServiceKey) -> None:
    """One import's objects in order: its derived Service, the import (with the Service's
    ClusterIPs as `spec.ips` already on a first pass), its status (which needs the import),
    its slices."""
    imp = cd.imports[key]
    skey = f"{key.namespace}/{key.name}"
    have = p.imports.get(skey)
    foreign = key in cd.foreign_imports
    derived = cd.data_path(key)
    if derived:
        imp = await _derived_service(p, imp, f"{key.namespace}/{derived}", derived)
    if not foreign:
        p.want_imports.add(skey)
        await _import_spec(p, imp, skey, have)
    elif have is not None and imp.ips and not _owned(have):
        # Karmada's: fill spec.ips once it exists (until then it is Karmada's to create),
        # and only while Karmada keeps it (our retention rule): else it puts the template
        # back at once, and the import is rewritten hundreds of times a minute.
        if p.karmada_retains:
            render_obj = functools.partial(render.service_import_ips, imp, p.import_res.version)
            await p.apply(p.import_res, skey, render_obj, have, imp)
        elif p.karmada_retains is None:  # it cannot be kept (False: not yet, wait)
            _unfilled(p.member, skey, imp)
    # A foreign import's status goes on Karmada's object only: ours of that name is about
    # to be pruned, and writing it first would be a wasted write.
    if not foreign or (have is not None and not _owned(have)):
        await _import_status(p, imp, skey, have)
    for s in cd.slices.get(key, ()):
        ekey = f"{s.namespace}/{s.name}"
        p.want_slices.add(ekey)
        render_obj = functools.partial(render.endpoint_slice, s, derived)
        have_slice = p.slices.get(ekey)
        await p.apply(
            k.ENDPOINT_SLICES,
            ekey,
            render_obj,
            have_slice,
            (s, derived),
            absent=(LABEL_K8S_SERVICE_NAME,),
        )


async def _derived_service(p: _Pass, imp: ServiceImport, dkey: str, name: str) -> ServiceImport:
    """The import's derived Service; the import with its ClusterIPs as `spec.ips` when the
    pass was planned before they existed (a first pass), so that the import is written
    once, in final form, not once without and again with them on the next pass."""
    p.want_services.add(dkey)
    have = p.services.get(dkey)
    if have is not None and _primary_moved(have, imp):
        # A ClusterIP never changes family: the Service is made again, with a new one.
        await p.delete(k.SERVICES, dkey, uid=str(have["metadata"].get("uid") or ""))
        have = None
    render_obj = functools.partial(render.derived_service, imp, name)
    stored = await p.apply(k.SERVICES, dkey, render_obj, have, (imp, name))
    svc = stored if stored is not None else have
    if imp.ips or imp.type is not ImportType.CLUSTER_SET_IP or svc is None:
        return imp
    ips = clusterset_ips(_cluster_ips(svc), imp.ip_families)
    return dataclasses.replace(imp, ips=ips) if ips else imp


async def _import_spec(p: _Pass, imp: ServiceImport, skey: str, have: Obj | None) -> None:
    """The import itself; a schema that drops `spec.clusterSelectors` (a CRD from before
    KEP-5939) is not sent them again (the write would never stick)."""
    member, version = p.member, p.import_res.version
    what = (
        "ServiceImport schema has no spec.clusterSelectors (a CRD from before KEP-5939): "
        f"the annotation {clusterselect.ANNOTATION} carries them"
    )
    for sel in (True, False) if member.cluster_selection else (False,):
        render_obj = functools.partial(render.service_import, imp, version, selectors=sel)
        try:
            stored = await p.apply(
                p.import_res, skey, render_obj, have, (imp, sel),
                optional=".spec.clusterSelectors" if sel else "",
            )  # fmt: skip
        except _Undeclared:
            _left_out(member, "cluster_selection", what)
            continue
        kept = ((stored or {}).get("spec") or {}).get("clusterSelectors")
        beta = version != "v1alpha1"
        if stored is not None and sel and imp.cluster_selectors and beta and not kept:
            _left_out(member, "cluster_selection", what)
        return


async def _import_status(p: _Pass, imp: ServiceImport, skey: str, have: Obj | None) -> None:
    """The import's status; a schema that drops `endpointSliceObjects` (an older CRD) is
    not sent it again (the write would never stick)."""
    member, version = p.member, p.import_res.version
    what = "ServiceImport schema has no status.endpointSliceObjects (an older CRD)"
    for presence in (True, False) if member.slice_presence else (False,):
        render_obj = functools.partial(
            render.service_import_status, imp, version, presence=presence
        )
        try:
            stored = await p.apply(
                p.import_res, skey, render_obj, have, (imp, presence), status=True,
                optional=".status.endpointSliceObjects" if presence else "",
            )  # fmt: skip
        except _Undeclared:
            _left_out(member, "slice_presence", what)
            continue
        kept = ((stored or {}).get("status") or {}).get("endpointSliceObjects")
        if stored is not None and presence and version != "v1alpha1" and not kept:
            _left_out(member, "slice_presence", what)
        return


async def _export_status(
    p: _Pass, now: str, item: tuple[ServiceKey, Conds, tuple[ClusterId, ...]]
) -> None:
    """The status of one of this cluster's ServiceExports (none written before it exists):
    conditions, and the clusters the service is exported to; a schema that drops
    `status.clusters` (Karmada's v1alpha1, a CRD from before enhancements#6329) is not sent
    them again (the write would never stick)."""
    key, conds, clusters = item
    skey = f"{key.namespace}/{key.name}"
    have = p.exports.get(skey)
    if have is None:
        return
    member, version = p.member, p.export_res.version
    what = "ServiceExport schema has no status.clusters (a CRD from before enhancements#6329)"
    for keep in (True, False) if member.export_clusters else (False,):
        render_obj = functools.partial(
            render.service_export_status, key, conds, have, now, version,
            clusters=clusters if keep else None,
        )  # fmt: skip
        try:
            stored = await p.apply(
                p.export_res, skey, render_obj, have, (conds, clusters, keep), status=True,
                optional=".status.clusters" if keep else "",
            )  # fmt: skip
        except _Undeclared:
            _left_out(member, "export_clusters", what)
            continue
        kept = ((stored or {}).get("status") or {}).get("clusters")
        if stored is not None and keep and clusters and not kept:
            _left_out(member, "export_clusters", what)
        return


async def _prune_owned(p: _Pass, res: k.Resource, store: dict[str, Obj], want: set[str]) -> None:
    """Delete what we own in `store` and no longer want."""
    for skey, obj in list(store.items()):
        if _owned(obj) and skey not in want:
            await p.delete(res, skey)


async def _prune_slices(p: _Pass, unsynced: frozenset[ClusterId]) -> None:
    """Delete our MCS EndpointSlices no longer wanted, but none from an unsynced source."""
    for skey, obj in list(p.slices.items()):
        slice_labels: dict[str, str] = (obj.get("metadata") or {}).get("labels") or {}
        if slice_labels.get(LABEL_MANAGED_BY) != MANAGED_BY or skey in p.want_slices:
            continue
        if slice_labels.get(LABEL_SOURCE_CLUSTER) in unsynced:
            continue  # its source's caches have not synced: keep what we have
        await p.delete(k.ENDPOINT_SLICES, skey)


# Writes in flight per member: a first pass over 2,000 services is ~10,000 applies, and
# one at a time they take minutes (each waits for its round trip).
APPLY_CONCURRENCY = 16
T = TypeVar("T")


async def _each(items: Iterable[T], fn: Callable[[T], Awaitable[None]]) -> None:
    """fn(item) for every item, at most APPLY_CONCURRENCY at a time. The workers share one
    iterator, so items that need no write cost no task and no scheduling."""
    it = iter(items)

    async def worker() -> None:
        for item in it:
            await fn(item)

    await asyncio.gather(*(worker() for _ in range(APPLY_CONCURRENCY)))


def _primary_moved(svc: Obj, imp: ServiceImport) -> bool:
    """Whether a derived Service's primary IP family is not the import's any more (its
    oldest export's Service changed family): the apiserver refuses that change."""
    have = (svc.get("spec") or {}).get("ipFamilies") or []
    return bool(have and imp.ip_families and have[0] != imp.ip_families[0].value)


def _owned(obj: Obj) -> bool:
    return ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_OWNED) == "true"


def derived_ips(
    member: MemberCluster, desired_derived: dict[ServiceKey, str]
) -> dict[ServiceKey, tuple[str, ...]]:
    """The ClusterIPs the member's apiserver gave our derived Services: the ClusterSetIPs."""
    out: dict[ServiceKey, tuple[str, ...]] = {}
    services = member.store("services")
    for key, name in desired_derived.items():
        svc = services.get(f"{key.namespace}/{name}")
        if svc is not None:
            out[key] = _cluster_ips(svc)
    return out


def _cluster_ips(svc: Obj) -> tuple[str, ...]:
    spec = svc.get("spec") or {}
    ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
    return tuple(ip for ip in ips if ip and ip != "None")[:2]
