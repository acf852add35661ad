"""Admission webhook: latency of one review at fleet size, in process.

    .venv/bin/python bench/admission_latency.py [--services 1000,5000] [--clusters 4] [--reviews 200]

Builds the hub's observer over `--clusters` members whose informer caches hold N services, each
exported by two of them (Service + EndpointSlice + ServiceExport, every fifth
headless), as the watches would have filled them; no apiserver is contacted. Then
`--reviews` times it sends a ServiceExport AdmissionReview for a random service from a
random member (every other one from a member that does not export it yet: the check
compares a new exporter's ports) through `AdmissionServer.answer`: the path a request
takes after its HTTP headers, the hub's view, JSON parsing, `preflight.check` and the
thread hop included. Each review follows a watch event (the hub observes the fleet
again, as it would after a change) unless `--no-change`. Prints p50/p99 per size;
issue 22's figure before the change was 3.45 s for one check at 1,000 services.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _synth

sys.path.insert(0, str(_synth.REPO / "src"))
from clusterset.controller.admission import AdmissionServer, HubViews
from clusterset.controller.observer import Observer
from clusterset.kube import api as k


def _meta(name: str, ns: str | None = None, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "resourceVersion": "1", **extra}
    if ns is not None:
        meta["namespace"] = ns
    return meta


def exporters(i: int, clusters: int) -> tuple[int, int]:
    return i % clusters, (i + 1) % clusters


def fill(hub: Observer, services: int) -> None:
    """Every member's informer caches, as synced watches leave them."""
    names = list(hub.members)
    stores: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
        m: {res: {} for res in hub.members[m].informers} for m in names
    }
    for m in names:
        for n in range(_synth.NAMESPACES):
            ns = f"team-{n}"
            stores[m]["namespaces"][ns] = {"metadata": _meta(ns)}
    for i in range(services):
        name, ns = _synth.svc_of(i), _synth.ns_of(i)
        headless = _synth.is_headless(i)
        for c in exporters(i, len(names)):
            s = stores[names[c]]
            key = f"{ns}/{name}"
            spec: dict[str, Any] = {
                "clusterIP": "None" if headless else f"10.{96 + c}.{i // 250 % 256}.{i % 250 + 1}",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
            }
            s["services"][key] = {"metadata": _meta(name, ns), "spec": spec}
            s["endpointslices"][f"{ns}/{name}-abc"] = {
                "metadata": _meta(f"{name}-abc", ns, labels={"kubernetes.io/service-name": name}),
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                "endpoints": [
                    {
                        "addresses": [
                            f"10.{20 + c}.{(i * 3 + e) // 250 % 256}.{(i * 3 + e) % 250 + 1}"
                        ],
                        "hostname": f"{name}-{e}",
                        "conditions": {"ready": True},
                    }
                    for e in range(3)
                ],
            }
            s["serviceexports"][key] = {
                "metadata": _meta(name, ns, creationTimestamp=f"2026-11-01T10:00:{c:02d}Z")
            }
    for m in names:
        for res, inf in hub.members[m].informers.items():
            inf.store = stores[m][res]
            inf.synced.set()


def review_body(i: int, uid: int) -> bytes:
    name, ns = _synth.svc_of(i), _synth.ns_of(i)
    obj = {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": "2026-12-01T00:00:00Z"},
    }
    return json.dumps(
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": str(uid),
                "kind": {
                    "group": "multicluster.x-k8s.io",
                    "version": "v1beta1",
                    "kind": "ServiceExport",
                },
                "operation": "CREATE",
                "object": obj,
            },
        }
    ).encode()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


async def measure(services: int, clusters: int, reviews: int, change: bool) -> dict[str, float]:
    hub = Observer({f"member{c}": k.KubeApi(f"member{c}", None) for c in range(clusters)})  # type: ignore[arg-type]
    fill(hub, services)
    t = time.perf_counter()
    views = HubViews(hub)
    views()
    first = time.perf_counter() - t
    server = AdmissionServer(views, host="127.0.0.1", port=0, certs=None)  # type: ignore[arg-type]
    rng = random.Random(22)
    latencies: list[float] = []
    warned = 0
    for r in range(reviews):
        i = rng.randrange(services)
        c = exporters(i, clusters)[r % 2] if r % 2 == 0 else (i + 2) % clusters
        body = review_body(i, r)
        if change:
            hub.changed()  # a watch event arrived since the last review
        t = time.perf_counter()
        out = await server.answer(body, f"member{c}")
        latencies.append(time.perf_counter() - t)
        warned += bool(out["response"].get("warnings"))
    if not warned:
        raise RuntimeError("no review found anything: the fleet is degenerate")
    return {
        "observe": first * 1000,
        "p50": statistics.median(latencies) * 1000,
        "p99": pct(latencies, 0.99) * 1000,
        "max": max(latencies) * 1000,
        "warned": warned / reviews,
    }


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--services", default="1000,5000", help="comma-separated fleet sizes")
    ap.add_argument("--clusters", type=int, default=4, help="members (each service: 2 exporters)")
    ap.add_argument("--reviews", type=int, default=200, help="reviews timed per size")
    ap.add_argument("--no-change", action="store_true", help="no watch event between reviews")
    args = ap.parse_args()
    if args.clusters < 3:
        ap.error("--clusters must be at least 3 (2 exporters and a consumer)")
    print(f"machine: {_synth.machine()}", flush=True)
    rows = []
    for n in (int(x) for x in args.services.split(",")):
        r = asyncio.run(measure(n, args.clusters, args.reviews, not args.no_change))
        rows.append((n, r))
        print(f"{n:,} services: p50 {r['p50']:.1f} ms, p99 {r['p99']:.1f} ms", flush=True)
    print()
    print(
        "| services | clusters | first observe ms | review p50 ms | review p99 ms | max ms | with warnings |"
    )
    print("|---|---|---|---|---|---|---|")
    for n, r in rows:
        print(
            f"| {n:,} | {args.clusters} | {r['observe']:.0f} | {r['p50']:.1f} | {r['p99']:.1f} "
            f"| {r['max']:.1f} | {r['warned']:.0%} |"
        )
    print(
        "\nbefore issue 22: one preflight.check took 3.45 s at 1,000 services x 2 exporters x 4 clusters"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
