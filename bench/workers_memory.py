"""Memory cost of `--workers N` (issue 23 item 6): RSS of the supervisor and of each worker
of `clusterset run` over a synthetic fleet, for each N.

    .venv/bin/python bench/workers_memory.py [--members 3 --services 2000 --endpoints 10]
        [--workers 1,2,4] [--settle 5]

Writes --members member folders (bench/_synth.py: one file per service, 20% headless)
and runs `clusterset run --manifests <them> --cluster member2 --workers N
--metrics-listen ...` for each N. Once every worker serves its first zone (the one
/metrics says clusterset_dns_ready 1 for each), it waits --settle seconds and reads VmRSS
from /proc of the supervisor, of each worker and of each worker's child processes (a
first read of 200 files or more parses in a spawned pool, released after it; the
multiprocessing resource tracker that the pool started stays), and Pss (smaps_rollup: a
shared page split between the processes that map it) of them all. N=1 has no
supervisor: the one process serves. A first row, the same command over a fleet of no
services (fewer than 200 files: no pool), is the floor of a worker: interpreter,
imports, threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _synth

MIB = 1024  # /proc reports kB


def proc_kb(path: str, field: str) -> int:
    """A `Field:  N kB` line of a /proc file."""
    for line in Path(path).read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def rss(pid: int) -> int:
    return proc_kb(f"/proc/{pid}/status", "VmRSS")


def is_server(pid: int) -> bool:
    """`python -m clusterset ...` (a worker), not a multiprocessing helper."""
    return b"-m\0clusterset\0" in Path(f"/proc/{pid}/cmdline").read_bytes()


def descendants(pid: int) -> list[int]:
    return [d for c in children(pid) for d in (c, *descendants(c))]


def ready_workers(mport: int) -> int:
    """How many servers report their first zone served on the one /metrics."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return 0
    return sum(
        s.value == 1
        for f in text_string_to_metric_families(text)
        for s in f.samples
        if s.name == "clusterset_dns_ready"
    )


@dataclasses.dataclass
class Row:
    fleet: str
    workers: int
    loaded_s: float  # from start until every worker served its first zone
    worker_rss: list[int]  # kB, each worker (N=1: the one process)
    child_rss: list[int]  # kB, each worker's child processes
    supervisor_rss: int  # kB, 0 for N=1
    total_pss: int  # kB, every process


def measure(fleet: str, root: Path, work: Path, workers: int, args: argparse.Namespace) -> Row:
    port, mport = _synth.free_port(), _synth.free_port()
    argv = [str(_synth.CLUSTERSET), "run", "--manifests", str(root), "--cluster", "member2"]
    argv += ["--listen", f"127.0.0.1:{port}", "--metrics-listen", f"127.0.0.1:{mport}"]
    argv += ["--state-file", str(work / f"state-{fleet}.json"), "--workers", str(workers)]
    with (work / f"server-{fleet}-{workers}.log").open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        t0 = time.monotonic()
        while ready_workers(mport) < workers:
            if proc.poll() is not None or time.monotonic() - t0 > args.start_timeout:
                raise RuntimeError(f"--workers {workers}: not ready (see {work})")
            time.sleep(0.5)
        loaded = time.monotonic() - t0
        time.sleep(args.settle)
        servers = [c for c in children(proc.pid) if is_server(c)] if workers > 1 else [proc.pid]
        helpers = [descendants(pid) for pid in servers]
        # The supervisor's own helpers (a multiprocessing resource tracker) count as its.
        supervisor = [proc.pid, *(c for c in children(proc.pid) if c not in servers)]
        return Row(
            fleet,
            workers,
            loaded,
            [rss(pid) for pid in servers],
            [sum(rss(pid) for pid in pids) for pids in helpers],
            sum(rss(pid) for pid in supervisor) if workers > 1 else 0,
            sum(proc_kb(f"/proc/{pid}/smaps_rollup", "Pss") for pid in descendants(proc.pid))
            + proc_kb(f"/proc/{proc.pid}/smaps_rollup", "Pss"),
        )
    finally:
        _synth.stop_process(proc, timeout=15)


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--members", type=int, default=3)
    ap.add_argument("--services", type=int, default=2000, help="services of each member")
    ap.add_argument("--endpoints", type=int, default=10, help="endpoints of each service")
    ap.add_argument("--workers", default="1,2,4", help="values of N, comma-separated")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds between load and reading")
    ap.add_argument("--start-timeout", type=float, default=300.0)
    ap.add_argument("--keep", action="store_true", help="leave the folder in place")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="clusterset-workers-mem-"))
    try:
        fleets = {"empty": work / "empty", "fleet": work / "clusters"}
        for c in range(args.members):
            name = f"member{c + 1}"
            _synth.write_member_folder(fleets["empty"] / name, name, c, [], args.endpoints)
            ids = range(args.services)
            _synth.write_member_folder(fleets["fleet"] / name, name, c, ids, args.endpoints)
        print(
            f"{_synth.machine()}; {args.members} members x {args.services} services x "
            f"{args.endpoints} endpoints"
        )
        rows = [measure("no services", fleets["empty"], work, 1, args)]
        rows += [measure("fleet", fleets["fleet"], work, int(n), args)
                 for n in args.workers.split(",")]  # fmt: skip
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def total(r: Row) -> int:
        return sum(r.worker_rss) + sum(r.child_rss) + r.supervisor_rss

    print()
    print("| fleet | N | first zone | RSS per worker | its children | supervisor "
          "| total RSS | total PSS | per extra worker |")  # fmt: skip
    print("|---|---:|---:|---|---|---:|---:|---:|---:|")
    prev: Row | None = None
    for r in rows:
        each = ", ".join(f"{kb / MIB:.0f}" for kb in r.worker_rss)
        kids = ", ".join(f"{kb / MIB:.0f}" for kb in r.child_rss)
        sup = f"{r.supervisor_rss / MIB:.0f} MiB" if r.workers > 1 else "—"
        extra = "—"  # from the row before: what each worker more costs
        if r.fleet == "fleet" and prev is not None and prev.fleet == "fleet":
            extra = f"{(total(r) - total(prev)) / (r.workers - prev.workers) / MIB:.0f} MiB"
        prev = r
        print(f"| {r.fleet} | {r.workers} | {r.loaded_s:.0f} s | {each} MiB | {kids} MiB "
              f"| {sup} | {total(r) / MIB:.0f} MiB | {r.total_pss / MIB:.0f} MiB "
              f"| {extra} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
