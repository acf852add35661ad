"""Read `DIR/*.yaml` (multi-document, or `kind: List` as `kubectl get -o yaml` writes it).

Bad input never loses state: a document that fails to parse or convert is
reported as one line (file, document index, kind/name, field) and the last
good version of what that file held is kept. A document is composed into YAML
nodes and its expansion counted before anything is built, so an alias bomb costs
a bounded walk, not gigabytes. One object defined twice (in two documents or two
files) is one line and a deterministic winner. A file over MAX_FILE_BYTES is not
read (one line; its last good content is kept), and one over INLINE_MAX is parsed in
a worker process, so that DNS answers meanwhile.
"""

from __future__ import annotations

import concurrent.futures
import copy
import logging
import multiprocessing
import os
import pickle
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from clusterset.manifests import fastyaml
from clusterset.model import convert
from clusterset.model.bag import Objects, add_object
from clusterset.model.ids import ClusterId, ServiceKey

log = logging.getLogger(__name__)
SUFFIXES = (".yaml", ".yml", ".json")
# libyaml's loader when PyYAML was built with it: ~7x faster on large folders (measured).
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# What one file may expand to, counting every node each time an alias or merge key reuses
# it: an alias-free file has fewer nodes than characters, so the allowance only stops
# "billion laughs" documents (nine nested anchors in 490 bytes expand to ~10^9 nodes).
NODE_FLOOR = 100_000
MAX_DEPTH = 100
# The most one manifest file may hold, checked before it is read: the apiserver refuses a
# request over 3 MiB (etcd stores at most 1.5 MiB an object), so no `kubectl get -o yaml`
# of one object is bigger. Unbounded, one 200 MB scalar held the GIL 2.2 s (issue 20).
MAX_FILE_BYTES = 3 * 1024 * 1024
# Files bigger than this are parsed in a worker process: measured with
# tests/stress/gil_gap.py, parsing here held the GIL from a UDP responder thread 9 ms at
# 64 KiB of small keys, 40 ms at 256 KiB, 360 ms at 3 MiB (collecting their nodes) and
# 39 ms for one 3 MiB scalar (libyaml scans it in one call).
INLINE_MAX = 64 * 1024


class SourceError(ValueError):
    """An unusable source (missing or unreadable folder, unknown cluster): exit 2 with this line."""


class TooLarge(ValueError):
    """A document that expands beyond its allowance (alias/merge bombs) or nests too deep."""


def _check_expansion(node: yaml.Node, budget: list[int]) -> None:
    """Walk `node` counting reuse; raise TooLarge once `budget[0]` nodes were visited."""
    stack: list[tuple[yaml.Node, int]] = [(node, 1)]
    while stack:
        cur, depth = stack.pop()
        budget[0] -= 1
        if budget[0] < 0:
            raise TooLarge("expands to too many nodes (alias or merge-key bomb?); ignored")
        if depth > MAX_DEPTH:
            raise TooLarge(f"nested deeper than {MAX_DEPTH} levels; ignored")
        if isinstance(cur, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in cur.value)
        elif isinstance(cur, yaml.MappingNode):
            for k, v in cur.value:
                stack.append((k, depth + 1))
                stack.append((v, depth + 1))


def _documents(text: str) -> Iterator[tuple[int, Any, str | None]]:
    """(index, document, problem) for each YAML document; errors do not stop the rest.

    Each document is composed into nodes first and its expansion bounded before any
    Python object is constructed (PyYAML's public get_node/construct_document), unless
    fastyaml proves its faster reading the same.
    """
    fast = fastyaml.documents(text, MAX_DEPTH)
    if fast is not None:
        yield from ((index, doc, None) for index, doc in enumerate(fast))
        return
    loader = _Loader(text)
    budget = [NODE_FLOOR + 2 * len(text)]
    index = 0
    try:
        while loader.check_node():
            try:
                node = loader.get_node()
                if node is None:
                    yield index, None, None
                else:
                    _check_expansion(node, budget)
                    yield index, loader.construct_document(node), None
            except TooLarge as exc:
                yield index, None, str(exc)
                if budget[0] < 0:
                    return  # the allowance is for the whole file
            except yaml.YAMLError as exc:
                yield index, None, _yaml_problem(exc)
                return
            except (RecursionError, MemoryError):
                yield index, None, "document too large or too deep; ignored"
                return
            index += 1
    except yaml.YAMLError as exc:
        yield index, None, _yaml_problem(exc)
    finally:
        loader.dispose()


def _yaml_problem(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    where = f" (line {mark.line + 1})" if mark is not None else ""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    return f"invalid YAML{where}: {problem}"


# One file's objects by document slot (None: unreadable) and its error lines.
Loaded = tuple[dict[str, Objects] | None, list[str]]
# One file as parsed, before its last good objects fill the gaps: each document slot's
# objects (None: a bad object, which keeps its last good copy), the error lines, and the
# first document that could not be read (it and all after keep theirs; None: all read).
# No slots at all: the file itself was not read.
Parsed = tuple[dict[str, Objects | None] | None, list[str], int | None]

# A first read of at least this many files loads them in worker processes (every core):
# parsing and converting are a cold start's time, in pure Python under the GIL (profiled).
PARALLEL_MIN = 200
_pool: concurrent.futures.ProcessPoolExecutor | None = None


class ReadProgress(Protocol):
    """Told how far a first read of many files is (a terminal's progress bar)."""

    def start(self, total: int) -> None: ...

    def advance(self, files: int) -> None: ...

    def stop(self) -> None: ...


def load_many(paths: list[Path], progress: ReadProgress | None = None) -> dict[Path, Loaded] | None:
    """Load files read for the first time on every core; None when there are too few or
    worker processes cannot be had (the caller loads them itself)."""
    if min(os.cpu_count() or 1, 8) < 2 or len(paths) < PARALLEL_MIN:
        return None
    try:
        results = _workers().map(_load_fresh, [str(p) for p in paths], chunksize=32)
        out = {}
        for path, loaded in zip(paths, results, strict=True):  # in order, as they come
            out[path] = loaded
            if progress is not None:
                progress.advance(1)
        return out
    except (OSError, RuntimeError, concurrent.futures.process.BrokenProcessPool) as exc:
        _workers_failed(exc)
        return None


def _workers() -> concurrent.futures.ProcessPoolExecutor:
    """The parse workers, started on demand (spawn starts one per task waiting, up to 8)."""
    global _pool
    if _pool is None:
        ctx = multiprocessing.get_context("spawn")  # never fork a threaded server
        _pool = concurrent.futures.ProcessPoolExecutor(min(os.cpu_count() or 1, 8), mp_context=ctx)
    return _pool


# Document slots a parse worker sends back per pickle: unpickling a 3 MiB file of 24,000
# small Services at once held this process's GIL ~20 ms (DNS waits meanwhile); in chunks,
# the GIL can go to the UDP threads between two.
CHUNK_SLOTS = 500


def _parse_aside(path: str) -> Parsed | None:
    """_parse in a worker process, so that this one's GIL stays free for DNS; None when no
    worker can be had (the caller parses here)."""
    try:
        packed, errors, first_bad = _workers().submit(_parse_packed, path).result()
    except (OSError, RuntimeError, concurrent.futures.process.BrokenProcessPool) as exc:
        _workers_failed(exc)
        return None
    if packed is None:
        return None, errors, first_bad
    slots: dict[str, Objects | None] = {}
    for chunk in packed:
        slots.update(pickle.loads(chunk))  # our own worker's bytes
    return slots, errors, first_bad


def _parse_packed(path: str) -> tuple[list[bytes] | None, list[str], int | None]:
    """_parse, in a worker process: its slots pickled CHUNK_SLOTS at a time."""
    slots, errors, first_bad = _parse(path)
    if slots is None:
        return None, errors, first_bad
    items = list(slots.items())
    chunks = [dict(items[i : i + CHUNK_SLOTS]) for i in range(0, len(items), CHUNK_SLOTS)]
    return [pickle.dumps(c, pickle.HIGHEST_PROTOCOL) for c in chunks], errors, first_bad


def _workers_failed(exc: BaseException) -> None:
    problem = " ".join(str(exc).split())[:200]  # one line
    log.warning("parsing in worker processes failed (%s); parsing here", problem)
    release_workers()


def release_workers() -> None:
    """Stop the parse workers (after a cold read, or a file over INLINE_MAX: other edits
    are parsed in-process)."""
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def _items(doc: Any) -> Iterator[tuple[str, Any]]:
    """Flatten `kind: List` (and *List kinds) into items with their index suffix."""
    items = doc.get("items") if isinstance(doc, Mapping) else None
    if isinstance(items, list) and str(doc.get("kind", "")).endswith("List"):
        for i, item in enumerate(items):
            yield f".items[{i}]", item
    else:
        yield "", doc


# Objects attributes by kind, for duplicate detection across files.
_KINDS = (
    ("imports", "ServiceImport"),
    ("exports", "ServiceExport"),
    ("services", "Service"),
    ("mcs_slices", "EndpointSlice"),
    ("slices", "EndpointSlice"),
    ("properties", "ClusterProperty"),
)


class FolderReader:
    """Reads one folder again and again, keeping each file's last good objects.

    One object (kind, namespace/name) defined in two files is an error line; the file
    that held it at the previous read keeps it (what was served stays served), else the
    file whose name sorts first.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._good: dict[Path, dict[str, Objects]] = {}
        self._parsed: dict[Path, tuple[tuple[int, ...], Objects, list[str]]] = {}
        self._owner: dict[tuple[str, str], Path] = {}
        self._files: list[Path] = []
        self._result: tuple[Objects, list[str]] | None = None

    def files(self) -> list[Path]:
        """The folder's manifest files; SourceError when the folder cannot be listed."""
        try:
            with os.scandir(self.root) as entries:
                found = [
                    Path(e.path)
                    for e in entries
                    if os.path.splitext(e.name)[1] in SUFFIXES and e.is_file()
                ]
        except OSError as exc:
            raise SourceError(f"{self.root}: cannot read folder: {exc.strerror or exc}") from exc
        return sorted(found, key=str)  # one folder: by name (Path's own order is slow)

    def read(
        self, changed: Collection[Path] | None = None, progress: ReadProgress | None = None
    ) -> tuple[Objects, list[str]]:
        """All objects of the folder now, and one error line per bad document.

        `changed`: the only files that may differ since the last read (the watcher's
        paths); the others are neither listed nor stat'ed again. None: look at every
        file. Nothing changed: the previous result itself, the same objects, so that
        what consumes it can tell by identity that this folder is as it was. A first read
        of many files is loaded on every core (load_many).
        """
        if self._result is not None and changed is not None:
            if not changed:
                return self._result
            files, recheck = self._files, []
            now = set(files)
            for path in changed:
                if path.parent != self.root or path.suffix not in SUFFIXES:
                    continue
                if path.is_file():
                    recheck.append(path)
                    now.add(path)
                else:
                    now.discard(path)
            if len(now) != len(files) or not now.issuperset(files):
                files = sorted(now, key=str)
        else:
            files = recheck = self.files()
            if files == self._files:
                files = self._files
        swaps: dict[Path, tuple[tuple[Objects, list[str]] | None, tuple[Objects, list[str]]]] = {}
        loaded = load_many(list(recheck), progress) if not self._parsed else None
        for path in recheck:
            before = self._parsed.get(path)
            got = self._read_file(path, loaded.get(path) if loaded is not None else None)
            if loaded is None and progress is not None:
                progress.advance(1)
            if before is None or got[0] is not before[1]:
                swaps[path] = ((before[1], before[2]) if before is not None else None, got)
        if files is self._files and self._result is not None:
            if not swaps:
                return self._result
            patched = self._patch(swaps)
            if patched is not None:
                self._result = patched
                return patched
        self._result = self._merge(files, {p: new for p, (_old, new) in swaps.items()})
        self._files = files
        return self._result

    def _patch(
        self,
        swaps: Mapping[Path, tuple[tuple[Objects, list[str]] | None, tuple[Objects, list[str]]]],
    ) -> tuple[Objects, list[str]] | None:
        """The last result with the new values of changed files, when only values changed:
        the same objects (kind, namespace/name), each owned by its file, the same errors.
        None: merge again (what any other change needs)."""
        assert self._result is not None
        out = copy.copy(self._result[0])
        for path, (old, new) in swaps.items():
            if old is None or old[1] != new[1]:
                return None
            was, now = old[0], new[0]
            if (
                was.namespaces != now.namespaces
                or was.karmada_imports != now.karmada_imports
                or was.own_services != now.own_services
                or was.karmada_derived_candidates != now.karmada_derived_candidates
            ):
                return None
            for attr, kind in _KINDS:
                theirs: dict[Any, Any] = getattr(now, attr)
                if theirs.keys() != getattr(was, attr).keys():
                    return None
                if any(self._owner.get((kind, str(key))) != path for key in theirs):
                    return None
            for attr, _kind in _KINDS:
                theirs = getattr(now, attr)
                if theirs and theirs != getattr(was, attr):
                    mine = dict(getattr(out, attr))  # copy on write: the last result stays
                    mine.update(theirs)
                    setattr(out, attr, mine)
        return out, self._result[1]

    def _merge(
        self, files: list[Path], latest: Mapping[Path, tuple[Objects, list[str]]]
    ) -> tuple[Objects, list[str]]:
        """Every file's objects together (files not in `latest` as last parsed)."""
        out = Objects()
        errors: list[str] = []
        per_file: dict[Path, Objects] = {}
        for path in files:
            got = latest.get(path)
            if got is None:
                cached = self._parsed.get(path)
                got = (cached[1], cached[2]) if cached is not None else self._read_file(path)
            objs, errs = got
            per_file[path] = objs
            errors.extend(errs)
        claims: dict[tuple[str, str], list[Path]] = {}
        for path in files:
            for attr, kind in _KINDS:
                for key in getattr(per_file[path], attr):
                    claims.setdefault((kind, str(key)), []).append(path)
        owner: dict[tuple[str, str], Path] = {}
        for ref, paths in claims.items():
            previous = self._owner.get(ref)
            winner = previous if previous in paths else paths[0]
            owner[ref] = winner
            errors.extend(
                f"{p}: {ref[0]} {ref[1]}: also defined in {winner}, which is used; "
                "this copy is ignored"
                for p in paths
                if p != winner
            )
        self._owner = owner
        for path in files:
            objs = per_file[path]
            out.merge(objs)
        for (kind, key), path in owner.items():
            if len(claims[(kind, key)]) > 1:
                _take(out, per_file[path], kind, key)
        seen = set(files)
        for gone in set(self._good) - seen:
            del self._good[gone]
        for gone in set(self._parsed) - seen:
            del self._parsed[gone]
        return out, errors

    def _read_file(self, path: Path, loaded: Loaded | None = None) -> tuple[Objects, list[str]]:
        """`loaded`: what a worker made of the file already. The change time is in the
        stamp: a chmod changes nothing else, and a file made unreadable must be reported."""
        try:
            st = path.stat()
            stamp: tuple[int, ...] | None = (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)
        except OSError:
            st, stamp = None, None
        cached = self._parsed.get(path)
        if stamp is not None and cached is not None and cached[0] == stamp:
            return cached[1], cached[2]  # unchanged since the last read: no re-parse
        objs, errors = self._parse_file(path, loaded, st.st_size if st is not None else 0)
        if stamp is not None:
            self._parsed[path] = (stamp, objs, errors)
        return objs, errors

    def _parse_file(
        self, path: Path, loaded: Loaded | None = None, size: int = 0
    ) -> tuple[Objects, list[str]]:
        """`loaded`: what a worker made of the file already (first reads only: no history);
        `size`: its size when stat'ed (over INLINE_MAX: parsed in a worker)."""
        previous = self._good.get(path, {})
        current, errors = loaded if loaded is not None else _load(str(path), previous, size)
        if current is None:
            return _union(previous), errors
        self._good[path] = current
        return _union(current, errors, path), errors


def _load(path: str, previous: Mapping[str, Objects], size: int = 0) -> Loaded:
    """One file's objects by document slot, and its error lines. A bad document keeps its
    slot's `previous` objects; None: the file is unreadable (keep all of `previous`).
    `size` (as stat'ed) over INLINE_MAX: parsed in a worker process."""
    parsed = _parse_aside(path) if INLINE_MAX < size <= MAX_FILE_BYTES else None
    slots, errors, broken = parsed if parsed is not None else _parse(path)
    if slots is None:
        return None, errors
    current = {
        slot: objs if objs is not None else previous[slot]
        for slot, objs in slots.items()
        if objs is not None or slot in previous
    }
    if broken is not None:
        current.update({k: v for k, v in previous.items() if _doc_index(k) >= broken})
    return current, errors


def _too_big(path: str) -> Parsed:
    """One line naming the file and the bound; the file keeps its last good content."""
    line = (
        f"{path}: larger than {MAX_FILE_BYTES} bytes (3 MiB, what the apiserver accepts); "
        "not read, its last good content is kept"
    )
    return None, [line], None


def _read(path: str) -> str | Parsed:
    """The file's text, at most MAX_FILE_BYTES of it; else why not (one line)."""
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_FILE_BYTES:
                return _too_big(path)
            data = f.read(MAX_FILE_BYTES + 1)  # it may have grown since
        if len(data) > MAX_FILE_BYTES:
            return _too_big(path)
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [f"{path}: unreadable: {exc}"], None


def _parse(path: str) -> Parsed:
    """Read and convert one file (anywhere: no history needed, see Parsed)."""
    text = _read(path)
    if not isinstance(text, str):
        return text
    current: dict[str, Objects | None] = {}
    errors: list[str] = []
    for index, doc, problem in _documents(text):
        if problem is not None:
            errors.append(f"{path}: document {index}: {problem}")
            return current, errors, index  # the rest keeps its last good objects
        if doc is None:
            continue
        for suffix, item in _items(doc):
            slot = f"{index}{suffix}"
            one = Objects()
            try:
                add_object(one, item)
            except convert.ObjectError as exc:
                errors.append(f"{path}: document {slot}: {exc}")
                current[slot] = None
                continue
            except Exception as exc:  # a conversion bug costs this object, not the folder
                errors.append(
                    f"{path}: document {slot}: internal error converting it "
                    f"({type(exc).__name__}: {str(exc)[:200]}); please report"
                )
                current[slot] = None
                continue
            current[slot] = one
    return current, errors, None


def _load_fresh(path: str) -> Loaded:
    """_load in a worker process, for a file read for the first time (no history)."""
    return _load(path, {})


def _take(out: Objects, winner: Objects, kind: str, key: str) -> None:
    """Put the winner's copy of (kind, key) back into `out` after a plain merge."""
    ns, _, name = key.partition("/")
    for attr, k in _KINDS:
        if k != kind:
            continue
        mine: dict[Any, Any] = getattr(out, attr)
        theirs: dict[Any, Any] = getattr(winner, attr)
        for candidate in (key, ServiceKey(ns, name)):
            mine.pop(candidate, None)
            if candidate in theirs:
                mine[candidate] = theirs[candidate]


def _doc_index(slot: str) -> int:
    return int(slot.split(".", 1)[0])


def _union(
    parts: Mapping[str, Objects], errors: list[str] | None = None, path: Path | None = None
) -> Objects:
    """The documents of one file together; an object defined twice: the first document's
    copy is used, and (with `errors`) one line names the later one."""
    out = Objects()
    seen: dict[tuple[str, str], str] = {}
    for slot in sorted(parts, key=lambda s: (_doc_index(s), s)):
        part = parts[slot]
        later: dict[str, set[Any]] = {}
        for attr, kind in _KINDS:
            for key in getattr(part, attr):
                first = seen.setdefault((kind, str(key)), slot)
                if first == slot:
                    continue
                later.setdefault(attr, set()).add(key)
                if errors is not None:
                    errors.append(
                        f"{path}: document {slot}: {kind} {key}: also defined in document "
                        f"{first}, which is used; this copy is ignored"
                    )
        if later:
            part = copy.copy(part)  # the parsed document stays as it was (it is cached)
            for attr, keys in later.items():
                kept = {k: v for k, v in getattr(part, attr).items() if k not in keys}
                setattr(part, attr, kept)
        out.merge(part)
    return out


def cluster_name(folder: Path, objs: Objects) -> ClusterId:
    """A folder's cluster ID: its ClusterProperty cluster.clusterset.k8s.io, else its name."""
    from clusterset.model.ids import cluster_id

    return cluster_id(objs.properties.get(convert.CLUSTER_ID_PROPERTY, folder.name))
