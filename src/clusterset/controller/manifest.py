"""Manifest-folder feeds: `clusterset dns --manifests DIR` and `clusterset run --manifests ROOT`.

DIR holds one cluster's ServiceImports, MCS EndpointSlices and Namespaces (what
CoreDNS's multicluster plugin reads). ROOT holds one folder per member cluster
with Services, EndpointSlices and ServiceExports; the reconciler computes what
each member would import, and DNS serves one member's view of it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from clusterset.manifests.load import FolderReader, cluster_name
from clusterset.manifests.watch import changes
from clusterset.model.bag import ALWAYS_NAMESPACES, group_slices, implied_namespaces
from clusterset.model.ids import ClusterId, InvalidName, ServiceKey
from clusterset.model.objects import IPFamily
from clusterset.model.state import ClusterSetState, ClusterState, ImportedView
from clusterset.reconcile import allocate, desired

log = logging.getLogger(__name__)
# ClusterProperty naming the cluster's region, for the `region` failover tier.
REGION_PROPERTY = "region.clusterset.io"


class SourceError(ValueError):
    """An unusable source (missing folder, unknown cluster): exit 2 with this line."""


def next_generation(previous: int) -> int:
    """Monotonic across restarts (it becomes the SOA serial): unix seconds, or +1."""
    return max(previous + 1, int(time.time()))


def _log_errors(errors: list[str], last: list[str]) -> list[str]:
    """One line per bad document, repeated only when the set of problems changes."""
    if errors != last:
        for e in errors:
            log.error("%s", e)
    return errors


class FolderFeed:
    """One cluster's imported view from DIR."""

    def __init__(self, root: Path, *, cluster: ClusterId | None = None) -> None:
        if not root.is_dir():
            raise SourceError(f"--manifests {root}: not a directory")
        self.root = root
        self.cluster = cluster
        self.reader = FolderReader(root)
        self.generation = 0
        self.errors: list[str] = []

    def snapshot(self) -> ImportedView:
        objs, errors = self.reader.read()
        self.errors = _log_errors(errors, self.errors)
        self.generation = next_generation(self.generation)
        return ImportedView(
            cluster=self.cluster,
            imports=dict(objs.imports),
            slices=group_slices(objs.mcs_slices),
            namespaces=implied_namespaces(objs),
            local_services=dict(objs.services),
            generation=self.generation,
            observed_at=time.time(),
        )

    async def views(self, stop: asyncio.Event | None = None) -> AsyncIterator[ImportedView]:
        async for _ in changes([self.root], stop=stop):
            yield await asyncio.to_thread(self.snapshot)


@dataclass(slots=True)
class Observed:
    state: ClusterSetState
    desired: desired.Desired
    errors: list[str] = field(default_factory=list)


def default_state_file(root: Path) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return base / "clusterset" / f"allocations-{digest}.json"


class ClusterSetFeed:
    """Every member from ROOT/<cluster>/, reconciled; views as one member sees them."""

    def __init__(
        self,
        root: Path,
        *,
        cidrs: dict[IPFamily, allocate.Network],
        state_file: Path | None = None,
    ) -> None:
        if not root.is_dir():
            raise SourceError(f"--manifests {root}: not a directory")
        self.root = root
        self.cidrs = cidrs
        self.state_file = state_file if state_file is not None else default_state_file(root)
        self.readers: dict[Path, FolderReader] = {}
        self.generation = 0
        self.errors: list[str] = []
        self.ids: dict[Path, ClusterId] = {}
        self.allocations: dict[ClusterId, dict[ServiceKey, tuple[str, ...]]] = self._load_state()

    def _load_state(self) -> dict[ClusterId, dict[ServiceKey, tuple[str, ...]]]:
        try:
            raw = json.loads(self.state_file.read_text())
            return {
                ClusterId(c): {ServiceKey(*k.split("/", 1)): tuple(v) for k, v in by_key.items()}
                for c, by_key in raw.items()
            }
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def _save_state(self) -> None:
        raw = {
            c: {str(k): list(v) for k, v in sorted(by_key.items())}
            for c, by_key in sorted(self.allocations.items())
        }
        try:
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.state_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(raw, indent=1, sort_keys=True))
            tmp.replace(self.state_file)
        except OSError as exc:
            log.warning("cannot save ClusterSetIP allocations to %s: %s", self.state_file, exc)

    def folders(self) -> list[Path]:
        return sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))

    def observe(self) -> Observed:
        errors: list[str] = []
        clusters: dict[ClusterId, ClusterState] = {}
        folders = self.folders()
        for folder in folders:
            reader = self.readers.setdefault(folder, FolderReader(folder))
            objs, errs = reader.read()
            errors.extend(errs)
            try:
                cid = cluster_name(folder, objs)
            except InvalidName as exc:
                previous = self.ids.get(folder)
                errors.append(
                    f"{folder}: cluster ID: {exc}"
                    + (f"; keeping {previous!r}" if previous else "; folder skipped")
                )
                if previous is None:
                    continue
                cid = previous
            if cid in clusters:
                errors.append(f"{folder}: cluster ID {cid!r} is used by another folder; skipped")
                continue
            self.ids[folder] = cid
            clusters[cid] = ClusterState(
                cluster=cid,
                services=dict(objs.services),
                exports=dict(objs.exports),
                slices=group_slices(objs.slices),
                namespaces=implied_namespaces(objs),
                region=objs.properties.get(REGION_PROPERTY, ""),
            )
        for gone in set(self.readers) - set(folders):
            del self.readers[gone]
        state = ClusterSetState(clusters)
        aggregates = desired.aggregate_all(state)
        wanted = desired.wanted_ips(aggregates)
        ips: dict[tuple[ClusterId, ServiceKey], tuple[str, ...]] = {}
        changed = False
        for cid in clusters:
            nss = desired.namespaces_of(state, cid)
            mine = [(k, f) for k, f in wanted if k.namespace in nss]
            got = allocate.allocate(mine, cidrs=self.cidrs, previous=self.allocations.get(cid, {}))
            if got != self.allocations.get(cid):
                changed = True
                self.allocations[cid] = got
            ips.update({(cid, k): v for k, v in got.items()})
        if changed:
            self._save_state()
        self.errors = _log_errors(errors, self.errors)
        return Observed(state, desired.reconcile(state, ips=ips, aggregates=aggregates), errors)

    def view(self, observed: Observed, cluster: ClusterId) -> ImportedView:
        self.generation = next_generation(self.generation)
        if cluster not in observed.desired.clusters:
            return ImportedView(cluster, {}, {}, ALWAYS_NAMESPACES, {}, self.generation)
        view = observed.desired.view(cluster, observed.state, self.generation)
        return dataclasses.replace(view, observed_at=time.time())

    async def views(
        self, cluster: ClusterId, stop: asyncio.Event | None = None
    ) -> AsyncIterator[ImportedView]:
        async for _ in changes([self.root], stop=stop):
            observed = await asyncio.to_thread(self.observe)  # keep TCP answering meanwhile
            if cluster not in observed.state.clusters:
                log.warning(
                    "cluster %r: no folder under %s has this cluster ID", cluster, self.root
                )
            yield self.view(observed, cluster)
