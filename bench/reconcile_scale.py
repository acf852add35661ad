"""Time and peak memory of reconcile + zone build versus clusters x services x endpoints.

    .venv/bin/python bench/reconcile_scale.py [--clusters 10,50,100] [--services 2000] [--endpoints 10]

Each size runs in a fresh subprocess (peak RSS = getrusage(RUSAGE_SELF).ru_maxrss of
that process). The ClusterSetState is built from model objects directly; every
service is exported by every cluster (--fraction to change), every cluster has every
namespace, so every cluster imports every service. 80% of the services are
ClusterIP, 20% headless (hostnames on their endpoints).

Phases, as `clusterset run` does them (controller/manifest.py ClusterSetFeed.observe,
then server/app.py compile_view), and after them --edits incremental zone builds, each
after one headless service's slice changed (the server's path after observe()):
  state      build the ClusterSetState (model objects)
  aggregate  reconcile.desired.aggregate_all
  allocate   reconcile.allocate.allocate, once per cluster (as ClusterSetFeed.observe)
  reconcile  reconcile.desired.reconcile (every cluster's imports + MCS slices)
  zone       zone.build for one consumer (member1): every answer packed as wire bytes

The YAML path (--yaml-clusters, default 10) writes the same objects as manifest
folders and times FolderReader.read of every folder, then a whole
ClusterSetFeed.observe (read again + aggregate + allocate + reconcile).

Goal: 100 clusters x 2,000 services x 10 endpoints under 10 s and under 1 GiB.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _synth

GIB = 1 << 30
PHASES = ("state", "aggregate", "allocate", "reconcile", "zone")


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def exporters(i: int, clusters: int, fraction: float) -> list[int]:
    n = max(1, round(fraction * clusters))
    return [(i + k) % clusters for k in range(n)]


def headless(i: int, percent: int) -> bool:
    return i % 100 >= 100 - percent


def build_state(
    clusters: int, services: int, endpoints: int, fraction: float, headless_pct: int = 20
) -> Any:
    from clusterset.model.ids import ClusterId, ServiceKey
    from clusterset.model.objects import (
        Endpoint,
        EndpointSlice,
        Protocol,
        Service,
        ServiceExport,
        ServicePort,
    )
    from clusterset.model.state import ClusterSetState, ClusterState

    port = ServicePort(80, Protocol.TCP, "http")
    per: list[dict[str, dict[ServiceKey, Any]]] = [
        {"services": {}, "exports": {}, "slices": {}} for _ in range(clusters)
    ]
    for i in range(services):
        name, ns = _synth.svc_of(i), _synth.ns_of(i)
        key = ServiceKey(ns, name)
        hl = headless(i, headless_pct)
        for c in exporters(i, clusters, fraction):
            d = per[c]
            d["services"][key] = Service(
                namespace=ns,
                name=name,
                headless=hl,
                cluster_ips=() if hl else (f"10.{96 + c % 32}.{(i // 250) % 256}.{i % 250 + 1}",),
                ports=(port,),
            )
            d["exports"][key] = ServiceExport(ns, name, created=1_790_000_000.0 + c)
            eps = []
            for e in range(endpoints):
                n = i * endpoints + e
                # Distinct strings per endpoint, as decoding real objects gives.
                addr = f"10.{c % 200 + 20}.{(n // 250) % 256}.{n % 250 + 1}"
                eps.append(Endpoint((addr,), hostname=f"{name}-{e}" if hl else "", ready=True))
            d["slices"][key] = (
                EndpointSlice(ns, f"{name}-abcde", name, ports=(port,), endpoints=tuple(eps)),
            )
    namespaces = frozenset(_synth.ns_of(i) for i in range(_synth.NAMESPACES))
    return ClusterSetState(
        {
            ClusterId(f"member{c + 1}"): ClusterState(
                cluster=ClusterId(f"member{c + 1}"),
                services=per[c]["services"],
                exports=per[c]["exports"],
                slices=per[c]["slices"],
                namespaces=namespaces,
            )
            for c in range(clusters)
        }
    )


class Phases:
    def __init__(self) -> None:
        self.out: dict[str, Any] = {"phases": {}, "rss": {}}
        self._t = time.perf_counter()

    def fail(self, name: str, exc: BaseException) -> None:
        now = time.perf_counter()
        self.out["phases"][name] = now - self._t
        self.out["rss"][name] = rss()
        self.out.setdefault("failures", {})[name] = f"{type(exc).__name__}: {exc}"
        print(
            f"    {name:10s} FAILED after {now - self._t:.2f} s: {type(exc).__name__}: {exc}",
            file=sys.stderr,
            flush=True,
        )
        self._t = time.perf_counter()

    def done(self, name: str) -> None:
        now = time.perf_counter()
        self.out["phases"][name] = now - self._t
        self.out["rss"][name] = rss()
        print(
            f"    {name:10s} {now - self._t:7.2f} s  rss {rss() / 2**20:7.0f} MiB",
            file=sys.stderr,
            flush=True,
        )
        self._t = time.perf_counter()


def zone_phases(p: Phases, desired_: Any, state: Any, edits: int) -> None:
    """Cold build of one consumer's zone, then `edits` incremental builds, each after one
    headless service's slice changed (as a rewritten slice file does)."""
    import dataclasses
    import statistics

    from clusterset.server.app import compile_view
    from clusterset.zone import encode
    from clusterset.zone.settings import ZoneSettings

    cid = sorted(state.clusters)[0]
    view = desired_.view(cid, state, 1)
    try:
        zone = compile_view(view, ZoneSettings())
    except Exception as exc:
        p.fail("zone", exc)
        return
    p.out["zone_names"] = len(zone.names)
    p.out["zone_answers"] = len(zone.answers)
    p.out["zone_warnings"] = len(zone.state.warnings)
    prebuilt = [
        b
        for a in zone.answers.values()
        for b in (a.items if isinstance(a, encode.Rotation) else (a,))
    ]
    p.out["zone_rrs"] = sum(b.counts[0] + b.counts[2] for b in prebuilt)
    p.out["wire_bytes"] = sum(len(b.body) for b in prebuilt)
    p.done("zone")
    gc.collect(1)
    gc.freeze()
    headless = [k for k, i in view.imports.items() if i.type.value == "Headless"]
    times: list[float] = []
    cpu: list[float] = []
    for n in range(edits):
        key = headless[n % len(headless)]
        old = view.slices[key]
        first = old[0]
        ep = first.endpoints[0]
        flipped = dataclasses.replace(ep, ready=not ep.is_ready)
        changed = dataclasses.replace(first, endpoints=(flipped, *first.endpoints[1:]))
        view = dataclasses.replace(
            view,
            slices={**view.slices, key: (changed, *old[1:])},
            generation=view.generation + 1,
        )
        t0, c0 = time.perf_counter(), time.process_time()
        zone = compile_view(view, ZoneSettings(), zone)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert zone.state.rebuilt == 1
        gc.collect(1)  # as the server's ZoneHolder.swap does after each swap
        gc.freeze()
    if times:
        p.out["edit_ms"] = {
            "p50": statistics.median(times) * 1e3,
            "p99": sorted(times)[min(len(times) - 1, int(0.99 * len(times)))] * 1e3,
            "cpu_p50": statistics.median(cpu) * 1e3,
            "cpu_p99": sorted(cpu)[min(len(cpu) - 1, int(0.99 * len(cpu)))] * 1e3,
        }
    p._t = time.perf_counter()


def allocate_all(state: Any, aggregates: Any) -> dict[Any, tuple[str, ...]]:
    """As ClusterSetFeed.observe: the manifest mode's ClusterSetIP policy, from nothing held."""
    from clusterset.model.objects import IPFamily
    from clusterset.reconcile import clustersetips, desired

    cidrs = {
        IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/16"),
        IPFamily.IPV6: ipaddress.IPv6Network("fd63:6c75:7374::/112"),
    }
    namespaces = {cid: desired.namespaces_of(state, cid) for cid in state.clusters}
    return dict(clustersetips.assign(aggregates, namespaces, cidrs=cidrs, allocations={}).ips)


def child_memory(args: argparse.Namespace) -> dict[str, Any]:
    from clusterset.reconcile import desired

    p = Phases()
    state = build_state(args.child, args.services, args.endpoints, args.fraction, args.headless)
    p.done("state")
    aggregates = desired.aggregate_all(state)
    p.done("aggregate")
    ips = allocate_all(state, aggregates)
    p.done("allocate")
    d = desired.reconcile(state, ips=ips, aggregates=aggregates)
    p.out["imports_total"] = sum(len(c.imports) for c in d.clusters.values())
    p.done("reconcile")
    zone_phases(p, d, state, args.edits)
    return p.out


def child_yaml(args: argparse.Namespace) -> dict[str, Any]:
    from clusterset.controller.manifest import ClusterSetFeed
    from clusterset.manifests.load import FolderReader
    from clusterset.model.objects import IPFamily

    work = Path(tempfile.mkdtemp(prefix="clusterset-scale-"))
    try:
        t0 = time.perf_counter()
        ids = list(range(args.services))
        for c in range(args.child):
            mine = [i for i in ids if c in exporters(i, args.child, args.fraction)]
            _synth.write_member_folder(
                work / f"member{c + 1}",
                f"member{c + 1}",
                c,
                mine,
                args.endpoints,
                per_file=50,
                headless=lambda i: headless(i, args.headless),
            )
        size = sum(f.stat().st_size for f in work.rglob("*.yaml"))
        files = sum(1 for _ in work.rglob("*.yaml"))
        print(
            f"    wrote {files} files, {size / 2**20:.0f} MiB of YAML in {time.perf_counter() - t0:.1f}s",
            file=sys.stderr,
        )
        p = Phases()
        p.out["yaml_mib"] = size / 2**20
        p.out["yaml_files"] = files
        for folder in sorted(work.iterdir()):
            FolderReader(folder).read()
        gc.collect()
        p.done("yaml-read")
        feed = ClusterSetFeed(
            work,
            cidrs={
                IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/16"),
                IPFamily.IPV6: ipaddress.IPv6Network("fd63:6c75:7374::/112"),
            },
            state_file=work / ".allocations.json",
        )
        observed = feed.observe()
        p.out["errors"] = len(observed.errors)
        p.done("observe")
        zone_phases(p, observed.desired, observed.state, args.edits)
        return p.out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_child(argv: list[str], profile: Path | None) -> dict[str, Any]:
    cmd = [sys.executable]
    if profile is not None:
        cmd += ["-m", "pyinstrument", "-r", "text", "-o", str(profile)]
    cmd += [__file__, *argv]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        return {"failed": proc.returncode}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--clusters", default="10,50,100")
    ap.add_argument("--services", type=int, default=2000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument(
        "--fraction", type=float, default=1.0, help="share of clusters exporting each service"
    )
    ap.add_argument("--headless", type=int, default=20, help="percent of headless services")
    ap.add_argument("--yaml-clusters", type=int, default=10, help="0 to skip the YAML load path")
    ap.add_argument(
        "--edits",
        type=int,
        default=50,
        help="incremental zone builds timed after the cold one (one slice change each)",
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="folder for pyinstrument text reports (one per size)",
    )
    ap.add_argument("--child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--yaml", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:
        sys.setrecursionlimit(10000)
        out = child_yaml(args) if args.yaml else child_memory(args)
        out["peak_rss"] = peak_rss()
        print(json.dumps(out))
        return 0

    common = [
        "--services", str(args.services), "--endpoints", str(args.endpoints),
        "--fraction", str(args.fraction), "--headless", str(args.headless),
        "--edits", str(args.edits),
    ]  # fmt: skip
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    results: list[tuple[str, dict[str, Any]]] = []
    for c in [int(x) for x in args.clusters.split(",") if x]:
        label = f"{c} x {args.services} x {args.endpoints}"
        print(f"{label} (in memory) ...", file=sys.stderr, flush=True)
        prof = args.profile / f"memory-{c}.txt" if args.profile else None
        results.append((label, run_child(["--child", str(c), *common], prof)))
    if args.yaml_clusters:
        c = args.yaml_clusters
        label = f"{c} x {args.services} x {args.endpoints} YAML"
        print(f"{label} ...", file=sys.stderr, flush=True)
        prof = args.profile / f"yaml-{c}.txt" if args.profile else None
        results.append((label, run_child(["--child", str(c), "--yaml", *common], prof)))

    print()
    print(time.strftime("%Y-%m-%d %H:%M %Z"), "-", _synth.machine())
    print(
        f"export fraction {args.fraction:g}, {args.headless}% headless; seconds per phase; "
        "peak RSS of a fresh process; answers/RRs of one consumer's zone"
    )
    cols = ["yaml-read", "observe", *PHASES]
    header = (
        f"{'clusters x services x endpoints':34s} "
        + " ".join(f"{c:>9s}" for c in cols)
        + f" {'total':>8s} {'peak RSS':>9s} {'answers':>8s} {'RRs':>8s}"
    )
    print(header)
    print("-" * len(header))
    for label, r in results:
        if "failed" in r:
            print(f"{label:34s} FAILED (exit {r['failed']})")
            continue
        ph = r["phases"]
        cells = " ".join(f"{ph[c]:9.2f}" if c in ph else f"{'-':>9s}" for c in cols)
        total = sum(ph.values())
        mark = ""
        if label.startswith("100 x 2000 x 10") and not label.endswith("YAML"):
            ok = total < 10 and r["peak_rss"] < GIB and not r.get("failures")
            mark = "  goal <10 s, <1 GiB: " + ("met" if ok else "MISSED")
        print(
            f"{label:34s} {cells} {total:8.2f} {r['peak_rss'] / 2**20:6.0f} MiB {r.get('zone_answers', 0):8d} {r.get('zone_rrs', 0):8d}{mark}"
        )
        for phase, why in r.get("failures", {}).items():
            print(f"{'':34s} {phase} FAILED: {why}")
    rows = []
    for label, r in results:
        if "failed" in r or label.endswith("YAML"):
            continue
        ph = r["phases"]
        total, rss_mib = sum(ph.values()), r["peak_rss"] / 2**20
        zone = f"zone {ph.get('zone', 0):.2f} s"
        parts = ", ".join(f"{k} {ph[k]:.2f} s" for k in PHASES if k in ph and k != "zone")
        figure = f"{total:.1f} s, {rss_mib:,.0f} MiB ({zone}; {parts})"
        clusters = label.split(" x ")[0]
        if label.startswith("10 x 2000 x 10"):
            rows.append(
                (
                    "cold build, `bench/reconcile_scale.py --clusters 10` (in memory)",
                    "55.6 s, 267 MiB (records 14.1 s, compile 36.9 s)",
                    figure,
                    "< 2 s",
                )
            )
        elif label.startswith("100 x 2000 x 10"):
            rows.append(
                (
                    "cold build at 100 x 2,000 x 10",
                    "about 1.9 GiB, minutes",
                    figure,
                    "< 10 s, < 1 GiB",
                )
            )
        else:
            rows.append((f"cold build at {label} (in memory)", "-", figure, "-"))
        edit = r.get("edit_ms")
        if edit:
            rows.append(
                (
                    f"one headless slice change -> zone rebuilt ({clusters} clusters, in memory, "
                    "after the cold build)",
                    "a full compile (the compile column above)",
                    f"p50 {edit['p50']:.1f} ms, p99 {edit['p99']:.1f} ms wall; CPU p50 "
                    f"{edit['cpu_p50']:.1f} ms, p99 {edit['cpu_p99']:.1f} ms",
                    "part of the edit p99 < 50 ms",
                )
            )
    print()
    print("| measurement (command) | issue (74f2ea7) | this run | goal |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
