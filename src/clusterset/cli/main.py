"""`clusterset`: dns | run | controller | status | render | resolve | corefile | check |
wire-dns | gather | version | completion, one module per command, named after it (wiredns:
wire-dns); importing a module registers its command on the app.
Installed also as `kubectl-clusterset`, so that `kubectl clusterset status` works.

Errors the user can fix (bad flags, unreadable sources) print one line on
stderr and exit 2; nothing prints a traceback.
"""

from __future__ import annotations

import os
import sys

import typer

# Typer vendors Click (typer._click) since 0.2x; its parse errors are that Click's classes.
from typer._click import exceptions as click

# Importing a command module registers its commands; this order is the order of --help.
# isort: off
from clusterset.cli import (  # noqa: F401
    dns,
    run,
    controller,
    status,
    render,
    resolve,
    corefile,
    check,
    wiredns,
    gather,
    version,
    completion,
)

# isort: on
from clusterset.cli.common import app
from clusterset.cli.workers import INTERRUPTED
from clusterset.kube.api import ConfigError
from clusterset.manifests.load import SourceError
from clusterset.server.app import ListenError

__all__ = ["app", "main"]  # app: with every command registered


def main() -> None:
    """Entry point: usage problems and unreadable sources are one line and exit code 2."""
    command = typer.main.get_command(app)
    # As a kubectl plugin (`kubectl clusterset ...`), usage lines say so.
    plugin = os.path.basename(sys.argv[0]) == "kubectl-clusterset"
    try:
        # Not standalone, Typer returns an Exit's code (Ctrl-C is Exit(130)) instead of exiting;
        # the commands themselves return None.
        code = command.main(
            args=sys.argv[1:],
            prog_name="kubectl clusterset" if plugin else "clusterset",
            complete_var=completion.COMPLETE_VAR,
            standalone_mode=False,
        )
        if isinstance(code, int) and code:
            sys.exit(code)
    except typer.Abort:  # end of input at a prompt
        sys.exit(INTERRUPTED)
    except click.UsageError as exc:
        print(f"clusterset: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except (SourceError, ListenError, ConfigError) as exc:
        print(f"clusterset: error: {exc}", file=sys.stderr)
        sys.exit(2)
