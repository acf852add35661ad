"""The hub controller: watch every member, reconcile the whole clusterset, write each member.

Events only set a flag; one loop reconciles from the stores of all clusters
(level-based, never from the event), coalescing bursts, with a periodic full
resync and retries after errors. Only the elected leader writes. With Karmada, the
members are its Cluster objects, followed while running (join, unjoin, reconnect).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import functools
import logging
import time
from collections.abc import Callable, Mapping

from clusterset.controller.observer import Observer
from clusterset.kube import api as k
from clusterset.kube import liveness as kube_liveness
from clusterset.kube.cluster import MemberCluster
from clusterset.kube.karmada import ClusterInfo, Membership, cluster_infos
from clusterset.kube.lease import LeaderElector, micro_time
from clusterset.kube.sink import apply_member
from clusterset.manifests.load import SourceError
from clusterset.model import liveness
from clusterset.model.ids import ClusterId
from clusterset.model.state import ClusterSetState
from clusterset.reconcile import desired as rd

log = logging.getLogger(__name__)

# How long the first pass waits for every member's caches: a pass over a partial view would
# write what it sees (a ServiceExport's status.clusters without the clusters not yet listed)
# and then write it back; a member down at start costs the others this long.
FIRST_SYNC = 10.0


class Hub:
    """The Observer's view of the clusterset, reconciled and written into every member."""

    def __init__(
        self,
        apis: dict[str, k.KubeApi],
        *,
        elector: LeaderElector | None = None,
        resync: float = 60.0,
        debounce: float = 0.05,
        on_reconciled: Callable[[rd.Desired, ClusterSetState], None] | None = None,
        on_duration: Callable[[float], None] | None = None,  # e.g. a Histogram's observe
        lease_namespace: str = liveness.NAMESPACE,
        lease_duration: int = liveness.DEFAULT_DURATION,
        create_namespaces: bool = False,
        karmada: k.KubeApi | None = None,
        membership: Membership | None = None,
    ) -> None:
        self.create_namespaces = create_namespaces
        self.lease_namespace = lease_namespace
        self.lease_duration = lease_duration
        self.lease_renew = liveness.renew_interval(lease_duration)
        self._wake = asyncio.Event()
        # With `membership`, the members follow Karmada's Cluster objects (self._follow).
        self.membership = membership if karmada else None
        self._clusters_changed = asyncio.Event()
        # What the hub reconciles from; with Karmada's control plane (--karmada-kubeconfig)
        # also its placements, and its Clusters when the membership follows them.
        self.observer = Observer(
            apis,
            on_change=self._wake.set,
            karmada=karmada,
            on_clusters=self._clusters_changed.set if self.membership else None,
        )
        self.karmada = self.observer.karmada
        self._group: asyncio.TaskGroup | None = None  # run()'s: member tasks start in it
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._seen: dict[str, ClusterInfo] = {}  # each Cluster as last acted on
        # Writes to members, serialized with a withdrawal: a pass must not write into a
        # member that is being emptied.
        self._writing = asyncio.Lock()
        self.elector = elector
        self.resync = resync
        self.debounce = debounce
        self.on_reconciled = on_reconciled
        self.on_duration = on_duration
        self.reconciles = 0
        self.errors = 0
        self.last_duration = 0.0
        self._last: tuple[ClusterSetState, rd.Desired] | None = None  # the last pass
        # When each source was last reached for its liveness Leases (monotonic), and the
        # sources whose Lease has expired since: their endpoints go out of service.
        self._reached: dict[ClusterId, float] = {}
        self.expired: frozenset[ClusterId] = frozenset()

    @property
    def members(self) -> dict[str, MemberCluster]:
        return self.observer.members

    async def reconcile_once(self, *, full: bool = False) -> bool:
        """One level-based pass; True when every write succeeded.

        The pass updates the last one where its inputs changed (rd.changed_keys), which
        equals a pass from scratch; `full` (the periodic resync) starts from scratch."""
        started = time.perf_counter()
        # A source reached again is back in service at once: its own pass must not write
        # its endpoints into itself as out of service until the next renewal round.
        ids = self.observer.ids
        live = {ids[n] for n, m in self.members.items() if n in ids and m.synced and m.reachable}
        state = self.observer.observe(self.expired - live)
        before = None if full or self._last is None else self._last
        changed = rd.changed_keys(before[0], state) if before is not None else None
        # The pure passes run in a thread: on a big clusterset they take seconds, and on
        # the loop they would delay leader-lease renewals and the watches.
        aggregates = await asyncio.to_thread(
            functools.partial(
                rd.aggregate_all,
                state,
                previous=before[1].aggregates if before is not None else None,
                changed=changed,
            )
        )
        desired = await asyncio.to_thread(
            functools.partial(
                rd.reconcile,
                state,
                ips=self.observer.clusterset_ips(state, aggregates),
                aggregates=aggregates,
                create_namespaces=self.create_namespaces,
                previous=before[1] if before is not None else None,
                changed=changed,
            )
        )
        self._last = (state, desired)
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if not self._may_write():
            return False
        ok = True
        # Members whose watches are down are skipped (their caches are stale, and writes
        # would only time out); the others are written at once, in parallel.
        ids = self.observer.ids
        targets = [
            (name, m)
            for name, m in self.members.items()
            if name in ids and m.synced and m.reachable
        ]
        retains = None if self.karmada is None else self.karmada.retaining
        async with self._writing:
            outcomes = await asyncio.gather(
                *(
                    apply_member(m, ids[name], desired, now=now, karmada_retains=retains)
                    for name, m in targets
                ),
                return_exceptions=True,
            )
        results = []
        for (name, _m), out in zip(targets, outcomes, strict=True):
            if isinstance(out, BaseException):
                log.error("cluster %s: apply failed: %s: %s", name, type(out).__name__, out)
                ok = False
                continue
            results.append(out)
            for e in out.errors:
                log.error("%s", e)
                ok = False
        self.reconciles += 1
        self.errors += 0 if ok else 1
        self.last_duration = time.perf_counter() - started
        if self.on_duration is not None:
            self.on_duration(self.last_duration)
        if self.on_reconciled is not None:
            self.on_reconciled(desired, state)
        log.debug(
            "reconcile: %d applied, %d deleted in %.3fs",
            sum(r.applied for r in results),
            sum(r.deleted for r in results),
            self.last_duration,
        )
        return ok

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            self._group = tg
            for m in self.members.values():
                self._start(m)
            if self.karmada is not None:
                tg.create_task(self.karmada.run(), name="karmada")
            if self.membership is not None:
                tg.create_task(self._follow(), name="karmada-membership")
            if self.elector is not None:
                tg.create_task(self._lead(), name="leader-election")
                await self.elector.leading.wait()
            tg.create_task(self._loop(), name="reconcile")
            tg.create_task(self._leases(), name="source-leases")

    def _start(self, m: MemberCluster) -> None:
        assert self._group is not None, "members start inside run()"
        self._tasks[m.name] = self._group.create_task(m.run(), name=f"member {m.name}")

    async def _stop(self, m: MemberCluster) -> None:
        """Stop a member's informers and close its client."""
        task = self._tasks.pop(m.name, None)
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # unlike awaiting it, keeps our own cancellation
        await m.api.close()

    def _add(self, name: str) -> None:
        assert self.membership is not None
        self._start(self.observer.add(name, self.membership.connect(name)))

    async def _follow(self) -> None:
        """Karmada's Cluster objects, as they change, into follow()."""
        assert self.karmada is not None
        assert self.membership is not None
        clusters, only = self.karmada.clusters, self.membership.only
        while True:
            await self._clusters_changed.wait()
            self._clusters_changed.clear()
            await self.follow(cluster_infos(clusters.store, only))

    async def follow(self, clusters: Mapping[str, ClusterInfo]) -> None:
        """Make the members Karmada's clusters: start a joined one; withdraw from and stop
        one unjoined (its exports then leave the others' imports on the next pass);
        reconnect one whose connection changed, or that is Ready again while its watches
        are down (they would wait out their backoff)."""
        for name in sorted(self.members):
            info = clusters.get(name)
            if info is None or info.leaving:
                await self._leave(name, "Cluster deleted" if info is None else "unjoined")
        for name, info in sorted(clusters.items()):
            if info.leaving:
                continue
            before = self._seen.get(name)
            self._seen[name] = info
            state = "Ready" if info.ready else f"not Ready: {info.why}"
            if name not in self.members:
                self._add(name)
                log.info("karmada: cluster %s joined (%s); watching it", name, state)
            elif before is not None and before.connection != info.connection:
                await self._reconnect(name)
                log.info("karmada: cluster %s: its apiEndpoint or secrets changed; "
                         "reconnected (%s)", name, state)  # fmt: skip
            elif not info.ready and (before is None or before.ready):
                log.warning("karmada: cluster %s unreachable (%s); its watches retry, and "
                            "its endpoints leave DNS when its source Lease expires",
                            name, info.why)  # fmt: skip
            elif info.ready and before is not None and not before.ready:
                reconnect = not self.members[name].reachable
                if reconnect:
                    await self._reconnect(name)
                log.info("karmada: cluster %s Ready (was not: %s)%s", name, before.why,
                         "; reconnected" if reconnect else "")  # fmt: skip
        self._seen = {n: i for n, i in self._seen.items() if n in self.members}

    async def _reconnect(self, name: str) -> None:
        """A new client and fresh caches; until they sync, nothing of it is pruned."""
        await self._stop(self.members[name])
        self._add(name)

    async def _leave(self, name: str, why: str) -> None:
        cid = self.observer.ids.get(name)
        m = self.observer.remove(name)  # the next pass runs without it
        outcome = await self._withdraw(m, cid)
        await self._stop(m)
        log.info("karmada: cluster %s left (%s); %s", name, why, outcome)

    async def _withdraw(self, m: MemberCluster, cid: ClusterId | None) -> str:
        """Delete what clusterset wrote into a member that leaves (its imports, derived
        Services and MCS slices), while it is still reachable; what it says. Its source
        Leases stay to expire: the chart's member RBAC grants no delete on Leases."""
        left = "what clusterset wrote there stays (label clusterset.io/managed=true)"
        if not (m.synced and m.reachable and cid is not None):
            return f"not reachable: {left}"
        if not self._may_write():
            return "not the leader: nothing withdrawn"
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        async with self._writing:
            r = await apply_member(m, cid, rd.Desired({}, {}, {}), now=now)
        if r.errors:
            return f"withdrew {r.deleted} object(s), then failed: {'; '.join(r.errors)}; {left}"
        return f"withdrew {r.deleted} object(s) clusterset wrote there"

    def _may_write(self) -> bool:
        """Only a leader whose last renewal is within the renew deadline writes."""
        if self.elector is None or self.elector.is_leading():
            return True
        log.warning("leader election: no longer the leader; nothing written")
        return False

    async def _lead(self) -> None:
        assert self.elector is not None
        await self.elector.run()
        raise RuntimeError(
            f"lost the leader lease (not renewed within {self.elector.renew_deadline:g}s)"
        )

    async def _loop(self) -> None:
        try:
            await self.observer.wait_synced(FIRST_SYNC)
        except SourceError as exc:
            log.warning("%s; reconciling the others", exc)
        backoff = 0.5
        while True:
            try:
                async with asyncio.timeout(self.resync):
                    await self._wake.wait()
                full = False
            except TimeoutError:
                full = True  # the periodic resync: everything from scratch
            await asyncio.sleep(self.debounce)  # coalesce a burst of events into one pass
            self._wake.clear()
            if not any(m.synced for m in self.members.values()):
                continue
            if self.karmada is not None and not (
                self.karmada.bindings.synced.is_set() and self.karmada.mcs.synced.is_set()
            ):
                # Karmada's placements decide which imports are its own; its
                # MultiClusterServices are exports (not listed yet: they would be withdrawn).
                continue
            try:
                ok = await self.reconcile_once(full=full)
            except Exception:
                log.exception("reconcile failed")
                ok = False
            if ok:
                backoff = 0.5
            else:
                # Retry after the backoff, or at once when any cluster reports a change:
                # one failing member must not delay the others.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(backoff):
                        await self._wake.wait()
                backoff = min(30.0, backoff * 2)
                self._wake.set()

    async def _leases(self) -> None:
        """Per-source-cluster liveness (KEP-1645 "Endpoint TTL"): while a member is reachable,
        renew its Lease in every consumer; a source cut off stops being renewed, and member
        DNS servers stop counting its endpoints once renewTime + leaseDurationSeconds (or
        their --lease-grace) has passed."""
        await self.observer.observed.wait()  # cluster IDs are known after the first observation
        while True:
            ids = self.observer.ids
            reachable = [
                ids[name]
                for name, m in self.members.items()
                if name in ids and m.synced and m.reachable
            ]
            renewed = micro_time(dt.datetime.now(dt.UTC))
            reached_at = time.monotonic()
            # Each source's ClusterProperties ride on its Lease: the member DNS reads no
            # other cluster, and cluster selection matches the sources' properties.
            state = self._last[0] if self._last is not None else None
            properties = {c: s.properties for c, s in state.clusters.items()} if state else {}
            if not self._may_write():
                await asyncio.sleep(self.lease_renew)
                continue
            async with self._writing:
                results = await asyncio.gather(
                    *(
                        kube_liveness.renew(
                            m,
                            ids[name],
                            reachable,
                            namespace=self.lease_namespace,
                            renewed=renewed,
                            duration=self.lease_duration,
                            properties=properties,
                        )
                        for name, m in self.members.items()
                        if name in ids and m.reachable
                    ),
                    return_exceptions=True,
                )
            for r in results:
                for e in r if isinstance(r, list) else [str(r)]:
                    log.warning("%s", e)
            self._expire(reachable, reached_at)
            await asyncio.sleep(self.lease_renew)

    def _expire(self, reachable: list[ClusterId], at: float) -> None:
        """After a renewal round (`reachable` as sampled at `at`): the sources not reached
        for longer than their Lease's duration are expired; a change wakes a pass, which
        takes their endpoints out of the data path or puts them back. A source this replica
        has never reached (unreachable when it took the lead, or when it joined) counts from
        its first round: consumers' DNS, reading the Leases, may expire it up to one
        duration earlier."""
        now = time.monotonic()
        known = set(self.observer.ids.values())  # a member that left is forgotten
        self._reached = {c: t for c, t in self._reached.items() if c in known}
        for c in known:
            self._reached.setdefault(c, at)
        self._reached.update(dict.fromkeys(reachable, at))
        expired = frozenset(c for c, at in self._reached.items() if now - at > self.lease_duration)
        if expired != self.expired:
            for c in sorted(expired - self.expired):
                log.warning("cluster %s: its liveness Lease expired: its endpoints are "
                            "out of service in every consumer until it is reached", c)  # fmt: skip
            for c in sorted(self.expired - expired):
                log.info("cluster %s: reached again: its endpoints are back in service", c)
            self.expired = expired
            self._wake.set()
