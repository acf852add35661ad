"""Folder change notifications (watchfiles/inotify), debounced to well under a second."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import watchfiles


async def changes(
    paths: list[Path], *, stop: asyncio.Event | None = None, debounce_ms: int = 50
) -> AsyncIterator[None]:
    """Yield once at start, then after every batch of changes under `paths`."""
    yield None
    async for _batch in watchfiles.awatch(
        *paths,
        debounce=debounce_ms,
        step=20,
        stop_event=stop,
        recursive=True,
        force_polling=False,
    ):
        yield None
