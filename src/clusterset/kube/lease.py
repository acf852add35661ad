"""Leader election on a coordination.k8s.io Lease, so that two controllers never both write.

Optimistic concurrency as client-go's leaderelection does it: read the Lease;
take it when free or expired (a write conditioned on its resourceVersion: a
409 means someone else won); renew while holding; give up leadership when a
renewal fails for longer than the lease duration.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from typing import Any

from clusterset.kube import api as k

log = logging.getLogger(__name__)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def micro_time(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


class LeaderElector:
    def __init__(
        self,
        api: k.KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        duration: float = 15.0,
        renew_every: float = 5.0,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.duration = duration
        self.renew_every = renew_every
        self.leading = asyncio.Event()

    def _body(self, have: dict[str, Any] | None, transitions: int) -> dict[str, Any]:
        now = micro_time(_now())
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": int(self.duration),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if have is not None:
            meta["resourceVersion"] = have["metadata"]["resourceVersion"]
            held = have.get("spec") or {}
            if held.get("holderIdentity") == self.identity and held.get("acquireTime"):
                spec["acquireTime"] = held["acquireTime"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    async def try_acquire(self) -> bool:
        path = k.LEASES.path(self.namespace, self.name)
        try:
            have: dict[str, Any] | None = await self.api.get(path)
        except k.ApiError as exc:
            if exc.status != 404:
                raise
            have = None
        if have is None:
            try:
                await self.api.create(k.LEASES.path(self.namespace), self._body(None, 0))
                return True
            except k.ApiError as exc:
                if exc.status == 409:
                    return False
                raise
        spec = have.get("spec") or {}
        holder = spec.get("holderIdentity")
        renewed = _parse(spec.get("renewTime"))
        duration = float(spec.get("leaseDurationSeconds") or self.duration)
        expired = renewed is None or (_now() - renewed).total_seconds() > duration
        if holder not in (None, "", self.identity) and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
        try:
            await self.api.replace(path, self._body(have, transitions))
            return True
        except k.ApiError as exc:
            if exc.status == 409:
                return False
            raise

    async def run(self) -> None:
        """Acquire, then renew until the process ends or renewal fails past the duration."""
        last_ok = _now()
        while True:
            try:
                ok = await self.try_acquire()
            except Exception as exc:  # transport errors: keep trying until the lease lapses
                log.warning("leader election: %s", exc)
                ok = False
            if ok:
                last_ok = _now()
                if not self.leading.is_set():
                    log.info(
                        "leader election: %s is the leader (%s/%s)",
                        self.identity,
                        self.namespace,
                        self.name,
                    )
                    self.leading.set()
            elif self.leading.is_set() and (_now() - last_ok).total_seconds() > self.duration:
                log.error("leader election: lost the lease; stopping writes")
                self.leading.clear()
                return
            wait = (
                self.renew_every
                if self.leading.is_set()
                else self.renew_every * random.uniform(0.8, 1.2)
            )
            await asyncio.sleep(wait)

    async def release(self) -> None:
        """Give the lease up on a clean shutdown, so a successor need not wait it out
        (client-go's ReleaseOnCancel)."""
        if not self.leading.is_set():
            return
        path = k.LEASES.path(self.namespace, self.name)
        try:
            have = await self.api.get(path)
            if (have.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            body = self._body(have, int((have.get("spec") or {}).get("leaseTransitions") or 0))
            body["spec"]["holderIdentity"] = ""
            body["spec"]["leaseDurationSeconds"] = 1
            await self.api.replace(path, body)
            log.info("leader election: released %s/%s", self.namespace, self.name)
        except Exception as exc:  # best effort: the lease lapses anyway
            log.warning("leader election: release failed: %s", exc)
        finally:
            self.leading.clear()
