"""DNS soak: dnsperf at a fixed rate while the manifest folder churns every 100 ms.

    .venv/bin/python bench/dns_soak.py --duration 300 --rate 2000 [--churn-ms 100]

Starts `clusterset run --cluster member2` over a generated ROOT whose member1 exports
`serve` (ClusterSetIP), `db` (headless, fixed endpoints) and `churn` (headless). Every
`--churn-ms` a churner writes version v+1 of the data: `churn`'s one endpoint becomes
10.200.(v/256).(v%256), a new exported service `tmp-<v>` appears and `tmp-<v-20>` goes
(files replaced by rename, as editors and `kubectl`-style tools write them).

Meanwhile dnsperf sends a fixed rate of queries (stable names, the churning name, SRV,
NXDOMAIN) and reports lost queries; a verifier checks answers one by one against the
churner's history: `churn` must be exactly one version's address, written before the
reply and current at most `--window` seconds before the query; `tmp-<k>` must be
NOERROR or NXDOMAIN as it was at some instant of that span; `serve` and `db` never change.
The server's RSS is sampled every second. Exits 1 on a lost query, a wrong answer or RSS
growth above `--rss-bound` MiB after warm-up. tests/stress/test_dns_soak.py runs a
short form.
"""

from __future__ import annotations

import argparse
import bisect
import ipaddress
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode

ZONE = "clusterset.local"
KEEP_TMP = 20  # tmp-<k> services alive at a time

CLUSTER = """\
apiVersion: about.k8s.io/v1alpha1
kind: ClusterProperty
metadata: {{name: cluster.clusterset.k8s.io}}
spec: {{value: {name}}}
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  {ip}
  ports: [{{name: http, port: 80, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-slice
  namespace: default
  labels: {{kubernetes.io/service-name: {name}}}
addressType: IPv4
ports: [{{name: http, port: 80, protocol: TCP}}]
endpoints:
{endpoints}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata: {{name: {name}, namespace: default, creationTimestamp: "2026-11-01T10:00:00Z"}}
"""


def service_yaml(name: str, addresses: list[str], *, headless: bool, cluster_ip: str = "") -> str:
    eps = "".join(f"  - addresses: [{a}]\n    conditions: {{ready: true}}\n" for a in addresses)
    ip = "clusterIP: None" if headless else f"clusterIP: {cluster_ip}"
    return SERVICE.format(name=name, ip=ip, endpoints=eps)


def churn_ip(v: int) -> str:
    return f"10.200.{(v // 256) % 256}.{v % 256}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@dataclass
class History:
    """What the churner wrote, and when (monotonic seconds)."""

    written: list[float] = field(default_factory=list)  # written[v - 1]: when v's write began
    tmp_added: dict[int, float] = field(default_factory=dict)
    tmp_removed: dict[int, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def version_at(self, t: float) -> int:
        """The version current at time t (0: none yet)."""
        with self.lock:
            return bisect.bisect_right(self.written, t)


class FolderSource:
    """The data as files under ROOT/member1, served by `clusterset run --cluster member2`."""

    def __init__(self, tmp: Path) -> None:
        self.root = tmp / "clusters"
        self.m1 = self.root / "member1"
        self.m1.mkdir(parents=True)
        (self.root / "member2").mkdir()
        (self.m1 / "cluster.yaml").write_text(CLUSTER.format(name="member1"))
        (self.root / "member2" / "cluster.yaml").write_text(CLUSTER.format(name="member2"))
        self.state_file = tmp / "alloc.json"

    def setup(self) -> None:
        serve = service_yaml(
            "serve", ["10.244.1.5", "10.244.2.7"], headless=False, cluster_ip="10.96.1.1"
        )
        (self.m1 / "serve.yaml").write_text(serve)
        (self.m1 / "db.yaml").write_text(
            service_yaml("db", ["10.244.1.20", "10.244.2.21"], headless=True)
        )

    def server_args(self) -> list[str]:
        return [
            "run",
            "--manifests",
            str(self.root),
            "--cluster",
            "member2",
            "--state-file",
            str(self.state_file),
        ]

    def write(self, v: int) -> None:
        m = self.m1
        write_atomic(m / "churn.yaml", service_yaml("churn", [churn_ip(v)], headless=True))
        write_atomic(
            m / f"tmp-{v}.yaml",
            service_yaml(
                f"tmp-{v}",
                [f"10.201.{v // 256 % 256}.{v % 256}"],
                headless=False,
                cluster_ip=f"10.96.{2 + v // 250 % 250}.{v % 250 + 1}",
            ),
        )
        old = m / f"tmp-{v - KEEP_TMP}.yaml"
        if old.exists():
            old.unlink()

    def close(self) -> None:
        pass


MCS = "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/default/serviceimports"
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"


class ApiSource:
    """The data as ServiceImports and MCS EndpointSlices in a real kube-apiserver (tests'
    ControlPlane: etcd + kube-apiserver), served by `clusterset dns --kubeconfig` (member
    mode, watches). Every version is written with server-side apply; tmp imports are
    created and deleted."""

    def __init__(self, tmp: Path) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.conftest import install_crds
        from tests.controlplane import ControlPlane

        (tmp / "cp").mkdir()
        self.cp = ControlPlane(("member2",), workdir=tmp / "cp")
        self.cp.start()
        try:
            install_crds(self.cp, "member2")
        except BaseException:
            self.cp.stop()
            raise

    def apply(self, path: str, obj: dict[str, object]) -> None:
        status, body = self.cp.request(
            "member2",
            "PATCH",
            f"{path}/{obj['metadata']['name']}?fieldManager=soak&force=true",  # type: ignore[index]
            obj,
            content_type="application/apply-patch+yaml",
        )
        if status not in (200, 201):
            raise RuntimeError(f"apply {path}: {status} {body}")

    def import_(self, name: str, ips: list[str] | None) -> None:
        spec: dict[str, object] = {
            "type": "ClusterSetIP" if ips else "Headless",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
        }
        if ips:
            spec["ips"] = ips
        self.apply(
            MCS,
            {
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceImport",
                "metadata": {"name": name, "namespace": "default"},
                "spec": spec,
            },
        )

    def slice(self, name: str, addresses: list[str]) -> None:
        self.apply(
            SLICES,
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{name}-member1",
                    "namespace": "default",
                    "labels": {
                        "multicluster.kubernetes.io/service-name": name,
                        "multicluster.kubernetes.io/source-cluster": "member1",
                        "endpointslice.kubernetes.io/managed-by": "controller.clusterset.io",
                    },
                },
                "addressType": "IPv4",
                "ports": [{"name": "http", "port": 80, "protocol": "TCP"}],
                "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
            },
        )

    def setup(self) -> None:
        self.import_("serve", ["10.250.0.10"])
        self.import_("db", None)
        self.slice("db", ["10.244.1.20", "10.244.2.21"])
        self.import_("churn", None)

    def server_args(self) -> list[str]:
        return [
            "dns",
            "--kubeconfig",
            str(self.cp.kubeconfig_path),
            "--context",
            "member2",
            "--lease-grace",
            "0",
        ]

    def write(self, v: int) -> None:
        self.slice("churn", [churn_ip(v)])
        self.import_(f"tmp-{v}", [f"10.250.{1 + v // 250 % 250}.{v % 250 + 1}"])
        if v - KEEP_TMP > 0:
            self.cp.request("member2", "DELETE", f"{MCS}/tmp-{v - KEEP_TMP}")

    def close(self) -> None:
        self.cp.stop()


Source = FolderSource | ApiSource


class Churner(threading.Thread):
    def __init__(self, source: Source, every: float, history: History) -> None:
        super().__init__(name="churner", daemon=True)
        self.source, self.every, self.history = source, every, history
        self.stop = threading.Event()
        self.version = 0

    def write(self) -> None:
        v = self.version + 1
        # From the moment the write starts it may be served (a watch can deliver the new
        # object before the apiserver's reply to the write reaches us): recorded first.
        now = time.monotonic()
        with self.history.lock:
            self.history.written.append(now)
            self.history.tmp_added[v] = now
            if v - KEEP_TMP > 0:
                self.history.tmp_removed[v - KEEP_TMP] = now
        self.source.write(v)
        self.version = v

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop.is_set():
            self.write()
            next_at += self.every
            self.stop.wait(max(0.0, next_at - time.monotonic()))


@dataclass
class Verdicts:
    checked: int = 0
    timeouts: int = 0
    wrong: list[str] = field(default_factory=list)
    staleness: list[float] = field(default_factory=list)  # seconds a served version was old


class Verifier(threading.Thread):
    """Asks one query at a time and judges it against the history (see module docstring)."""

    def __init__(
        self, port: int, history: History, stable: dict[str, str], window: float, seed: int
    ) -> None:
        super().__init__(name="verifier", daemon=True)
        self.port, self.history, self.stable, self.window = port, history, stable, window
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.verdicts = Verdicts()

    def ask(self, name: str) -> tuple[float, float, dns.message.Message] | None:
        q = dns.message.make_query(f"{name}.{ZONE}.", "A")
        sent = time.monotonic()
        try:
            r = dns.query.udp(q, "127.0.0.1", port=self.port, timeout=2)
        except dns.exception.Timeout:
            self.verdicts.timeouts += 1
            return None
        return sent, time.monotonic(), r

    def judge_churn(self) -> None:
        got = self.ask("churn.default.svc")
        if got is None:
            return
        sent, received, r = got
        ips = sorted(rd.address for rrset in r.answer for rd in rrset)
        h = self.history
        with h.lock:
            written = list(h.written)
        ok = False
        if r.rcode() == dns.rcode.NOERROR and len(ips) == 1:
            for v in range(len(written), 0, -1):
                if churn_ip(v) == ips[0]:
                    superseded = written[v] if v < len(written) else received
                    ok = written[v - 1] <= received and superseded >= sent - self.window
                    self.verdicts.staleness.append(max(0.0, sent - superseded))
                    break
        if not ok:
            at = {v: round(t - sent, 3) for v, t in enumerate(written, 1) if abs(t - sent) < 3}
            self.verdicts.wrong.append(
                f"churn: {dns.rcode.to_text(r.rcode())} {ips} asked at 0, answered at "
                f"{received - sent:.3f}; versions began (s from asking): {at}"
            )

    def judge_tmp(self) -> None:
        v = self.history.version_at(time.monotonic())
        k = self.rng.randint(max(1, v - KEEP_TMP - 5), v + 1)
        got = self.ask(f"tmp-{k}.default.svc")
        if got is None:
            return
        sent, received, r = got
        h = self.history
        with h.lock:
            added = h.tmp_added.get(k, float("inf"))
            removed = h.tmp_removed.get(k, float("inf"))
        lo = sent - self.window
        present_some_time = added <= received and removed >= lo
        absent_some_time = lo < added or removed <= received
        rcode = r.rcode()
        if rcode == dns.rcode.NOERROR and r.answer:
            ip = ipaddress.ip_address(r.answer[0][0].address)
            ok = present_some_time and ip in ipaddress.ip_network("10.250.0.0/16")
        elif rcode == dns.rcode.NXDOMAIN:
            ok = absent_some_time
        else:
            ok = False
        if not ok:
            self.verdicts.wrong.append(f"tmp-{k}: {dns.rcode.to_text(rcode)} {r.answer}")

    def judge_stable(self, name: str) -> None:
        got = self.ask(name)
        if got is None:
            return
        answer = " ".join(sorted(rd.address for rrset in got[2].answer for rd in rrset))
        if answer != self.stable[name]:
            self.verdicts.wrong.append(f"{name}: {answer!r} != {self.stable[name]!r}")

    def run(self) -> None:
        while not self.stop.is_set():
            pick = self.rng.random()
            if pick < 0.5:
                self.judge_churn()
            elif pick < 0.8:
                self.judge_tmp()
            else:
                self.judge_stable(self.rng.choice(sorted(self.stable)))
            self.verdicts.checked += 1
            time.sleep(0.005)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return int(port)
    raise RuntimeError("no free port")


def answer_text(port: int, name: str) -> str:
    q = dns.message.make_query(f"{name}.{ZONE}.", "A")
    r = dns.query.udp(q, "127.0.0.1", port=port, timeout=1)
    return " ".join(sorted(rd.address for rrset in r.answer for rd in rrset))


@dataclass
class SoakReport:
    dnsperf: dict[str, float]
    verdicts: Verdicts
    rss_kib: list[int]
    versions: int
    seconds: float
    failures: list[str]

    def summary(self) -> str:
        v, rss = self.verdicts, self.rss_kib
        stale = sorted(v.staleness) or [0.0]
        warm = rss[len(rss) // 10] if rss else 0
        return "\n".join(
            [
                f"churn: {self.versions} versions written in {self.seconds:.0f} s",
                "dnsperf: {sent:.0f} sent, {completed:.0f} completed, {lost:.0f} lost, "
                "{qps:.0f} qps, avg latency {latency_ms:.2f} ms".format(**self.dnsperf),
                f"verifier: {v.checked} answers checked, {len(v.wrong)} wrong, "
                f"{v.timeouts} timeouts; served version older than current by at most "
                f"{stale[-1] * 1000:.0f} ms (p99 {stale[int(len(stale) * 0.99)] * 1000:.0f} ms)",
                f"server RSS: after warm-up {warm / 1024:.1f} MiB, end "
                f"{(rss[-1] if rss else 0) / 1024:.1f} MiB, min {min(rss or [0]) / 1024:.1f}, "
                f"max {max(rss or [0]) / 1024:.1f} MiB ({len(rss)} samples)",
            ]
        )


def parse_dnsperf(out: str) -> dict[str, float]:
    def num(pattern: str) -> float:
        m = re.search(pattern, out)
        return float(m.group(1)) if m else float("nan")

    return {
        "sent": num(r"Queries sent:\s+(\d+)"),
        "completed": num(r"Queries completed:\s+(\d+)"),
        "lost": num(r"Queries lost:\s+(\d+)"),
        "qps": num(r"Queries per second:\s+([\d.]+)"),
        "latency_ms": num(r"Average Latency \(s\):\s+([\d.]+)") * 1000,
    }


def soak(
    duration: float,
    *,
    rate: int = 2000,
    churn_ms: float = 100,
    window: float = 2.0,
    rss_bound_mib: float = 32.0,
    seed: int = 11,
    keep: bool = False,
    apiserver: bool = False,
) -> SoakReport:
    dnsperf = shutil.which("dnsperf")
    if dnsperf is None:
        raise RuntimeError("dnsperf is not installed (scripts/test installs it)")
    tmp = Path(tempfile.mkdtemp(prefix="clusterset-soak-"))
    source: Source = ApiSource(tmp) if apiserver else FolderSource(tmp)
    source.setup()
    history = History()
    churner = Churner(source, churn_ms / 1000, history)
    churner.write()
    port = free_port()
    log = (tmp / "server.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clusterset",
            *source.server_args(),
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=log,
    )
    failures: list[str] = []
    rss: list[int] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode}")
            try:
                if answer_text(port, "churn.default.svc") == churn_ip(1):
                    break
            except (dns.exception.Timeout, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("server did not answer")
            time.sleep(0.1)
        stable = {n: answer_text(port, n) for n in ("serve.default.svc", "db.default.svc")}
        queries = tmp / "queries.txt"
        queries.write_text(
            "".join(
                f"{n}.{ZONE} {t}\n"
                for n, t in [
                    ("serve.default.svc", "A"),
                    ("churn.default.svc", "A"),
                    ("db.default.svc", "A"),
                    ("_http._tcp.serve.default.svc", "SRV"),
                    ("nope.default.svc", "A"),
                    ("dns-version", "TXT"),
                    ("tmp-1.default.svc", "A"),
                ]
            )
        )
        verifier = Verifier(port, history, stable, window, seed)
        churner.start()
        verifier.start()
        started = time.monotonic()
        perf = subprocess.Popen(
            [
                dnsperf,
                "-s",
                "127.0.0.1",
                "-p",
                str(port),
                "-d",
                str(queries),
                "-Q",
                str(rate),
                "-l",
                str(duration),
                "-c",
                "4",
                "-t",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        while perf.poll() is None:
            rss.append(rss_kib(proc.pid))
            time.sleep(1)
        out, _ = perf.communicate()
        seconds = time.monotonic() - started
        churner.stop.set()
        verifier.stop.set()
        churner.join()
        verifier.join()
        if proc.poll() is not None:
            failures.append(f"server exited with {proc.returncode}")
        stats = parse_dnsperf(out)
        if stats["lost"] != 0:
            failures.append(f"dnsperf lost {stats['lost']:.0f} queries\n{out}")
        if verifier.verdicts.wrong:
            failures.append("wrong answers: " + "; ".join(verifier.verdicts.wrong[:10]))
        if verifier.verdicts.timeouts:
            failures.append(f"{verifier.verdicts.timeouts} verifier queries timed out")
        if rss:
            growth = (max(rss[len(rss) // 10 :]) - rss[len(rss) // 10]) / 1024
            if growth > rss_bound_mib:
                failures.append(f"RSS grew {growth:.1f} MiB after warm-up")
        return SoakReport(stats, verifier.verdicts, rss, churner.version, seconds, failures)
    finally:
        churner.stop.set()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
        source.close()
        if failures or keep:
            print(f"server log kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--duration", type=float, default=300, help="seconds of dnsperf")
    ap.add_argument("--rate", type=int, default=2000, help="dnsperf queries per second")
    ap.add_argument("--churn-ms", type=float, default=100, help="ms between data versions")
    ap.add_argument("--window", type=float, default=2.0, help="seconds an answer may lag")
    ap.add_argument("--rss-bound", type=float, default=32.0, help="MiB of RSS growth allowed")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument(
        "--apiserver",
        action="store_true",
        help="churn objects in a real kube-apiserver under `clusterset dns --kubeconfig`",
    )
    args = ap.parse_args()
    print(
        f"soak: {args.duration:.0f} s of dnsperf at {args.rate} qps, a new data version every "
        f"{args.churn_ms:.0f} ms ({'kube-apiserver' if args.apiserver else 'manifest folder'})"
    )
    r = soak(
        args.duration,
        rate=args.rate,
        churn_ms=args.churn_ms,
        window=args.window,
        rss_bound_mib=args.rss_bound,
        seed=args.seed,
        keep=args.keep,
        apiserver=args.apiserver,
    )
    print(r.summary())
    if r.failures:
        print("FAILED:\n  " + "\n  ".join(r.failures))
        sys.exit(1)
    print("ok: 0 lost, every answer correct for a recent version, RSS flat")


if __name__ == "__main__":
    main()
