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
from clusterset.model import liveness
from clusterset.model.ids import ClusterId, InvalidName, ServiceKey, cluster_id
from clusterset.model.state import ImportedView

log = logging.getLogger(__name__)


class MemberFeed:
    def __init__(
        self,
        name: str,
        api: k.KubeApi,
        *,
        cluster: ClusterId | None = None,
        lease_namespace: str = liveness.NAMESPACE,
        lease_grace: float | None = None,
        ns_service: ServiceKey | None = None,
    ) -> None:
        self._wake = asyncio.Event()
        self.ns_service = ns_service  # this server's own Service: its ClusterIPs are NS glue
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
        # The ID in use and where it came from, said in the log when it changes and on /ready.
        self.identity: tuple[ClusterId | None, str] = (cluster, "--cluster" if cluster else "")
        self._disagreed: tuple[ClusterId, str] | None = None

    async def views(self, debounce: float = 0.05) -> AsyncIterator[ImportedView]:
        task = asyncio.create_task(self.member.run(), name=f"member {self.member.name}")
        try:
            await self.member.wait_synced()
            seen = time.time()
            while True:
                self._wake.clear()
                self.generation = next_generation(self.generation)
                cluster = self._own_id()
                view = self.member.imported_view(cluster, self.generation)
                yield dataclasses.replace(
                    view,
                    observed_at=seen,
                    cluster_source=self.identity[1],
                    ns_addresses=self._ns_glue(),
                )
                await self._wake.wait()
                seen = time.time()
                await asyncio.sleep(debounce)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _ns_glue(self) -> tuple[str, ...]:
        """The ClusterIPs of --ns-service (none while it is missing or headless)."""
        if self.ns_service is None:
            return ()
        key = f"{self.ns_service.namespace}/{self.ns_service.name}"
        spec = (self.member.store("services").get(key) or {}).get("spec") or {}
        ips = spec.get("clusterIPs") or ([spec["clusterIP"]] if spec.get("clusterIP") else [])
        return tuple(str(ip) for ip in ips if ip and ip != "None")[:2]

    def _own_id(self) -> ClusterId | None:
        """The ID local-first compares the source clusters with: --cluster, else the
        cluster's ClusterProperty, else the consumer the hub's Leases name, else the
        context name (a guess, said as such: the chart's in-cluster kubeconfig names its
        context `in-cluster`, which no hub calls a member)."""
        found = self.member.identity()
        if self.cluster is not None:
            if found is not None and found[0] != self.cluster and found != self._disagreed:
                self._disagreed = found
                log.warning(
                    "cluster ID %s (--cluster) differs from %s (%s): --cluster wins",
                    self.cluster, found[0], found[1],
                )  # fmt: skip
            return self.cluster
        now: tuple[ClusterId | None, str]
        if found is not None:
            now = found
        else:
            try:
                now = (cluster_id(self.member.name), "the kubeconfig context name, a guess")
            except InvalidName:
                now = (None, "unknown")
        if now != self.identity:
            self.identity = now
            if now[0] is None or now[1].endswith("a guess"):
                log.warning(
                    "cluster ID %s (%s): local-first answers the ClusterSetIP unless it is the "
                    "ID the hub gives this cluster; set --cluster (chart: dns.clusterID) or "
                    "the ClusterProperty %s",
                    now[0], now[1], "cluster.clusterset.k8s.io",
                )  # fmt: skip
            else:
                log.info("cluster ID %s (from %s)", now[0], now[1])
        return now[0]
