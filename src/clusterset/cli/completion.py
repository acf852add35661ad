"""`clusterset completion bash|zsh|fish|powershell`: the shell completion script, printed
(kubectl's, cilium's and subctl's form). Completion itself is Typer's, over Click's
protocol: the script calls back with _CLUSTERSET_COMPLETE set."""

from __future__ import annotations

from typing import Annotated

import typer

# Typer vendors Click (typer._click) since 0.2x; its completion registry is that Click's.
from typer._click import shell_completion

from clusterset.cli.common import UsageProblem, app

SHELLS = ("bash", "zsh", "fish", "powershell")
COMPLETE_VAR = "_CLUSTERSET_COMPLETE"


@app.command()
def completion(
    shell: Annotated[str, typer.Argument(help="bash|zsh|fish|powershell")],
) -> None:
    """Print the shell completion script.

    \b
    Examples:
      source <(clusterset completion bash)
      clusterset completion zsh > "${fpath[1]}/_clusterset"
      clusterset completion fish > ~/.config/fish/completions/clusterset.fish
    """
    cls = shell_completion.get_completion_class(shell) if shell in SHELLS else None
    if cls is None:
        raise UsageProblem(f"completion {shell!r}: expected {', '.join(SHELLS)}")
    command = typer.main.get_command(app)
    typer.echo(cls(command, {}, "clusterset", COMPLETE_VAR).source())
