"""`clusterset`: run | dns | controller | status | render | resolve | corefile.

Errors the user can fix (bad flags, unreadable sources) print one line on
stderr and exit 2; nothing prints a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import ipaddress
import logging
import signal
import sys
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
from clusterset.controller.manifest import (
    ClusterSetFeed,
    FolderFeed,
    Observed,
    SourceError,
    next_generation,
)
from clusterset.controller.member import MemberFeed
from clusterset.kube.api import ConfigError, KubeApi, load_contexts
from clusterset.kube.cluster import SOURCE_LEASE_LABEL
from clusterset.kube.karmada import control_api as karmada_control_api
from clusterset.kube.karmada import members as karmada_members
from clusterset.kube.lease import LeaderElector
from clusterset.model.ids import ClusterId, InvalidName, cluster_id
from clusterset.model.objects import IPFamily
from clusterset.model.state import ClusterSetState, ImportedView
from clusterset.reconcile import allocate
from clusterset.reconcile import desired as rd
from clusterset.reconcile.desired import Desired
from clusterset.server.app import DnsOptions, DnsServer, ListenError, parse_listen
from clusterset.server.forward import DEFAULT_ALLOW, parse_upstream
from clusterset.server.http import HubCollector, OpsServer
from clusterset.zone import policy
from clusterset.zone.records import ZoneSettings
from clusterset.zone.wire import UDP_PAYLOAD

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
    float,
    typer.Option(
        "--lease-grace",
        help="Seconds after which a source cluster whose liveness Lease was not renewed "
        "stops counting (0: ignore leases).",
    ),
]
QueryLogOpt = Annotated[
    bool, typer.Option("--log-queries", help="Log every query (slow; off by default).")
]
UdpSizeOpt = Annotated[
    int,
    typer.Option(
        "--udp-size",
        help="Largest UDP reply in bytes, whatever size the client advertises (TC above it).",
    ),
]
PolicyOpt = Annotated[
    str, typer.Option("--default-policy", help=f"Answer policy: {', '.join(policy.POLICIES)}.")
]


def _settings(
    zone: str,
    ttl: int,
    default_policy: str,
    ns: list[str] | None = None,
    *,
    unified: bool = False,
    lease_grace: float = 0.0,
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
        lease_grace=lease_grace if lease_grace > 0 else None,
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
    udp_size: int = UDP_PAYLOAD,
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
            raise UsageProblem(f"--upstream {upstream!r}: {exc}") from exc
    nets = tuple(allow) if allow else DEFAULT_ALLOW
    for n in nets:
        try:
            ipaddress.ip_network(n)
        except ValueError as exc:
            raise UsageProblem(f"--allow {n!r}: not a CIDR") from exc
    if udp_threads < 1:
        raise UsageProblem("--udp-threads must be at least 1")
    if metrics_listen is not None:
        parse_listen(metrics_listen, "--metrics-listen")
    if not 512 <= udp_size <= 65535:
        raise UsageProblem(f"--udp-size {udp_size}: expected 512-65535")
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
        udp_size=udp_size,
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
    if feed in done and feed.exception() is not None:
        log.error("zone feed failed: %s", feed.exception())
    feed.cancel()
    stopper.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await feed
    log.info("shutting down")
    await server.stop()


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
    udp_size: UdpSizeOpt = UDP_PAYLOAD,
    lease_grace: LeaseGraceOpt = 30.0,
    source_lease_namespace: Annotated[
        str, typer.Option(help="Namespace where the hub keeps the source-cluster Leases.")
    ] = "kube-system",
) -> None:
    """Serve the clusterset zone from one cluster's ServiceImports and MCS EndpointSlices.

    Examples:
      clusterset dns --manifests DIR --listen 127.0.0.1:5300
      clusterset dns --kubeconfig ~/.kube/config --context member2 --listen 0.0.0.0:53
    """
    settings = _settings(
        zone, ttl, default_policy, ns_address, unified=unified, lease_grace=lease_grace
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
        udp_size=udp_size,
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
    clusterset_cidr: Annotated[
        str, typer.Option(help="ClusterSetIP range (IPv4).")
    ] = "10.250.0.0/16",
    clusterset_cidr_v6: Annotated[
        str, typer.Option(help="ClusterSetIP range (IPv6).")
    ] = "fd63:6c75:7374::/112",
    state_file: Annotated[Path | None, typer.Option(help="Where allocations persist.")] = None,
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
        udp_size=udp_size,
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
            yield await queue.get()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


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


def _feed(manifests: Path | None, state_file: Path | None = None) -> ClusterSetFeed:
    return ClusterSetFeed(
        _need_manifests(manifests),
        cidrs=_cidrs("10.250.0.0/16", "fd63:6c75:7374::/112"),
        state_file=state_file,
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
    source_lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the per-source-cluster liveness Leases.")
    ] = "kube-system",
    source_lease_duration: Annotated[
        int, typer.Option(help="leaseDurationSeconds written on the liveness Leases.")
    ] = 30,
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
        )
    hub = Hub(
        apis,
        elector=elector,
        lease_namespace=source_lease_namespace,
        lease_duration=source_lease_duration,
        create_namespaces=create_namespaces,
        karmada=karmada,
    )
    log.info("controller: %d member cluster(s): %s", len(apis), ", ".join(apis))
    ops = None
    if metrics_listen:
        registry = CollectorRegistry()
        registry.register(HubCollector(hub))
        ops = OpsServer(
            parse_listen(metrics_listen, "--metrics-listen"),
            registry,
            ready=lambda: all(m.synced for m in hub.members.values()),
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
        task.cancel()
        stopper.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
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


@app.command()
def status(
    manifests: ManifestsOpt = None,
    output_format: OutputOpt = "table",
    state_file: Annotated[Path | None, typer.Option(help="Where allocations persist.")] = None,
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
    observed = _feed(manifests, state_file).observe()
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
    state_file: Annotated[Path | None, typer.Option(help="Where allocations persist.")] = None,
) -> None:
    """Print, as YAML, the objects the controller would apply to one cluster."""
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    cid = _cluster(cluster)
    observed = _feed(manifests, state_file).observe()
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
    state_file: Annotated[Path | None, typer.Option(help="Where allocations persist.")] = None,
    unified: UnifiedOpt = False,
) -> None:
    """Answer NAME as the DNS server would for --cluster, and optionally explain it."""
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    cid = _cluster(cluster)
    settings = _settings(zone, ttl, default_policy, unified=unified)
    feed = _feed(manifests, state_file)
    observed = feed.observe()
    if cid not in observed.state.clusters:
        raise SourceError(f"--cluster {cid}: no such cluster under {manifests}")
    output.resolve(feed.view(observed, cid), settings, name, qtype, explain=explain)


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
