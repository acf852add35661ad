"""The `--workers` supervisor's /metrics: its workers' own, scraped when it is scraped.

Each worker serves /metrics on loopback; the collector fetches them all in parallel,
gives every sample a `worker` label and merges the families by name, beside the
supervisor's own: the worker count, which workers answered, and their restarts. A worker
that does not answer within SCRAPE_TIMEOUT, or sends what does not parse, is left out of
that scrape (`clusterset_worker_up` 0); the others are still served. Fetched as
OpenMetrics: its families keep their `_created` samples (the classic text format makes
families of their own of them) and end with `# EOF`, so a cut-off reply does not parse.

Not prometheus_client's multiprocess mode: it only sums the library's own Counter, Gauge
and Histogram objects, which write every change to a shared file. DnsCollector is a
custom collector read at scrape time from plain per-thread ints (no lock or file write per
query; the native UDP loop counts in C), so nothing of it would reach those files.
"""

from __future__ import annotations

import logging
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)
SCRAPE_TIMEOUT = 1.0  # seconds for each socket operation of one worker's scrape
# No proxy: $http_proxy would otherwise route even these loopback requests through it.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def merge(texts: Sequence[str | None]) -> tuple[list[Metric], list[bool]]:
    """Worker i's OpenMetrics text (None: no answer) in; out, the families merged by name
    with every sample labelled worker="i", and whether each worker's text was read. Text
    that does not parse counts as no answer: none of it is kept."""
    merged: dict[str, Metric] = {}
    up: list[bool] = []
    for i, text in enumerate(texts):
        families = None if text is None else _parse(text)
        up.append(families is not None)
        for family in families or ():
            into = merged.setdefault(
                family.name,
                Metric(family.name, family.documentation, family.type, family.unit),
            )
            into.samples += [
                s._replace(labels={**s.labels, "worker": str(i)}) for s in family.samples
            ]
    return list(merged.values()), up


def _parse(text: str) -> list[Metric] | None:
    try:
        families = text_string_to_metric_families(text)  # type: ignore[no-untyped-call]
        return list(families)
    except Exception:  # ValueError mostly, KeyError for a histogram without _count: not the format
        return None


class WorkersCollector(Collector):
    """Worker i's /metrics at `targets[i]`, merged, and the supervisor's own metrics;
    `restarts[i]` (read at each scrape) counts worker i's restarts."""

    def __init__(self, targets: Sequence[tuple[str, int]], restarts: Sequence[int]) -> None:
        self.targets = list(targets)
        self.restarts = restarts
        self.timeout = SCRAPE_TIMEOUT
        self._pool = ThreadPoolExecutor(len(self.targets), thread_name_prefix="scrape")

    def collect(self) -> Iterator[Metric]:
        families, up = merge(list(self._pool.map(self._fetch, self.targets)))
        yield from families
        yield GaugeMetricFamily(
            "clusterset_workers", "Server processes (--workers).", value=len(self.targets)
        )
        answered = GaugeMetricFamily(
            "clusterset_worker_up",
            "1 when the worker's /metrics answered this scrape.",
            labels=["worker"],
        )
        for i, ok in enumerate(up):
            answered.add_metric([str(i)], 1 if ok else 0)
        yield answered
        restarts = CounterMetricFamily(
            "clusterset_worker_restarts",
            "Workers started again in this slot (it exited or hung).",
            labels=["worker"],
        )
        for i, count in enumerate(self.restarts):
            restarts.add_metric([str(i)], count)
        yield restarts

    def _fetch(self, target: tuple[str, int]) -> str | None:
        """A worker's exposition text; None if it did not answer 200 in time."""
        url = "http://{}:{}/metrics".format(*target)
        request = urllib.request.Request(url, headers={"Accept": CONTENT_TYPE_LATEST})
        try:
            with _OPENER.open(request, timeout=self.timeout) as reply:
                text: str = reply.read().decode()
        except (OSError, HTTPException, ValueError) as exc:  # refused, timed out, not UTF-8
            log.debug("workers: no metrics from %s: %s", url, exc)
            return None
        return text
