"""Manifest-folder feeds: `clusterset dns --manifests DIR` and `clusterset run --manifests ROOT`.

DIR holds one cluster's ServiceImports, MCS EndpointSlices and Namespaces (what
CoreDNS's multicluster plugin reads). ROOT holds one folder per member cluster
with Services, EndpointSlices and ServiceExports; the reconciler computes what
each member would import, and DNS serves one member's view of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import time
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from clusterset.manifests import allocations
from clusterset.manifests.load import (
    FolderReader,
    ReadProgress,
    SourceError,
    cluster_name,
    release_workers,
)
from clusterset.manifests.watch import changes
from clusterset.model.bag import (
    ALWAYS_NAMESPACES,
    Grouped,
    Objects,
    group_slices,
    implied_namespaces,
)
from clusterset.model.ids import ClusterId, InvalidName, ServiceKey
from clusterset.model.objects import EndpointSlice, IPFamily
from clusterset.model.state import ClusterSetState, ClusterState, ImportedView
from clusterset.reconcile import allocate, clustersetips, desired
from clusterset.reconcile.aggregate import Aggregate

log = logging.getLogger(__name__)


def next_generation(previous: int) -> int:
    """Monotonic across restarts (it becomes the SOA serial): unix seconds, or +1."""
    return max(previous + 1, int(time.time()))


def _same(view: ImportedView, served: ImportedView | None) -> bool:
    """Whether `view` serves what `served` did: then no new generation (a new SOA serial, the
    server's answer memo dropped) is made of a rescan that found nothing. Unchanged objects
    are the same objects, so this is mostly identity checks."""
    return served is not None and served == dataclasses.replace(
        view, generation=served.generation, observed_at=served.observed_at
    )


# Bad-input lines logged per change: beyond this, one summary line (30,000 bad objects must
# not mean 30,000 log lines each time one of them changes).
MAX_ERROR_LINES = 20


def _log_errors(errors: list[str], last: list[str]) -> list[str]:
    """Log only what changed: new problems (at most MAX_ERROR_LINES, then a count) and how
    many were fixed. `clusterset status` lists them all."""
    if errors == last:
        return errors
    before = set(last)
    new = [e for e in errors if e not in before]
    for e in new[:MAX_ERROR_LINES]:
        log.error("%s", e)
    if len(new) > MAX_ERROR_LINES:
        log.error(
            "... and %d more new problem(s) (%d in all; `clusterset status` lists them)",
            len(new) - MAX_ERROR_LINES,
            len(errors),
        )
    fixed = len(before - set(errors))
    if fixed:
        log.info("%d problem(s) fixed; %d remain", fixed, len(errors))
    return errors


class _Outage:
    """The last source failure, logged once (and once again when it is over)."""

    def __init__(self) -> None:
        self.problem: str | None = None

    def failed(self, problem: str) -> None:
        if problem != self.problem:
            log.error("%s; serving the last good zone", problem)
        self.problem = problem

    def bug(self, exc: Exception) -> None:
        problem = f"internal error reading the folders ({type(exc).__name__}: {exc}); please report"
        if problem != self.problem:
            log.exception("%s; serving the last good zone", problem)
        self.problem = problem

    def ok(self) -> None:
        if self.problem is not None:
            log.info("source readable again (was: %s)", self.problem)
        self.problem = None


class FolderFeed:
    """One cluster's imported view from DIR."""

    def __init__(
        self,
        root: Path,
        *,
        cluster: ClusterId | None = None,
        progress: ReadProgress | None = None,
    ) -> None:
        if not root.is_dir():
            raise SourceError(f"--manifests {root}: not a directory")
        self.root = root
        self.cluster = cluster
        self.progress = progress  # told how far the first read is (a terminal's bar)
        self.reader = FolderReader(root)
        self.reader.files()  # unreadable at start: SourceError, one line and exit 2
        self.generation = 0
        self.errors: list[str] = []
        self._grouped: tuple[Mapping[str, EndpointSlice], Grouped] | None = None
        self._served: ImportedView | None = None

    def _group(self, slices: Mapping[str, EndpointSlice]) -> Grouped:
        """group_slices, grouping again only the services whose slices changed."""
        grouped = group_slices(slices, self._grouped)
        self._grouped = (slices, grouped)
        return grouped

    def snapshot(self, changed: Collection[Path] | None = None) -> ImportedView:
        """The view now; `changed`: the watcher's paths (None: look at every file). Nothing
        changed since the last one: that view itself (the same generation)."""
        if changed is not None and self.root in changed:
            changed = None  # the folder itself was made or moved
        progress, self.progress = self.progress, None  # the first read only
        if progress is not None:
            progress.start(len(self.reader.files()))
        try:
            objs, errors = self.reader.read(changed, progress)
        finally:
            release_workers()  # only a first read of a big folder uses them
            if progress is not None:
                progress.stop()
        self.errors = _log_errors(errors, self.errors)
        view = ImportedView(
            cluster=self.cluster,
            imports=dict(objs.imports),
            slices=self._group(objs.mcs_slices),
            namespaces=implied_namespaces(objs),
            local_services=dict(objs.services),
            observed_at=time.time(),
            cluster_source="--cluster" if self.cluster else "",
        )
        if self._served is not None and _same(view, self._served):
            return self._served
        self.generation = next_generation(self.generation)
        self._served = dataclasses.replace(view, generation=self.generation)
        return self._served

    async def views(self, stop: asyncio.Event | None = None) -> AsyncGenerator[ImportedView, None]:
        """A view per change; while the folder cannot be read, none (the last one serves)."""
        outage = _Outage()
        served: ImportedView | None = None
        async for changed in changes([self.root], stop=stop):
            try:
                view = await asyncio.to_thread(self.snapshot, changed)
            except SourceError as exc:
                outage.failed(str(exc))
                continue
            except Exception as exc:  # a bug must not stop DNS: keep the zone we have
                outage.bug(exc)
                continue
            outage.ok()
            if view is not served:  # a rescan that found nothing: no new generation
                served = view
                yield view


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
    """Every member from ROOT/<cluster>/, reconciled; views as one member sees them.

    `read_only` (status, render, resolve): allocations are read and computed the same
    way, but the state file is never written, renamed or created.

    `follow` (`run --workers`, every worker but 0): one process allocates, the others
    serve what it wrote. Workers allocating each from its own history gave two colliding
    services opposite addresses in different workers (issue 20). A follower re-reads the
    state file whenever it changes, never writes it, and serves no view of a consumer
    until the file holds an address for every service it imports.
    """

    def __init__(
        self,
        root: Path,
        *,
        cidrs: Mapping[IPFamily, allocate.Network],
        state_file: Path | None = None,
        read_only: bool = False,
        follow: bool = False,
        progress: ReadProgress | None = None,
    ) -> None:
        if not root.is_dir():
            raise SourceError(f"--manifests {root}: not a directory")
        self.root = root
        self.cidrs = cidrs
        self.read_only = read_only
        self.follow = follow
        self.progress = progress  # told how far the first read is (a terminal's bar)
        self.read_seconds = 0.0  # how long the last read of the folders took
        self.state_file = state_file if state_file is not None else default_state_file(root)
        self.readers: dict[Path, FolderReader] = {}
        self.generation = 0
        self.errors: list[str] = []
        self.ids: dict[Path, ClusterId] = {}
        # Each folder's last readable content: an unreadable folder keeps serving it.
        self.last: dict[Path, ClusterState] = {}
        self.exhausted: dict[tuple[ClusterId, ServiceKey], str] = {}  # as last logged
        self.unreadable: list[str] = []  # member folders the last read could not list
        self._objects: dict[Path, Objects] = {}  # each folder's objects at the last read
        # The last pass, which the next one updates where its inputs changed.
        self._state: ClusterSetState | None = None
        self._desired: desired.Desired | None = None
        self._assigned: clustersetips.Assigned | None = None
        self._served: ImportedView | None = None  # the last view made (see view())
        self._file_seen = _stat(self.state_file)
        # Per consumer, the services a follower has no address for yet (the allocator's
        # next write brings them).
        self.lacking: dict[ClusterId, list[ServiceKey]] = {}
        self.allocations, problems = allocations.load(
            self.state_file, keep_aside=not (read_only or follow), cidrs=cidrs
        )
        for p in problems:
            log.error("%s", p)
        self._dirty = bool(problems)
        self._save_problem = ""

    def _save_state(self) -> None:
        if self.read_only or self.follow:
            return
        try:
            allocations.save(self.state_file, self.allocations)
            self._dirty, self._save_problem = False, ""
        except OSError as exc:
            self._dirty = True  # try again on the next pass; say so once
            if str(exc) != self._save_problem:
                log.warning("cannot save ClusterSetIP allocations to %s: %s", self.state_file, exc)
            self._save_problem = str(exc)

    def folders(self) -> list[Path]:
        try:
            return sorted(
                p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")
            )
        except OSError as exc:
            raise SourceError(f"{self.root}: cannot read folder: {exc.strerror or exc}") from exc

    def check(self, cluster: ClusterId) -> Observed:
        """The first read, strict: an unreadable folder or an unknown --cluster is fatal."""
        observed = self.observe(quiet=True)
        if self.unreadable:
            raise SourceError(self.unreadable[0])
        if cluster not in observed.state.clusters:
            raise SourceError(
                f"--cluster {cluster}: no folder under {self.root} has this cluster ID "
                f"(found: {', '.join(sorted(observed.state.clusters)) or 'none'})"
            )
        _log_read(observed.state, self.read_seconds)
        self.errors = _log_errors(observed.errors, [])
        return observed

    def _read_folders(
        self,
        errors: list[str],
        changed: Collection[Path] | None,
        progress: ReadProgress | None = None,
    ) -> dict[ClusterId, ClusterState]:
        """Each folder's ClusterState; one cluster ID claimed by two folders: the folder
        that held it keeps it, else the folder named like the ID, else the first by name.

        `changed` (the watcher's paths; None: unknown) limits what is looked at again; a
        folder whose objects are the same as last time keeps the same ClusterState, so
        that reconcile can tell what changed by identity."""
        found: dict[Path, ClusterState] = {}
        folders = self.folders()
        self.unreadable = []
        hinted = _by_folder(changed)
        for folder in folders:
            cs = self._read_folder(folder, hinted, errors, progress)
            if cs is not None:
                found[folder] = cs
        for gone in set(self.readers) - set(folders):
            del self.readers[gone]
        clusters = self._claim(found, errors)
        for gone in set(self._objects) - set(folders):
            del self._objects[gone]
        return clusters

    def _read_folder(
        self,
        folder: Path,
        hinted: dict[Path, list[Path]] | None,
        errors: list[str],
        progress: ReadProgress | None,
    ) -> ClusterState | None:
        """One folder's ClusterState (None: skipped); unreadable, its last good one."""
        reader = self.readers.get(folder)
        if reader is None:
            reader = self.readers[folder] = FolderReader(folder)
        try:
            # The folder itself in `changed` (made, moved): look at all of it.
            paths = None
            if hinted is not None and folder not in hinted.get(self.root, ()):
                paths = hinted.get(folder, [])
            objs, errs = reader.read(paths, progress)
        except SourceError as exc:
            self.unreadable.append(str(exc))
            kept = self.last.get(folder)
            errors.append(
                f"{exc}; "
                + (f"keeping its last good content ({kept.cluster})" if kept else "skipped")
            )
            return kept
        errors.extend(errs)
        cid = self._cluster_id(folder, objs, errors)
        if cid is None:
            return None
        was = self.last.get(folder)
        if was is not None and self._objects.get(folder) is objs and was.cluster == cid:
            return was
        seen = self._objects.get(folder)
        self._objects[folder] = objs
        return ClusterState(
            cluster=cid,
            services=dict(objs.services),
            exports=dict(objs.exports),
            slices=group_slices(objs.slices, (seen.slices, was.slices) if seen and was else None),
            namespaces=implied_namespaces(objs),
            properties=dict(objs.properties),
        )

    def _cluster_id(self, folder: Path, objs: Objects, errors: list[str]) -> ClusterId | None:
        """The folder's cluster ID; an invalid one keeps the ID it had (None: it had none)."""
        try:
            return cluster_name(folder, objs)
        except InvalidName as exc:
            previous = self.ids.get(folder)
            errors.append(
                f"{folder}: cluster ID: {exc}"
                + (f"; keeping {previous!r}" if previous else "; folder skipped")
            )
            return previous

    def _claim(
        self, found: dict[Path, ClusterState], errors: list[str]
    ) -> dict[ClusterId, ClusterState]:
        """One folder per cluster ID (the rule: _read_folders); each other folder that
        claims it is skipped, with one line."""
        by_id: dict[ClusterId, list[Path]] = {}
        for folder, cs in found.items():
            by_id.setdefault(cs.cluster, []).append(folder)
        clusters: dict[ClusterId, ClusterState] = {}
        ids: dict[Path, ClusterId] = {}
        last: dict[Path, ClusterState] = {}
        for cid, paths in sorted(by_id.items()):
            held = [p for p in paths if self.ids.get(p) == cid]
            named = [p for p in paths if p.name == cid]
            winner = (held or named or paths)[0]
            errors.extend(
                f"{p}: cluster ID {cid!r} is already used by {winner}; this folder is skipped"
                for p in paths
                if p != winner
            )
            clusters[cid] = found[winner]
            ids[winner] = cid
            last[winner] = found[winner]
        self.ids, self.last = ids, last
        return clusters

    def observe(self, *, quiet: bool = False, changed: Collection[Path] | None = None) -> Observed:
        """Read the folders, allocate, reconcile; `quiet`: leave logging bad input to the
        caller. `changed`: the paths the watcher saw change (None: look at everything).

        Each pass updates the last one where its inputs changed (desired.changed_keys);
        the result equals a pass from scratch."""
        errors: list[str] = []
        state = self._read(errors, changed, quiet=quiet)
        keys = desired.changed_keys(self._state, state) if self._state is not None else None
        before = self._desired
        aggregates = desired.aggregate_all(
            state, previous=before.aggregates if before else None, changed=keys
        )
        assigned = self._assign(state, aggregates, keys)
        if not quiet:
            self.errors = _log_errors(errors, self.errors)
        result = desired.reconcile(
            state, ips=assigned.ips, aggregates=aggregates, previous=before, changed=keys
        )
        self._state, self._desired, self._assigned = state, result, assigned
        if self.exhausted:
            result = clustersetips.with_exhaustion(result, self.exhausted)
        return Observed(state, result, errors)

    def _read(
        self, errors: list[str], changed: Collection[Path] | None, *, quiet: bool
    ) -> ClusterSetState:
        """The folders read. The first read says what it is doing, unless the caller
        (check(), status) says itself: a start that fails must be one error line."""
        say = self._state is None and not self.read_only and not quiet
        started = time.monotonic()
        if say:
            log.info("reading %s (one folder per cluster)", self.root)
        progress, self.progress = self.progress, None  # the first read only
        if progress is not None:
            progress.start(_count_files(self.folders()))
        try:
            clusters = self._read_folders(errors, changed, progress)
        finally:
            release_workers()  # only a first read of a big folder uses them
            if progress is not None:
                progress.stop()
        state = ClusterSetState(clusters)
        self.read_seconds = time.monotonic() - started
        if say:
            _log_read(state, self.read_seconds)
        return state

    def _assign(
        self,
        state: ClusterSetState,
        aggregates: Mapping[ServiceKey, Aggregate],
        keys: set[ServiceKey] | None,
    ) -> clustersetips.Assigned:
        """This pass's ClusterSetIPs, by the policy: saved (the allocator) or waited for (a
        follower, until the allocator's file holds them); running out is logged once."""
        reloaded = self.follow and self._reload_allocations()
        assigned = clustersetips.assign(
            aggregates,
            {cid: desired.namespaces_of(state, cid) for cid in state.clusters},
            cidrs=self.cidrs,
            allocations=self.allocations,
            follow=self.follow,
            before=None if reloaded else self._assigned,
            changed=keys,
        )
        self.allocations = assigned.allocations
        if self.follow:
            self.lacking = {cid: c.lacking for cid, c in assigned.consumers.items()}
        if self._dirty or assigned.updated:
            self._save_state()
        exhausted = assigned.exhausted()
        for (cid, k), ranges in sorted(exhausted.items()):
            if self.exhausted.get((cid, k)) != ranges:
                log.error("%s in %s: no free ClusterSetIP left in %s", k, cid, ranges)
        self.exhausted = exhausted
        return assigned

    def _reload_allocations(self) -> bool:
        """A follower's state file changed: take the allocator's addresses (True)."""
        seen = _stat(self.state_file)
        if seen == self._file_seen:
            return False
        self._file_seen = seen
        self.allocations, problems = allocations.load(
            self.state_file, keep_aside=False, cidrs=self.cidrs
        )
        for p in problems:  # the allocator renames a whole file into place: a real problem
            log.warning("%s", p)
        return True

    def view(self, observed: Observed, cluster: ClusterId) -> ImportedView:
        """What `cluster` serves; the last view itself when nothing in it changed (the same
        generation, so the same SOA serial)."""
        if cluster not in observed.desired.clusters:
            view = ImportedView(cluster, {}, {}, ALWAYS_NAMESPACES, {})
        else:
            view = observed.desired.view(cluster, observed.state, 0)
            view = dataclasses.replace(view, observed_at=time.time(), cluster_source="--cluster")
        if _same(view, self._served):
            assert self._served is not None
            return self._served
        self.generation = next_generation(self.generation)
        self._served = dataclasses.replace(view, generation=self.generation)
        return self._served

    async def views(
        self, cluster: ClusterId, stop: asyncio.Event | None = None
    ) -> AsyncGenerator[ImportedView, None]:
        """A view per change; while ROOT cannot be read, none (the last one serves)."""
        outage = _Outage()
        served: ImportedView | None = None
        source = changes([self.root], stop=stop)
        if self.follow:
            source = _also_when_changed(source, self.state_file)
        async for changed in source:
            try:
                # Off the event loop: keep TCP answering meanwhile.
                observed = await asyncio.to_thread(self.observe, changed=changed)
            except SourceError as exc:
                outage.failed(str(exc))
                continue
            except Exception as exc:  # a bug must not stop DNS: keep the zone we have
                outage.bug(exc)
                continue
            outage.ok()
            if cluster not in observed.state.clusters:
                log.warning(
                    "cluster %r: no folder under %s has this cluster ID", cluster, self.root
                )
            if self.lacking.get(cluster):
                continue  # the allocator has not written their addresses yet: keep the last
            view = self.view(observed, cluster)
            if view is not served:  # a rescan that found nothing: no new generation
                served = view
                yield view


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


async def _also_when_changed(
    source: AsyncIterator[frozenset[Path] | None], path: Path, every: float = 0.05
) -> AsyncIterator[frozenset[Path] | None]:
    """`source`'s batches, and an empty batch (no folder changed) whenever `path` changes:
    polled, as the state file lives outside ROOT and is replaced by rename."""
    it = aiter(source)
    pending = asyncio.ensure_future(anext(it))
    seen = _stat(path)
    try:
        while True:
            done, _ = await asyncio.wait({pending}, timeout=every)
            if pending in done:
                try:
                    batch = pending.result()
                except StopAsyncIteration:
                    return
                pending = asyncio.ensure_future(anext(it))
                yield batch
            now = _stat(path)
            if now != seen:
                seen = now
                yield frozenset()
    finally:
        pending.cancel()


def _log_read(state: ClusterSetState, seconds: float) -> None:
    """The first read's one line: what it found and how long it took."""
    clusters = state.clusters.values()
    log.info(
        "read %d cluster folder(s) in %.1fs: %d exports, %d services, %d EndpointSlices",
        len(clusters), seconds, sum(len(c.exports) for c in clusters),
        sum(len(c.services) for c in clusters),
        sum(len(s) for c in clusters for s in c.slices.values()),
    )  # fmt: skip


def _count_files(folders: list[Path]) -> int:
    """Manifest files in `folders` (an unreadable one counts 0: its error comes with the read)."""
    total = 0
    for folder in folders:
        with contextlib.suppress(SourceError):
            total += len(FolderReader(folder).files())
    return total


def _by_folder(changed: Collection[Path] | None) -> dict[Path, list[Path]] | None:
    """The watcher's changed paths by the folder they are in (None: unknown)."""
    if changed is None:
        return None
    hinted: dict[Path, list[Path]] = {}
    for path in changed:
        hinted.setdefault(path.parent, []).append(path)
    return hinted
