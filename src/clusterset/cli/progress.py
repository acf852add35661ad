"""A progress bar on stderr for the first read of a manifest folder, when stderr is a
terminal (logs and pipes get the start-up lines only): files read of files found, with the
time spent, gone once the read is done."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clusterset.cli.workers import worker_index
from clusterset.manifests.load import ReadProgress


class TerminalProgress:
    """rich's Progress behind manifests.load.ReadProgress (thread-safe: the read runs in a
    worker thread)."""

    def __init__(self) -> None:
        self._bar = Progress(
            TextColumn("reading manifests"), BarColumn(), MofNCompleteColumn(),
            TextColumn("files"), TimeElapsedColumn(),
            console=Console(file=sys.stderr), transient=True,
        )  # fmt: skip
        self._task = self._bar.add_task("read", total=None)

    def start(self, total: int) -> None:
        self._bar.update(self._task, total=total)
        self._bar.start()

    def advance(self, files: int) -> None:
        self._bar.advance(self._task, files)

    def stop(self) -> None:
        self._bar.stop()


def on_terminal() -> ReadProgress | None:
    """A progress bar when stderr is a terminal (and this is not one of several --workers,
    which would draw over each other), else None."""
    return TerminalProgress() if sys.stderr.isatty() and worker_index() is None else None
