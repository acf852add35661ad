"""`clusterset corefile`: the CoreDNS stanza that delegates the clusterset zone to clusterset
dns, printed with a kubectl command that adds it; nothing is read or written."""

from __future__ import annotations

from typing import Annotated

import typer

from clusterset.cli import output
from clusterset.cli.common import TtlOpt, UsageProblem, ZoneOpt, app, zone_settings
from clusterset.server.forward import parse_upstream
from clusterset.wiredns.corefile import forward_target, stanza
from clusterset.zone import policy


@app.command()
def corefile(
    server: Annotated[
        str, typer.Option("--server", help="ClusterIP (or IP[:PORT]) of clusterset dns.")
    ] = "",
    zone: ZoneOpt = "clusterset.local",
    ttl: TtlOpt = 5,
    namespace: Annotated[
        str, typer.Option(help="Namespace of the CoreDNS ConfigMap.")
    ] = "kube-system",
    configmap: Annotated[str, typer.Option(help="Name of the CoreDNS ConfigMap.")] = "coredns",
    context: Annotated[
        str | None, typer.Option("--context", help="kubectl context the command is for.")
    ] = None,
) -> None:
    """Print the CoreDNS stub-zone stanza that sends the clusterset zone to clusterset dns,
    and a kubectl command that adds it once (run again, it changes nothing). `wire-dns`
    does the same with a canary and a rollback.

    \b
    Example: clusterset corefile --server 10.96.0.53 --context member2
    """
    if not server:
        raise UsageProblem("--server IP is required (the ClusterIP of the clusterset-dns Service)")
    try:
        host, port = parse_upstream(server)
    except ValueError as exc:
        raise UsageProblem(f"--server {server!r}: expected IP[:PORT]") from exc
    settings = zone_settings(zone, ttl, policy.KEP)
    block = stanza(settings.zone, forward_target(host, port), ttl=ttl)
    output.corefile(block, namespace, configmap, context)
