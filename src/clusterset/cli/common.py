"""What every command shares: the Typer app and its root options, flag types, the zone
and DNS-server settings built from flags, member API clients, and the signal handling that
stops a long-running command."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

# Typer vendors Click (typer._click) since 0.2x; its parse errors are that Click's classes.
from typer._click import exceptions as click

from clusterset import __version__, logs
from clusterset.cli.progress import on_terminal
from clusterset.cli.workers import (
    INTERRUPTED,
    follow_supervisor,
    for_worker,
    heartbeat,
    supervise,
    worker_index,
)
from clusterset.controller.manifest import ClusterSetFeed
from clusterset.kube.api import API_ERRORS, KubeApi, load_contexts
from clusterset.kube.karmada import members as karmada_members
from clusterset.model import liveness
from clusterset.model.ids import ClusterId, InvalidName, ServiceKey, cluster_id
from clusterset.model.objects import IPFamily
from clusterset.model.state import ImportedView
from clusterset.reconcile import allocate
from clusterset.server.app import DnsOptions, DnsServer, ListenError, parse_listen
from clusterset.server.forward import DEFAULT_ALLOW, parse_upstream
from clusterset.zone import policy
from clusterset.zone.settings import ZoneSettings

log = logging.getLogger("clusterset")
T = TypeVar("T")


app = typer.Typer(
    name="clusterset",
    help="One DNS name for a Kubernetes service, whichever cluster it runs in.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,  # also registers Typer's completion classes (`completion SHELL`)
    rich_markup_mode=None,
    context_settings={"auto_envvar_prefix": "CLUSTERSET", "help_option_names": ["-h", "--help"]},
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


UdpThreadsOpt = Annotated[int, typer.Option("--udp-threads", help="UDP receive threads.")]


WorkersOpt = Annotated[
    int,
    typer.Option(
        "--workers",
        help="Server processes sharing the port (SO_REUSEPORT), each with its own zone.",
    ),
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


def source_lease_grace(duration: int, grace: float | None) -> float:
    """Check the liveness-Lease flags; the renewal interval they imply."""
    if duration < 1:
        raise UsageProblem(f"--source-lease-duration {duration}: expected at least 1")
    interval = liveness.renew_interval(duration)
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


# Allocation flags: `run` and the read-only commands take the same, so they agree.
DEFAULT_CIDR = "10.250.0.0/16"


DEFAULT_CIDR_V6 = "fd63:6c75:7374::/112"


CidrOpt = Annotated[str, typer.Option("--clusterset-cidr", help="ClusterSetIP range (IPv4).")]


CidrV6Opt = Annotated[str, typer.Option("--clusterset-cidr-v6", help="ClusterSetIP range (IPv6).")]


StateFileOpt = Annotated[
    Path | None, typer.Option("--state-file", help="Where allocations persist.")
]


def zone_settings(
    zone: str,
    ttl: int,
    default_policy: str,
    ns: list[str] | None = None,
    *,
    unified: bool = False,
    source_leases: bool = False,
    listen: str | None = None,
) -> ZoneSettings:
    """The zone's settings from flags. Without --ns-address the apex NS's glue is the
    --listen address when that is one non-loopback IP, CoreDNS's kubernetes plugin's rule
    for its own ns.dns name: an NS without an address is a lame delegation."""
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
    if not ns and listen is not None:
        with contextlib.suppress(ValueError, ListenError):
            host = ipaddress.ip_address(parse_listen(listen)[0])
            ns = [] if host.is_unspecified or host.is_loopback else [str(host)]
    return ZoneSettings(
        zone=z,
        ttl=ttl,
        default_policy=default_policy,
        ns_addresses=tuple(ns or ()),
        unified_zone="cluster.local" if unified else None,
        source_leases=source_leases,
    )


@dataclass(frozen=True, slots=True)
class ServeFlags:
    """The DNS-serving flags `dns` and `run` share, collected once at the top of each, so
    that `dns_options` checks them the same way for both."""

    listen: str
    zone: str
    ttl: int
    default_policy: str
    udp_threads: int
    unified: bool
    upstream: str | None
    allow: list[str] | None
    metrics_listen: str | None
    lameduck: float
    log_queries: bool
    udp_size: int
    workers: int

    @classmethod
    def pick(cls, params: Mapping[str, Any]) -> ServeFlags:
        """The shared flags out of a command's parameters (its `locals()`, taken first
        thing): every field is a parameter of `dns` and of `run` under the same name, with
        the same type and default (tests/unit/test_cli_settings.py)."""
        return cls(**{f.name: params[f.name] for f in dataclasses.fields(cls)})


def dns_options(
    flags: ServeFlags, ns: list[str] | None = None, *, source_leases: bool = False
) -> DnsOptions:
    """The server's options from its flags (`ns`: --ns-address), the zone's checked first;
    a bad flag is one line naming it."""
    settings = zone_settings(
        flags.zone,
        flags.ttl,
        flags.default_policy,
        ns,
        unified=flags.unified,
        source_leases=source_leases,
        listen=flags.listen,
    )
    upstream, allow = _forwarding(flags.unified, flags.upstream, flags.allow)
    if flags.udp_threads < 1:
        raise UsageProblem("--udp-threads must be at least 1")
    if flags.workers < 1:
        raise UsageProblem("--workers must be at least 1")
    if flags.workers > 1 and parse_listen(flags.listen)[1] == 0:
        raise UsageProblem("--workers: give --listen a fixed port (0 would differ per worker)")
    if flags.metrics_listen is not None:
        metrics_port = parse_listen(flags.metrics_listen, "--metrics-listen")[1]
        if flags.workers > 1 and metrics_port == 0:
            raise UsageProblem(
                "--workers: give --metrics-listen a fixed port (the workers' are the next ones)"
            )
        if flags.workers > 1 and metrics_port + flags.workers > 65535:
            raise UsageProblem(
                f"--workers {flags.workers}: the workers' metrics ports (--metrics-listen port "
                f"+ 1 ... + {flags.workers}) pass 65535"
            )
    if not 512 <= flags.udp_size <= 65535:
        raise UsageProblem(f"--udp-size {flags.udp_size}: expected 512-65535")
    if flags.lameduck < 0:
        raise UsageProblem("--lameduck must be >= 0")
    return DnsOptions(
        settings,
        flags.listen,
        flags.udp_threads,
        upstream=upstream,
        allow=allow,
        metrics_listen=flags.metrics_listen,
        lameduck=flags.lameduck,
        log_queries=flags.log_queries,
        udp_size=flags.udp_size,
        workers=flags.workers,
    )


def _forwarding(
    unified: bool, upstream: str | None, allow: list[str] | None
) -> tuple[tuple[str, int] | None, tuple[str, ...]]:
    """Unified mode's flags, checked: where the names outside the zones go, and the client
    ranges allowed to send them there."""
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
    return up, nets


def cidr_networks(v4: str, v6: str) -> dict[IPFamily, allocate.Network]:
    try:
        return {
            IPFamily.IPV4: ipaddress.IPv4Network(v4),
            IPFamily.IPV6: ipaddress.IPv6Network(v6),
        }
    except ValueError as exc:
        raise UsageProblem(f"--clusterset-cidr: {exc}") from exc


def cluster_arg(name: str) -> ClusterId:
    try:
        return cluster_id(name)
    except InvalidName as exc:
        raise UsageProblem(f"--cluster: {exc}") from exc


def service_arg(value: str, flag: str) -> ServiceKey:
    """NAMESPACE/NAME, or one line naming the flag."""
    ns, sep, name = value.partition("/")
    if not sep or not ns or not name or "/" in name:
        raise UsageProblem(f"{flag} {value!r}: expected NAMESPACE/NAME")
    return ServiceKey(ns, name)


def need_manifests(manifests: Path | None) -> Path:
    if manifests is None:
        raise UsageProblem(
            "--manifests DIR or --kubeconfig is required (no $KUBECONFIG, no ~/.kube/config)"
        )
    return manifests


async def until_signal(task: asyncio.Task[None]) -> int | None:
    """Wait for SIGINT/SIGTERM or for `task` to end (long-running work never ends on its
    own): the signal that came, or None when the task ended, which the caller reports and
    exits non-zero for."""
    stop = asyncio.Event()
    came: list[int] = []
    loop = asyncio.get_running_loop()

    def got(sig: int) -> None:
        came.append(sig)
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, got, sig)
    stopper = asyncio.create_task(stop.wait(), name="stop")
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    return None if task in done and not came else came[0]


def exit_if_interrupted(sig: int | None) -> None:
    """After a graceful stop: SIGTERM is a clean exit (0, as Kubernetes expects); SIGINT
    (Ctrl-C) exits 130, as shells and kubectl do."""
    if sig == signal.SIGINT:
        raise SystemExit(INTERRUPTED)


async def serve_until_stopped(server: DnsServer, views: AsyncIterator[ImportedView]) -> None:
    await server.start()
    feed = asyncio.create_task(server.serve_views(views), name="zone-feed")
    sig = await until_signal(feed)
    failed = sig is None and feed.exception() is not None
    if failed:
        # Serving a zone nobody updates any more would hide the failure: say why once, go
        # not-ready (lameduck) and exit non-zero, so that Kubernetes restarts the pod.
        log.error("zone feed failed, exiting: %s", why(feed.exception()))
    feed.cancel()
    await asyncio.gather(feed, return_exceptions=True)  # its failure is logged above
    log.info("shutting down")
    await server.stop()
    if failed:
        raise SystemExit(1)
    exit_if_interrupted(sig)


def why(exc: BaseException | None) -> str:
    """One line for an exception, the leaves of a TaskGroup's ExceptionGroup included."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(why(e) for e in exc.exceptions)
    return f"{type(exc).__name__}: {exc}"


def run_server(
    options: DnsOptions, make_views: Callable[[DnsServer], AsyncIterator[ImportedView]]
) -> None:
    import uvloop

    index = worker_index()
    if index is not None:
        options = for_worker(options, index)
        follow_supervisor()
    elif options.workers > 1:
        supervise(options.workers, options.metrics_listen)
        return
    server = DnsServer(options)

    async def main() -> None:
        # A worker beats once it serves (joined the port); a hung one is replaced.
        beat = None if index is None else asyncio.create_task(heartbeat(server.serving))
        try:
            await serve_until_stopped(server, make_views(server))
        finally:
            if beat is not None:
                beat.cancel()

    uvloop.run(main())


KubeconfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--kubeconfig",
        help="kubeconfig of the member cluster(s). Default, as kubectl's, when no other "
        "source is given: $KUBECONFIG (its first existing file), then ~/.kube/config.",
    ),
]


def default_kubeconfig(*given: object) -> Path | None:
    """kubectl's default kubeconfig, when none of the `given` sources (--manifests,
    --kubeconfig, --karmada-kubeconfig) is set: $KUBECONFIG's first existing file (its
    first file, so that the error names it, if none exists), else ~/.kube/config if it
    exists, else None."""
    if any(g is not None for g in given):
        return None
    env = [Path(p) for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    if env:
        return next((p for p in env if p.expanduser().exists()), env[0])
    home = Path("~/.kube/config").expanduser()
    return home if home.exists() else None


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


def member_apis(
    kubeconfig: Path | None,
    contexts: list[str] | None,
    all_contexts: bool,
    karmada: Path | None,
) -> dict[str, KubeApi]:
    if karmada is not None:
        if kubeconfig is not None:
            raise UsageProblem("--karmada-kubeconfig and --kubeconfig are exclusive")
        config = next(iter(load_contexts(karmada, None, flag="--karmada-kubeconfig").values()))
        return asyncio.run(karmada_members(config, only=contexts))
    if kubeconfig is None:
        raise UsageProblem(
            "--kubeconfig or --karmada-kubeconfig is required (no $KUBECONFIG, no ~/.kube/config)"
        )
    configs = load_contexts(kubeconfig, contexts, all_contexts=all_contexts)
    return {name: KubeApi.from_config(name, cfg) for name, cfg in configs.items()}


async def each_cluster(
    apis: dict[str, KubeApi], work: Callable[[KubeApi], Awaitable[T]]
) -> tuple[dict[str, T], dict[str, str]]:
    """`work` on every cluster at once, each client closed after: the results, and the
    clusters whose API could not be reached or refused (by name, with why). Any other error
    is a bug and is raised."""

    async def one(api: KubeApi) -> T:
        try:
            return await work(api)
        finally:
            await api.close()

    results = await asyncio.gather(*(one(a) for a in apis.values()), return_exceptions=True)
    done: dict[str, T] = {}
    failed: dict[str, str] = {}
    for name, r in zip(apis, results, strict=True):
        if isinstance(r, API_ERRORS):
            failed[name] = f"{type(r).__name__}: {r}"
        elif isinstance(r, BaseException):
            raise r
        else:
            done[name] = r
    return done, failed


def manifest_feed(
    manifests: Path | None, state_file: Path | None, v4: str, v6: str
) -> ClusterSetFeed:
    """What `run` with the same flags would compute; read-only: never writes the state file."""
    return ClusterSetFeed(
        need_manifests(manifests),
        cidrs=cidr_networks(v4, v6),
        state_file=state_file,
        read_only=True,
        progress=on_terminal(),
    )
