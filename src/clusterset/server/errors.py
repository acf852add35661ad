"""Errors the user can fix at start: the CLI prints them as one line and exits 2."""

from __future__ import annotations


class ListenError(ValueError):
    """An address we cannot listen on, or that would make us forward to ourselves."""
