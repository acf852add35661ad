"""The `--workers` supervisor's one /metrics: its workers' scraped, merged, labelled."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from clusterset.server.http import OpsServer
from clusterset.server.scrape import WorkersCollector, merge


def openmetrics(registry: CollectorRegistry) -> str:
    """The registry as a worker's /metrics answers the supervisor (and Prometheus)."""
    return choose_encoder(CONTENT_TYPE_LATEST)[0](registry).decode()


def worker_text(udp: int) -> str:
    """What a worker's /metrics sends the supervisor: a counter and a histogram."""
    registry = CollectorRegistry()
    Counter("dns_requests", "Requests.", ["proto"], registry=registry).labels("udp").inc(udp)
    Histogram("compile_seconds", "Compiles.", registry=registry).observe(0.2)
    return openmetrics(registry)


def samples(families: list[Metric], name: str) -> dict[str, float]:
    """worker label -> value of the `name` samples."""
    return {s.labels["worker"]: s.value for f in families for s in f.samples if s.name == name}


def test_two_workers_make_one_family_with_worker_labels() -> None:
    families, up = merge([worker_text(3), worker_text(5)])
    assert up == [True, True]
    assert [f.name for f in families] == ["dns_requests", "compile_seconds"]
    assert samples(families, "dns_requests_total") == {"0": 3, "1": 5}
    assert samples(families, "compile_seconds_count") == {"0": 1, "1": 1}
    requests = families[0]
    assert requests.type == "counter"
    assert {s.labels["proto"] for s in requests.samples} == {"udp"}
    # _created stays in its family (the classic text format would split it off).
    assert samples(families, "compile_seconds_created").keys() == {"0", "1"}


@pytest.mark.parametrize("bad", [None, "<html>not metrics</html>", worker_text(1)[:40], ""])
def test_a_worker_without_metrics_is_down_and_the_others_still_merged(bad: str | None) -> None:
    families, up = merge([worker_text(3), bad, worker_text(7)])
    assert up == [True, False, True]
    assert samples(families, "dns_requests_total") == {"0": 3, "2": 7}


class Garbage(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b"\xff\xfe not metrics {{{"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def workers() -> Iterator[list[tuple[str, int]]]:
    """Four workers: one serving real metrics, one sending garbage, one port refusing
    connections and one accepting them but never answering (hung)."""
    registry = CollectorRegistry()
    Counter("dns_requests", "Requests.", ["proto"], registry=registry).labels("udp").inc(4)
    good = OpsServer(("127.0.0.1", 0), registry, ready=lambda: True)
    good.start()
    garbage = ThreadingHTTPServer(("127.0.0.1", 0), Garbage)
    threading.Thread(target=garbage.serve_forever, daemon=True).start()
    with socket.socket() as refused, socket.socket() as hung:
        refused.bind(("127.0.0.1", 0))  # bound, not listening: connections refused
        hung.bind(("127.0.0.1", 0))
        hung.listen()  # the kernel accepts; nobody reads
        try:
            yield [
                good.address,
                ("127.0.0.1", garbage.server_address[1]),
                refused.getsockname(),
                hung.getsockname(),
            ]
        finally:
            good.stop()
            garbage.shutdown()
            garbage.server_close()


def test_the_collector_scrapes_every_worker_in_parallel_and_says_which_answered(
    workers: list[tuple[str, int]],
) -> None:
    collector = WorkersCollector(workers, restarts=[0, 2, 1, 0])
    collector.timeout = 0.5
    registry = CollectorRegistry()
    registry.register(collector)
    started = time.monotonic()
    text = generate_latest(registry).decode()
    assert time.monotonic() - started < 1.5  # the hung worker's timeout, once: in parallel
    families = {f.name: f for f in text_string_to_metric_families(text)}
    assert samples([families["dns_requests"]], "dns_requests_total") == {"0": 4}
    assert families["clusterset_workers"].samples[0].value == 4
    assert samples([families["clusterset_worker_up"]], "clusterset_worker_up") == {
        "0": 1,
        "1": 0,
        "2": 0,
        "3": 0,
    }
    restarts = samples([families["clusterset_worker_restarts"]], "clusterset_worker_restarts_total")
    assert restarts == {"0": 0, "1": 2, "2": 1, "3": 0}
    assert openmetrics(registry).endswith("# EOF\n")  # what Prometheus asks for
