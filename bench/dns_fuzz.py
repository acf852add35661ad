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

Before the fuzz, the structured worst cases (issue 20: huge counts, thousands of
records, long compression chains, EDNS option floods, each one 64 KB datagram) are
measured against clusterset and knotd in the same run: server CPU per packet, and
legitimate UDP queries lost while those packets arrive at `--attack-rate` (1 MB/s).
The fuzz also sends them now and then. `--count 0` runs the worst cases alone.

    .venv/bin/python bench/dns_fuzz.py --soak 600 [--attack-rate 1048576]

is a mixed attack instead: the worst-case datagrams, TCP connections that send half a
message and dribble the rest, and slow unfinished HTTP requests to --metrics-listen,
while legitimate clients ask over UDP, TCP and HTTP and count what is lost (goal: 0);
then the UDP and TCP parts against knotd serving the same name, for the same time.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
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
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

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
TYPES: list[dns.rdatatype.RdataType | str] = [
    "A", "AAAA", "SRV", "TXT", "SOA", "NS", "ANY", "PTR", "CNAME", "HTTPS",
    *(dns.rdatatype.RdataType.make(t) for t in (97, 0, 65535)),
]  # fmt: skip
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
WORST_NAME = "serve.default.svc." + ZONE
KNOT_ZONE = """\
$ORIGIN clusterset.local.
$TTL 5
@ IN SOA ns.dns hostmaster 1 7200 1800 86400 5
@ IN NS ns.dns
ns.dns IN A 127.0.0.1
serve.default.svc IN A 10.250.0.10
"""
UDP_LARGEST = 65507  # the largest UDP payload over IPv4


def _header(*, flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0, flags, qd, an, ns, ar)


def _opt(rdlen: int, version: int = 0) -> bytes:
    """An OPT RR up to its RDATA: root owner, 1232 B payload, `version`."""
    return b"\x00\x00\x29\x04\xd0\x00" + bytes([version]) + b"\x00\x00" + struct.pack("!H", rdlen)


@functools.cache
def worst_packets() -> dict[str, bytes]:
    """Structured worst cases, each one UDP datagram of up to 64 KB: what costs a parser most.

    "additional-records" is item 1 of issue 20 (4,090 A records, 65,492 B: 0.3 s of
    dnspython each). The others: the same records as answers or as an UPDATE, 13,099
    questions, owners chained by compression pointers, an OPT of 16,000 options (with
    EDNS version 1, or followed by a TSIG: both kept off the fast path), one TXT of
    65,000 strings, a name walk fooled into 64 KB of one-octet labels, and a compressed
    question (a real query that takes the slow path).
    """
    base = dns.message.make_query(WORST_NAME, "A", id=0).to_wire()
    question = base[12:]
    room = UDP_LARGEST - len(base)
    a_rr = bytes.fromhex("c00c00010001000000000004") + bytes([10, 0, 0, 1])
    k = room // len(a_rr)
    out = {
        "additional-records": _header(ar=k) + question + a_rr * k,
        "answer-records": _header(an=k) + question + a_rr * k,
        "update-records": _header(flags=0x2800, ns=k) + question + a_rr * k,
    }
    kq = (UDP_LARGEST - 12) // 5
    out["questions"] = _header(qd=kq) + b"\x00\x00\x01\x00\x01" * kq
    chain = bytearray(base)  # each owner: one label and a pointer to the previous owner
    prev, count = 12, 0
    while len(chain) + 4 + len(a_rr) - 2 <= UDP_LARGEST:
        at = len(chain)
        chain += b"\x01a" + struct.pack("!H", 0xC000 | prev) + a_rr[2:]
        prev, count = at, count + 1
    struct.pack_into("!H", chain, 10, count)
    out["compression-chains"] = bytes(chain)
    option = b"\xfd\xe9\x00\x00"  # an empty option of a local-use code
    n = (room - 11) // 4
    out["edns-options"] = _header(ar=1) + question + _opt(4 * n, version=1) + option * n
    tsig = b"\x01k\x00\x00\xfa\x00\xff\x00\x00\x00\x00\x00\x1a\x08hmac-md5\x00" + bytes(16)
    n = (room - 11 - len(tsig)) // 4
    out["edns-options-tsig"] = _header(ar=2) + question + _opt(4 * n) + option * n + tsig
    rdlen = room - 12
    txt = b"\xc0\x0c\x00\x10\x00\x01\x00\x00\x00\x00" + struct.pack("!H", rdlen) + bytes(rdlen)
    out["txt-strings"] = _header(ar=1) + question + txt
    # A zero octet inside the first label ends the name for a quick scan; walked label by
    # label, the name goes on through the OPT (its TYPE octet 41 is read as a length) into
    # an RDATA of one-octet labels.
    labels = (UDP_LARGEST - 30) // 2
    out["label-walk"] = (
        _header(ar=1)
        + bytes.fromhex("010005000001")
        + _opt(1 + 2 * labels)
        + b"x"
        + b"\x01a" * labels
    )
    n = (UDP_LARGEST - 12 - 6 - 11) // 4
    out["compressed-question"] = (
        _header(ar=1) + b"\xc0\x04\x00\x01\x00\x01" + _opt(4 * n) + option * n
    )
    return out


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
                cookie: list[dns.edns.Option] = [
                    dns.edns.GenericOption(dns.edns.OptionType.COOKIE, os.urandom(8))
                ]
                q = dns.message.make_query(qname, rdtype, use_edns=edns)
                if edns is not None:
                    q.use_edns(
                        edns,
                        rng.choice([0, dns.flags.DO]),
                        rng.choice([0, 512, 1232, 4096, 65535]),
                        options=rng.choice([[], cookie]),
                    )
                q.flags = rng.choice([0, dns.flags.RD, dns.flags.RD | dns.flags.CD])
                out.append(q.to_wire())
    out.append(dns.message.make_query("example.com.", "A").to_wire())
    out.append(dns.message.make_query("kubernetes.default.svc.cluster.local.", "A").to_wire())
    return out


def mutate(rng: random.Random, seed: bytes) -> bytes:
    """One of the mutations in the module docstring (or a wholly random packet, or a
    structured worst case)."""
    r = rng.random()
    if r < 0.08:
        return os.urandom(rng.randrange(0, 600))
    if r < 0.085:  # a structured worst case, one octet changed (never the same bytes twice)
        p = bytearray(rng.choice(list(worst_packets().values())))
        p[rng.randrange(12, len(p))] = rng.randrange(256)
        return bytes(p)
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pid_of(*argv_parts: str) -> int:
    """The process whose command line holds every one of `argv_parts` (knotd by its config)."""
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                argv = (entry / "cmdline").read_bytes().split(b"\0")
                if all(part.encode() in argv for part in argv_parts):
                    return int(entry.name)
    raise RuntimeError(f"no process with {argv_parts}")


def legit_query(i: int) -> bytes:
    """The `i`th legitimate query, as dig would send it: ID `i`, EDNS, one name of the zone."""
    q = dns.message.make_query(WORST_NAME, "A", use_edns=0, id=i & 0xFFFF)
    return q.to_wire()


def _await_probe(sock: socket.socket, dest: tuple[str, int], timeout: float = 30.0) -> bool:
    """Send a legitimate query and wait for its reply: a server reading in order has then
    read every datagram sent before it (none left to drop in a full buffer)."""
    sock.sendto(b"\xfe\xed" + legit_query(0)[2:], dest)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select([sock], [], [], 0.05)[0] and sock.recv(65535)[:2] == b"\xfe\xed":
            return True
    return False


def packet_cost(
    port: int, pid: int, packet: bytes, *, budget: float = 1.0, most: int = 5000
) -> float:
    """Server CPU per packet in µs: `packet` sent `most` times or for `budget` seconds,
    with a probe (one legitimate query: a few µs) after every MB, so none is dropped unread."""
    dest = ("127.0.0.1", port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        _await_probe(s, dest)
        cpu, started = cpu_seconds(pid), time.monotonic()
        sent = unprobed = 0
        while sent < most and time.monotonic() - started < budget:
            s.sendto(packet, dest)
            sent += 1
            unprobed += len(packet)
            if unprobed >= 1 << 20:
                _await_probe(s, dest)
                unprobed = 0
        if not _await_probe(s, dest):
            raise RuntimeError("the server stopped answering")
        return (cpu_seconds(pid) - cpu) / sent * 1e6


@dataclass
class Loss:
    """Legitimate queries of one kind: sent, lost (no answer within the timeout), slowest."""

    sent: int = 0
    lost: int = 0
    slowest: float = 0.0

    def __str__(self) -> str:
        return f"{self.lost}/{self.sent} lost, slowest {self.slowest * 1000:.0f} ms"


def attack_udp(port: int, packets: list[bytes], rate: float, stop: threading.Event) -> int:
    """Send `packets` round robin at `rate` bytes a second until `stop`; the bytes sent."""
    dest = ("127.0.0.1", port)
    sent = 0
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        while not stop.is_set():
            for packet in packets:
                ahead = started + sent / rate - time.monotonic()
                if ahead > 0 and stop.wait(ahead):
                    break
                with contextlib.suppress(BlockingIOError):  # the kernel drops: so be it
                    s.sendto(packet, dest)
                sent += len(packet)
                with contextlib.suppress(OSError):  # replies are not read: discard them
                    s.recv(65535)
    return sent


def legit_udp(port: int, seconds: float, qps: float = 100.0, timeout: float = 1.0) -> Loss:
    """Ask one legitimate query every 1/`qps` s for `seconds`; lost: no reply in `timeout`."""
    dest = ("127.0.0.1", port)
    loss = Loss()
    pending: dict[int, float] = {}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.setblocking(False)
        started = time.monotonic()
        end = started + seconds
        while True:
            now = time.monotonic()
            if now < end and now >= started + loss.sent / qps:
                pending[loss.sent & 0xFFFF] = now
                s.sendto(legit_query(loss.sent), dest)
                loss.sent += 1
            elif now >= end + timeout:
                break
            for qid, at in list(pending.items()):
                if now - at > timeout:
                    del pending[qid]
                    loss.lost += 1
            if select.select([s], [], [], 0.002)[0]:
                reply = s.recv(65535)
                at_ = pending.pop(int.from_bytes(reply[:2], "big"), None)
                if at_ is not None:
                    loss.slowest = max(loss.slowest, time.monotonic() - at_)
    loss.lost += len(pending)
    return loss


def flood(port: int, seconds: float, rate: float, qps: float = 100.0) -> tuple[Loss, float]:
    """Legitimate UDP loss while every worst-case packet arrives round robin at `rate` B/s;
    and the rate the attack reached (B/s)."""
    stop = threading.Event()
    sent: list[int] = []
    packets = list(worst_packets().values())
    attacker = threading.Thread(target=lambda: sent.append(attack_udp(port, packets, rate, stop)))
    started = time.monotonic()
    attacker.start()
    try:
        loss = legit_udp(port, seconds, qps)
    finally:
        stop.set()
        attacker.join()
    return loss, sent[0] / (time.monotonic() - started)


@contextlib.contextmanager
def knotd(tmp: Path) -> Iterator[tuple[int, int]]:
    """knotd serving the same name (tests/integration/servers.py): its port and pid."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.integration.servers import knotd_serving

    (tmp / "knot").mkdir(exist_ok=True)
    with knotd_serving("clusterset.local", KNOT_ZONE, tmp / "knot") as port:
        yield port, pid_of("-c", str(tmp / "knot" / "knot.conf"))


def worst_cases(rate: float, seconds: float) -> bool:
    """Print the per-packet cost table and the loss row, clusterset beside knotd; True if
    no legitimate query was lost on clusterset."""
    tmp = Path(tempfile.mkdtemp(prefix="clusterset-worst-"))
    server = Server(write_folder(tmp), tmp / "server.log")
    try:
        with knotd(tmp) as (knot_port, knot_pid):
            print(
                f"{'worst-case packet':<22} {'bytes':>6} {'clusterset':>11} {'knotd':>9} {'ratio':>6}"
            )
            worst = ("", 0.0, 0.0)
            for name, packet in worst_packets().items():
                ours = packet_cost(server.port, server.proc.pid, packet)
                theirs = packet_cost(knot_port, knot_pid, packet)
                print(
                    f"{name:<22} {len(packet):>6} {ours:>8.1f} µs {theirs:>6.1f} µs "
                    f"{ours / max(theirs, 0.01):>5.1f}x"
                )
                worst = max(worst, (name, ours, theirs), key=lambda row: row[1])
            name, ours, theirs = worst
            print(
                f"worst packet: {name}, {ours:.1f} µs of server CPU against knotd's "
                f"{theirs:.1f} µs ({ours / max(theirs, 0.01):.1f}x)"
            )
            ours_loss, ours_rate = flood(server.port, seconds, rate)
            knot_loss, knot_rate = flood(knot_port, seconds, rate)
            print(
                f"legitimate UDP queries while they arrive at {rate / 1e6:.2f} MB/s for "
                f"{seconds:.0f} s: clusterset {ours_loss} ({ours_rate / 1e6:.2f} MB/s sent); "
                f"knotd {knot_loss} ({knot_rate / 1e6:.2f} MB/s sent)"
            )
            return ours_loss.lost == 0 and server.proc.poll() is None
    finally:
        server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def attack_tcp_partial(port: int, conns: int, stop: threading.Event) -> int:
    """Hold `conns` TCP connections that send half a message (a 512 B length, 100 B of it)
    and then one more byte every 2 s; reopen each one the server closes. Connections made."""
    return _hold(port, conns, stop, struct.pack("!H", 512) + bytes(100), b"\x00")


def attack_http_slow(port: int, conns: int, stop: threading.Event) -> int:
    """As `attack_tcp_partial`, with an HTTP request head that never ends (slowloris)."""
    return _hold(port, conns, stop, b"GET /metrics HTTP/1.1\r\nHost: x\r\n", b"X")


def _hold(port: int, conns: int, stop: threading.Event, opening: bytes, drip: bytes) -> int:
    held: list[socket.socket] = []
    made = 0
    try:
        while not stop.is_set():
            while len(held) < conns and not stop.is_set():
                try:
                    c = socket.create_connection(("127.0.0.1", port), timeout=1)
                    c.sendall(opening)
                    c.setblocking(False)
                except OSError:
                    break
                held.append(c)
                made += 1
            for c in list(held):
                try:
                    if select.select([c], [], [], 0)[0] and not c.recv(4096):
                        raise ConnectionResetError
                    c.send(drip)
                except OSError:
                    c.close()
                    held.remove(c)
            stop.wait(2.0)
    finally:
        for c in held:
            c.close()
    return made


def legit_tcp(port: int, stop: threading.Event, every: float = 0.5, timeout: float = 2.0) -> Loss:
    """One query on a new connection every `every` s until `stop`; lost: no answer in time."""
    loss = Loss()
    while not stop.wait(every):
        loss.sent += 1
        started = time.monotonic()
        try:
            q = dns.message.make_query(WORST_NAME, "A", use_edns=0)
            dns.query.tcp(q, "127.0.0.1", port=port, timeout=timeout)
            loss.slowest = max(loss.slowest, time.monotonic() - started)
        except (dns.exception.DNSException, OSError):
            loss.lost += 1
    return loss


def legit_http(port: int, stop: threading.Event, every: float = 1.0, timeout: float = 5.0) -> Loss:
    """GET /metrics every `every` s until `stop`, as Prometheus would; lost: no reply in time."""
    loss = Loss()
    while not stop.wait(every):
        loss.sent += 1
        started = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
                r.read()
            loss.slowest = max(loss.slowest, time.monotonic() - started)
        except OSError:
            loss.lost += 1
    return loss


def soak(seconds: float, rate: float, *, tcp_conns: int = 300, http_conns: int = 100) -> bool:
    """The mixed attack of the module docstring for `seconds` on clusterset, then on knotd
    (the UDP and TCP parts: it serves no HTTP); prints the losses, True if ours has none."""
    tmp = Path(tempfile.mkdtemp(prefix="clusterset-soak-"))
    try:
        server = Server(write_folder(tmp), tmp / "server.log")
        try:
            ours = _attack(
                "clusterset", seconds, rate, server.port, server.proc.pid, server.metrics,
                tcp_conns=tcp_conns, http_conns=http_conns,
            )  # fmt: skip
        finally:
            server.stop()
        with knotd(tmp) as (knot_port, knot_pid):
            _attack("knotd", seconds, rate, knot_port, knot_pid, None, tcp_conns=tcp_conns)
        return ours
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _attack(
    who: str,
    seconds: float,
    rate: float,
    port: int,
    pid: int,
    metrics: int | None,
    *,
    tcp_conns: int,
    http_conns: int = 0,
) -> bool:
    """One server under the mixed attack; True when it lived and lost nothing."""
    stop = threading.Event()
    results: dict[str, object] = {}

    def run(key: str, fn: Callable[[], object]) -> threading.Thread:
        t = threading.Thread(target=lambda: results.__setitem__(key, fn()), daemon=True)
        t.start()
        return t

    packets = list(worst_packets().values())
    rss_before = rss_kib(pid)
    threads = [
        run("udp attack", lambda: attack_udp(port, packets, rate, stop)),
        run("tcp attack", lambda: attack_tcp_partial(port, tcp_conns, stop)),
        run("tcp", lambda: legit_tcp(port, stop)),
    ]
    if metrics is not None:
        threads.append(run("http attack", lambda: attack_http_slow(metrics, http_conns, stop)))
        threads.append(run("http", lambda: legit_http(metrics, stop)))
    try:
        results["udp"] = legit_udp(port, seconds, qps=50)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    alive = os.path.exists(f"/proc/{pid}")
    kinds = ("udp", "tcp", "http") if metrics is not None else ("udp", "tcp")
    print(
        f"{who}, soak {seconds:.0f} s: attack {results.get('udp attack', 0)} B of UDP worst "
        f"cases, {results.get('tcp attack')} TCP connections holding half a message (of "
        f"{tcp_conns} at once)"
        + (
            f", {results.get('http attack')} slow HTTP requests (of {http_conns} at once)"
            if metrics is not None
            else ""
        )
    )
    for kind in kinds:
        print(f"  legitimate {kind.upper():<4}: {results.get(kind)}")
    print(
        f"  {'alive' if alive else 'DEAD'}, RSS {rss_before / 1024:.1f} -> "
        f"{rss_kib(pid) / 1024 if alive else 0:.1f} MiB"
    )
    losses = [results.get(k) for k in kinds]
    return alive and all(isinstance(x, Loss) and x.lost == 0 for x in losses)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--count", type=int, default=1_000_000, help="packets to send")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--tcp-share", type=float, default=0.05, help="fraction sent over TCP")
    ap.add_argument("--rss-bound", type=float, default=64.0, help="MiB of RSS growth allowed")
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument(
        "--attack-rate", type=float, default=1 << 20, help="B/s of worst-case packets (1 MB/s)"
    )
    ap.add_argument(
        "--flood-seconds", type=float, default=5.0, help="legitimate-loss run, per server"
    )
    ap.add_argument(
        "--soak", type=float, metavar="SECONDS", help="run the mixed attack soak instead"
    )
    ap.add_argument(
        "--unified",
        action="store_true",
        help="also forward: --unified-cluster-local with knotd playing kube-dns upstream",
    )
    args = ap.parse_args()
    if args.soak:
        sys.exit(0 if soak(args.soak, args.attack_rate) else 1)
    if not worst_cases(args.attack_rate, args.flood_seconds):
        print("FAILED: legitimate queries lost under the worst-case packets")
        sys.exit(1)
    if args.count == 0:
        return
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
