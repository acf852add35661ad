"""`clusterset`: run | dns | controller | status | render | resolve | corefile.

Errors the user can fix (bad flags, unreadable sources) print one line on
stderr and exit 2; nothing prints a traceback.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import ipaddress
import logging
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry

# Typer vendors Click (typer._click) since 0.2x; its parse errors are that Click's classes.
from typer._click import exceptions as click

from clusterset import __version__, logs
from clusterset.cli import output
from clusterset.controller.hub import Hub
from clusterset.controller.manifest import ClusterSetFeed, FolderFeed, Observed, next_generation
from clusterset.controller.member import MemberFeed
from clusterset.kube.api import ConfigError, KubeApi, load_contexts
from clusterset.kube.cluster import SOURCE_LEASE_LABEL
from clusterset.kube.karmada import control_api as karmada_control_api
from clusterset.kube.karmada import members as karmada_members
from clusterset.kube.lease import (
    LEASE_DURATION,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    SOURCE_LEASE_DURATION,
    LeaderElector,
    check_timing,
    source_renew_interval,
)
from clusterset.manifests.load import SourceError
from clusterset.model.ids import ClusterId, InvalidName, ServiceKey, cluster_id
from clusterset.model.objects import IPFamily
from clusterset.model.state import ClusterSetState, ImportedView
from clusterset.reconcile import allocate
from clusterset.reconcile import desired as rd
from clusterset.reconcile.desired import Desired
from clusterset.server import probe
from clusterset.server.app import DnsOptions, DnsServer, ListenError, compile_view, parse_listen
from clusterset.server.forward import DEFAULT_ALLOW, parse_upstream
from clusterset.server.http import HubCollector, HubStats, OpsServer, reconcile_histogram
from clusterset.zone import policy
from clusterset.zone.records import ZoneSettings

log = logging.getLogger("clusterset")

app = typer.Typer(
    name="clusterset",
    help="One DNS name for a Kubernetes service, whichever cluster it runs in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"auto_envvar_prefix": "CLUSTERSET"},
)


class UsageProblem(click.UsageError):
    pass


def _version(value: bool) -> None:
    if value:
        typer.echo(f"clusterset {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            callback=_version,
            is_eager=True,
            help="Print the version.",
            allow_from_autoenv=False,
        ),
    ] = False,
    log_level: Annotated[str, typer.Option(help="debug|info|warning|error")] = "info",
    log_format: Annotated[str, typer.Option(help="text|json")] = "text",
) -> None:
    if log_format not in ("text", "json"):
        raise UsageProblem(f"--log-format {log_format!r}: expected text or json")
    if log_level.lower() not in ("debug", "info", "warning", "error"):
        raise UsageProblem(f"--log-level {log_level!r}: expected debug, info, warning or error")
    logs.setup(log_level, log_format)


ZoneOpt = Annotated[str, typer.Option("--zone", help="The clusterset zone.")]
TtlOpt = Annotated[int, typer.Option("--ttl", help="TTL of every answer (0-3600).")]
ListenOpt = Annotated[str, typer.Option("--listen", help="HOST:PORT for UDP and TCP.")]
ManifestsOpt = Annotated[Path | None, typer.Option("--manifests", help="Folder of YAML manifests.")]
UnifiedOpt = Annotated[
    bool,
    typer.Option(
        "--unified-cluster-local",
        help="Also answer <svc>.<ns>.svc.cluster.local for imported services, local-first, "
        "and forward every other query to --upstream.",
    ),
]
UpstreamOpt = Annotated[
    str | None, typer.Option("--upstream", help="IP[:PORT] of the cluster DNS (unified mode).")
]
AllowOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--allow", help="Client CIDR allowed to use forwarding (repeatable).", show_default=False
    ),
]
MetricsOpt = Annotated[
    str | None,
    typer.Option("--metrics-listen", help="HOST:PORT serving /metrics, /health and /ready."),
]
LameduckOpt = Annotated[
    float, typer.Option("--lameduck", help="Seconds to keep answering after SIGTERM (/ready 503).")
]
LeaseGraceOpt = Annotated[
    float | None,
    typer.Option(
        "--lease-grace",
        help="Seconds after its Lease's renewTime that a source cluster still counts "
        "(default: the Lease's own leaseDurationSeconds; 0: ignore leases). At least the "
        "hub's renewal interval, a quarter of --source-lease-duration.",
        show_default=False,
    ),
]
SourceLeaseDurationOpt = Annotated[
    int,
    typer.Option(
        "--source-lease-duration",
        help="leaseDurationSeconds of the liveness Leases; the hub renews them every quarter "
        "of it (give the controller and the DNS servers the same value).",
    ),
]


def _source_leases(duration: int, grace: float | None) -> float:
    """Check the liveness-Lease flags; the renewal interval they imply."""
    if duration < 1:
        raise UsageProblem(f"--source-lease-duration {duration}: expected at least 1")
    interval = source_renew_interval(duration)
    if grace is not None and (grace < 0 or 0 < grace < interval):
        raise UsageProblem(
            f"--lease-grace {grace:g}: shorter than the hub's renewal interval "
            f"({interval:g}s, a quarter of --source-lease-duration {duration}): "
            "answers would flap between renewals"
        )
    return interval


QueryLogOpt = Annotated[
    bool, typer.Option("--log-queries", help="Log every query (slow; off by default).")
]
PolicyOpt = Annotated[
    str, typer.Option("--default-policy", help=f"Answer policy: {', '.join(policy.POLICIES)}.")
]
# Allocation flags: `run` and the read-only commands take the same, so they agree.
DEFAULT_CIDR = "10.250.0.0/16"
DEFAULT_CIDR_V6 = "fd63:6c75:7374::/112"
CidrOpt = Annotated[str, typer.Option("--clusterset-cidr", help="ClusterSetIP range (IPv4).")]
CidrV6Opt = Annotated[str, typer.Option("--clusterset-cidr-v6", help="ClusterSetIP range (IPv6).")]
StateFileOpt = Annotated[
    Path | None, typer.Option("--state-file", help="Where allocations persist.")
]


def _settings(
    zone: str,
    ttl: int,
    default_policy: str,
    ns: list[str] | None = None,
    *,
    unified: bool = False,
    source_leases: bool = False,
) -> ZoneSettings:
    if not 0 <= ttl <= 3600:
        raise UsageProblem(f"--ttl {ttl}: expected 0-3600")
    if default_policy not in policy.POLICIES:
        raise UsageProblem(f"--default-policy {default_policy!r}: expected {policy.POLICIES}")
    z = zone.strip(".").lower()
    if not z or any(not part for part in z.split(".")):
        raise UsageProblem(f"--zone {zone!r}: not a domain name")
    for a in ns or []:
        try:
            ipaddress.ip_address(a)
        except ValueError as exc:
            raise UsageProblem(f"--ns-address {a!r}: not an IP address") from exc
    return ZoneSettings(
        zone=z,
        ttl=ttl,
        default_policy=default_policy,
        ns_addresses=tuple(ns or ()),
        unified_zone="cluster.local" if unified else None,
        source_leases=source_leases,
    )


def _dns_options(
    settings: ZoneSettings,
    listen: str,
    udp_threads: int,
    *,
    unified: bool,
    upstream: str | None,
    allow: list[str] | None,
    metrics_listen: str | None = None,
    lameduck: float = 0.0,
    log_queries: bool = False,
) -> DnsOptions:
    if unified and not upstream:
        raise UsageProblem("--unified-cluster-local needs --upstream IP[:PORT] (the cluster DNS)")
    if upstream and not unified:
        raise UsageProblem("--upstream is only used with --unified-cluster-local")
    up = None
    if upstream:
        try:
            up = parse_upstream(upstream)
        except ValueError as exc:
            raise UsageProblem(f"--upstream {upstream!r}: expected IP[:PORT]") from exc
    nets = tuple(allow) if allow else DEFAULT_ALLOW
    for n in nets:
        try:
            ipaddress.ip_network(n)
        except ValueError as exc:
            raise UsageProblem(f"--allow {n!r}: not a CIDR") from exc
    if udp_threads < 1:
        raise UsageProblem("--udp-threads must be at least 1")
    if metrics_listen is not None:
        parse_listen(metrics_listen)
    if lameduck < 0:
        raise UsageProblem("--lameduck must be >= 0")
    return DnsOptions(
        settings,
        listen,
        udp_threads,
        upstream=up,
        allow=nets,
        metrics_listen=metrics_listen,
        lameduck=lameduck,
        log_queries=log_queries,
    )


def _cidrs(v4: str, v6: str) -> dict[IPFamily, allocate.Network]:
    try:
        return {
            IPFamily.IPV4: ipaddress.IPv4Network(v4),
            IPFamily.IPV6: ipaddress.IPv6Network(v6),
        }
    except ValueError as exc:
        raise UsageProblem(f"--clusterset-cidr: {exc}") from exc


def _cluster(name: str) -> ClusterId:
    try:
        return cluster_id(name)
    except InvalidName as exc:
        raise UsageProblem(f"--cluster: {exc}") from exc


def _need_manifests(manifests: Path | None) -> Path:
    if manifests is None:
        raise UsageProblem("--manifests DIR (or --kubeconfig) is required")
    return manifests


async def _serve(server: DnsServer, views: AsyncIterator[ImportedView]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await server.start()
    feed = asyncio.create_task(server.serve_views(views), name="zone-feed")
    stopper = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait({feed, stopper}, return_when=asyncio.FIRST_COMPLETED)
    failed = feed in done and feed.exception() is not None
    if failed:
        # Serving a zone nobody updates any more would hide the failure: say why once, go
        # not-ready (lameduck) and exit non-zero, so that Kubernetes restarts the pod.
        log.error("zone feed failed, exiting: %s", _why(feed.exception()))
    feed.cancel()
    stopper.cancel()
    await asyncio.gather(feed, return_exceptions=True)  # its failure is logged above
    log.info("shutting down")
    await server.stop()
    if failed:
        raise SystemExit(1)


def _why(exc: BaseException | None) -> str:
    """One line for an exception, the leaves of a TaskGroup's ExceptionGroup included."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(_why(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def _run_server(
    options: DnsOptions, make_views: Callable[[DnsServer], AsyncIterator[ImportedView]]
) -> None:
    import uvloop

    server = DnsServer(options)
    uvloop.run(_serve(server, make_views(server)))


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
    udp_threads: Annotated[int, typer.Option(help="UDP receive threads.")] = 1,
    unified: UnifiedOpt = False,
    upstream: UpstreamOpt = None,
    allow: AllowOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    metrics_listen: MetricsOpt = None,
    lameduck: LameduckOpt = 0.0,
    log_queries: QueryLogOpt = False,
    lease_grace: LeaseGraceOpt = None,
    source_lease_duration: SourceLeaseDurationOpt = SOURCE_LEASE_DURATION,
    source_lease_namespace: Annotated[
        str, typer.Option(help="Namespace where the hub keeps the source-cluster Leases.")
    ] = "kube-system",
) -> None:
    """Serve the clusterset zone from one cluster's ServiceImports and MCS EndpointSlices.

    Examples:
      clusterset dns --manifests DIR --listen 127.0.0.1:5300
      clusterset dns --kubeconfig ~/.kube/config --context member2 --listen 0.0.0.0:53
    """
    _source_leases(source_lease_duration, lease_grace)
    settings = _settings(
        zone, ttl, default_policy, ns_address, unified=unified, source_leases=lease_grace != 0
    )
    options = _dns_options(
        settings,
        listen,
        udp_threads,
        unified=unified,
        upstream=upstream,
        allow=allow,
        metrics_listen=metrics_listen,
        lameduck=lameduck,
        log_queries=log_queries,
    )
    cid = _cluster(cluster) if cluster else None
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
        )
        _run_server(options, lambda s: member.views())
        return
    feed = FolderFeed(_need_manifests(manifests), cluster=cid)
    _run_server(options, lambda s: feed.views())


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
) -> None:
    """Controller + DNS in one process over ROOT/<cluster>/ folders.

    Example: clusterset run --manifests examples/clusters --cluster member2 --listen 127.0.0.1:5300
    """
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    cid = _cluster(cluster)
    settings = _settings(zone, ttl, default_policy, unified=unified)
    options = _dns_options(
        settings,
        listen,
        udp_threads,
        unified=unified,
        upstream=upstream,
        allow=allow,
        metrics_listen=metrics_listen,
        lameduck=lameduck,
        log_queries=log_queries,
    )
    if kubeconfig is not None or karmada_kubeconfig is not None:
        if manifests is not None:
            raise UsageProblem("--manifests and --kubeconfig are exclusive")
        apis = _apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
        _run_server(options, lambda s: _hub_views(apis, cid))
        return
    feed = ClusterSetFeed(
        _need_manifests(manifests),
        cidrs=_cidrs(clusterset_cidr, clusterset_cidr_v6),
        state_file=state_file,
    )
    feed.check(cid)  # an unreadable folder or an unknown --cluster: one line, exit 2
    _run_server(options, lambda s: feed.views(cid))


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
                why = "cancelled" if task.cancelled() else _why(task.exception())
                raise HubStopped(f"the hub controller stopped: {why}")
            yield got.result()
    finally:
        if not task.done():
            task.cancel()
        # Its failure, if any, was raised above as HubStopped.
        await asyncio.gather(task, return_exceptions=True)


class HubStopped(RuntimeError):
    """The hub controller of `run --kubeconfig` ended: the zone would go stale."""


KubeconfigOpt = Annotated[
    Path | None, typer.Option("--kubeconfig", help="kubeconfig of the member cluster(s).")
]
ContextOpt = Annotated[
    list[str] | None,
    typer.Option("--context", help="kubeconfig context (repeatable).", show_default=False),
]
AllContextsOpt = Annotated[
    bool, typer.Option("--all-contexts", help="Every context of --kubeconfig.")
]
KarmadaOpt = Annotated[
    Path | None,
    typer.Option(
        "--karmada-kubeconfig",
        help="Karmada control plane kubeconfig: members are its Cluster objects, "
        "reached through its cluster proxy.",
    ),
]


def _apis(
    kubeconfig: Path | None,
    contexts: list[str] | None,
    all_contexts: bool,
    karmada: Path | None,
) -> dict[str, KubeApi]:
    if karmada is not None:
        if kubeconfig is not None:
            raise UsageProblem("--karmada-kubeconfig and --kubeconfig are exclusive")
        config = next(iter(load_contexts(karmada, None).values()))
        return asyncio.run(karmada_members(config, only=contexts))
    if kubeconfig is None:
        raise UsageProblem("--kubeconfig (or --karmada-kubeconfig) is required")
    configs = load_contexts(kubeconfig, contexts, all_contexts=all_contexts)
    return {name: KubeApi.from_config(name, cfg) for name, cfg in configs.items()}


OutputOpt = Annotated[str, typer.Option("-o", "--output", help="table|wide|json|yaml")]


def _feed(manifests: Path | None, state_file: Path | None, v4: str, v6: str) -> ClusterSetFeed:
    """What `run` with the same flags would compute; read-only: never writes the state file."""
    return ClusterSetFeed(
        _need_manifests(manifests), cidrs=_cidrs(v4, v6), state_file=state_file, read_only=True
    )


@app.command()
def controller(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
    lease_context: Annotated[
        str | None,
        typer.Option(
            help="Cluster holding the leader Lease (default: the first member; with "
            "--karmada-kubeconfig, Karmada's control plane)."
        ),
    ] = None,
    lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the leader Lease.")
    ] = "kube-system",
    lease_name: Annotated[
        str, typer.Option(help="Name of the leader Lease.")
    ] = "clusterset-controller",
    identity: Annotated[
        str | None, typer.Option(help="This replica's identity (default: hostname+pid).")
    ] = None,
    leader_elect: Annotated[bool, typer.Option(help="Elect a leader before writing.")] = True,
    leader_elect_lease_duration: Annotated[
        float,
        typer.Option(help="Seconds a follower waits, from the last change it saw, to take over."),
    ] = LEASE_DURATION,
    leader_elect_renew_deadline: Annotated[
        float,
        typer.Option(help="Seconds within which the leader must renew, or it stops writing."),
    ] = RENEW_DEADLINE,
    leader_elect_retry_period: Annotated[
        float, typer.Option(help="Seconds between acquire/renew attempts.")
    ] = RETRY_PERIOD,
    source_lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the per-source-cluster liveness Leases.")
    ] = "kube-system",
    source_lease_duration: SourceLeaseDurationOpt = SOURCE_LEASE_DURATION,
    create_namespaces: Annotated[
        bool,
        typer.Option(help="Create a service's namespace where it is missing (remote-only use)."),
    ] = False,
    metrics_listen: MetricsOpt = None,
) -> None:
    """Hub mode: watch every member and write ServiceImports, derived Services, MCS
    EndpointSlices and ServiceExport conditions into each.

    Example: clusterset controller --kubeconfig members.yaml --context member1 --context member2
    """
    _source_leases(source_lease_duration, None)
    try:
        check_timing(
            lease_duration=leader_elect_lease_duration,
            renew_deadline=leader_elect_renew_deadline,
            retry_period=leader_elect_retry_period,
        )
    except ValueError as exc:
        raise UsageProblem(str(exc)) from exc
    apis = _apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
    if not apis:
        raise UsageProblem("no member clusters")
    # With Karmada, the hub's own state (leader Lease, retention rules) lives in its
    # control plane, and its ResourceBindings say which imports are Karmada's.
    karmada = (
        karmada_control_api(next(iter(load_contexts(karmada_kubeconfig, None).values())))
        if karmada_kubeconfig is not None
        else None
    )
    elector = None
    if leader_elect:
        lease_api = (
            karmada
            if karmada is not None and lease_context is None
            else apis.get(lease_context or next(iter(apis)))
        )
        if lease_api is None:
            raise UsageProblem(f"--lease-context {lease_context!r}: not one of the members")
        import os
        import socket

        elector = LeaderElector(
            lease_api,
            namespace=lease_namespace,
            name=lease_name,
            identity=identity or f"{socket.gethostname()}-{os.getpid()}",
            lease_duration=leader_elect_lease_duration,
            renew_deadline=leader_elect_renew_deadline,
            retry_period=leader_elect_retry_period,
        )
    registry = CollectorRegistry()
    ended = threading.Event()  # the hub stopped (or is stopping): /ready answers 503
    hub = Hub(
        apis,
        elector=elector,
        lease_namespace=source_lease_namespace,
        lease_duration=source_lease_duration,
        create_namespaces=create_namespaces,
        karmada=karmada,
        on_duration=reconcile_histogram(registry).observe,
    )
    registry.register(HubCollector(lambda: hub_stats(hub)))
    log.info("controller: %d member cluster(s): %s", len(apis), ", ".join(apis))
    ops = None
    if metrics_listen:
        ops = OpsServer(
            parse_listen(metrics_listen),
            registry,
            ready=lambda: not ended.is_set() and all(m.synced for m in hub.members.values()),
        )
        ops.start()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        task = asyncio.create_task(hub.run(), name="hub")
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
        ended.set()
        if task in done:  # hub.run never returns on its own: say why it stopped, once
            log.error("controller stopped, exiting: %s", _why(task.exception()))
        task.cancel()
        stopper.cancel()
        await asyncio.gather(task, return_exceptions=True)  # its failure is logged above
        if elector is not None:
            await elector.release()
        for api in [*apis.values(), *([karmada] if karmada is not None else [])]:
            await api.close()
        if ops is not None:
            ops.stop()
        if task in done and stopper not in done:
            raise SystemExit(1)

    import uvloop

    uvloop.run(main())


def hub_stats(hub: Hub) -> HubStats:
    """The hub's numbers for its metrics, read at scrape time."""
    return HubStats(
        objects={
            (name, res): len(inf.store)
            for name, m in hub.members.items()
            for res, inf in m.informers.items()
        },
        restarts={
            (name, res): inf.restarts
            for name, m in hub.members.items()
            for res, inf in m.informers.items()
        },
        synced={name: m.synced for name, m in hub.members.items()},
        reachable={name: m.reachable for name, m in hub.members.items()},
        reconciles=hub.reconciles,
        errors=hub.errors,
        last_duration=hub.last_duration,
        leading=hub.elector is None or hub.elector.leading.is_set(),
    )


@app.command()
def status(
    manifests: ManifestsOpt = None,
    output_format: OutputOpt = "table",
    state_file: StateFileOpt = None,
    clusterset_cidr: CidrOpt = DEFAULT_CIDR,
    clusterset_cidr_v6: CidrV6Opt = DEFAULT_CIDR_V6,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
) -> None:
    """Every ServiceExport with its conditions and every ServiceImport, kubectl-style;
    on real clusters also the per-source-cluster liveness Leases (fresh/stale/expired).

    Examples:
      clusterset status --manifests examples/clusters -o wide
      clusterset status --kubeconfig members.yaml --all-contexts -o json
    """
    if output_format not in ("table", "wide", "json", "yaml"):
        raise UsageProblem(f"-o {output_format!r}: expected table, wide, json or yaml")
    if kubeconfig is not None or karmada_kubeconfig is not None:
        apis = _apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
        observed, leases = asyncio.run(_observe_clusters(apis))
        output.status(observed, output_format, leases=leases)
        return
    observed = _feed(manifests, state_file, clusterset_cidr, clusterset_cidr_v6).observe()
    output.status(observed, output_format)


async def _observe_clusters(apis: dict[str, KubeApi]) -> tuple[Observed, list[dict[str, object]]]:
    """One read of every member (no writes): what the hub would compute, and the leases."""
    hub = Hub(apis)
    tasks = [asyncio.create_task(m.run()) for m in hub.members.values()]
    try:
        try:
            await asyncio.wait_for(
                asyncio.gather(*(m.wait_synced() for m in hub.members.values())), 30
            )
        except TimeoutError as exc:
            late = [n for n, m in hub.members.items() if not m.synced]
            raise SourceError(f"clusters not reachable within 30s: {', '.join(late)}") from exc
        state = hub.observe()
        aggregates = rd.aggregate_all(state)
        desired = rd.reconcile(
            state, ips=hub.clusterset_ips(state, aggregates), aggregates=aggregates
        )
        leases = []
        now = time.time()
        for name, m in hub.members.items():
            items, _ = await m.api.list(
                "/apis/coordination.k8s.io/v1/leases", label_selector=SOURCE_LEASE_LABEL
            )
            for lease in items:
                spec = lease.get("spec") or {}
                labels = (lease.get("metadata") or {}).get("labels") or {}
                renewed = str(spec.get("renewTime") or "")
                duration = float(spec.get("leaseDurationSeconds") or 30)
                try:
                    age = (
                        now - dt.datetime.fromisoformat(renewed.replace("Z", "+00:00")).timestamp()
                    )
                except ValueError:
                    age = float("inf")
                state_name = (
                    "fresh" if age <= duration else "stale" if age <= 2 * duration else "expired"
                )
                leases.append(
                    {
                        "consumer": name,
                        "source": labels.get(SOURCE_LEASE_LABEL, "?"),
                        "renewed": renewed,
                        "age": round(age, 1),
                        "state": state_name,
                    }
                )
        return Observed(state, desired, []), leases
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for api in apis.values():
            await api.close()


@app.command()
def render(
    manifests: ManifestsOpt = None,
    cluster: Annotated[str, typer.Option(help="The consuming cluster.")] = "",
    state_file: StateFileOpt = None,
    clusterset_cidr: CidrOpt = DEFAULT_CIDR,
    clusterset_cidr_v6: CidrV6Opt = DEFAULT_CIDR_V6,
) -> None:
    """Print, as YAML, the objects the controller would apply to one cluster."""
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    cid = _cluster(cluster)
    observed = _feed(manifests, state_file, clusterset_cidr, clusterset_cidr_v6).observe()
    if cid not in observed.desired.clusters:
        raise SourceError(f"--cluster {cid}: no such cluster under {manifests}")
    output.render(observed, cid)


@app.command()
def resolve(
    name: Annotated[str, typer.Argument(help="The name to look up.")],
    qtype: Annotated[str, typer.Argument(help="Record type.")] = "A",
    manifests: ManifestsOpt = None,
    cluster: Annotated[str, typer.Option(help="Ask as this member cluster.")] = "",
    explain: Annotated[bool, typer.Option(help="Say why: policy, candidates.")] = False,
    zone: ZoneOpt = "clusterset.local",
    ttl: TtlOpt = 5,
    default_policy: PolicyOpt = policy.KEP,
    state_file: StateFileOpt = None,
    clusterset_cidr: CidrOpt = DEFAULT_CIDR,
    clusterset_cidr_v6: CidrV6Opt = DEFAULT_CIDR_V6,
    unified: UnifiedOpt = False,
) -> None:
    """Answer NAME as the DNS server would for --cluster, and optionally explain it."""
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    cid = _cluster(cluster)
    settings = _settings(zone, ttl, default_policy, unified=unified)
    feed = _feed(manifests, state_file, clusterset_cidr, clusterset_cidr_v6)
    observed = feed.observe()
    if cid not in observed.state.clusters:
        raise SourceError(f"--cluster {cid}: no such cluster under {manifests}")
    view = feed.view(observed, cid)
    # As the server's first compile of this view: the clock now, and one round of probes.
    failed = asyncio.run(_probe_once(view))
    view = dataclasses.replace(view, now=time.time(), probe_failed=failed)
    output.resolve(view, compile_view(view, settings), settings, name, qtype, explain=explain)


async def _probe_once(view: ImportedView) -> frozenset[tuple[ServiceKey, ClusterId]]:
    """The verdict of the server's first probe round: a cluster none of whose probed
    endpoints accepts a connection fails."""
    rounds = probe.targets(view)
    results = await asyncio.gather(
        *(asyncio.gather(*(probe.tcp_ok(a, p, t.timeout) for a, p in t.addresses)) for t in rounds)
    )
    return frozenset(
        (t.key, t.cluster)
        for t, rs in zip(rounds, results, strict=True)
        if not any(ok for ok, _ in rs)
    )


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
) -> None:
    """Print the CoreDNS stub-zone stanza that sends the clusterset zone to clusterset dns,
    and a ready-to-run kubectl command that adds it (no CoreDNS rebuild).

    Example: clusterset corefile --server 10.96.0.53
    """
    if not server:
        raise UsageProblem("--server IP is required (the ClusterIP of the clusterset-dns Service)")
    try:
        host, port = parse_upstream(server)
    except ValueError as exc:
        raise UsageProblem(f"--server {server!r}: expected IP[:PORT]") from exc
    settings = _settings(zone, ttl, policy.KEP)
    target = f"{host}:{port}" if port != 53 else host
    output.corefile(settings.zone, target, ttl, namespace, configmap)


def main() -> None:
    """Entry point: usage problems and unreadable sources are one line and exit code 2."""
    command = typer.main.get_command(app)
    try:
        command.main(args=sys.argv[1:], prog_name="clusterset", standalone_mode=False)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except click.UsageError as exc:
        print(f"clusterset: error: {exc.format_message()}", file=sys.stderr)
        sys.exit(2)
    except (SourceError, ListenError, ConfigError) as exc:
        print(f"clusterset: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
