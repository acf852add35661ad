"""Packet fuzz of the running DNS server: mutated and random packets over UDP and TCP.

    .venv/bin/python bench/dns_fuzz.py --count 1000000 [--tcp-share 0.05] [--seed 11]

Starts `clusterset dns` on a generated folder (ClusterSetIP, headless with enough
endpoints to truncate, endpoint names, SRV), records the answers to a set of golden
queries, then sends `--count` packets: valid queries of every shape mutated (bit flips,
byte overwrites, cuts, appended junk, wrong counts, compression pointers and loops,
bad label lengths, EDNS fields) and wholly random packets; a share goes over TCP as
pipelined, length-prefixed messages (sometimes with a lying length). Every 20,000
packets a golden query must still be answered correctly. At the end: the process is
alive, every golden query is answered exactly as before over UDP and TCP, and its RSS
grew by less than `--rss-bound` MiB. Prints packets sent, replies, RSS before/after/peak
and exits 1 on any failure. tests/stress/test_dns_fuzz.py runs a short form.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode

ZONE = "clusterset.local."
FOLDER = """\
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {{name: serve, namespace: default}}
spec:
  type: ClusterSetIP
  ips: [10.250.0.10]
  ports: [{{port: 80, name: http, protocol: TCP}}, {{port: 443, name: https, protocol: TCP}}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {{name: db, namespace: data}}
spec:
  type: Headless
  ports: [{{port: 5432, name: pg}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-member1
  namespace: data
  labels:
    multicluster.kubernetes.io/service-name: db
    multicluster.kubernetes.io/source-cluster: member1
    endpointslice.kubernetes.io/managed-by: controller.clusterset.io
addressType: IPv4
ports: [{{port: 5432, name: pg, protocol: TCP}}]
endpoints:
{endpoints}
"""
NAMES = [
    "serve.default.svc",
    "db.data.svc",
    "db-3.member1.db.data.svc",
    "_http._tcp.serve.default.svc",
    "_pg._tcp.db.data.svc",
    "nope.default.svc",
    "dns-version",
    "",
    "x.y.z.serve.default.svc",
    "kubernetes.default.svc.cluster.local.",  # out of the zone: REFUSED, or forwarded (--unified)
    "nope.default.svc.cluster.local.",
]
TYPES = ["A", "AAAA", "SRV", "TXT", "SOA", "NS", "ANY", "PTR", "CNAME", "HTTPS", 97, 0, 65535]
GOLDEN = [
    ("serve.default.svc", "A"),
    ("db.data.svc", "A"),
    ("_http._tcp.serve.default.svc", "SRV"),
    ("_pg._tcp.db.data.svc", "SRV"),
    ("db-3.member1.db.data.svc", "A"),
    ("nope.default.svc", "A"),
    ("serve.default.svc", "AAAA"),
    ("dns-version", "TXT"),
    ("", "SOA"),
]


UNIFIED_GOLDEN = [  # forwarded to knotd playing kube-dns (--unified)
    ("kubernetes.default.svc.cluster.local.", "A"),
    ("nope.default.svc.cluster.local.", "A"),
]
KUBE_DNS_ZONE = """\
$ORIGIN cluster.local.
$TTL 30
@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30
@ IN NS ns.dns.cluster.local.
ns.dns IN A 127.0.0.1
kubernetes.default.svc IN A 10.97.0.1
"""


def write_folder(root: Path, endpoints: int = 60) -> Path:
    d = root / "member2"
    d.mkdir(parents=True, exist_ok=True)
    eps = "".join(
        f"  - addresses: [10.244.{i // 200}.{i % 200 + 1}]\n"
        f"    hostname: db-{i}\n    conditions: {{ready: true}}\n"
        for i in range(endpoints)
    )
    (d / "services.yaml").write_text(FOLDER.format(endpoints=eps))
    return d


def corpus(rng: random.Random) -> list[bytes]:
    """Valid queries of many shapes: the seeds the mutations start from."""
    out = []
    for name in NAMES:
        for rdtype in TYPES:
            qname = name if name.endswith(".") else (name + "." if name else "") + ZONE
            for edns in (None, 0, 1):
                q = dns.message.make_query(qname, rdtype, use_edns=edns)
                if edns is not None:
                    q.use_edns(
                        edns,
                        rng.choice([0, dns.flags.DO]),
                        rng.choice([0, 512, 1232, 4096, 65535]),
                        options=rng.choice([[], [dns.edns.GenericOption(10, os.urandom(8))]]),
                    )
                q.flags = rng.choice([0, dns.flags.RD, dns.flags.RD | dns.flags.CD])
                out.append(q.to_wire())
    out.append(dns.message.make_query("example.com.", "A").to_wire())
    out.append(dns.message.make_query("kubernetes.default.svc.cluster.local.", "A").to_wire())
    return out


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """One of the mutations in the module docstring (or a wholly random packet)."""
    r = rng.random()
    if r < 0.08:
        return os.urandom(rng.randrange(0, 600))
    p = bytearray(seed)
    for _ in range(rng.randint(1, 4)):
        m = rng.randrange(10)
        n = len(p)
        if m == 0 and n:
            p[rng.randrange(n)] ^= 1 << rng.randrange(8)
        elif m == 1 and n:
            p[rng.randrange(n)] = rng.randrange(256)
        elif m == 2:
            del p[rng.randrange(n + 1) :]
        elif m == 3:
            p += os.urandom(rng.randrange(1, 64))
        elif m == 4 and n >= 12:
            struct.pack_into("!H", p, rng.choice([4, 6, 8, 10]), rng.choice([0, 1, 2, 255, 65535]))
        elif m == 5 and n > 13:  # a compression pointer somewhere in the name (or a loop)
            at = rng.randrange(12, n - 1)
            p[at : at + 2] = struct.pack("!H", 0xC000 | rng.choice([12, at, rng.randrange(n)]))
        elif m == 6 and n > 13:  # a label length that lies
            p[rng.randrange(12, n)] = rng.choice([63, 64, 127, 191, 255])
        elif m == 7 and n > 12:  # opcode / flags / rcode bits
            p[2] = rng.randrange(256)
            p[3] = rng.randrange(256)
        elif m == 8 and n > 20:  # EDNS payload / version / rdlen region at the end
            at = rng.randrange(max(12, n - 11), n)
            p[at] = rng.randrange(256)
        elif m == 9:
            at = rng.randrange(n + 1)
            p[at:at] = p[at : at + rng.randrange(1, 40)]  # duplicate a segment
    return bytes(p)


@dataclass
class Report:
    udp_sent: int = 0
    tcp_sent: int = 0
    udp_replies: int = 0
    tcp_reconnects: int = 0
    checks: int = 0
    probes: int = 0
    probes_lost: int = 0
    server_received: int = 0  # UDP + TCP messages the server counted
    server_dropped: int = 0
    server_forwarded: int = 0
    failures: list[str] = field(default_factory=list)
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    rss_peak_kib: int = 0
    seconds: float = 0.0

    @property
    def sent(self) -> int:
        return self.udp_sent + self.tcp_sent


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {key} for {pid}")


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


def ask(port: int, name: str, rdtype: str, *, tcp: bool = False) -> str:
    """The reply as comparable text: rcode, flags, and every section's records (case-folded,
    without TTLs: forwarded answers age in the cache). Names ending in a dot are absolute;
    others are relative to the zone."""
    qname = name if name.endswith(".") else (name + "." if name else "") + ZONE
    q = dns.message.make_query(qname, rdtype, use_edns=0)
    r = (dns.query.tcp if tcp else dns.query.udp)(q, "127.0.0.1", port=port, timeout=2)
    sections = sorted(
        f"{rrset.name.to_text().lower()} {rrset.rdtype} {sorted(rd.to_text().lower() for rd in rrset)}"
        for rrset in r.answer + r.additional
    )
    return f"{dns.rcode.to_text(r.rcode())} {r.flags & ~dns.flags.TC} {sections}"


def golden(port: int, *, tcp: bool = False, unified: bool = False) -> dict[tuple[str, str], str]:
    names = GOLDEN + (UNIFIED_GOLDEN if unified else [])
    return {(n, t): ask(port, n, t, tcp=tcp) for n, t in names}


def wait_answering(port: int, proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if ask(port, "dns-version", "TXT").startswith("NOERROR"):
                return
        except (dns.exception.Timeout, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError("server did not answer")


class Server:
    """`clusterset dns` on a generated folder, on a free loopback port."""

    def __init__(self, folder: Path, log: Path, upstream: int | None = None) -> None:
        self.port = free_port()
        self.log = log.open("wb")
        self.metrics = free_port()
        argv = ["dns", "--manifests", str(folder), "--listen", f"127.0.0.1:{self.port}"]
        argv += ["--metrics-listen", f"127.0.0.1:{self.metrics}"]
        if upstream is not None:
            argv += ["--unified-cluster-local", "--upstream", f"127.0.0.1:{upstream}"]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clusterset", *argv],
            stdout=self.log,
            stderr=self.log,
        )
        wait_answering(self.port, self.proc)

    def counter(self, name: str) -> int:
        """A counter summed over its labels, from /metrics."""
        url = f"http://127.0.0.1:{self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return int(
            sum(
                float(line.rsplit(" ", 1)[1])
                for line in text.splitlines()
                if line.startswith((name + " ", name + "{"))
            )
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class TcpStream:
    """One pipelined TCP connection; reopened whenever the server closes it."""

    def __init__(self, port: int, report: Report) -> None:
        self.port, self.report = port, report
        self.sock: socket.socket | None = None

    def send(self, rng: random.Random, packet: bytes) -> None:
        if self.sock is None:
            self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            self.sock.setblocking(False)
            self.report.tcp_reconnects += 1
        length = len(packet) if rng.random() > 0.05 else rng.randrange(65536)  # lying length
        try:
            self.sock.send(struct.pack("!H", length) + packet[:65535])
            if rng.random() < 0.01:  # hang up mid-stream now and then
                raise ConnectionAbortedError
            while True:  # drain replies (and notice a close)
                if not self.sock.recv(65536):
                    raise ConnectionResetError
        except BlockingIOError:
            return
        except OSError:
            self.sock.close()
            self.sock = None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()


def fuzz(
    count: int,
    *,
    seed: int = 11,
    tcp_share: float = 0.05,
    rss_bound_mib: float = 64.0,
    check_every: int = 20000,
    keep: bool = False,
    progress: bool = False,
    unified: bool = False,
) -> Report:
    rng = random.Random(seed)
    tmp = Path(tempfile.mkdtemp(prefix="clusterset-fuzz-"))
    report = Report()
    stack = contextlib.ExitStack()
    upstream = None
    if unified:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.integration.servers import knotd_serving

        (tmp / "knot").mkdir()
        upstream = stack.enter_context(knotd_serving("cluster.local", KUBE_DNS_ZONE, tmp / "knot"))
    try:
        server = Server(write_folder(tmp), tmp / "server.log", upstream)
    except BaseException:
        stack.close()
        raise
    try:
        port, pid = server.port, server.proc.pid
        want = golden(port, unified=unified)
        want_tcp = golden(port, tcp=True, unified=unified)
        seeds = corpus(rng)
        for q in seeds:  # warm up: every valid shape answered once, memo filled
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.sendto(q, ("127.0.0.1", port))
        time.sleep(0.5)
        report.rss_before_kib = rss_kib(pid)
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.setblocking(False)
        udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        tcp = TcpStream(port, report)
        dest = ("127.0.0.1", port)
        started = time.monotonic()
        for i in range(1, count + 1):
            packet = mutate(rng, rng.choice(seeds))
            if rng.random() < tcp_share:
                tcp.send(rng, packet)
                report.tcp_sent += 1
            else:
                try:
                    udp.sendto(packet, dest)
                    report.udp_sent += 1
                except BlockingIOError:
                    select.select([], [udp], [], 0.01)
            if i % 200 == 0:
                # Pace to the server: one thread answers in order, so once a valid probe is
                # answered, every packet sent before it has been read (none lost in a full
                # socket buffer).
                report.probes += 1
                probe = b"\xfe\xed" + seeds[0][2:]
                udp.sendto(probe, dest)
                deadline = time.monotonic() + 1.0
                while time.monotonic() < deadline:
                    select.select([udp], [], [], 0.05)
                    try:
                        reply = udp.recv(65535)
                    except BlockingIOError:
                        continue
                    report.udp_replies += 1
                    if reply[:2] == b"\xfe\xed" and reply[2] & 0x80:
                        break
                else:
                    report.probes_lost += 1
            if i % check_every == 0:
                report.checks += 1
                if server.proc.poll() is not None:
                    report.failures.append(f"server exited ({server.proc.returncode}) at {i}")
                    break
                name, rdtype = list(want)[report.checks % len(want)]
                got = _try_ask(port, name, rdtype)
                if got != want[(name, rdtype)]:
                    report.failures.append(f"after {i} packets, {name} {rdtype}: {got}")
                if progress:
                    print(f"  {i:>9} packets, RSS {rss_kib(pid) / 1024:.1f} MiB", flush=True)
        report.seconds = time.monotonic() - started
        tcp.close()
        udp.close()
        time.sleep(0.5)
        if server.proc.poll() is not None:
            report.failures.append(f"server exited with {server.proc.returncode}")
            return report
        report.rss_after_kib = rss_kib(pid)
        report.server_received = server.counter("clusterset_dns_requests_total")
        report.server_dropped = server.counter("clusterset_dns_dropped_total")
        report.server_forwarded = server.counter("clusterset_dns_forwarded_total")
        report.rss_peak_kib = rss_kib(pid, "VmHWM")
        for (name, rdtype), text in want.items():
            got = _try_ask(port, name, rdtype)
            if got != text:
                report.failures.append(f"UDP {name} {rdtype}: {got} != {text}")
        for (name, rdtype), text in want_tcp.items():
            got = _try_ask(port, name, rdtype, tcp=True)
            if got != text:
                report.failures.append(f"TCP {name} {rdtype}: {got} != {text}")
        growth = (report.rss_after_kib - report.rss_before_kib) / 1024
        if growth > rss_bound_mib:
            report.failures.append(f"RSS grew {growth:.1f} MiB (bound {rss_bound_mib} MiB)")
        return report
    finally:
        server.stop()
        stack.close()
        if report.failures or keep:
            print(f"server log kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _try_ask(port: int, name: str, rdtype: str, *, tcp: bool = False) -> str:
    last = ""
    for _ in range(3):  # UDP can be dropped by a full socket buffer: that is not a wrong answer
        try:
            return ask(port, name, rdtype, tcp=tcp)
        except (dns.exception.Timeout, OSError) as exc:
            last = repr(exc)
    return last


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000, help="packets to send")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--tcp-share", type=float, default=0.05, help="fraction sent over TCP")
    ap.add_argument("--rss-bound", type=float, default=64.0, help="MiB of RSS growth allowed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument(
        "--unified",
        action="store_true",
        help="also forward: --unified-cluster-local with knotd playing kube-dns upstream",
    )
    args = ap.parse_args()
    mode = " (unified mode: forwarding to knotd)" if args.unified else ""
    print(f"fuzz: {args.count} packets, seed {args.seed}, {args.tcp_share:.0%} over TCP{mode}")
    r = fuzz(
        args.count,
        seed=args.seed,
        tcp_share=args.tcp_share,
        rss_bound_mib=args.rss_bound,
        keep=args.keep,
        progress=True,
        unified=args.unified,
    )
    print(
        f"sent {r.sent} packets ({r.udp_sent} UDP, {r.tcp_sent} TCP over {r.tcp_reconnects} "
        f"connections) in {r.seconds:.1f} s; {r.udp_replies} UDP replies read; "
        f"{r.checks} liveness checks, {r.probes} pacing probes ({r.probes_lost} unanswered)"
    )
    print(
        f"server counted {r.server_received} messages received, {r.server_dropped} dropped "
        f"(unanswerable: responses, short headers), {r.server_forwarded} forwarded upstream"
    )
    print(
        f"server RSS: before {r.rss_before_kib / 1024:.1f} MiB, after "
        f"{r.rss_after_kib / 1024:.1f} MiB, peak {r.rss_peak_kib / 1024:.1f} MiB"
    )
    if r.failures:
        print("FAILED:\n  " + "\n  ".join(r.failures[:20]))
        sys.exit(1)
    print("ok: no crash, RSS bounded, every golden answer unchanged over UDP and TCP")


if __name__ == "__main__":
    main()
