"""`clusterset dns`: the DNS server of one cluster, fed from a manifest folder or from the
member cluster's own objects (ServiceImports and MCS EndpointSlices)."""

from __future__ import annotations

from typing import Annotated

import typer

from clusterset.cli.common import (
    AllowOpt,
    ContextOpt,
    KubeconfigOpt,
    LameduckOpt,
    LeaseGraceOpt,
    ListenOpt,
    ManifestsOpt,
    MetricsOpt,
    PolicyOpt,
    QueryLogOpt,
    ServeFlags,
    SourceLeaseDurationOpt,
    TtlOpt,
    UdpSizeOpt,
    UdpThreadsOpt,
    UnifiedOpt,
    UpstreamOpt,
    UsageProblem,
    WorkersOpt,
    ZoneOpt,
    app,
    cluster_arg,
    default_kubeconfig,
    dns_options,
    need_manifests,
    run_server,
    service_arg,
    source_lease_grace,
)
from clusterset.cli.progress import on_terminal
from clusterset.controller.manifest import FolderFeed
from clusterset.controller.member import MemberFeed
from clusterset.kube.api import KubeApi, load_contexts
from clusterset.model import liveness
from clusterset.zone import policy
from clusterset.zone.wire import UDP_PAYLOAD


@app.command()
def dns(
    manifests: ManifestsOpt = None,
    listen: ListenOpt = "127.0.0.1:5353",
    zone: ZoneOpt = "clusterset.local",
    ttl: TtlOpt = 5,
    cluster: Annotated[
        str | None, typer.Option(help="This cluster's ID (for local-first).")
    ] = None,
    default_policy: PolicyOpt = policy.KEP,
    ns_address: Annotated[list[str] | None, typer.Option(help="Glue for the apex NS.")] = None,
    ns_service: Annotated[
        str | None,
        typer.Option(
            help="NAMESPACE/NAME of this server's own Service: its ClusterIPs are the apex NS's "
            "glue when no --ns-address is given (--kubeconfig only; the chart passes it)."
        ),
    ] = None,
    udp_threads: UdpThreadsOpt = 1,
    unified: UnifiedOpt = False,
    upstream: UpstreamOpt = None,
    allow: AllowOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    metrics_listen: MetricsOpt = None,
    lameduck: LameduckOpt = 0.0,
    log_queries: QueryLogOpt = False,
    udp_size: UdpSizeOpt = UDP_PAYLOAD,
    lease_grace: LeaseGraceOpt = None,
    source_lease_duration: SourceLeaseDurationOpt = liveness.DEFAULT_DURATION,
    source_lease_namespace: Annotated[
        str, typer.Option(help="Namespace where the hub keeps the source-cluster Leases.")
    ] = liveness.NAMESPACE,
    workers: WorkersOpt = 1,
) -> None:
    """Serve the clusterset zone from one cluster's ServiceImports and MCS EndpointSlices.

    \b
    Examples:
      clusterset dns --manifests DIR --listen 127.0.0.1:5300
      clusterset dns --kubeconfig ~/.kube/config --context member2 --listen 0.0.0.0:53
    """
    flags = ServeFlags.pick(locals())
    source_lease_grace(source_lease_duration, lease_grace)
    options = dns_options(flags, ns_address, source_leases=lease_grace != 0)
    cid = cluster_arg(cluster) if cluster else None
    kubeconfig = kubeconfig or default_kubeconfig(manifests)
    if ns_service and kubeconfig is None:
        raise UsageProblem("--ns-service reads the cluster's Services: it needs --kubeconfig")
    if kubeconfig is not None:
        if manifests is not None:
            raise UsageProblem("--manifests and --kubeconfig are exclusive")
        if context and len(context) > 1:
            raise UsageProblem("dns serves one cluster: give at most one --context")
        name, config = next(iter(load_contexts(kubeconfig, context).items()))
        member = MemberFeed(
            name,
            KubeApi.from_config(name, config),
            cluster=cid,
            lease_namespace=source_lease_namespace,
            lease_grace=lease_grace or None,
            ns_service=service_arg(ns_service, "--ns-service") if ns_service else None,
        )
        run_server(options, lambda s: member.views())
        return
    feed = FolderFeed(need_manifests(manifests), cluster=cid, progress=on_terminal())
    run_server(options, lambda s: feed.views())
