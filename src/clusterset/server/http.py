"""/metrics, /health and /ready on a separate port (CoreDNS's prometheus/health/ready).

prometheus-client renders the metrics; the DNS hot path only bumps plain ints
(`holder.Counters`), read here at scrape time by a collector, so no lock is
taken per query. Served by the stdlib WSGI server in a daemon thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Histogram, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clusterset.server.errors import ListenError
from clusterset.server.holder import ZoneHolder

log = logging.getLogger(__name__)
RCODES = ("NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED")


class DnsCollector(Collector):
    def __init__(self, holder: ZoneHolder, forwarder: Any = None) -> None:
        self.holder = holder
        self.forwarder = forwarder

    def collect(self) -> Iterator[Metric]:
        c = self.holder.counters
        req = CounterMetricFamily(
            "clusterset_dns_requests", "DNS requests received.", labels=["proto"]
        )
        req.add_metric(["udp"], c.queries_udp)
        req.add_metric(["tcp"], c.queries_tcp)
        yield req
        resp = CounterMetricFamily(
            "clusterset_dns_responses", "DNS responses sent, by rcode.", labels=["rcode"]
        )
        for i, name in enumerate(RCODES):
            resp.add_metric([name], c.rcodes[i])
        yield resp
        yield CounterMetricFamily(
            "clusterset_dns_dropped", "Queries dropped (not answerable).", value=c.dropped
        )
        yield CounterMetricFamily(
            "clusterset_dns_truncated", "UDP responses with TC set.", value=c.truncated
        )
        tcp = CounterMetricFamily(
            "clusterset_dns_tcp_closed",
            "TCP connections closed for want of a slot: idle ones evicted, or new ones "
            "rejected while every slot was mid-query.",
            labels=["reason"],
        )
        tcp.add_metric(["evicted"], c.tcp_evicted)
        tcp.add_metric(["rejected"], c.tcp_rejected)
        yield tcp
        yield CounterMetricFamily(
            "clusterset_dns_forwarded",
            "Queries handed to the upstream (unified mode).",
            value=c.forwarded,
        )
        zone = self.holder.zone
        yield GaugeMetricFamily(
            "clusterset_dns_zone_generation",
            "Zone loads since start.",
            value=self.holder.generation,
        )
        yield GaugeMetricFamily(
            "clusterset_dns_zone_serial",
            "SOA serial of the served zone.",
            value=zone.serial if zone else 0,
        )
        yield GaugeMetricFamily(
            "clusterset_dns_zone_names",
            "Names in the served zone.",
            value=len(zone.names) if zone else 0,
        )
        yield GaugeMetricFamily(
            "clusterset_dns_zone_answers",
            "Prebuilt answers in the served zone.",
            value=len(zone.answers) if zone else 0,
        )
        yield GaugeMetricFamily(
            "clusterset_dns_ready",
            "1 once the first full load is served.",
            value=1 if zone is not None and zone.synced else 0,
        )
        if self.forwarder is not None:
            cache = CounterMetricFamily(
                "clusterset_dns_forward_cache", "Forwarding cache lookups.", labels=["result"]
            )
            cache.add_metric(["hit"], self.forwarder.cache.hits)
            cache.add_metric(["miss"], self.forwarder.cache.misses)
            yield cache
            yield CounterMetricFamily(
                "clusterset_dns_forward_refused",
                "Forwarding refused by --allow.",
                value=self.forwarder.refused,
            )
            yield CounterMetricFamily(
                "clusterset_dns_forward_timeouts",
                "Upstream queries that timed out.",
                value=self.forwarder.timeouts,
            )
            yield CounterMetricFamily(
                "clusterset_dns_forward_mismatched",
                "Upstream replies dropped: wrong source, unknown ID or another question.",
                value=self.forwarder.mismatched,
            )
            yield CounterMetricFamily(
                "clusterset_dns_forward_limited",
                "Forwards REFUSED because too many were in flight (per client or in total).",
                value=self.forwarder.limited,
            )
            yield CounterMetricFamily(
                "clusterset_dns_forward_coalesced",
                "Queries that joined an identical upstream query already in flight.",
                value=self.forwarder.coalesced,
            )


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        log.debug("http: " + format, *args)


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class OpsServer:
    """Serves the registry and the two probes; `ready` and `alive` are callables."""

    def __init__(
        self,
        listen: tuple[str, int],
        registry: CollectorRegistry,
        *,
        ready: Callable[[], bool],
        alive: Callable[[], bool] = lambda: True,
        about: Callable[[], str] = lambda: "",
    ) -> None:
        metrics = make_wsgi_app(registry)

        def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
            path = environ.get("PATH_INFO", "")
            if path == "/metrics":
                return metrics(environ, start)  # type: ignore[no-any-return]
            if path in ("/health", "/ready"):
                ok = alive() if path == "/health" else ready()
                start(
                    "200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")]
                )
                body = b"OK" if ok else b"not ready" if path == "/ready" else b"unhealthy"
                # /ready also says what this server is (its cluster ID and where it came from).
                extra = about() if path == "/ready" else ""
                return [body + (f"\n{extra}".encode() if extra else b"")]
            start("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found"]

        try:
            self.httpd = make_server(
                listen[0], listen[1], app, server_class=_ThreadingWSGIServer, handler_class=_Quiet
            )
        except OSError as exc:
            raise ListenError(
                f"--metrics-listen {listen[0]}:{listen[1]}: {exc.strerror or exc}"
            ) from exc
        self.address = self.httpd.server_address[:2]
        self._thread = threading.Thread(
            target=self.httpd.serve_forever, name="ops-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


RECONCILE_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10)


def reconcile_histogram(registry: CollectorRegistry) -> Histogram:
    """`clusterset_reconcile_duration_seconds`: the hub observes every pass into it."""
    return Histogram(
        "clusterset_reconcile_duration_seconds",
        "Duration of reconcile passes.",
        buckets=RECONCILE_BUCKETS,
        registry=registry,
    )


@dataclass(frozen=True, slots=True)
class HubStats:
    """What the controller's metrics show, read from the hub at scrape time (the server
    layer does not import the controller: the CLI builds this)."""

    objects: Mapping[tuple[str, str], int]  # (cluster, resource) -> objects in the cache
    restarts: Mapping[tuple[str, str], int]  # (cluster, resource) -> watch restarts
    synced: Mapping[str, bool]
    reachable: Mapping[str, bool]
    reconciles: int
    errors: int
    last_duration: float
    leading: bool


class HubCollector(Collector):
    """The controller's state at scrape time: objects per cluster, reconciles, watches."""

    def __init__(self, stats: Callable[[], HubStats]) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        st = self.stats()
        objs = GaugeMetricFamily(
            "clusterset_objects", "Objects in the informer caches.", labels=["cluster", "kind"]
        )
        restarts = CounterMetricFamily(
            "clusterset_watch_restarts",
            "Watch restarts (errors, 410 Gone).",
            labels=["cluster", "resource"],
        )
        synced = GaugeMetricFamily(
            "clusterset_cluster_synced",
            "1 once every cache of a cluster has synced.",
            labels=["cluster"],
        )
        reachable = GaugeMetricFamily(
            "clusterset_cluster_reachable",
            "1 while every watch of a cluster is connected.",
            labels=["cluster"],
        )
        for (name, resource), n in st.objects.items():
            objs.add_metric([name, resource], n)
        for (name, resource), n in st.restarts.items():
            restarts.add_metric([name, resource], n)
        for name, ok in st.synced.items():
            synced.add_metric([name], 1 if ok else 0)
        for name, ok in st.reachable.items():
            reachable.add_metric([name], 1 if ok else 0)
        yield objs
        yield restarts
        yield synced
        yield reachable
        yield CounterMetricFamily("clusterset_reconcile", "Reconcile passes.", value=st.reconciles)
        yield CounterMetricFamily(
            "clusterset_reconcile_errors", "Reconcile passes with a failed write.", value=st.errors
        )
        yield GaugeMetricFamily(
            "clusterset_reconcile_last_duration_seconds",
            "Duration of the last pass.",
            value=st.last_duration,
        )
        yield GaugeMetricFamily(
            "clusterset_leader",
            "1 while this replica holds the leader lease.",
            value=1 if st.leading else 0,
        )
