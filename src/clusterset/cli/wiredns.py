"""`clusterset wire-dns`: its flags checked (exit 2 when bad) and handed to `wiredns.run`.

Exit 0: wired (or already wired, or undone, or a dry run); 1: stopped or rolled back
(the message says what is in the cluster now); 2: bad input.
"""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Annotated

import typer

from clusterset.cli.common import (
    KubeconfigOpt,
    TtlOpt,
    UsageProblem,
    ZoneOpt,
    app,
    default_kubeconfig,
    zone_settings,
)
from clusterset.kube.api import KubeApi, load_contexts
from clusterset.wiredns.corefile import forward_target
from clusterset.wiredns.run import Options, run
from clusterset.zone import policy


def parse_address(value: str) -> tuple[str, int]:
    """IP, IP:PORT, IPv6 or [IPv6]:PORT; ValueError otherwise."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, "53"
    ipaddress.ip_address(host)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return host, int(port)


@app.command("wire-dns")
def wire_dns(
    kubeconfig: KubeconfigOpt = None,
    context: Annotated[str | None, typer.Option("--context", help="kubeconfig context.")] = None,
    server: Annotated[
        str, typer.Option("--server", help="ClusterIP (or IP[:PORT]) of clusterset dns.")
    ] = "",
    zone: ZoneOpt = "clusterset.local",
    ttl: TtlOpt = 5,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the diff; change nothing.")
    ] = False,
    undo: Annotated[
        bool, typer.Option("--undo", help="Restore the Corefile saved by the first wiring.")
    ] = False,
    canary_server: Annotated[
        str | None,
        typer.Option(
            help="IP[:PORT] where the canary reaches clusterset dns from here "
            "(e.g. a port-forward; default --server)."
        ),
    ] = None,
    probe: Annotated[
        str | None,
        typer.Option(
            help="IP[:PORT] of the cluster DNS to watch after applying "
            "(default: the kube-dns Service's ClusterIP)."
        ),
    ] = None,
    grace: Annotated[
        float, typer.Option(help="Seconds of watching real answers before keeping the change.")
    ] = 120.0,
    coredns: Annotated[
        str | None,
        typer.Option(help="CoreDNS binary for the canary (default: peers cache, then $PATH)."),
    ] = None,
) -> None:
    """Wire the cluster's DNS (CoreDNS, and NodeLocal DNSCache if present) to clusterset dns:
    canary on loopback with the real CoreDNS, server-side apply keeping the previous
    Corefile, then watch real answers and roll back by itself. Exit 1 when it stopped or
    rolled back.

    \b
    Examples:
      clusterset wire-dns --kubeconfig K --context member2 --server 10.96.0.53 --dry-run
      clusterset wire-dns --kubeconfig K --context member2 --server 10.96.0.53
      clusterset wire-dns --kubeconfig K --context member2 --undo
    """
    kubeconfig = kubeconfig or default_kubeconfig()
    if kubeconfig is None:
        raise UsageProblem("--kubeconfig is required (no $KUBECONFIG, no ~/.kube/config)")
    if not undo and not server:
        raise UsageProblem("--server IP is required (the ClusterIP of the clusterset-dns Service)")
    if grace < 0:
        raise UsageProblem("--grace must be >= 0")
    target = ""
    if server:
        try:
            host, port = parse_address(server)
        except ValueError as exc:
            raise UsageProblem(f"--server {server!r}: expected IP[:PORT]") from exc
        target = forward_target(host, port)
    canary_target = ""
    if canary_server:
        try:
            host, port = parse_address(canary_server)
        except ValueError as exc:
            raise UsageProblem(f"--canary-server {canary_server!r}: expected IP[:PORT]") from exc
        canary_target = forward_target(host, port)
    probe_addr = None
    if probe:
        try:
            probe_addr = parse_address(probe)
        except ValueError as exc:
            raise UsageProblem(f"--probe {probe!r}: expected IP[:PORT]") from exc
    settings = zone_settings(zone, ttl, policy.KEP)
    name, config = next(iter(load_contexts(kubeconfig, [context] if context else None).items()))
    options = Options(
        kubeconfig=str(kubeconfig),
        context=name,
        server=target,
        zone=settings.zone,
        ttl=ttl,
        dry_run=dry_run,
        undo=undo,
        canary_server=canary_target,
        probe=probe_addr,
        grace=grace,
        coredns=coredns,
    )
    raise SystemExit(asyncio.run(run(KubeApi.from_config(name, config), options)))
