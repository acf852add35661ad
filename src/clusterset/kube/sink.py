"""Apply what reconcile wants into one member cluster: server-side apply, status, pruning.

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
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx2 as httpx

from clusterset.kube import api as k
from clusterset.kube.cluster import MemberCluster
from clusterset.model.conditions import Condition
from clusterset.model.convert import (
    LABEL_K8S_SERVICE_NAME,
    LABEL_MANAGED_BY,
    LABEL_SOURCE_CLUSTER,
)
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.labels import LABEL_OWNED
from clusterset.reconcile import render
from clusterset.reconcile.desired import Desired
from clusterset.reconcile.slices import MANAGED_BY

log = logging.getLogger(__name__)
Obj = dict[str, Any]
Conds = tuple[Condition, ...]


def contains(want: Any, have: Any) -> bool:
    """Every field of `want` is in `have` with the same value (lists: same length, in order)."""
    if isinstance(want, dict):
        return isinstance(have, dict) and all(contains(v, have.get(key)) for key, v in want.items())
    if isinstance(want, list):
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


async def _apply(
    member: MemberCluster,
    res: k.Resource,
    skey: str,
    render_obj: Callable[[], Obj],
    have: Obj | None,
    r: ApplyResult,
    verified: _Verified,
    src: object,
    *,
    status: bool = False,
    absent: tuple[str, ...] = (),
) -> Obj | None:
    """Apply what `render_obj` makes unless `have` already holds it; the object as stored
    when it was applied. `src`: the desired input it is rendered from (see _Verified).
    `absent`: labels we may have set before that the object no longer carries (a subset
    check alone would never drop them)."""
    memo = (res.api_version + "/" + res.plural, skey, status)
    if verified.same(memo, src, have):
        r.unchanged += 1
        return None
    obj = render_obj()
    meta = obj["metadata"]
    path = res.path(meta.get("namespace"), meta["name"]) + ("/status" if status else "")
    stale = set(absent) & set(((have or {}).get("metadata") or {}).get("labels") or {})
    stale -= set(meta.get("labels") or {})
    if have is not None and not stale and contains(_meta_view(obj), _meta_view(have)):
        r.unchanged += 1
        verified.holds(memo, src, have)
        return None
    if r.unreachable:
        return None
    try:
        stored = await member.api.apply(path, obj)
        r.applied += 1
        return stored
    except (httpx.HTTPError, OSError) as exc:
        r.unreachable = True
        r.errors.append(f"cluster {member.name}: unreachable: {type(exc).__name__}: {exc}")
    except k.ApiError as exc:
        r.errors.append(
            f"cluster {member.name}: apply {res.kind} {meta.get('namespace')}/{meta['name']}: {exc}"
        )
    return None


async def _delete(member: MemberCluster, res: k.Resource, key: str, r: ApplyResult) -> None:
    ns, _, name = key.rpartition("/")
    if r.unreachable:
        return
    try:
        await member.api.delete(res.path(ns or None, name))
        r.deleted += 1
    except (httpx.HTTPError, OSError) as exc:
        r.unreachable = True
        r.errors.append(f"cluster {member.name}: unreachable: {type(exc).__name__}: {exc}")
    except k.ApiError as exc:
        r.errors.append(f"cluster {member.name}: delete {res.kind} {key}: {exc}")


def _condition_list(conds: tuple[Condition, ...], have: Obj | None, now: str) -> list[Obj]:
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


async def apply_member(
    member: MemberCluster, cid: ClusterId, desired: Desired, *, now: str
) -> ApplyResult:
    """Make `member` hold exactly what `desired` says for it (imports, slices, conditions)."""
    r = ApplyResult()
    verified = _Verified(member.verified)
    cd = desired.clusters.get(cid)
    import_res = member.resource("serviceimports")
    export_res = member.resource("serviceexports")
    version = import_res.version
    imports = member.store("serviceimports")
    services = member.store("services")
    slices = member.store("endpointslices")
    exports = member.store("serviceexports")
    want_imports: set[str] = set()
    want_services: set[str] = set()
    want_slices: set[str] = set()
    if cd is not None:
        for ns in sorted(cd.create_namespaces):
            obj: Obj = {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": ns, "labels": {LABEL_OWNED: "true"}},
            }
            have_ns = member.store("namespaces").get(ns)
            await _apply(
                member, k.NAMESPACES, ns, functools.partial(dict, obj), have_ns, r, verified, ns
            )
        foreign_imports, data_path = cd.foreign_imports, cd.data_path
        imports_wanted, slices_wanted = cd.imports, cd.slices

        async def one_import(key: ServiceKey) -> None:
            """One import's objects in order: the import, its derived Service, its status
            (which needs the import), its slices."""
            imp = imports_wanted[key]
            skey = f"{key.namespace}/{key.name}"
            have = imports.get(skey)
            if key in foreign_imports:
                # Karmada's: fill spec.ips once it exists; until then it is Karmada's to create.
                if have is not None and imp.ips and not _owned(have):
                    await _apply(
                        member,
                        import_res,
                        skey,
                        functools.partial(render.service_import_ips, imp, version),
                        have,
                        r,
                        verified,
                        imp,
                    )
            else:
                want_imports.add(skey)
                await _apply(
                    member,
                    import_res,
                    skey,
                    functools.partial(render.service_import, imp, version),
                    have,
                    r,
                    verified,
                    imp,
                )
            derived = data_path(key)
            if derived:
                dkey = f"{key.namespace}/{derived}"
                want_services.add(dkey)
                await _apply(
                    member,
                    k.SERVICES,
                    dkey,
                    functools.partial(render.derived_service, imp, derived),
                    services.get(dkey),
                    r,
                    verified,
                    (imp, derived),
                )
            # A foreign import's status goes on Karmada's object only: ours of that name is
            # about to be pruned, and writing it first would be a wasted write.
            if key not in foreign_imports or (have is not None and not _owned(have)):
                presence = member.slice_presence
                stored = await _apply(
                    member,
                    import_res,
                    skey,
                    functools.partial(
                        render.service_import_status, imp, version, presence=presence
                    ),
                    have,
                    r,
                    verified,
                    (imp, presence),
                    status=True,
                )
                kept = ((stored or {}).get("status") or {}).get("endpointSliceObjects")
                if stored is not None and presence and version != "v1alpha1" and not kept:
                    member.slice_presence = False
                    log.info(
                        "cluster %s: its ServiceImport schema has no "
                        "status.endpointSliceObjects (an older CRD): left out",
                        member.name,
                    )
            for s in slices_wanted.get(key, ()):
                ekey = f"{s.namespace}/{s.name}"
                want_slices.add(ekey)
                await _apply(
                    member,
                    k.ENDPOINT_SLICES,
                    ekey,
                    functools.partial(render.endpoint_slice, s, derived),
                    slices.get(ekey),
                    r,
                    verified,
                    (s, derived),
                    absent=(LABEL_K8S_SERVICE_NAME,),
                )

        await _each(cd.imports, one_import)

    # ServiceExport conditions of this cluster's exports.
    async def one_export(item: tuple[ServiceKey, Conds]) -> None:
        key, conds = item
        skey = f"{key.namespace}/{key.name}"
        have = exports.get(skey)
        if have is None:
            return
        export_status = functools.partial(_export_status, export_res, key, conds, have, now)
        await _apply(member, export_res, skey, export_status, have, r, verified, conds, status=True)

    await _each(
        [(key, conds) for (ccid, key), conds in desired.conditions.items() if ccid == cid],
        one_export,
    )
    member.verified = verified.now
    # Prune what we own and no longer want.
    if not desired.unsynced:
        for skey, obj in list(imports.items()):
            if _owned(obj) and skey not in want_imports:
                await _delete(member, import_res, skey, r)
        for skey, obj in list(services.items()):
            if _owned(obj) and skey not in want_services:
                await _delete(member, k.SERVICES, skey, r)
    for skey, obj in list(slices.items()):
        slice_labels: dict[str, str] = (obj.get("metadata") or {}).get("labels") or {}
        if slice_labels.get(LABEL_MANAGED_BY) != MANAGED_BY or skey in want_slices:
            continue
        if slice_labels.get(LABEL_SOURCE_CLUSTER) in desired.unsynced:
            continue  # its source's caches have not synced: keep what we have
        await _delete(member, k.ENDPOINT_SLICES, skey, r)
    return r


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


def _export_status(res: k.Resource, key: ServiceKey, conds: Conds, have: Obj, now: str) -> Obj:
    return {
        "apiVersion": res.api_version,
        "kind": "ServiceExport",
        "metadata": {"name": key.name, "namespace": key.namespace},
        "status": {"conditions": _condition_list(conds, have, now)},
    }


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
        if svc is None:
            continue
        spec = svc.get("spec") or {}
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        out[key] = tuple(ip for ip in ips if ip and ip != "None")[:2]
    return out
