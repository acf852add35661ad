"""Longest DNS stall under churn (issue 23, "no stall"): the longest gap between answers
of `clusterset run` over a fleet with an edit a second, beside knotd's.

    .venv/bin/python bench/dns_stall.py [--members 10 --services 2000 --endpoints 10]
        [--duration 60] [--rate 1000]

Writes --members member folders of --services services (--endpoints endpoints each, one
file per service, bench/_synth.py) and starts `clusterset run --cluster member2` on
them. Once the whole zone answers, a prober process sends A queries for the services'
names at a fixed --rate for --duration seconds while, once a second, member1's file of
one headless service is rewritten (one endpoint address flipped). The prober prints the
longest gap between two answers (a GIL hold shows up here: a full garbage collection
at this size was ~0.7 s), latency percentiles and lost queries.

Then knotd serves the same records (a zone file rendered by tests/zone_records.py) under
the same churn (the same address flipped in the zone file, serial bumped, `knotc
zone-reload` once a second), and the same prober runs against it. The server's RSS
before and after the soak is printed too (frozen garbage would grow it).

The machine is shared: run it more than once and compare against knotd's figures.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _synth

ZONE = "clusterset.local"
NEW_IP = "10.19.255.1"  # what member1's first endpoint of the edited service flips to


def qname(i: int) -> str:
    return f"{_synth.svc_of(i)}.{_synth.ns_of(i)}.svc.{ZONE}"


def fleet_ip(member: int, service: int, endpoint: int, endpoints: int) -> str:
    """The address _synth.member_service_docs gives endpoint `endpoint` of a service."""
    n = service * endpoints + endpoint
    return f"10.{(member % 200) + 20}.{(n // 250) % 256}.{n % 250 + 1}"


# ---------------------------------------------------------------------------
# The prober (run in its own process: only the server's stalls delay its answers).


def probe(port: int, rate: float, seconds: float, names: list[str]) -> dict[str, float]:
    """Queries at a fixed rate for `seconds`; gaps between answers and latencies."""
    wires = [bytearray(dns.message.make_query(n, "A").to_wire()) for n in names]
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    interval = 1 / rate
    pending: dict[int, float] = {}
    latencies: list[float] = []
    start = time.perf_counter()
    end = start + seconds
    next_send = last = start
    longest = longest_at = 0.0
    sent = lost = 0
    while True:
        now = time.perf_counter()
        while next_send <= now and next_send < end:
            qid = sent & 0xFFFF
            if pending.pop(qid, None) is not None:  # its answer never came: 65 s ago
                lost += 1
            wire = wires[sent % len(wires)]
            struct.pack_into("!H", wire, 0, qid)
            try:
                sock.send(wire)
            except BlockingIOError:
                lost += 1
            pending[qid] = now
            sent += 1
            next_send += interval
        if now > end + 1.0:
            break
        wait = max(0.0, min(next_send, end + 1.0) - time.perf_counter())
        if not select.select([sock], [], [], wait)[0]:
            continue
        while True:
            try:
                reply = sock.recv(4096)
            except BlockingIOError:
                break
            t = time.perf_counter()
            asked = pending.pop(struct.unpack_from("!H", reply)[0], None)
            if asked is None:
                continue
            latencies.append(t - asked)
            if t - last > longest and t < end:
                longest, longest_at = t - last, last - start
            last = t
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] * 1e3

    return {
        "sent": sent,
        "lost": lost + len(pending),
        "longest_gap_ms": longest * 1e3,
        "longest_gap_at_s": longest_at,
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "p999_ms": pct(99.9),
        "max_ms": latencies[-1] * 1e3 if latencies else float("nan"),
    }


def run_prober(port: int, args: argparse.Namespace, names: list[str]) -> dict[str, float]:
    argv = [sys.executable, __file__, "--probe", str(port), "--rate", str(args.rate)]
    argv += ["--duration", str(args.duration), *names]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result: dict[str, float] = json.loads(out)
    return result


class Churner(threading.Thread):
    """Calls `edit(n)` once a second until stopped."""

    def __init__(self, edit: Callable[[int], None]) -> None:
        super().__init__(daemon=True)
        self.edit = edit
        self.stopped = threading.Event()
        self.edits = 0

    def run(self) -> None:
        while not self.stopped.wait(1.0):
            self.edits += 1
            self.edit(self.edits)


@contextmanager
def churning(edit: Callable[[int], None]) -> Iterator[Churner]:
    churner = Churner(edit)
    churner.start()
    try:
        yield churner
    finally:
        churner.stopped.set()
        churner.join(10)


# ---------------------------------------------------------------------------
# The servers.


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_answering(
    port: int, name: str, timeout: float, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until `name` A has answers (the whole first zone is installed at once)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            # Over TCP when truncated: knotd sends a truncated headless answer empty.
            r, _ = dns.query.udp_with_fallback(
                dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=1
            )
            if r.rcode() == dns.rcode.NOERROR and r.answer:
                return
        except dns.exception.Timeout:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{name} not answered within {timeout}s")


def ours(args: argparse.Namespace, work: Path, names: list[str], edited: int) -> dict[str, float]:
    root = work / "clusters"
    target = root / "member1" / f"gen-{edited:05d}.yaml"
    texts = [target.read_text()]
    old_ip = fleet_ip(0, edited, 0, args.endpoints)
    texts.append(texts[0].replace(f"[{old_ip}]", f"[{NEW_IP}]"))
    port = _synth.free_port()
    argv = [str(_synth.CLUSTERSET), "--log-level", "debug", "run", "--manifests", str(root)]
    argv += ["--cluster", "member2", "--listen", f"127.0.0.1:{port}"]
    argv += ["--state-file", str(work / "state.json")]
    log = work / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        t0 = time.perf_counter()
        wait_answering(port, names[-1], args.start_timeout, proc)
        print(f"clusterset: whole zone answering {time.perf_counter() - t0:.1f}s after start")
        time.sleep(args.settle)
        rss0 = rss_mib(proc.pid)

        def edit(n: int) -> None:
            tmp = target.with_name("." + target.name + ".tmp")
            tmp.write_text(texts[n % 2])
            os.replace(tmp, target)

        with churning(edit) as churner:
            result = run_prober(port, args, names)
        result["edits"] = churner.edits
        result["rss_before_mib"], result["rss_after_mib"] = rss0, rss_mib(proc.pid)
    finally:
        _synth.stop_process(proc)
        target.write_text(texts[0])  # knotd's zone is rendered from the original
    result["loads"] = sum("loaded" in line for line in log.read_text().splitlines())
    return result


def knot(args: argparse.Namespace, work: Path, names: list[str], edited: int) -> dict[str, float]:
    import ipaddress

    sys.path.insert(0, str(_synth.REPO))  # tests/ helpers
    from dns_qps import knot_server, zone_text
    from tests import zone_records as records

    from clusterset.controller.manifest import ClusterSetFeed
    from clusterset.model.ids import ClusterId
    from clusterset.model.objects import IPFamily
    from clusterset.zone.settings import ZoneSettings

    feed = ClusterSetFeed(
        work / "clusters",
        cidrs={
            IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/16"),
            IPFamily.IPV6: ipaddress.IPv6Network("fd63:6c75:7374::/112"),
        },
        state_file=work / "state.json",
    )
    view = feed.view(feed.observe(), ClusterId("member2"))
    text = zone_text(records.build(view, ZoneSettings(), serial=1))
    old_ip = fleet_ip(0, edited, 0, args.endpoints)
    edited_name = re.escape(qname(edited))
    line = re.compile(rf"^{edited_name}\. (\d+) IN A {re.escape(old_ip)}$", re.M)
    assert line.search(text), f"{qname(edited)} A {old_ip} not in the zone file"
    soa = re.compile(rf"^({re.escape(ZONE)}\. \d+ IN SOA \S+ \S+ )1 ", re.M)
    assert soa.search(text), "no SOA with serial 1"
    zonefile = work / f"{ZONE}.zone"
    zonefile.write_text(text)
    server = knot_server(work, zonefile, _synth.free_port(), cpus="0-1")
    conf = work / "knot" / "knot.conf"
    with (work / "knot" / "knotd.log").open("wb") as out:
        proc = subprocess.Popen(server.argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        port = server.port
        wait_answering(port, names[-1], args.start_timeout, proc)
        rss0 = rss_mib(proc.pid)

        def edit(n: int) -> None:
            ip = NEW_IP if n % 2 else old_ip
            new = line.sub(lambda m: f"{qname(edited)}. {m[1]} IN A {ip}", text)
            new = soa.sub(lambda m: f"{m[1]}{n + 1} ", new)
            tmp = work / ".zone.tmp"
            tmp.write_text(new)
            os.replace(tmp, zonefile)
            subprocess.run(["knotc", "-c", str(conf), "zone-reload", ZONE], capture_output=True)

        with churning(edit) as churner:
            result = run_prober(port, args, names)
        result["edits"] = churner.edits
        result["rss_before_mib"], result["rss_after_mib"] = rss0, rss_mib(proc.pid)
    finally:
        _synth.stop_process(proc)
    return result


def row(name: str, r: dict[str, float]) -> str:
    return (
        f"{name:<11} {r['longest_gap_ms']:>9.1f} ms at {r['longest_gap_at_s']:>6.1f}s "
        f"{r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} {r['p999_ms']:>8.2f} {r['max_ms']:>8.1f} "
        f"{int(r['lost']):>6}/{int(r['sent'])} {int(r['edits']):>6} "
        f"{r['rss_before_mib']:>6.0f} -> {r['rss_after_mib']:.0f} MiB"
    )


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--members", type=int, default=10)
    ap.add_argument("--services", type=int, default=2000, help="services of each member")
    ap.add_argument("--endpoints", type=int, default=10, help="endpoints of each service")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds of soak per server")
    ap.add_argument("--rate", type=float, default=1000.0, help="queries per second")
    ap.add_argument("--names", type=int, default=200, help="distinct names queried")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds between load and soak")
    ap.add_argument("--start-timeout", type=float, default=600.0)
    ap.add_argument("--no-knot", action="store_true")
    ap.add_argument("--probe", type=int, help=argparse.SUPPRESS)  # the prober process
    ap.add_argument("qnames", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.probe:
        print(json.dumps(probe(args.probe, args.rate, args.duration, args.qnames)))
        return 0

    ids = list(range(args.services))
    headless = [i for i in ids if _synth.is_headless(i)]
    assert headless, "--services too small: no headless service"
    step = max(1, args.services // args.names)
    names = [qname(i) for i in ids[::step]] + [qname(ids[-1])]
    work = Path(tempfile.mkdtemp(prefix="clusterset-stall-"))
    try:
        for c in range(args.members):
            folder = work / "clusters" / f"member{c + 1}"
            _synth.write_member_folder(folder, f"member{c + 1}", c, ids, args.endpoints)
        results = {"clusterset": ours(args, work, names, headless[0])}
        if not args.no_knot:
            results["knotd"] = knot(args, work, names, headless[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    size = f"{args.members} x {args.services} x {args.endpoints}"
    print()
    print(time.strftime("%Y-%m-%d %H:%M %Z"), "-", _synth.machine(), "- load", os.getloadavg())
    print(
        f"{size} (members x services x endpoints), {args.duration:.0f} s at "
        f"{args.rate:.0f} q/s over {len(names)} names, an edit a second"
    )
    print(
        f"{'server':<11} {'longest gap between answers':>27} {'p50':>7} {'p99':>7} "
        f"{'p99.9':>8} {'max':>8} {'lost/sent':>13} {'edits':>6} {'RSS':>6}"
    )
    for name, r in results.items():
        print(row(name, r))
    ok = all(r["lost"] == 0 for r in results.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
