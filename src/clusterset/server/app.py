"""Wire the DNS server: sockets, the UDP threads and TCP server, and the zone feed."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.state import ImportedView, Track
from clusterset.server import gcpolicy
from clusterset.server.errors import ListenError as ListenError
from clusterset.server.forward import DEFAULT_ALLOW, Forwarder, is_own_address
from clusterset.server.holder import ZoneHolder
from clusterset.server.http import DnsCollector, OpsServer
from clusterset.server.probe import Prober
from clusterset.server.tcp import TcpServer
from clusterset.server.udp import UdpServer
from clusterset.zone import build
from clusterset.zone.encode import name_from_text
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import UDP_PAYLOAD, CompiledZone

log = logging.getLogger(__name__)
SWITCH_INTERVAL = 0.0005  # seconds a thread may hold the GIL while another waits


def parse_listen(value: str, flag: str = "--listen") -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ListenError(f"{flag} {value!r}: expected HOST:PORT")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def bind(host: str, port: int, reuse_port: bool = False) -> tuple[socket.socket, socket.socket]:
    """UDP and TCP sockets on the same port (port 0: the kernel picks one for both).

    `reuse_port`: other processes (--workers) bind the same port; the kernel spreads
    datagrams and connections over them.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ListenError(f"--listen {host}:{port}: {exc.strerror}") from exc
    family = infos[0][0]
    for _ in range(20):
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            if reuse_port:
                udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            udp.bind((host, port))
            udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(128)
            tcp.setblocking(False)
            return udp, tcp
        except OSError as exc:
            udp.close()
            tcp.close()
            if port != 0:
                raise ListenError(f"--listen {host}:{port}: {exc.strerror}") from exc
    raise ListenError(f"--listen {host}:0: no free port for UDP and TCP")


@dataclass(slots=True)
class DnsOptions:
    settings: ZoneSettings
    listen: str = "127.0.0.1:5353"
    udp_threads: int = 1
    # Safety net of the incremental build: a full rebuild at least this often (seconds).
    full_rebuild_every: float = 600.0
    upstream: tuple[str, int] | None = None  # unified mode: where other names go
    allow: tuple[str, ...] = DEFAULT_ALLOW
    metrics_listen: str | None = None  # HOST:PORT for /metrics, /health, /ready
    lameduck: float = 0.0  # seconds to keep answering after SIGTERM while /ready says 503
    log_queries: bool = False
    udp_size: int = UDP_PAYLOAD  # largest UDP reply, whatever the client advertises
    workers: int = 1  # server processes on the port (cli/workers.py)
    reuse_port: bool = False  # this process is one of those workers


def compile_view(
    view: ImportedView, settings: ZoneSettings, previous: CompiledZone | None = None
) -> CompiledZone:
    """The zone of `view`; only the services whose inputs changed since `previous` are built."""
    state = previous.state if previous is not None and previous.synced else None
    return CompiledZone(build.build(view, settings, serial=view.generation, previous=state))


class DnsServer:
    """The running server; `serve_views` feeds it, `stop` ends it gracefully."""

    def __init__(self, options: DnsOptions) -> None:
        self.options = options
        self.holder = ZoneHolder(name_from_text(options.settings.zone.lower()))
        # Until the first load: SERVFAIL (with the zone's SOA) for every in-zone name.
        self.holder.zone = CompiledZone(
            build.build(ImportedView(None, {}, {}, frozenset()), options.settings, serial=0),
            synced=False,
        )
        host, port = parse_listen(options.listen)
        self._sockets: tuple[socket.socket, socket.socket] | None = bind(
            host, port, options.reuse_port
        )
        self.address = self._sockets[0].getsockname()[:2]
        self.forwarder = None
        if options.upstream is not None:
            if is_own_address(options.upstream, self.address):
                for s in self._sockets:
                    s.close()
                up = "{}:{}".format(*options.upstream)
                raise ListenError(
                    f"--upstream {up} is this server's own --listen address: "
                    "every forwarded query would come back to it"
                )
            self.forwarder = Forwarder(
                options.upstream, allow=options.allow, udp_size=options.udp_size
            )
        if options.reuse_port:
            # A worker joins the shared port only once its first zone is loaded (`_open`):
            # until then the kernel would hand it queries it could only answer SERVFAIL.
            # The bind above only proved that the port can be shared (exit 2 if not); a
            # datagram the kernel hands that socket in the microseconds it is open is lost.
            for s in self._sockets:
                s.close()
            self._sockets = None
        self.udp: UdpServer | None = None
        self.serving = asyncio.Event()  # set once UDP and TCP are open (a worker's heartbeat)
        self.tcp = TcpServer(self.holder, forwarder=self.forwarder, log_queries=options.log_queries)
        self.on_swap: list[Callable[[CompiledZone, ImportedView], None]] = []
        self.stopping = False
        self.registry = CollectorRegistry()
        self.registry.register(DnsCollector(self.holder, self.forwarder))
        self.change_latency = Histogram(
            "clusterset_dns_change_to_answer_seconds",
            "From a change seen by the source (file, watch event) to the zone that answers it.",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=self.registry,
        )
        self.compile_seconds = Histogram(
            "clusterset_dns_zone_compile_seconds",
            "Time to build and compile a zone snapshot.",
            registry=self.registry,
        )
        self.prober: Prober | None = None
        self.identity: tuple[ClusterId | None, str] = (None, "")
        self.started = time.monotonic()  # for the first load's log line
        self.ops: OpsServer | None = None
        if options.metrics_listen:
            self.ops = OpsServer(
                parse_listen(options.metrics_listen, "--metrics-listen"),
                self.registry,
                ready=self.ready,
                about=self.about,
            )

    def about(self) -> str:
        """The cluster ID the answers are computed for, and where it came from."""
        zone = self.holder.zone
        if zone is None:
            return ""
        cid, source = self.identity
        return f"cluster ID: {cid or 'none'}" + (f" (from {source})" if source else "")

    def ready(self) -> bool:
        """First full load served, and not shutting down (lameduck)."""
        zone = self.holder.zone
        return zone is not None and zone.synced and not self.stopping

    async def start(self) -> None:
        # A zone compile holds the GIL in another thread; with the default 5 ms switch
        # interval each UDP query waiting behind it waits up to 5 ms (measured in
        # bench/dns_soak.py: 18 ms average latency while the folder changes every 100 ms).
        sys.setswitchinterval(SWITCH_INTERVAL)
        gcpolicy.configure()
        if self.ops is not None:
            self.ops.start()
        if self.forwarder is not None:
            await self.forwarder.start()
        if self._sockets is not None:
            await self._open(*self._sockets)

    async def _open(self, udp: socket.socket, tcp: socket.socket) -> None:
        options = self.options
        self._sockets = None
        self.udp = UdpServer(
            udp,
            self.holder,
            threads=options.udp_threads,
            forwarder=self.forwarder,
            log_queries=options.log_queries,
            udp_size=options.udp_size,
        )
        self.udp.start()
        await self.tcp.start(tcp)
        self.serving.set()
        settings = options.settings
        unified = (
            "unified: also {}, the rest to {}:{}".format(settings.unified_zone, *options.upstream)
            if settings.unified_zone and options.upstream
            else "clusterset zone only"
        )
        log.info(
            "dns: serving %s on %s:%d (udp+tcp; udp loop: %s; %s; default policy %s)",
            settings.zone, *self.address,
            "native" if self.udp.native is not None else "python",
            unified, settings.default_policy,
        )  # fmt: skip

    async def serve_views(self, views: AsyncIterator[ImportedView]) -> None:
        """Compile every view; recompile the last one when a policy's hysteresis or a lease
        expires, or when active probes change their verdict.

        The clock is read here, not in the pure core: each view gets `now`, the health
        history (`tracks`) that the previous compile produced, and the probe verdicts.
        Compiles are incremental (only services whose inputs changed); a full rebuild runs
        every `full_rebuild_every` seconds as the safety net.
        """
        every = self.options.full_rebuild_every
        full_due = time.monotonic()  # the first compile is a full one anyway
        latest: ImportedView | None = None
        tracks: Mapping[tuple[ServiceKey, ClusterId], Track] = {}
        wake_at: float | None = None
        it = aiter(views)
        pending: asyncio.Task[ImportedView] | None = None
        poke = asyncio.Event()
        prober = Prober(on_change=poke.set)
        probing = asyncio.create_task(prober.run(), name="prober")
        self.prober = prober
        try:
            while True:
                if pending is None:
                    pending = asyncio.ensure_future(anext(it))
                poked = asyncio.ensure_future(poke.wait())
                timeout = max(0.0, full_due - time.monotonic()) if latest is not None else None
                if wake_at is not None:
                    wake = max(0.0, wake_at - time.time())
                    timeout = wake if timeout is None else min(timeout, wake)
                done, _ = await asyncio.wait(
                    {pending, poked}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
                )
                poked.cancel()
                poke.clear()
                fresh = pending in done
                if fresh:
                    try:
                        latest = pending.result()
                    except StopAsyncIteration:
                        return
                    pending = None
                    prober.update(latest)
                if latest is None:
                    continue
                view = dataclasses.replace(
                    latest,
                    now=time.time(),
                    tracks=tracks,
                    probe_failed=prober.failed,
                    # Only a new view times a change: a timer's recompile (hysteresis, probes,
                    # resync) of the same view must not add its age to the histogram.
                    observed_at=latest.observed_at if fresh else 0.0,
                )
                gcpolicy.collect_young()  # before the new zone's objects are there to visit
                # Compile off the event loop so TCP and the feed stay responsive on big zones.
                started = time.perf_counter()
                full = time.monotonic() >= full_due
                try:
                    zone = await asyncio.to_thread(
                        compile_view,
                        view,
                        self._settings(view),
                        None if full else self.holder.zone,
                    )
                except Exception:  # a bug must not take DNS down: keep the zone we have
                    log.exception(
                        "zone: cannot compile generation %d; serving the previous zone",
                        view.generation,
                    )
                    wake_at = None
                    continue
                self.compile_seconds.observe(time.perf_counter() - started)
                if full:
                    full_due = time.monotonic() + every
                tracks, wake_at = zone.state.tracks, zone.state.wake_at
                self._install(zone, view)
                if self.udp is None and zone.synced:  # a --workers worker: join the port now
                    host, port = self.address
                    await self._open(*bind(host, port, reuse_port=True))
        finally:
            probing.cancel()
            if pending is not None:
                pending.cancel()

    def _settings(self, view: ImportedView) -> ZoneSettings:
        """The zone's settings, with the glue the source found when no --ns-address was set."""
        settings = self.options.settings
        if view.ns_addresses and not settings.ns_addresses:
            return dataclasses.replace(settings, ns_addresses=view.ns_addresses)
        return settings

    def _install(self, zone: CompiledZone, view: ImportedView) -> None:
        self.identity = (view.cluster, view.cluster_source)
        first = zone.synced and not (self.holder.zone is not None and self.holder.zone.synced)
        self.holder.swap(zone)
        if view.observed_at:
            self.change_latency.observe(max(0.0, time.time() - view.observed_at))
        if first:
            log.info(
                "zone: first load: %d services, %d names, %.1fs after start; answering as "
                "cluster %s%s",
                len(zone.state.fragments), len(zone.names), time.monotonic() - self.started,
                view.cluster or "(none)",
                f" (from {view.cluster_source})" if view.cluster_source else "",
            )  # fmt: skip
        for w in zone.state.new_warnings:  # a service's warning is logged when it is built
            log.warning("zone: %s", w)
        for cb in self.on_swap:
            cb(zone, view)
        log.debug(
            "dns: zone generation %d loaded (%d names, %d answers; %d of %d services rebuilt)",
            self.holder.generation,
            len(zone.names),
            len(zone.answers),
            zone.state.rebuilt,
            len(zone.state.fragments),
        )

    async def stop(self) -> None:
        """Lameduck (keep answering while /ready says 503), then stop accepting and close."""
        self.stopping = True
        if self.options.lameduck > 0:
            log.info("lameduck: answering %.1fs more before shutdown", self.options.lameduck)
            await asyncio.sleep(self.options.lameduck)
        with contextlib.suppress(Exception):
            await self.tcp.stop()
        if self.udp is not None:
            await asyncio.to_thread(self.udp.stop)
        if self.forwarder is not None:
            await self.forwarder.stop()
        if self.ops is not None:
            self.ops.stop()
