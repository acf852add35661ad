"""`clusterset dns` and `clusterset run`: a DNS server fed from manifests, a member cluster's
own objects, or an in-process hub."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

import typer

from clusterset.cli.common import (
    DEFAULT_CIDR,
    DEFAULT_CIDR_V6,
    AllContextsOpt,
    AllowOpt,
    CidrOpt,
    CidrV6Opt,
    ContextOpt,
    KarmadaOpt,
    KubeconfigOpt,
    LameduckOpt,
    LeaseGraceOpt,
    ListenOpt,
    ManifestsOpt,
    MetricsOpt,
    PolicyOpt,
    QueryLogOpt,
    SourceLeaseDurationOpt,
    StateFileOpt,
    TtlOpt,
    UdpSizeOpt,
    UnifiedOpt,
    UpstreamOpt,
    UsageProblem,
    WorkersOpt,
    ZoneOpt,
    app,
    cidr_networks,
    cluster_arg,
    default_kubeconfig,
    dns_options,
    member_apis,
    need_manifests,
    run_server,
    service_arg,
    source_lease_grace,
    why,
    zone_settings,
)
from clusterset.cli.progress import on_terminal
from clusterset.cli.workers import worker_index
from clusterset.controller.hub import Hub
from clusterset.controller.manifest import ClusterSetFeed, FolderFeed, next_generation
from clusterset.controller.member import MemberFeed
from clusterset.kube.api import KubeApi, load_contexts
from clusterset.model import liveness
from clusterset.model.ids import ClusterId
from clusterset.model.state import ClusterSetState, ImportedView
from clusterset.reconcile.desired import Desired
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
    udp_threads: Annotated[int, typer.Option(help="UDP receive threads.")] = 1,
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
    source_lease_grace(source_lease_duration, lease_grace)
    settings = zone_settings(
        zone,
        ttl,
        default_policy,
        ns_address,
        unified=unified,
        source_leases=lease_grace != 0,
        listen=listen,
    )
    options = dns_options(
        settings,
        listen,
        udp_threads,
        unified=unified,
        upstream=upstream,
        allow=allow,
        metrics_listen=metrics_listen,
        lameduck=lameduck,
        log_queries=log_queries,
        udp_size=udp_size,
        workers=workers,
    )
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


@app.command()
def run(
    manifests: ManifestsOpt = None,
    cluster: Annotated[str, typer.Option(help="Answer as this member cluster sees it.")] = "",
    listen: ListenOpt = "127.0.0.1:5353",
    zone: ZoneOpt = "clusterset.local",
    ttl: TtlOpt = 5,
    default_policy: PolicyOpt = policy.KEP,
    clusterset_cidr: CidrOpt = DEFAULT_CIDR,
    clusterset_cidr_v6: CidrV6Opt = DEFAULT_CIDR_V6,
    state_file: StateFileOpt = None,
    udp_threads: Annotated[int, typer.Option(help="UDP receive threads.")] = 1,
    unified: UnifiedOpt = False,
    upstream: UpstreamOpt = None,
    allow: AllowOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
    metrics_listen: MetricsOpt = None,
    lameduck: LameduckOpt = 0.0,
    log_queries: QueryLogOpt = False,
    udp_size: UdpSizeOpt = UDP_PAYLOAD,
    workers: WorkersOpt = 1,
) -> None:
    """Controller + DNS in one process over ROOT/<cluster>/ folders.

    \b
    Example: clusterset run --manifests examples/clusters --cluster member2 --listen 127.0.0.1:5300
    """
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    cid = cluster_arg(cluster)
    settings = zone_settings(zone, ttl, default_policy, unified=unified, listen=listen)
    options = dns_options(
        settings,
        listen,
        udp_threads,
        unified=unified,
        upstream=upstream,
        allow=allow,
        metrics_listen=metrics_listen,
        lameduck=lameduck,
        log_queries=log_queries,
        udp_size=udp_size,
        workers=workers,
    )
    kubeconfig = kubeconfig or default_kubeconfig(manifests, karmada_kubeconfig)
    if kubeconfig is not None or karmada_kubeconfig is not None:
        if manifests is not None:
            raise UsageProblem("--manifests and --kubeconfig are exclusive")
        if workers > 1:
            raise UsageProblem("--workers: on clusters, one hub controller must write; use dns")
        apis = member_apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
        run_server(options, lambda s: _hub_views(apis, cid))
        return
    feed = ClusterSetFeed(
        need_manifests(manifests),
        cidrs=cidr_networks(clusterset_cidr, clusterset_cidr_v6),
        state_file=state_file,
        # --workers: worker 0 allocates ClusterSetIPs, the others serve what it wrote.
        follow=(worker_index() or 0) > 0,
        progress=on_terminal(),
    )
    feed.check(cid)  # an unreadable folder or an unknown --cluster: one line, exit 2
    run_server(options, lambda s: feed.views(cid))


async def _hub_views(apis: dict[str, KubeApi], cid: ClusterId) -> AsyncIterator[ImportedView]:
    """All-in-one on real clusters: the hub reconciles (without leader election: one
    process) and every pass yields the view of cluster `cid` for the DNS server."""
    queue: asyncio.Queue[ImportedView] = asyncio.Queue(maxsize=1)
    generation = 0

    def reconciled(desired: Desired, state: ClusterSetState) -> None:
        nonlocal generation
        if cid not in desired.clusters:
            return
        generation = next_generation(generation)
        if queue.full():
            queue.get_nowait()
        queue.put_nowait(desired.view(cid, state, generation))

    hub = Hub(apis, on_reconciled=reconciled)
    task = asyncio.create_task(hub.run(), name="hub")
    try:
        while True:
            got = asyncio.ensure_future(queue.get())
            await asyncio.wait({got, task}, return_when=asyncio.FIRST_COMPLETED)
            if not got.done():
                got.cancel()
                # hub.run never returns on its own: the controller died (the caller logs why).
                reason = "cancelled" if task.cancelled() else why(task.exception())
                raise HubStopped(f"the hub controller stopped: {reason}")
            yield got.result()
    finally:
        if not task.done():
            task.cancel()
        # Its failure, if any, was raised above as HubStopped.
        await asyncio.gather(task, return_exceptions=True)


class HubStopped(RuntimeError):
    """The hub controller of `run --kubeconfig` ended: the zone would go stale."""
