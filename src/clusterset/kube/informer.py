"""An informer: one list+watch cache of one resource in one cluster.

List (paginated) replaces the store and, if anything differs (or on the first list),
calls on_change once with every key marked changed (take_changes() -> None), which
recovers deletions missed while disconnected or after a 410; then watch from the list's
resourceVersion, advancing it on every event and BOOKMARK. 410 Gone -> relist at once;
other API errors -> jittered backoff 0.2 s .. 30 s, then relist; transport errors -> the
same backoff, then resume the watch from the last resourceVersion (relist only if no list
succeeded yet). An `optional` resource answering 403/404 is an empty store, retried every
30 s. `synced` is set after the first list (or that empty answer). Objects are kept
whole, managedFields dropped.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

import httpx2 as httpx

from clusterset.kube.api import ApiError, Gone, KubeApi, Resource

log = logging.getLogger(__name__)
Obj = dict[str, Any]


def _key(obj: Obj) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


def _strip(obj: Obj) -> Obj:
    meta = dict(obj.get("metadata") or {})
    meta.pop("managedFields", None)
    return {**obj, "metadata": meta}


class Informer:
    def __init__(
        self,
        api: KubeApi,
        resource: Resource,
        *,
        label_selector: str = "",
        on_change: Callable[[], None] = lambda: None,
        optional: bool = False,  # missing CRD (404) or no permission (403): empty and synced
        namespace: str | None = None,  # one namespace, or all
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.path = resource.path(namespace)
        self.resource = resource
        self.label_selector = label_selector
        self.on_change = on_change
        self.optional = optional
        self.store: dict[str, Obj] = {}
        # Keys whose object changed since the last take_changes(); None: every key may have.
        self._changes: set[str] | None = None
        self.synced = asyncio.Event()
        self.restarts = 0
        self.resource_version = ""
        # True while the last list/watch request reached the apiserver: the hub renews a
        # source cluster's liveness Lease only while every informer of it is connected.
        self.connected = False

    def retarget(self, resource: Resource) -> None:
        """Watch another version of the resource (set before run(): the cluster's served one)."""
        self.resource = resource
        self.path = resource.path(self.namespace)

    def take_changes(self) -> set[str] | None:
        """The keys changed since the last call (None: look at all of them); for the one
        consumer that keeps a converted copy of the store (MemberCluster.objects)."""
        changes, self._changes = self._changes, set()
        return changes

    def apply_event(self, etype: str, obj: Obj) -> None:
        """One watch event (ADDED, MODIFIED, DELETED) into the store."""
        key = _key(obj)
        if self._changes is not None:
            self._changes.add(key)
        if etype == "DELETED":
            self.store.pop(key, None)
        else:
            self.store[key] = _strip(obj)

    @property
    def name(self) -> str:
        return f"{self.api.name}/{self.resource.plural}"

    async def _relist(self) -> None:
        items, rv = await self.api.list(self.path, label_selector=self.label_selector)
        new = {_key(o): _strip(o) for o in items}
        changed = new != self.store
        self.store = new
        self._changes = None
        self.resource_version = rv
        self.connected = True
        if changed or not self.synced.is_set():
            self.synced.set()
            self.on_change()

    async def run(self) -> None:
        backoff = 0.2
        need_list = True
        while True:
            try:
                if need_list:
                    await self._relist()
                    need_list = False
                async for etype, obj in self.api.watch(
                    self.path, self.resource_version, label_selector=self.label_selector
                ):
                    self.connected = True
                    rv = (obj.get("metadata") or {}).get("resourceVersion")
                    if rv:
                        self.resource_version = rv
                    if etype == "BOOKMARK":
                        continue
                    self.apply_event(etype, obj)
                    self.on_change()
                backoff = 0.2  # a watch that ended by timeout is normal: resume from the RV
            except Gone:
                self.connected = True
                log.info("watch %s: resourceVersion expired (410), relisting", self.name)
                self.restarts += 1
                need_list = True
            except ApiError as exc:
                self.connected = exc.status < 500
                if exc.status in (403, 404) and self.optional:
                    if not self.synced.is_set():
                        log.warning("%s: %s; treating it as empty", self.name, exc)
                    if not self.synced.is_set() or self.store:
                        self.store = {}
                        self._changes = None
                        self.synced.set()
                        self.on_change()
                    await asyncio.sleep(30)
                    need_list = True
                    continue
                self.restarts += 1
                log.warning("watch %s: %s; retrying in %.1fs", self.name, exc, backoff)
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(30.0, backoff * 2)
                need_list = True
            except (httpx.HTTPError, OSError, ValueError) as exc:
                # Transport trouble: resume the watch from the last resourceVersion (a 410
                # then says if it is too old); relist only if no list succeeded yet.
                self.connected = False
                self.restarts += 1
                log.warning(
                    "watch %s: %s: %s; retrying in %.1fs",
                    self.name,
                    type(exc).__name__,
                    exc,
                    backoff,
                )
                await asyncio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(30.0, backoff * 2)
                need_list = need_list or not self.resource_version
