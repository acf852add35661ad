"""Repro of a fixed problem (bench/README.md, problem 1): one headless service with >= ~678
ready endpoints made the zone compile raise dns.exception.TooBig (zone/wire.py _prebuild).
Since 9ecd4d7 the answer is cut to what fits and this prints nothing; a line
"first failing size" would mean the problem is back.

    .venv/bin/python bench/repros/toobig_headless.py
"""

from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import (
    Endpoint,
    EndpointSlice,
    ImportType,
    Protocol,
    ServiceImport,
    ServicePort,
)
from clusterset.model.state import ImportedView
from clusterset.zone import build
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import CompiledZone


def zone(n: int) -> CompiledZone:
    key = ServiceKey("default", "db")
    port = ServicePort(5432, Protocol.TCP, "postgres")
    imp = ServiceImport("default", "db", ImportType.HEADLESS, ports=(port,))
    eps = tuple(
        Endpoint((f"10.0.{i // 250}.{i % 250 + 1}",), hostname=f"db-{i}", ready=True)
        for i in range(n)
    )
    sl = EndpointSlice(
        "default", "db-x", "db", ports=(port,), endpoints=eps, source_cluster=ClusterId("member1")
    )
    view = ImportedView(ClusterId("member2"), {key: imp}, {key: (sl,)}, frozenset({"default"}))
    return CompiledZone(build.build(view, ZoneSettings(), serial=1))


lo, hi = 1, 4000
while lo < hi:
    mid = (lo + hi) // 2
    try:
        zone(mid)
        lo = mid + 1
    except Exception:
        hi = mid
try:
    zone(lo)
except Exception as exc:
    print(
        f"first failing size: {lo} ready endpoints -> {type(exc).__module__}.{type(exc).__name__}: {exc}"
    )
