"""Folder change notifications (watchfiles/inotify), debounced to well under a second."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
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


async def changes(
    paths: list[Path],
    *,
    stop: asyncio.Event | None = None,
    debounce_ms: int = 50,
    recheck: float = 1.0,
) -> AsyncIterator[None]:
    """Yield once at start, then after every batch of changes under `paths`.

    The watcher starts before the first yield, and the folders' fingerprint taken before
    the caller's first read is compared after it: an edit made during that read is not
    lost (watchfiles has no "watching now" signal to wait for). Every `recheck` seconds
    the folders' identity is compared too: one deleted, replaced or back after a failure
    yields and restarts the watcher, so the caller sees it go and come back.
    """
    queue: asyncio.Queue[None] = asyncio.Queue(maxsize=1)

    async def watch() -> None:
        async for _batch in watchfiles.awatch(
            *paths, debounce=debounce_ms, step=20, stop_event=stop, recursive=True
        ):
            if queue.empty():
                queue.put_nowait(None)

    def start() -> asyncio.Task[None]:
        return asyncio.create_task(watch(), name="watch-folders")

    identity = _identity(paths)
    task = start()
    try:
        await asyncio.sleep(0.05)  # let the watcher thread start
        if task.done():
            task.result()  # surface why the watcher could not start
        before = fingerprint(paths)
        yield None
        if fingerprint(paths) != before:
            yield None
        while True:
            try:
                await asyncio.wait_for(queue.get(), recheck)
            except TimeoutError:
                now = _identity(paths)
                if now == identity and (not task.done() or None in now):
                    continue
                identity = now
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                if None not in now:
                    task = start()
            yield None
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
