"""The hub's Prometheus metrics: its caches, watches, reconcile passes and leadership.

Read from the hub at scrape time (`hub_stats`), so the hub itself only keeps plain
counters; the reconcile histogram is the one metric it observes into as it runs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from clusterset.controller.hub import Hub

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
    """What the controller's metrics show, read from the hub at scrape time."""

    objects: Mapping[tuple[str, str], int]  # (cluster, resource) -> objects in the cache
    restarts: Mapping[tuple[str, str], int]  # (cluster, resource) -> watch restarts
    writes: Mapping[tuple[str, str, str], int]  # (cluster, kind, verb) -> writes made there
    synced: Mapping[str, bool]
    reachable: Mapping[str, bool]
    reconciles: int
    errors: int
    last_duration: float
    leading: bool


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
        writes={
            (name, kind, verb): n
            for name, m in hub.members.items()
            # A copy first: the hub's loop adds kinds while this runs in the ops thread.
            for (kind, verb), n in dict(m.writes).items()
        },
        synced={name: m.synced for name, m in hub.members.items()},
        reachable={name: m.reachable for name, m in hub.members.items()},
        reconciles=hub.reconciles,
        errors=hub.errors,
        last_duration=hub.last_duration,
        leading=hub.elector is None or hub.elector.leading.is_set(),
    )


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
        writes = CounterMetricFamily(
            "clusterset_member_writes",
            "Writes the controller made in a cluster (server-side applies, deletes) by kind "
            "(a status write: <Kind>/status).",
            labels=["cluster", "kind", "verb"],
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
        for (name, kind, verb), n in st.writes.items():
            writes.add_metric([name, kind, verb], n)
        for name, ok in st.synced.items():
            synced.add_metric([name], 1 if ok else 0)
        for name, ok in st.reachable.items():
            reachable.add_metric([name], 1 if ok else 0)
        yield objs
        yield restarts
        yield writes
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
