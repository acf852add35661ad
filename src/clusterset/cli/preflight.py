"""`clusterset check` and `clusterset wire-dns`: before an export, and wiring CoreDNS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from clusterset.cli.common import (
    DEFAULT_CIDR,
    DEFAULT_CIDR_V6,
    AllContextsOpt,
    CidrOpt,
    CidrV6Opt,
    ContextOpt,
    KarmadaOpt,
    KubeconfigOpt,
    ManifestsOpt,
    StateFileOpt,
    TtlOpt,
    UsageProblem,
    ZoneOpt,
    app,
    cluster_arg,
    default_kubeconfig,
    manifest_feed,
    member_apis,
    zone_settings,
)
from clusterset.kube.api import KubeApi, load_contexts
from clusterset.model.ids import ClusterId
from clusterset.zone import policy


@app.command()
def check(
    file: Annotated[
        Path | None,
        typer.Argument(help="YAML with the ServiceExport (and optionally its Service)."),
    ] = None,
    service: Annotated[
        str | None, typer.Option("--service", help="NAMESPACE/NAME to export (instead of FILE).")
    ] = None,
    cluster: Annotated[str, typer.Option(help="The cluster that would export it.")] = "",
    manifests: ManifestsOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
    output_format: Annotated[str, typer.Option("-o", "--output", help="text|json|yaml")] = "text",
    state_file: StateFileOpt = None,
    clusterset_cidr: CidrOpt = DEFAULT_CIDR,
    clusterset_cidr_v6: CidrV6Opt = DEFAULT_CIDR_V6,
) -> None:
    """Pre-flight: what exporting a service would change (merged ServiceImport before/after,
    who reports Conflict and which export wins, each consumer's DNS answer). Exit 0: no
    conflict; 1: it would conflict, or the export would be invalid; 2: bad input.

    \b
    Examples:
      clusterset check --manifests examples/clusters --cluster member2 --service default/web
      clusterset check export.yaml --kubeconfig K --all-contexts --cluster member2 -o json
    """
    from clusterset.cli import check as preflight_check

    if output_format not in ("text", "json", "yaml"):
        raise UsageProblem(f"-o {output_format!r}: expected text, json or yaml")
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    if (file is None) == (service is None):
        raise UsageProblem("give either a ServiceExport FILE or --service NAMESPACE/NAME")
    kubeconfig = kubeconfig or default_kubeconfig(manifests, karmada_kubeconfig)
    if kubeconfig is not None or karmada_kubeconfig is not None:
        if manifests is not None:
            raise UsageProblem("--manifests and --kubeconfig are exclusive")
        apis = member_apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
        state, ips, ids = asyncio.run(preflight_check.observe_clusters(apis))
        cid = ids.get(cluster, ClusterId(cluster))
    else:
        feed = manifest_feed(manifests, state_file, clusterset_cidr, clusterset_cidr_v6)
        state, ips = preflight_check.observe_manifests(feed)
        cid = cluster_arg(cluster)
    code = preflight_check.run(
        state, ips, cluster=cid, file=file, service=service, output=output_format
    )
    raise SystemExit(code)


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
    from clusterset.cli import wiredns

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
            host, port = wiredns.parse_address(server)
        except ValueError as exc:
            raise UsageProblem(f"--server {server!r}: expected IP[:PORT]") from exc
        target = wiredns.forward_target(host, port)
    canary_target = ""
    if canary_server:
        try:
            host, port = wiredns.parse_address(canary_server)
        except ValueError as exc:
            raise UsageProblem(f"--canary-server {canary_server!r}: expected IP[:PORT]") from exc
        canary_target = wiredns.forward_target(host, port)
    probe_addr = None
    if probe:
        try:
            probe_addr = wiredns.parse_address(probe)
        except ValueError as exc:
            raise UsageProblem(f"--probe {probe!r}: expected IP[:PORT]") from exc
    settings = zone_settings(zone, ttl, policy.KEP)
    name, config = next(iter(load_contexts(kubeconfig, [context] if context else None).items()))
    options = wiredns.Options(
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
    raise SystemExit(asyncio.run(wiredns.run(KubeApi.from_config(name, config), options)))
