"""Member mode: one cluster's own ServiceImports and MCS EndpointSlices feed its DNS server
(the same inputs as CoreDNS's multicluster plugin), so DNS keeps answering when the hub
is down. Nothing is yielded before every cache has synced: until then, SERVFAIL."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator

from clusterset.controller.manifest import next_generation
from clusterset.kube import api as k
from clusterset.kube.cluster import MEMBER, MemberCluster
from clusterset.model.ids import ClusterId, InvalidName, cluster_id
from clusterset.model.state import ImportedView

log = logging.getLogger(__name__)


class MemberFeed:
    def __init__(
        self,
        name: str,
        api: k.KubeApi,
        *,
        cluster: ClusterId | None = None,
        lease_namespace: str = "kube-system",
        lease_grace: float | None = None,
    ) -> None:
        self._wake = asyncio.Event()
        self.member = MemberCluster(
            name,
            api,
            mode=MEMBER,
            on_change=self._wake.set,
            lease_namespace=lease_namespace,
            lease_grace=lease_grace,
        )
        self.cluster = cluster
        self.generation = 0

    async def views(self, debounce: float = 0.05) -> AsyncIterator[ImportedView]:
        task = asyncio.create_task(self.member.run(), name=f"member {self.member.name}")
        try:
            await self.member.wait_synced()
            seen = time.time()
            while True:
                self._wake.clear()
                self.generation = next_generation(self.generation)
                cluster = self.cluster or self._own_id()
                view = self.member.imported_view(cluster, self.generation)
                yield dataclasses.replace(view, observed_at=seen)
                await self._wake.wait()
                seen = time.time()
                await asyncio.sleep(debounce)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _own_id(self) -> ClusterId | None:
        """Without --cluster: the source-cluster our own exports carry is unknown; use the
        context name if it is a valid cluster ID (local-first then works)."""
        try:
            return cluster_id(self.member.name)
        except InvalidName:
            return None
