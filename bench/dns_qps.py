"""QPS, CPU per query and latency of `clusterset dns` against knotd (and CoreDNS) on the
same records.

    .venv/bin/python bench/dns_qps.py [--services 1000] [--duration 10] [--runs 3]

Every server is pinned to CPU 0 and dnsperf to CPU 1 (`-c 10 -T 1 -q 100`); the
servers take turns, and the table shows medians of --runs. CPU seconds come from
/proc/<pid>/stat (utime+stime, whole process) around each dnsperf run. A fixed-rate
run (`-Q 5000`, per-query latencies from dnsperf -v) gives p50/p99.

The peer servers load a zone file rendered from `tests/zone_records.py` (`build`) on
the same manifests, and answers are compared before anything is measured.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.rrset

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _synth

sys.path.insert(0, str(_synth.REPO))  # tests/ helpers
from tests import zone_records as records

from clusterset.controller.manifest import FolderFeed
from clusterset.zone.settings import ZoneSettings

ZONE = "clusterset.local"
QUIET_WAIT = float(
    os.environ.get("BENCH_QUIET_WAIT", "60")
)  # seconds to wait for other users of the machine to go quiet before a run
DEFAULT_COREDNS = Path.home() / ".cache" / "clusterset" / "bin" / "coredns"


@dataclass
class Server:
    name: str
    argv: list[str]
    port: int
    log: Path
    env: dict[str, str] | None = None
    reference: bool = False  # a --floor loop: not verified, not a peer
    proc: subprocess.Popen[bytes] | None = None
    qps: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    per_cpu_s: list[float] = field(default_factory=list)
    lost: list[float] = field(default_factory=list)
    noise: list[float] = field(default_factory=list)
    p50: float = float("nan")
    p99: float = float("nan")
    p999: float = float("nan")
    lat_n: int = 0
    lat_noise: float = float("nan")
    passes: list[tuple[float, float]] = field(default_factory=list)  # (p99, p99.9) each pass
    avg_size: float = float("nan")

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=self.env,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def cpu(self) -> float:
        """CPU seconds of the server and its worker processes (--workers)."""
        return sum(_synth.cpu_seconds(p) for p in _tree(self.pid))


def _tree(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [pid, *(p for k in kids for p in _tree(int(k)))]


# ---------------------------------------------------------------------------
# Zone file and query file from the same ZoneRecords our server builds.


def zone_text(recs: records.ZoneRecords) -> str:
    """Every RR of every answer and additional section, SOA first; absolute names."""
    soa = recs.answers[(recs.origin, records.SOA)].answer[0]
    lines = [f"$ORIGIN {recs.origin.to_text()}", _rr_line(soa)]
    seen = {lines[1]}
    for ans in recs.answers.values():
        for rr in [*ans.answer, *ans.additional]:
            line = _rr_line(rr)
            if line not in seen:
                seen.add(line)
                lines.append(line)
    return "\n".join(lines) + "\n"


def _rr_line(rr: records.RR) -> str:
    return (
        f"{rr.name.to_text()} {rr.ttl} IN {dns.rdatatype.to_text(rr.rdata.rdtype)} "
        f"{rr.rdata.to_text()}"
    )


def query_lines(
    recs: records.ZoneRecords, count: int, seed: int = 1
) -> tuple[list[str], dict[str, int]]:
    """A dnsperf data file: A on services (40%) and endpoints (10%), SRV (20%), AAAA
    (NODATA, 10%), NXDOMAIN names inside the zone (20%)."""
    origin_len = len(recs.origin.labels)
    svc_a: list[str] = []
    ep_a: list[str] = []
    srv: list[str] = []
    for (name, rdtype), _ans in sorted(
        recs.answers.items(), key=lambda kv: (kv[0][0].to_text(), kv[0][1])
    ):
        rel = len(name.labels) - origin_len  # labels under the zone
        text = name.to_text(omit_final_dot=True)
        if rdtype == records.A and rel == 3:  # <svc>.<ns>.svc
            svc_a.append(text)
        elif rdtype == records.A and rel == 5:  # <host>.<cluster>.<svc>.<ns>.svc
            ep_a.append(text)
        elif rdtype == records.SRV:
            srv.append(text)
    rng = random.Random(seed)
    nx_pool = [f"missing-{i}.team-{i % 10}.svc.{ZONE}" for i in range(200)]
    nx_pool += [f"{n.split('.')[0]}.no-such-ns.svc.{ZONE}" for n in svc_a[:200]]
    mix = [
        ("A", svc_a, 40),
        ("A", ep_a, 10),
        ("SRV", srv, 20),
        ("AAAA", svc_a, 10),
        ("A", nx_pool, 20),
    ]
    out: list[str] = []
    kinds: dict[str, int] = {}
    for qtype, pool, weight in mix:
        n = count * weight // 100
        label = "NX" if pool is nx_pool else qtype + ("-ep" if pool is ep_a else "")
        kinds[label] = n
        out.extend(f"{rng.choice(pool)} {qtype}" for _ in range(n))
    rng.shuffle(out)
    return out, kinds


# ---------------------------------------------------------------------------
# Peers.


def knot_server(work: Path, zonefile: Path, port: int, cpus: str = "0", workers: int = 1) -> Server:
    kdir = work / "knot"
    kdir.mkdir()
    conf = kdir / "knot.conf"
    conf.write_text(
        f"""server:
    listen: 127.0.0.1@{port}
    rundir: {kdir}
    udp-workers: {workers}
    tcp-workers: 1
    background-workers: 1
database:
    storage: {kdir}
log:
  - target: stderr
    any: info
zone:
  - domain: {ZONE}
    file: {zonefile}
    journal-content: none
    zonefile-sync: -1
"""
    )
    check = subprocess.run(["knotc", "-c", str(conf), "conf-check"], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"knotc conf-check: {check.stdout}{check.stderr}")
    return Server(
        "knotd", ["taskset", "-c", cpus, "knotd", "-c", str(conf)], port, kdir / "knotd.log"
    )


def coredns_server(
    binary: Path, work: Path, zonefile: Path, port: int, cpus: str = "0", workers: int = 1
) -> Server:
    cdir = work / "coredns"
    cdir.mkdir()
    corefile = cdir / "Corefile"
    corefile.write_text(f"{ZONE}:{port} {{\n    bind 127.0.0.1\n    file {zonefile}\n}}\n")
    return Server(
        "coredns",
        ["taskset", "-c", cpus, str(binary), "-conf", str(corefile)],
        port,
        cdir / "coredns.log",
        env={"GOMAXPROCS": str(workers), "PATH": "/usr/bin:/bin"},
    )


# ---------------------------------------------------------------------------
# Verification.


def _norm(msg: dns.message.Message) -> dict[str, object]:
    def section(rrsets: list[dns.rrset.RRset], *, mask_serial: bool = False) -> list[str]:
        out = []
        for rrset in rrsets:
            for rd in rrset:
                text = rd.to_text()
                if mask_serial and rrset.rdtype == dns.rdatatype.SOA:
                    parts = text.split()
                    parts[2] = "<serial>"
                    text = " ".join(parts)
                out.append(
                    f"{rrset.name.to_text().lower()} {rrset.ttl} "
                    f"{dns.rdatatype.to_text(rrset.rdtype)} {text.lower()}"
                )
        return sorted(out)

    return {
        "rcode": dns.rcode.to_text(msg.rcode()),
        "aa": bool(msg.flags & dns.flags.AA),
        "answer": section(msg.answer),
        "authority": section(msg.authority, mask_serial=True),
        "additional": section(msg.additional),
    }


STRICT = ("rcode", "aa", "answer")


def verify(servers: list[Server], queries: list[str], sample: int) -> tuple[list[str], list[str]]:
    """Every server against the first for `sample` distinct queries: rcode, AA and the answer
    section must match (problems); authority/additional differences are notes (CoreDNS's file
    plugin, for one, adds the apex NS to the authority section of positive answers)."""
    distinct = sorted(set(queries))
    rng = random.Random(7)
    picked = rng.sample(distinct, min(sample, len(distinct)))
    problems: list[str] = []
    soft: dict[tuple[str, str, str], int] = {}
    for line in picked:
        qname, qtype = line.split()
        results = {}
        for s in servers:
            q = dns.message.make_query(qname, qtype, use_edns=False)
            q.flags &= ~dns.flags.RD
            r = dns.query.udp(q, "127.0.0.1", port=s.port, timeout=2)
            results[s.name] = _norm(r)
        base_name = servers[0].name
        for s in servers[1:]:
            for key, value in results[base_name].items():
                other = results[s.name][key]
                if other == value:
                    continue
                if key in STRICT:
                    problems.append(
                        f"{line}: {key} differs: {base_name}={value!r} {s.name}={other!r}"
                    )
                else:
                    extra = sorted(set(other) - set(value)) + [
                        f"-{x}" for x in sorted(set(value) - set(other))
                    ]  # type: ignore[arg-type]
                    what = ", ".join(" ".join(x.split()[2:4]) for x in extra[:2])
                    soft[(s.name, key, what)] = soft.get((s.name, key, what), 0) + 1
    notes = [
        f"{name}: {key} section differs on {n}/{len(picked)} queries ({what} ...)"
        for (name, key, what), n in sorted(soft.items())
    ]
    return problems, notes


def dig(port: int, qname: str, qtype: str) -> str:
    out = subprocess.run(
        [
            "dig",
            "+norec",
            "+noall",
            "+answer",
            "+additional",
            "-p",
            str(port),
            "@127.0.0.1",
            qname,
            qtype,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return "\n".join(
        sorted(
            line.split(None, 4)[0].lower() + " " + " ".join(line.split()[1:])
            for line in out.splitlines()
            if line.strip()
        )
    )


# ---------------------------------------------------------------------------
# dnsperf.

_QPS = re.compile(r"Queries per second:\s+([\d.]+)")
_COMPLETED = re.compile(r"Queries completed:\s+(\d+)")
_SENT = re.compile(r"Queries sent:\s+(\d+)")
_SIZE = re.compile(r"Average packet size:\s+request (\d+), response (\d+)")
_VERBOSE = re.compile(r"^> \S+ \S+ \S+ ([\d.]+)$")


def dnsperf(
    port: int, datafile: Path, duration: float, extra: list[str], out: Path
) -> tuple[str, float]:
    """Run dnsperf on CPU 1; its output and its own CPU seconds."""
    argv = [
        "taskset", "-c", "1", "dnsperf", "-s", "127.0.0.1", "-p", str(port), "-d", str(datafile),
        "-c", "10", "-T", "1", "-q", "100", "-l", str(duration), *extra,
    ]  # fmt: skip
    cpu = _synth.run_with_rusage(argv, out)
    return out.read_text(), cpu


def measured_run(s: Server, datafile: Path, duration: float, out: Path) -> None:
    if s.proc is None or s.proc.poll() is not None:
        raise RuntimeError(f"{s.name} is not running")
    _synth.wait_quiet(timeout=QUIET_WAIT)
    before = s.cpu()
    busy0 = _synth.busy_seconds()
    text, perf_cpu = dnsperf(s.port, datafile, duration, [], out)
    cpu = s.cpu() - before
    # Whatever else ran meanwhile (other users of the machine, kernel), in % of one core.
    other = max(0.0, _synth.busy_seconds() - busy0 - cpu - perf_cpu)
    s.noise.append(100.0 * other / duration)
    qps = float(_QPS.search(text).group(1))  # type: ignore[union-attr]
    done = int(_COMPLETED.search(text).group(1))  # type: ignore[union-attr]
    sent = int(_SENT.search(text).group(1))  # type: ignore[union-attr]
    size = _SIZE.search(text)
    if size:
        s.avg_size = float(size.group(2))
    s.qps.append(qps)
    s.cpu_us.append(cpu / done * 1e6 if done else float("nan"))
    s.per_cpu_s.append(done / cpu if cpu else float("nan"))
    s.lost.append(100.0 * (sent - done) / sent if sent else 0.0)
    print(
        f"  {s.name:8s} {qps:10.0f} QPS  cpu {cpu:6.2f}s  {s.cpu_us[-1]:6.2f} µs/q  "
        f"lost {s.lost[-1]:.2f}%  other load {s.noise[-1]:4.0f}% of a core",
        flush=True,
    )


def latency_run(s: Server, datafile: Path, duration: float, rate: int, out: Path) -> None:
    _synth.wait_quiet(timeout=QUIET_WAIT)
    before = s.cpu()
    busy0 = _synth.busy_seconds()
    text, perf_cpu = dnsperf(s.port, datafile, duration, ["-Q", str(rate), "-v"], out)
    other = max(0.0, _synth.busy_seconds() - busy0 - (s.cpu() - before) - perf_cpu)
    noise = 100.0 * other / duration
    lat = sorted(float(m.group(1)) for line in text.splitlines() if (m := _VERBOSE.match(line)))
    if not lat:
        raise RuntimeError(f"no per-query latencies in {out}")

    def pct(p: float) -> float:
        return lat[min(len(lat) - 1, int(p / 100 * len(lat)))] * 1e6

    print(
        f"  {s.name:8s} p50 {pct(50):7.0f} µs  p99 {pct(99):7.0f} µs  p99.9 {pct(99.9):7.0f} µs  ({len(lat)} replies)  other load {noise:4.0f}% of a core",
        flush=True,
    )
    s.passes.append((pct(99), pct(99.9)))
    if not noise >= s.lat_noise:  # keep the quietest pass (the first one: lat_noise is nan)
        s.p50, s.p99, s.p999, s.lat_n, s.lat_noise = pct(50), pct(99), pct(99.9), len(lat), noise


# ---------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--services", type=int, default=1000)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per dnsperf run")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--rate", type=int, default=5000, help="QPS of the latency run")
    ap.add_argument("--queries", type=int, default=20000, help="lines in the dnsperf data file")
    ap.add_argument("--verify-sample", type=int, default=400)
    ap.add_argument(
        "--coredns",
        type=Path,
        default=None,
        help=f"CoreDNS binary (default: {DEFAULT_COREDNS} if present)",
    )
    ap.add_argument("--no-knot", action="store_true")
    ap.add_argument(
        "--floor",
        action="store_true",
        help="also measure bench/_floor_server.py: a bare Python loop calling respond() on the "
        "same zone, and one echoing the query (the cost of the UDP loop alone)",
    )
    ap.add_argument(
        "--fallback",
        action="store_true",
        help="also measure our server with its pure-Python UDP loop (CLUSTERSET_NATIVE=0)",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=1,
        help="our server's --workers; knotd's udp-workers and CoreDNS's GOMAXPROCS likewise",
    )
    ap.add_argument(
        "--cpus", default="0", help="taskset CPU list of every server (dnsperf stays on CPU 1)"
    )
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    ap.add_argument("--latency-only", action="store_true", help="skip the QPS runs")
    ap.add_argument(
        "--latency-runs",
        type=int,
        default=1,
        help="fixed-rate passes per server, order reversed each time; the table keeps each "
        "server's quietest pass (lowest other%%): on a shared machine the tails measure the "
        "other load first",
    )
    args = ap.parse_args()

    for tool in ("dnsperf", "taskset", "dig") + (() if args.no_knot else ("knotd", "knotc")):
        if shutil.which(tool) is None:
            print(f"dns_qps: {tool} not found", file=sys.stderr)
            return 2
    coredns = args.coredns or (DEFAULT_COREDNS if DEFAULT_COREDNS.exists() else None)

    work = Path(tempfile.mkdtemp(prefix="clusterset-bench-"))
    servers: list[Server] = []
    try:
        manifests = work / "manifests"
        t0 = time.perf_counter()
        _synth.write_imported_folder(manifests, args.services)
        view = FolderFeed(manifests).snapshot()
        recs = records.build(view, ZoneSettings(), serial=1)
        zonefile = work / f"{ZONE}.zone"
        zonefile.write_text(zone_text(recs))
        qlines, kinds = query_lines(recs, args.queries)
        datafile = work / "queries.txt"
        datafile.write_text("\n".join(qlines) + "\n")
        print(
            f"zone: {args.services} services, {len(recs.names)} names, {len(recs.answers)} answers, "
            f"{sum(1 for _ in zonefile.open()) - 1} RRs in the zone file; queries: {kinds} "
            f"({time.perf_counter() - t0:.1f}s to generate)",
            flush=True,
        )

        for name, native in [("clusterset", "1"), ("cs-python", "0")][: 2 if args.fallback else 1]:
            port = _synth.free_port()
            servers.append(
                Server(
                    name,
                    [
                        "taskset", "-c", args.cpus, str(_synth.CLUSTERSET), "--log-level", "warning",
                        "dns", "--manifests", str(manifests), "--listen", f"127.0.0.1:{port}",
                        "--workers", str(args.workers),
                    ],
                    port,
                    work / f"{name}.log",
                    env={**os.environ, "CLUSTERSET_NATIVE": native},
                )
            )  # fmt: skip
        if not args.no_knot:
            servers.append(knot_server(work, zonefile, _synth.free_port(), args.cpus, args.workers))
        if coredns is not None:
            servers.append(
                coredns_server(coredns, work, zonefile, _synth.free_port(), args.cpus, args.workers)
            )
        if args.floor:
            for mode in ("respond", "echo"):
                port = _synth.free_port()
                servers.append(
                    Server(
                        f"py-{mode}",
                        ["taskset", "-c", "0", str(_synth.PYTHON), str(Path(__file__).parent / "_floor_server.py"),
                         str(manifests), str(port), mode],
                        port,
                        work / f"floor-{mode}.log",
                        reference=True,
                    )
                )  # fmt: skip
        for s in servers:
            s.start()
        for s in servers:
            if s.name == "py-echo":
                time.sleep(3)  # echoes: no SOA answer to wait for
                continue
            try:
                _synth.wait_dns(s.port, ZONE, proc=s.proc)
            except RuntimeError as exc:
                print(f"{s.name}: {exc}; log:\n{s.log.read_text()[-3000:]}", file=sys.stderr)
                return 1
        for s in servers[1:]:
            warnings = [
                ln for ln in s.log.read_text().splitlines() if "warning" in ln or "error" in ln
            ]
            for w in warnings[:5]:
                print(f"  {s.name} log: {w}")

        # Honest comparison: the same answers from everyone.
        probe = next(
            line.split()[0] for line in qlines if line.endswith(" SRV") and line.startswith("_db.")
        )
        peers = [s for s in servers if not s.reference]
        digs = {s.name: dig(s.port, probe, "SRV") for s in peers}
        print(f"dig {probe} SRV (answer + additional), per server:")
        for name, out in digs.items():
            print(
                f"  {name}: {len(out.splitlines())} lines, {'same as ' + servers[0].name if out == digs[servers[0].name] else 'DIFFERENT'}"
            )
        if len(set(digs.values())) != 1:
            for name, out in digs.items():
                print(f"--- {name}\n{out}")
            return 1
        problems, notes = verify(
            [s for s in servers if s.name != "py-echo"], qlines, args.verify_sample
        )
        for n in notes:
            print("  note: " + n)
        if problems:
            print(f"answers differ on {len(problems)} checks, e.g.:")
            for p in problems[:10]:
                print("  " + p)
            return 1
        print(
            f"verified: {min(args.verify_sample, len(set(qlines)))} distinct queries answered identically "
            f"(rcode, AA, answer section; authority (SOA serial masked) and additional compared too, "
            f"differences listed as notes)",
            flush=True,
        )

        for s in servers:  # warm-up
            dnsperf(s.port, datafile, 2, [], work / f"warmup-{s.name}.txt")
        for run in range(0 if args.latency_only else args.runs):
            print(f"run {run + 1}/{args.runs} (-c 10 -T 1 -q 100 -l {args.duration:g})", flush=True)
            order = servers if run % 2 == 0 else servers[::-1]
            for s in order:
                measured_run(s, datafile, args.duration, work / f"run{run}-{s.name}.txt")
        print(
            f"fixed rate -Q {args.rate} for {args.duration:g}s, per-query latency from dnsperf -v",
            flush=True,
        )
        for rep in range(args.latency_runs):
            for s in peers if rep % 2 == 0 else peers[::-1]:
                latency_run(
                    s, datafile, args.duration, args.rate, work / f"latency{rep}-{s.name}.txt"
                )

        print()
        print(time.strftime("%Y-%m-%d %H:%M %Z"), "-", _synth.machine())
        print(
            f"{args.services} services; servers on CPU {args.cpus} ({args.workers} worker(s)), dnsperf on CPU 1; medians of {args.runs} x {args.duration:g}s; "
            f"latency at {args.rate} QPS"
        )
        header = f"{'server':10s} {'QPS':>9s} {'CPU µs/q':>9s} {'QPS/CPU-s':>10s} {'p50 µs':>7s} {'p99 µs':>7s} {'p99.9':>7s} {'lost%':>6s} {'resp B':>6s} {'other%':>6s}"
        print(header)
        print("-" * len(header))
        nan = float("nan")
        med = {
            s.name: (
                statistics.median(s.qps),
                statistics.median(s.cpu_us),
                statistics.median(s.per_cpu_s),
            )
            if s.qps
            else (nan, nan, nan)
            for s in servers
        }
        for s in servers:
            q, c, p = med[s.name]
            print(
                f"{s.name:10s} {q:9.0f} {c:9.2f} {p:10.0f} {s.p50:7.0f} {s.p99:7.0f} {s.p999:7.0f} {max(s.lost, default=nan):6.2f} {s.avg_size:6.0f} {statistics.median(s.noise) if s.noise else nan:6.0f}"
            )
        if args.latency_runs > 1:
            print(f"every latency pass (p99 / p99.9 µs, in order, at {args.rate} QPS):")
            for s in peers:
                each = ", ".join(f"{a:.0f} / {b:.0f}" for a, b in s.passes)
                print(f"  {s.name:10s} {each}")
            for s in peers[1:]:
                mine, theirs = peers[0].passes, s.passes
                ok = all(a[0] <= b[0] and a[1] <= b[1] for a, b in zip(mine, theirs, strict=True))
                print(
                    f"  {peers[0].name} at or under {s.name} (p99 and p99.9) in every pass: "
                    f"{'yes' if ok else 'no'}"
                )
        base = med[servers[0].name]
        for s in peers[1:]:
            q, c, p = med[s.name]
            print(
                f"ours/{s.name}: QPS {base[0] / q:.2f}x, QPS per CPU-second {base[2] / p:.2f}x "
                f"(CPU per query {base[1] / c:.2f}x)"
            )
        return 0
    finally:
        for s in servers:
            if s.proc is not None:
                _synth.stop_process(s.proc)
        if args.keep:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
