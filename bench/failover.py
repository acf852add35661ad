"""Failover latency and the cost of the unified cluster.local forwarding path.

    .venv/bin/python bench/failover.py [--flips 40] [--duration 8]

1. Failover: `clusterset run` over a copy of examples/failover (serve in member1 and
   member2, local-first, hysteresis set to 0 so every flip is measured both ways),
   answering as member2. --flips times: member2's EndpointSlice file is rewritten with
   its endpoints not ready (then ready again), and serve.default.svc.cluster.local is
   queried over UDP every 2 ms until the answer changes. Prints p50/p99/max of
   "last local endpoint not ready -> first changed answer" (and of the way back).
2. Forwarding: knotd plays kube-dns for cluster.local (1,000 names); dnsperf asks for
   those names (a) from knotd directly, and (b) through `clusterset run
   --unified-cluster-local --upstream knotd` (every query forwarded or served from
   our TTL cache), same data file, same run, both servers pinned to CPU 0 and dnsperf
   to CPU 1. Prints QPS of each and the ratio.
"""

from __future__ import annotations

import argparse
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dns.message

ROOT = Path(__file__).resolve().parents[1]
PY = str(ROOT / ".venv" / "bin" / "python")
UNIFIED = "serve.default.svc.cluster.local"
LOCAL_IP = "10.97.12.34"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ask(sock: socket.socket, port: int, name: str) -> str | None:
    q = dns.message.make_query(name, "A")
    sock.sendto(q.to_wire(), ("127.0.0.1", port))
    sock.settimeout(0.2)
    try:
        while True:
            data, _ = sock.recvfrom(65535)
            r = dns.message.from_wire(data)
            if r.id == q.id:
                return r.answer[0][0].address if r.answer else None
    except (TimeoutError, OSError):
        return None


def wait_up(sock: socket.socket, port: int, name: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while ask(sock, port, name) is None:
        if time.monotonic() > deadline:
            raise SystemExit(f"nothing answered {name} on {port}")
        time.sleep(0.05)


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(p / 100 * (len(s) - 1)))]


def failover(flips: int, work: Path) -> None:
    root = work / "clusters"
    shutil.copytree(ROOT / "examples" / "failover", root)
    for m in ("member1", "member2"):
        p = root / m / "serve.yaml"
        p.write_text(
            p.read_text().replace('clusterset.io/hysteresis: "10"', 'clusterset.io/hysteresis: "0"')
        )
    slice_file = root / "member2" / "serve.yaml"
    ready_text = slice_file.read_text()
    down_text = ready_text.replace("ready: true", "ready: false")
    port = free_port()
    proc = subprocess.Popen(
        [
            PY,
            "-m",
            "clusterset",
            "--log-level",
            "warning",
            "run",
            "--manifests",
            str(root),
            "--cluster",
            "member2",
            "--listen",
            f"127.0.0.1:{port}",
            "--state-file",
            str(work / "a.json"),
            "--unified-cluster-local",
            "--upstream",
            "127.0.0.1:9",
        ]
    )
    down: list[float] = []
    up: list[float] = []
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            wait_up(sock, port, UNIFIED)
            for i in range(flips):
                for text, bucket, local in ((down_text, down, False), (ready_text, up, True)):
                    tmp = slice_file.with_suffix(".tmp")
                    tmp.write_text(text)
                    t0 = time.perf_counter()
                    tmp.replace(slice_file)  # atomic, as editors and kubectl-apply writers do
                    while True:
                        got = ask(sock, port, UNIFIED)
                        if got is not None and (got == LOCAL_IP) == local:
                            break
                        if time.perf_counter() - t0 > 10:
                            raise SystemExit(f"flip {i}: answer never changed")
                        time.sleep(0.002)
                    bucket.append(time.perf_counter() - t0)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    for label, vals in (
        ("local not ready -> failover answer", down),
        ("local ready -> local answer", up),
    ):
        ms = [v * 1000 for v in vals]
        print(
            f"{label:40s} n={len(ms):3d}  p50 {statistics.median(ms):7.1f} ms  "
            f"p99 {pct(ms, 99):7.1f} ms  max {max(ms):7.1f} ms"
        )


def forwarding(duration: float, work: Path) -> None:
    zone = [
        "$ORIGIN cluster.local.",
        "$TTL 30",
        "@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30",
        "@ IN NS ns.dns.cluster.local.",
        "ns.dns IN A 127.0.0.1",
    ]
    names = [f"svc{i}.ns{i % 20}.svc.cluster.local" for i in range(1000)]
    zone += [f"svc{i}.ns{i % 20}.svc IN A 10.96.{i // 250}.{i % 250 + 1}" for i in range(1000)]
    kdir = work / "knot"
    kdir.mkdir()
    (kdir / "cluster.local.zone").write_text("\n".join(zone) + "\n")
    kport = free_port()
    (kdir / "knot.conf").write_text(
        f'server:\n    listen: 127.0.0.1@{kport}\n    rundir: "{kdir}"\n    udp-workers: 1\n'
        f'    tcp-workers: 1\n    background-workers: 1\ndatabase:\n    storage: "{kdir}"\n'
        f'template:\n  - id: default\n    storage: "{kdir}"\n    semantic-checks: off\n'
        f"zone:\n  - domain: cluster.local\n    file: cluster.local.zone\n"
    )
    data = work / "queries.txt"
    data.write_text("".join(f"{n} A\n" for n in names))
    knot = subprocess.Popen(
        ["taskset", "-c", "0", "knotd", "-c", str(kdir / "knot.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    root = work / "empty"
    (root / "member1").mkdir(parents=True)
    cport = free_port()
    ours = subprocess.Popen(
        [
            "taskset",
            "-c",
            "0",
            PY,
            "-m",
            "clusterset",
            "--log-level",
            "warning",
            "run",
            "--manifests",
            str(root),
            "--cluster",
            "member1",
            "--listen",
            f"127.0.0.1:{cport}",
            "--state-file",
            str(work / "b.json"),
            "--unified-cluster-local",
            "--upstream",
            f"127.0.0.1:{kport}",
        ]
    )
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            wait_up(sock, kport, names[0])
            wait_up(sock, cport, names[0])
        results = {}
        for label, port in (
            ("knotd directly", kport),
            ("through clusterset (forward+cache)", cport),
            ("knotd directly (again)", kport),
        ):
            out = subprocess.run(
                [
                    "taskset",
                    "-c",
                    "1",
                    "dnsperf",
                    "-s",
                    "127.0.0.1",
                    "-p",
                    str(port),
                    "-d",
                    str(data),
                    "-l",
                    str(duration),
                    "-c",
                    "10",
                    "-T",
                    "1",
                    "-q",
                    "100",
                ],
                capture_output=True,
                text=True,
                timeout=duration + 60,
            ).stdout
            qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
            lost = re.search(r"Queries lost:\s+(\d+)", out)
            results[label] = qps
            print(f"{label:40s} {qps:10.0f} QPS  lost {lost.group(1) if lost else '?'}")
        direct = (results["knotd directly"] + results["knotd directly (again)"]) / 2
        print(
            f"forwarding path / direct upstream: {results['through clusterset (forward+cache)'] / direct:.2f}x"
        )
    finally:
        for p in (ours, knot):
            p.terminate()
            p.wait(timeout=10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--flips", type=int, default=40)
    ap.add_argument("--duration", type=float, default=8.0)
    args = ap.parse_args()
    for tool in ("knotd", "dnsperf", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} missing: run scripts/test once (it installs the peers)")
    with tempfile.TemporaryDirectory(prefix="cs-failover-") as tmp:
        work = Path(tmp)
        print(f"== failover latency ({args.flips} flips each way, hysteresis 0)")
        failover(args.flips, work)
        print(f"== forwarding QPS ({args.duration:g}s per run, 1,000 cluster.local names)")
        forwarding(args.duration, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
