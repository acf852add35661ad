"""The clusterset as every member's informers (and Karmada's placements) show it, read-only.

One reader for everything that looks at the fleet: the hub reconciles and writes from it,
the admission webhook reviews against it, and `check` and `status` take one look through
it (`observing`). It writes nothing, elects no leader and renews no Lease: that is the
hub's.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping

from clusterset.kube import api as k
from clusterset.kube.cluster import HUB, MemberCluster
from clusterset.kube.karmada import KarmadaControl, multicluster_services
from clusterset.kube.sink import derived_ips
from clusterset.manifests.load import SourceError
from clusterset.model import liveness
from clusterset.model.ids import ClusterId, InvalidName, ServiceKey
from clusterset.model.objects import EndpointSlice, ImportType, ServiceExport
from clusterset.model.state import ClusterSetState, ClusterState
from clusterset.reconcile import desired as rd
from clusterset.reconcile.aggregate import Aggregate

log = logging.getLogger(__name__)
Slices = Mapping[ServiceKey, tuple[EndpointSlice, ...]]
Exports = Mapping[ServiceKey, ServiceExport]
Owned = Mapping[ServiceKey, str]

# How long a one-look command waits for every member's first list.
SYNC_WITHIN = 30.0


class Observer:
    """Member name -> its informers, and the ClusterSetState they add up to."""

    def __init__(
        self,
        apis: Mapping[str, k.KubeApi],
        *,
        on_change: Callable[[], None] | None = None,
        karmada: k.KubeApi | None = None,
        on_clusters: Callable[[], None] | None = None,
    ) -> None:
        """`on_change`: after any watch event. `karmada`: its control plane, whose
        ResourceBindings say which imports are Karmada's (and, with `on_clusters`, whose
        Cluster objects are watched for the hub's membership)."""
        self._on_change = on_change
        # Watch events so far: what observe() returns changes only when this does (the
        # admission webhook observes again only then).
        self.changes = 0
        # Replaced, never changed in place: the metrics thread iterates it.
        self.members = {name: self._member(name, api) for name, api in apis.items()}
        self.karmada = (
            KarmadaControl(karmada, on_change=self.changed, on_clusters=on_clusters)
            if karmada is not None
            else None
        )
        self.ids: dict[str, ClusterId] = {}  # member name -> its cluster ID, as last observed
        # An expired source's slices as consumers see them, per the slices they were made
        # from (the member keeps that mapping while nothing changes): the same object pass
        # after pass, so changed_keys sees nothing to do and nothing is rebuilt.
        self._out: dict[ClusterId, tuple[object, Slices]] = {}
        self.observed = asyncio.Event()  # set by the first observe(): the IDs are known
        self._unknown_placements: set[str] = set()  # Karmada clusters that are no member
        # Per cluster: the inputs and result of the last _with_multicluster_services.
        self._mcs: dict[ClusterId, tuple[tuple[object, ...], tuple[Exports, Owned]]] = {}

    def _member(self, name: str, api: k.KubeApi) -> MemberCluster:
        return MemberCluster(name, api, mode=HUB, on_change=self.changed)

    def changed(self) -> None:
        self.changes += 1
        if self._on_change is not None:
            self._on_change()

    def add(self, name: str, api: k.KubeApi) -> MemberCluster:
        """A member (new, or replacing one of that name): its informers are the caller's to
        run."""
        m = self._member(name, api)
        self.members = {**self.members, name: m}
        self.changed()
        return m

    def remove(self, name: str) -> MemberCluster:
        """Leave a member out of the next observation; the caller stops it."""
        m = self.members[name]
        self.members = {n: x for n, x in self.members.items() if n != name}
        self.ids.pop(name, None)
        self.changed()
        return m

    @property
    def synced(self) -> bool:
        return all(m.synced for m in self.members.values())

    async def wait_synced(self, within: float) -> None:
        """Until every member has synced; a SourceError naming the late ones after
        `within` seconds."""
        try:
            async with asyncio.timeout(within):
                await asyncio.gather(*(m.wait_synced() for m in self.members.values()))
        except TimeoutError as exc:
            late = [n for n, m in self.members.items() if not m.synced]
            raise SourceError(
                f"clusters not reachable within {within:g}s: {', '.join(late)}"
            ) from exc

    def observe(self, expired: frozenset[ClusterId] = frozenset()) -> ClusterSetState:
        """Every member's state now; the sources in `expired` (their liveness Lease ran
        out) with their endpoints out of service (liveness.out_of_service). On the event
        loop: it reads and updates the informers' caches."""
        clusters: dict[ClusterId, ClusterState] = {}
        placed = self.karmada.placed_imports() if self.karmada is not None else {}
        for name in placed.keys() - self.members.keys() - self._unknown_placements:
            self._unknown_placements.add(name)  # said once
            log.warning(
                "karmada: places ServiceImports on cluster %s, which is none of the members "
                "(with --karmada-control-plane, name each --context as Karmada's cluster)",
                name,
            )
        for name, m in self.members.items():
            try:
                cs = m.cluster_state()
            except InvalidName as exc:
                log.error("%s; cluster skipped", exc)
                continue
            if placed.get(name):
                # Karmada places a ServiceImport template here: the import is Karmada's.
                cs = dataclasses.replace(cs, foreign_imports=cs.foreign_imports | placed[name])
            if cs.cluster in clusters:
                log.error(
                    "cluster %s: cluster ID %r is used by another member; skipped", name, cs.cluster
                )
                continue
            self.ids[name] = cs.cluster
            clusters[cs.cluster] = self._out_of_service(cs) if cs.cluster in expired else cs
        self._out = {c: v for c, v in self._out.items() if c in expired}
        if self.karmada is not None:
            clusters = self._with_multicluster_services(clusters)
        self.observed.set()
        return ClusterSetState(clusters)

    def _with_multicluster_services(
        self, clusters: dict[ClusterId, ClusterState]
    ) -> dict[ClusterId, ClusterState]:
        """Karmada's MultiClusterServices as exports of the providers (where the Service is
        and no ServiceExport of the name), whose ClusterSetIP in a consumer is its own Service
        (Karmada dispatches the endpoints into it: no second data path). Not where a
        ServiceExport of the name exists anywhere: Karmada's path would lack its endpoints,
        so clusterset's own derived Service carries them all."""
        assert self.karmada is not None
        plan = multicluster_services(self.karmada.mcs.store, self.ids)
        exported = {
            key
            for keys in plan.consumed.values()
            for key in keys
            if any(key in cs.exports for cs in clusters.values())
        }
        cache: dict[ClusterId, tuple[tuple[object, ...], tuple[Exports, Owned]]] = {}
        for name, cid in self.ids.items():
            cs = clusters.get(cid)
            if cs is None:
                continue
            exports = {
                key: e
                for key, e in plan.exports.get(name, {}).items()
                if key in cs.services and key not in cs.exports
            }
            own = {
                key: key.name
                for key in plan.consumed.get(name, ())
                if key in cs.services and key not in cs.foreign_derived and key not in exported
            }
            if not exports and not own:
                continue
            # The same inputs give the same maps: changed_keys then sees nothing to do.
            inputs = (cs.exports, cs.foreign_derived, exports, own)
            made = self._mcs.get(cid)
            if made is None or any(
                a is not b and a != b for a, b in zip(made[0], inputs, strict=True)
            ):
                made = (inputs, ({**cs.exports, **exports}, {**cs.foreign_derived, **own}))
            cache[cid] = made
            merged_exports, merged_own = made[1]
            clusters[cid] = dataclasses.replace(
                cs, exports=merged_exports, foreign_derived=merged_own
            )
        self._mcs = cache
        return clusters

    def _out_of_service(self, cs: ClusterState) -> ClusterState:
        made = self._out.get(cs.cluster)
        if made is None or made[0] is not cs.slices:
            made = (cs.slices, liveness.out_of_service(cs).slices)
            self._out[cs.cluster] = made
        return dataclasses.replace(cs, slices=made[1])

    def clusterset_ips(
        self, state: ClusterSetState, aggregates: Mapping[ServiceKey, Aggregate]
    ) -> dict[tuple[ClusterId, ServiceKey], tuple[str, ...]]:
        """Each member's ClusterSetIPs: what its apiserver allocated to the derived Services
        (ours, or Karmada's derived-<svc> where Karmada made one)."""
        ips: dict[tuple[ClusterId, ServiceKey], tuple[str, ...]] = {}
        keys = [key for key, agg in aggregates.items() if agg.type is ImportType.CLUSTER_SET_IP]
        for name, m in self.members.items():
            cid = self.ids.get(name)
            if cid is None or cid not in state.clusters:
                continue
            theirs = state.clusters[cid].foreign_derived
            wanted = {key: theirs.get(key) or rd.derived_name(key) for key in keys}
            for key, got in derived_ips(m, wanted).items():
                ips[(cid, key)] = got
        return ips


@contextlib.asynccontextmanager
async def observing(
    apis: Mapping[str, k.KubeApi], *, within: float = SYNC_WITHIN
) -> AsyncIterator[Observer]:
    """An Observer of `apis` whose members have all synced (else the SourceError of
    wait_synced), for a command's reads: the informers run inside the block and keep the
    caches current; after it they stop and the clients are closed."""
    observer = Observer(apis)
    tasks = [asyncio.create_task(m.run(), name=f"observe {n}") for n, m in observer.members.items()]
    try:
        await observer.wait_synced(within)
        yield observer
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for api in apis.values():
            await api.close()
