"""`clusterset run`: controller and DNS server in one process, the server answering as one
member cluster sees the clusterset; over manifest folders, or over real clusters with an
in-process hub."""

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
    ListenOpt,
    ManifestsOpt,
    MetricsOpt,
    PolicyOpt,
    QueryLogOpt,
    ServeFlags,
    StateFileOpt,
    TtlOpt,
    UdpSizeOpt,
    UdpThreadsOpt,
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
    why,
)
from clusterset.cli.progress import on_terminal
from clusterset.cli.workers import worker_index
from clusterset.controller.hub import Hub
from clusterset.controller.manifest import ClusterSetFeed, next_generation
from clusterset.kube.api import KubeApi
from clusterset.model.ids import ClusterId
from clusterset.model.state import ClusterSetState, ImportedView
from clusterset.reconcile.desired import Desired
from clusterset.zone import policy
from clusterset.zone.wire import UDP_PAYLOAD


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
    udp_threads: UdpThreadsOpt = 1,
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
    flags = ServeFlags.pick(locals())
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    cid = cluster_arg(cluster)
    options = dns_options(flags)
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
    if worker_index() is not None or workers == 1:
        # An unreadable folder or an unknown --cluster: one line, exit 2. Not in the
        # --workers supervisor: its workers check (and their exit 2 stops it), and a read
        # of its own would keep a copy of the fleet in it (bench/workers_memory.py).
        feed.check(cid)
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
