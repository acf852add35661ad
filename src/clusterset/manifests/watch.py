"""Folder change notifications (watchfiles/inotify), debounced to well under a second."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import watchfiles


def fingerprint(paths: list[Path]) -> frozenset[tuple[str, int, int, int]]:
    """(path, mtime, size, inode) of every file below `paths`."""
    out = set()
    for root in paths:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                p = os.path.join(dirpath, f)
                with contextlib.suppress(OSError):
                    st = os.stat(p)
                    out.add((p, st.st_mtime_ns, st.st_size, st.st_ino))
    return frozenset(out)


def _identity(paths: list[Path]) -> tuple[tuple[int, int] | None, ...]:
    """(device, inode) of each path, None when missing: a folder deleted and recreated
    is a new inode that the running watcher does not see."""
    out: list[tuple[int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
            out.append((st.st_dev, st.st_ino))
        except OSError:
            out.append(None)
    return tuple(out)


def _as_given(roots: list[Path]) -> Callable[[str], Path]:
    """A reported path in the form its root was given: the watcher reports absolute paths
    (symlinks resolved), the readers compare with paths under ROOT as the user typed it."""
    forms = [(r, f) for r in roots for f in dict.fromkeys((r.absolute(), r.resolve()))]

    def convert(reported: str) -> Path:
        p = Path(reported)
        for root, form in forms:
            if p.is_relative_to(form):
                return root / p.relative_to(form)
        return p

    return convert


# Changed paths named at most per batch; a burst of more (a folder replaced wholesale, a
# flood of files) is handed over as None: look at everything.
MAX_NAMED = 10_000


async def changes(
    paths: list[Path],
    *,
    stop: asyncio.Event | None = None,
    debounce_ms: int = 50,
    recheck: float = 1.0,
    rescan: float = 60.0,
) -> AsyncIterator[frozenset[Path] | None]:
    """Yield at start, then after every batch of changes under `paths`: the paths that
    changed since the last yield, or None for "look at everything".

    None comes first, after a restart of the watcher, and every `rescan` seconds (the
    safety net: a full look, should the watcher ever miss an event). The watcher starts
    before the first yield, and the folders' fingerprint taken before the caller's first
    read is compared after it: an edit made during that read is not lost (watchfiles has
    no "watching now" signal to wait for). Every `recheck` seconds the folders' identity
    is compared too: one deleted, replaced or back after a failure yields and restarts
    the watcher, so the caller sees it go and come back.
    """
    pending: set[Path] = set()
    wake = asyncio.Event()
    as_given = _as_given(paths)

    async def watch() -> None:
        async for batch in watchfiles.awatch(
            *paths, debounce=debounce_ms, step=5, stop_event=stop, recursive=True
        ):
            if len(pending) <= MAX_NAMED:  # beyond that, a full look (memory stays bounded)
                pending.update(as_given(p) for _change, p in batch)
            wake.set()

    def start() -> asyncio.Task[None]:
        return asyncio.create_task(watch(), name="watch-folders")

    identity = _identity(paths)
    task = start()
    loop = asyncio.get_running_loop()
    try:
        await asyncio.sleep(0.05)  # let the watcher thread start
        if task.done():
            task.result()  # surface why the watcher could not start
        before = fingerprint(paths)
        yield None
        if fingerprint(paths) != before:
            yield None
        full_at = loop.time() + rescan
        while True:
            try:
                async with asyncio.timeout(recheck):
                    await wake.wait()
            except TimeoutError:
                now = _identity(paths)
                if now == identity and (not task.done() or None in now):
                    if loop.time() < full_at:
                        continue
                else:
                    identity = now
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task
                    if None not in now:
                        task = start()
                full_at = loop.time() + rescan
                pending.clear()
                wake.clear()
                yield None
                continue
            wake.clear()
            batch = frozenset(pending) if len(pending) <= MAX_NAMED else None
            pending.clear()
            yield batch
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
