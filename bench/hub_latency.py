"""Hub mode on real kube-apiservers: convergence and edit -> changed answer.

    .venv/bin/python bench/hub_latency.py [--services 200] [--edits 20] [--timeout 900]

Starts the tests' control plane (one etcd, a kube-apiserver each for member1..member3,
our CRDs installed), creates N exported services in member1 (Service + EndpointSlice +
ServiceExport, every fifth headless) with concurrent requests, then starts
`clusterset controller` over the three contexts and member2's `clusterset dns
--kubeconfig --context member2`. Convergence is the time from starting those two
processes until member2's DNS answers every service (ClusterSetIP: an A record;
headless: its endpoint's address). Then `--edits` times it adds a distinct address to a
headless service's EndpointSlice in member1 and polls member2's DNS every `--poll-ms`
until the answer holds it. CPU seconds per edit come from /proc/<pid>/stat of both
processes over the edit phase. The controller's writes (its
`clusterset_member_writes_total`) are printed per service and member for the first pass,
by kind; then the controller is restarted over the converged fleet and the writes of its
first passes are printed (the goal: none). Everything listens on 127.0.0.1; every process
is stopped and the temporary folder removed at exit.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.query
import dns.rcode
from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _synth

sys.path.insert(0, str(_synth.REPO))
from tests.conftest import install_crds
from tests.controlplane import ControlPlane
from tests.integration.test_kube import writes as scrape_writes

MEMBERS = ("member1", "member2", "member3")
NS = "default"
SSA = "application/apply-patch+yaml"
MCS = "/apis/multicluster.x-k8s.io/v1beta1"
ZONE = "svc.clusterset.local"


class Timeout(RuntimeError):
    pass


class Deadline:
    """The run's --timeout: every wait checks it, so the benchmark always ends."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.seconds = seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.at:
            raise Timeout(f"--timeout {self.seconds:.0f}s reached while {what}")


def name_of(i: int) -> str:
    return f"svc-{i:05d}"


def endpoint_ip(i: int) -> str:
    return f"10.244.{i // 250 % 256}.{i % 250 + 1}"


def apply(cp: ControlPlane, path: str, obj: dict[str, Any]) -> None:
    status, body = cp.request(
        "member1", "PATCH", f"{path}?fieldManager=bench&force=true", obj, content_type=SSA
    )
    if status not in (200, 201):
        raise RuntimeError(f"apply {path}: {status} {str(body)[:300]}")


def slice_obj(name: str, addresses: list[str]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{name}-abc",
            "namespace": NS,
            "labels": {"kubernetes.io/service-name": name},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


def export(cp: ControlPlane, i: int) -> None:
    name = name_of(i)
    spec: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    if _synth.is_headless(i):
        spec["clusterIP"] = "None"
    apply(
        cp,
        f"/api/v1/namespaces/{NS}/services/{name}",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": spec,
        },
    )
    apply(
        cp,
        f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{name}-abc",
        slice_obj(name, [endpoint_ip(i)]),
    )
    apply(
        cp,
        f"{MCS}/namespaces/{NS}/serviceexports/{name}",
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceExport",
            "metadata": {"name": name, "namespace": NS},
        },
    )


def addresses(port: int, qname: str) -> set[str] | None:
    """The A answer's addresses, or None on no answer / timeout / an error code."""
    try:
        r = dns.query.udp(dns.message.make_query(qname, "A"), "127.0.0.1", port=port, timeout=0.5)
    except (dns.exception.Timeout, OSError):
        return None
    if r.rcode() != dns.rcode.NOERROR:
        return None
    return {rd.address for rrset in r.answer for rd in rrset if hasattr(rd, "address")}


def query_wire(i: int) -> bytes:
    """Service i's A query with DNS ID i (mod 2^16), built once."""
    msg = dns.message.make_query(f"{name_of(i)}.{NS}.{ZONE}", "A")
    msg.id = i & 0xFFFF
    return msg.to_wire()


def answered(sock: socket.socket, pending: dict[int, bytes]) -> list[int]:
    """The pending services whose A query gets NOERROR with at least one address (a headless
    service has one endpoint, so an address is its endpoint's). Queries go out in batches of
    100 on one socket and replies are judged from the header bytes, not parsed: the poll must
    not compete with the processes it measures."""
    done: list[int] = []
    keys = list(pending)
    for b in range(0, len(keys), 100):
        batch = {}
        for i in keys[b : b + 100]:
            batch[i & 0xFFFF] = i
            try:
                sock.send(pending[i])
            except OSError:  # ICMP refused: not listening yet
                return done
        sock.settimeout(0.5)
        while batch:
            try:
                reply = sock.recv(65535)
            except OSError:  # timeout or refused: the rest count as not answered
                break
            if len(reply) < 12:
                continue
            i = batch.pop(int.from_bytes(reply[0:2], "big"), None)
            rcode = reply[3] & 0x0F
            ancount = int.from_bytes(reply[6:8], "big")
            if i is not None and rcode == 0 and ancount > 0:
                done.append(i)
    return done


def spawn(log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(_synth.PYTHON), "-m", "clusterset", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def check_alive(procs: dict[str, subprocess.Popen[bytes]], logs: dict[str, Path]) -> None:
    for what, p in procs.items():
        if p.poll() is not None:
            tail = logs[what].read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{what} exited with {p.returncode}:\n{tail}")


def settled_writes(
    port: int, deadline: Deadline, quiet: float = 3.0
) -> dict[tuple[str, str], float]:
    """The controller's writes once it has passed at least once and written nothing for
    `quiet` seconds."""
    last: dict[tuple[str, str], float] | None = None
    since = time.monotonic()
    while True:
        deadline.check("waiting for the controller's writes to settle")
        writes, passes = scrape_writes(port) or ({}, 0.0)
        if passes < 1 or writes != last:
            last, since = writes, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return writes
        time.sleep(0.5)


def print_writes(what: str, writes: dict[tuple[str, str], float], services: int) -> float:
    """Writes per service per member, by kind; the total per service per member."""
    members = sorted({c for c, _ in writes} | set(MEMBERS))
    kinds = sorted({kind for _, kind in writes})
    total = sum(writes.values()) / services / len(members)
    print(
        f"{what}: {sum(writes.values()):,.0f} writes, {total:.2f} per service per member",
        flush=True,
    )
    for kind in kinds:
        per = ", ".join(f"{c} {writes.get((c, kind), 0) / services:.2f}" for c in members)
        print(f"  {kind}: {per} per service", flush=True)
    return total


def print_passes(port: int) -> None:
    """The controller's pass durations so far, from its histogram: how many passes took
    longer than 0.1, 1 and 5 s, and the mean."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    buckets: dict[str, float] = {}
    count = total = 0.0
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            if sample.name == "clusterset_reconcile_duration_seconds_bucket":
                buckets[sample.labels["le"]] = sample.value
            elif sample.name == "clusterset_reconcile_duration_seconds_count":
                count = sample.value
            elif sample.name == "clusterset_reconcile_duration_seconds_sum":
                total = sample.value
    over = {le: count - buckets.get(le, count) for le in ("0.1", "1.0", "5.0")}
    print(
        f"controller passes: {count:.0f}, mean {total / max(count, 1) * 1000:.0f} ms; "
        f"over 0.1 s: {over['0.1']:.0f}, over 1 s: {over['1.0']:.0f}, over 5 s: {over['5.0']:.0f}",
        flush=True,
    )


def own_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))]


def run(args: argparse.Namespace, tmp: Path) -> dict[str, float]:
    deadline = Deadline(args.timeout)
    t = time.monotonic()
    cp = ControlPlane(MEMBERS, workdir=tmp / "cp")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    logs = {"controller": tmp / "controller.log", "dns": tmp / "dns.log"}
    try:
        cp.start()
        for c in MEMBERS:
            install_crds(cp, c)
        print(f"control plane up with CRDs in {time.monotonic() - t:.1f} s", flush=True)

        t = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(args.concurrency) as pool:
            for f in [pool.submit(export, cp, i) for i in range(args.services)]:
                deadline.check("creating services")
                f.result()
        created = time.monotonic() - t
        # The machine's write rate, as a reference for the controller's (3 applies a service).
        bench_rate = 3 * args.services / created
        print(
            f"{args.services} exported services created in {created:.1f} s "
            f"({bench_rate:,.0f} server-side applies/s, {args.concurrency} in flight)",
            flush=True,
        )

        port = _synth.free_port()
        mport = _synth.free_port()
        kubeconfig = str(cp.kubeconfig_path)
        own0 = own_cpu()
        t0 = time.monotonic()
        contexts = [a for c in MEMBERS for a in ("--context", c)]
        controller = ("controller", "--kubeconfig", kubeconfig, *contexts,
                      "--metrics-listen", f"127.0.0.1:{mport}")  # fmt: skip
        procs["controller"] = spawn(logs["controller"], *controller)
        procs["dns"] = spawn(
            logs["dns"], "dns", "--kubeconfig", kubeconfig, "--context", "member2",
            "--listen", f"127.0.0.1:{port}",
        )  # fmt: skip
        pending = {i: query_wire(i) for i in range(args.services)}
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect(("127.0.0.1", port))
            while pending:
                deadline.check(f"converging ({len(pending)} of {args.services} not answered)")
                check_alive(procs, logs)
                for i in answered(sock, pending):
                    del pending[i]
                if pending:
                    time.sleep(0.5)
        convergence = time.monotonic() - t0
        print(
            f"converged: member2 answers all {args.services} in {convergence:.1f} s"
            f" (this script's polling: {own_cpu() - own0:.1f} CPU-s)",
            flush=True,
        )

        settled = settled_writes(mport, deadline)
        first = print_writes("first pass, once settled", settled, args.services)
        print(
            f"  {sum(settled.values()) / convergence:,.0f} writes/s until converged "
            f"(this script's own applies: {bench_rate:,.0f}/s): convergence is "
            f"{sum(settled.values()) / bench_rate:.1f} s of writes at the machine's rate",
            flush=True,
        )

        share = _synth.wait_quiet(timeout=min(30.0, max(0.0, deadline.at - time.monotonic())))
        print(f"machine busy share before the edits: {share:.0%}", flush=True)
        headless = [i for i in range(args.services) if _synth.is_headless(i)]
        if not headless:
            raise RuntimeError("no headless service to edit: use --services 5 or more")
        cpu0 = {w: _synth.cpu_seconds(p.pid) for w, p in procs.items()}
        latencies: list[float] = []
        since: list[float] = []  # each edit's start, seconds after the controller's
        current = {i: [endpoint_ip(i)] for i in headless}
        poll = args.poll_ms / 1000
        for e in range(args.edits):
            i = headless[e % len(headless)]
            name = name_of(i)
            new = f"10.245.{e // 250 % 256}.{e % 250 + 1}"
            current[i] = [*current[i], new]
            qname = f"{name}.{NS}.{ZONE}"
            start = time.monotonic()
            apply(
                cp,
                f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{name}-abc",
                slice_obj(name, current[i]),
            )
            while new not in (addresses(port, qname) or ()):
                deadline.check(f"waiting for edit {e + 1} of {args.edits}")
                time.sleep(poll)
            latencies.append(time.monotonic() - start)
            since.append(start - t0)
        time.sleep(1.0)  # trailing work of the last edit (status writes) counts too
        check_alive(procs, logs)
        cpu = {w: (_synth.cpu_seconds(p.pid) - cpu0[w]) / args.edits for w, p in procs.items()}
        slowest = sorted(zip(latencies, since, strict=True), reverse=True)[:3]
        print(
            "slowest edits: "
            + ", ".join(f"{ms * 1000:,.0f} ms (at {at:.1f} s)" for ms, at in slowest)
        )
        print_passes(mport)

        # A restart over the converged fleet: its first passes should find everything in place.
        _synth.stop_process(procs.pop("controller"), timeout=15)
        t = time.monotonic()
        procs["controller"] = spawn(logs["controller"], *controller)
        again = settled_writes(mport, deadline)
        print_writes(
            f"restart over the converged fleet (settled {time.monotonic() - t:.1f} s after start)",
            again, args.services,
        )  # fmt: skip
        return {
            "convergence": convergence,
            "p50": statistics.median(latencies) * 1000,
            "p99": pct(latencies, 0.99) * 1000,
            "cpu_controller": cpu["controller"],
            "cpu_dns": cpu["dns"],
            "writes": first,
            "restart_writes": sum(again.values()),
        }
    finally:
        for p in procs.values():
            _synth.stop_process(p, timeout=15)
        cp.stop()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--services", type=int, default=200, help="exported services in member1")
    ap.add_argument("--edits", type=int, default=20, help="EndpointSlice edits to time")
    ap.add_argument("--poll-ms", type=float, default=2.0, help="DNS poll interval during an edit")
    ap.add_argument("--concurrency", type=int, default=16, help="parallel requests while creating")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds for the whole run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = ap.parse_args()
    if args.services < 1 or args.edits < 1:
        ap.error("--services and --edits must be at least 1")

    def on_term(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    tmp = Path(tempfile.mkdtemp(prefix="clusterset-hub-bench-"))
    print(f"machine: {_synth.machine()}", flush=True)
    try:
        r = run(args, tmp)
    except (Timeout, RuntimeError) as exc:
        print(f"hub_latency: {exc} (logs in {tmp})", file=sys.stderr)
        args.keep = True
        return 1
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(
        "| members | services | convergence s | first-pass writes per service per member "
        "| writes on a restart | edit p50 ms | edit p99 ms | CPU-s per edit (controller, dns) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    print(
        f"| {len(MEMBERS)} | {args.services:,} | {r['convergence']:.1f} | {r['writes']:.2f} "
        f"| {r['restart_writes']:.0f} | {r['p50']:,.0f} | {r['p99']:,.0f} "
        f"| {r['cpu_controller']:.2f}, {r['cpu_dns']:.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
