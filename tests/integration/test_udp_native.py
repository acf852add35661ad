"""The UDP loop in C (`_fastudp`, memo hits) and in Python give the same bytes and counters.

Every test runs against both loops of a real `clusterset dns` process, but the `test_receiver_*`
ones, on `_fastudp.Receiver` itself; the native loop must be built (`pip install -e .` builds
it): a missing module fails, it is not skipped.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from threading import Thread
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.servers import free_port, need, server_log
from tests.integration.test_ops import get, metric

pytestmark = pytest.mark.integration

HEADLESS_ENDPOINTS = 60  # enough that the SRV answer needs more than 512 bytes: TC

IMPORTS = """\
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {name: serve, namespace: default}
spec:
  type: ClusterSetIP
  ips: [10.250.0.10]
  ports: [{port: 80, name: http, protocol: TCP}]
---
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {name: big, namespace: data}
spec:
  type: Headless
  ports: [{port: 5432, name: pg}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: big-member1
  namespace: data
  labels:
    multicluster.kubernetes.io/service-name: big
    multicluster.kubernetes.io/source-cluster: member1
    endpointslice.kubernetes.io/managed-by: controller.clusterset.io
addressType: IPv4
ports: [{port: 5432, name: pg, protocol: TCP}]
endpoints:
"""


def _folder() -> Path:
    d = Path(tempfile.mkdtemp()) / "member2"
    d.mkdir()
    eps = "".join(
        f"  - addresses: [10.244.1.{i + 1}]\n    hostname: big-{i}\n    conditions: {{ready: true}}\n"
        for i in range(HEADLESS_ENDPOINTS)
    )
    (d / "imports.yaml").write_text(IMPORTS + eps)
    return d


@contextmanager
def serving(loop: str, host: str = "127.0.0.1") -> Iterator[tuple[int, int]]:
    """`clusterset dns` with the given UDP loop; yields (dns port, metrics port)."""
    port, mport = free_port(), free_port()
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cmd = [sys.executable, "-m", "clusterset", "dns", "--manifests", str(_folder())]
    cmd += ["--listen", listen, "--metrics-listen", f"127.0.0.1:{mport}"]
    env = {"CLUSTERSET_NATIVE": "1" if loop == "native" else "0", "PATH": "/usr/bin:/bin"}
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env=env)
    proc.log = log  # type: ignore[attr-defined]
    try:
        _wait_answering(host, port, proc)
        assert f"udp loop: {loop}" in server_log(proc), server_log(proc)
        yield port, mport
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        log.close()


def _wait_answering(host: str, port: int, proc: subprocess.Popen[bytes]) -> None:
    q = dns.message.make_query("dns-version.clusterset.local", "TXT")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, server_log(proc)
        try:
            if dns.query.udp(q, host, port=port, timeout=0.3).answer:
                return
        except (dns.exception.Timeout, OSError):
            time.sleep(0.05)
    raise TimeoutError(f"nothing answered on {host}:{port}")


@pytest.fixture(params=["native", "python"])
def loop(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _queries() -> list[tuple[bytes, str]]:
    """(packet, what the server must do) for one pass; IDs are set by the sender."""
    out: list[tuple[bytes, str]] = []
    for name, rdtype, edns, expect in [
        ("serve.default.svc.clusterset.local", "A", 0, "NOERROR"),
        ("SeRvE.default.SVC.clusterset.local", "A", -1, "NOERROR"),  # 0x20: its own memo key
        ("serve.default.svc.clusterset.local", "AAAA", 0, "NOERROR"),
        ("nope.default.svc.clusterset.local", "A", 0, "NXDOMAIN"),
        ("example.com", "A", -1, "REFUSED"),
        ("big.data.svc.clusterset.local", "SRV", -1, "TC"),  # > 512 bytes without EDNS
        ("big.data.svc.clusterset.local", "SRV", 0, "NOERROR"),
    ]:
        q = dns.message.make_query(name, rdtype, use_edns=edns)
        q.flags &= ~dns.flags.RD
        out.append((q.to_wire(), expect))
    out.append((b"\x12\x34\x01", "drop"))  # short: not a DNS message
    out.append((b"\x12\x34\x81\x00" + bytes(8), "drop"))  # a reply (QR set)
    out.append((b"", "drop"))
    return out


def _exchange(sock: socket.socket, port: int, packet: bytes, qid: int, host: str) -> bytes | None:
    if len(packet) >= 2:
        packet = qid.to_bytes(2, "big") + packet[2:]
    sock.sendto(packet, (host, port))
    try:
        data, _ = sock.recvfrom(65535)
    except TimeoutError:
        return None
    return data


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_counters_and_replies_are_exact(loop: str, host: str) -> None:
    """Five passes (the first fills the memo, the rest are hits): every reply the same
    bytes but the ID, and each counter exactly what the client saw."""
    sent = noerror = nxdomain = refused = truncated = dropped = 0
    first: dict[bytes, bytes] = {}
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with serving(loop, host) as (port, mport), socket.socket(family, socket.SOCK_DGRAM) as s:
        _, before = get(f"http://127.0.0.1:{mport}/metrics")  # the start-up probes counted
        s.settimeout(0.3)
        for n in range(5):
            for i, (packet, expect) in enumerate(_queries()):
                qid = 1000 * n + i
                reply = _exchange(s, port, packet, qid, host)
                sent += 1
                if expect == "drop":
                    assert reply is None, packet
                    dropped += 1
                    continue
                assert reply is not None, expect
                assert int.from_bytes(reply[:2], "big") == qid
                assert first.setdefault(packet[2:], reply[2:]) == reply[2:]
                rcode = dns.rcode.to_text(dns.rcode.Rcode(reply[3] & 0x0F))
                if expect == "TC":
                    assert reply[2] & 0x02
                    expect = "NOERROR"
                truncated += bool(reply[2] & 0x02)
                assert rcode == expect
                noerror += rcode == "NOERROR"
                nxdomain += rcode == "NXDOMAIN"
                refused += rcode == "REFUSED"
        _, text = get(f"http://127.0.0.1:{mport}/metrics")

    def delta(name: str, **labels: str) -> float:
        return metric(text, name, **labels) - metric(before, name, **labels)

    assert delta("clusterset_dns_requests_total", proto="udp") == sent
    assert delta("clusterset_dns_responses_total", rcode="NOERROR") == noerror
    assert delta("clusterset_dns_responses_total", rcode="NXDOMAIN") == nxdomain
    assert delta("clusterset_dns_responses_total", rcode="REFUSED") == refused
    assert delta("clusterset_dns_truncated_total") == truncated
    assert delta("clusterset_dns_dropped_total") == dropped


def test_native_and_python_loops_give_identical_bytes() -> None:
    """Random names, types, cases and EDNS sizes, each asked twice (miss, then memo hit)."""
    rng = random.Random(12)
    names = ["serve.default.svc", "big.data.svc", "big-3.member1.big.data.svc", "nope.x.svc", ""]
    packets = []
    for _ in range(300):
        name = ".".join(filter(None, [rng.choice(names), "clusterset.local"]))
        name = "".join(c.upper() if rng.random() < 0.2 else c for c in name)
        q = dns.message.make_query(
            name,
            rng.choice(["A", "AAAA", "SRV", "SOA", "NS", "TXT"]),
            use_edns=rng.choice([-1, 0]),
            payload=rng.choice([512, 1232, 4096]),
        )
        packets.append(q.to_wire())
    with (
        serving("native") as (native, _),
        serving("python") as (python, _),
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s,
    ):
        s.settimeout(2)
        # The SOA serial is the load time in seconds: the two servers' may differ.
        serials = [_serial(port) for port in (native, python)]
        for i, p in enumerate(packets * 2):
            a = _exchange(s, native, p, i, "127.0.0.1")
            b = _exchange(s, python, p, i, "127.0.0.1")
            assert a is not None and b is not None
            a, b = a.replace(serials[0], b"SOA#"), b.replace(serials[1], b"SOA#")
            assert a == b, dns.message.from_wire(p).question


def _serial(port: int) -> bytes:
    q = dns.message.make_query("clusterset.local", "SOA")
    soa = dns.query.udp(q, "127.0.0.1", port=port, timeout=2).answer[0][0]
    return int(soa.serial).to_bytes(4, "big")


def test_dig_and_kdig_over_both_loops(loop: str) -> None:
    with serving(loop) as (port, _):
        for _ in range(3):  # the second and third are memo hits on the native loop
            out = subprocess.run(
                [
                    need("dig"),
                    "@127.0.0.1",
                    "-p",
                    str(port),
                    "+short",
                    "serve.default.svc.clusterset.local",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            assert out.split() == ["10.250.0.10"]
            out = subprocess.run(
                [
                    need("kdig"),
                    "@127.0.0.1",
                    "-p",
                    str(port),
                    "+notcp",
                    "+ignore",
                    "+noedns",
                    "_pg._tcp.big.data.svc.clusterset.local",
                    "SRV",
                ],
                capture_output=True,
                text=True,
                timeout=10,
            ).stdout
            assert "Flags: qr aa tc" in out, out
            assert "status: NOERROR" in out


def test_flood_of_garbage_then_still_answers(loop: str) -> None:
    """Batches mixing random bytes of every size (0 to 65,000) with real queries."""
    rng = random.Random(5)
    q = dns.message.make_query("serve.default.svc.clusterset.local", "A").to_wire()
    with serving(loop) as (port, _), socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for i in range(3000):
            size = rng.choice([0, 1, 2, 11, 12, 13, rng.randrange(600), 1500, 65000])
            s.sendto(rng.randbytes(size) if i % 3 else q, ("127.0.0.1", port))
        s.settimeout(2)
        time.sleep(0.5)
        while True:  # drain
            try:
                s.recvfrom(65535)
            except TimeoutError:
                break
        assert _exchange(s, port, q, 7, "127.0.0.1") is not None


def test_receiver_batches_hits_misses_and_zone_swaps() -> None:
    """`_fastudp.Receiver` on its own: what it answers, what it hands back, what it counts."""
    from types import SimpleNamespace

    from clusterset.server import _fastudp

    query = b"\x00\x07" + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01"
    reply = query[:2] + b"\x84\x03" + query[4:]  # QR AA, NXDOMAIN
    as_reply = b"\x00\x09\x80" + query[3:]  # same bytes with QR set: never answered from memo
    with (
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as server,
        socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as client,
    ):
        server.bind(("::1", 0))
        client.settimeout(2)
        rx = _fastudp.Receiver(server.fileno())
        holder = SimpleNamespace(zone=SimpleNamespace(memo_udp={query[2:]: reply[2:]}))
        rcodes = [0] * 24
        for p in (query, b"\x00\x08" + query[2:-1], as_reply, b"", b"\x01"):
            client.sendto(p, server.getsockname())
        time.sleep(0.1)
        misses, queries, truncated, dropped = rx.serve(holder, rcodes)  # type: ignore[arg-type]
        assert (queries, truncated, dropped) == (1, 0, 0)
        assert rcodes[3] == 1 and sum(rcodes) == 1
        assert client.recvfrom(100)[0] == b"\x00\x07" + reply[2:]
        assert [m[0] for m in misses] == [b"\x00\x08" + query[2:-1], as_reply, b"", b"\x01"]
        client.sendto(b"x", server.getsockname())
        assert misses[0][1] == server.recvfrom(10)[1]  # the address as socket.recvfrom gives it

        holder.zone = SimpleNamespace(memo_udp={})  # a swapped zone counts from the next batch
        client.sendto(query, server.getsockname())
        assert rx.serve(holder, rcodes)[1] == 0  # type: ignore[arg-type]
        holder.zone = None  # before the first load: everything to Python
        client.sendto(query, server.getsockname())
        assert len(rx.serve(holder, rcodes)[0]) == 1  # type: ignore[arg-type]

        for _ in range(_fastudp.BATCH + 5):  # bounded batch
            client.sendto(query, server.getsockname())
        time.sleep(0.1)
        holder.zone = SimpleNamespace(memo_udp={query[2:]: reply[2:]})
        assert rx.serve(holder, rcodes)[1] == _fastudp.BATCH  # type: ignore[arg-type]
        assert rx.serve(holder, rcodes)[1] == 5  # type: ignore[arg-type]


_QUERY = b"\x00\x07" + b"\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x00\x00\x01\x00\x01"
_REPLY = _QUERY[:2] + b"\x84\x03" + _QUERY[4:]  # QR AA, NXDOMAIN


def _udp_pair() -> tuple[socket.socket, socket.socket]:
    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(2)
    return server, client


def _serving_thread(rx: Any, holder: object, rcodes: list[int]) -> tuple[Thread, list[object]]:
    """`rx.serve` in a thread (blocked in recvmmsg until a datagram or a shutdown)."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(rx.serve(holder, rcodes))
        except Exception as exc:
            out.append(exc)

    t = Thread(target=run, daemon=True)
    t.start()
    time.sleep(0.1)
    assert t.is_alive() and not out
    return t, out


def test_receiver_refuses_a_second_init_while_serving() -> None:
    """The old __init__ swapped the fd of a Receiver whose serve() was running."""
    from types import SimpleNamespace

    from clusterset.server import _fastudp

    server, client = _udp_pair()
    with server, client, socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
        rx = _fastudp.Receiver(server.fileno())
        holder = SimpleNamespace(zone=SimpleNamespace(memo_udp={_QUERY[2:]: _REPLY[2:]}))
        t, out = _serving_thread(rx, holder, [0] * 24)
        with pytest.raises(RuntimeError, match="already initialised"):
            rx.__init__(other.fileno())  # type: ignore[misc]
        client.sendto(_QUERY, server.getsockname())  # still served from the first socket
        assert client.recvfrom(100)[0] == _REPLY
        t.join(5)
        assert out and not isinstance(out[0], Exception)
        with pytest.raises(RuntimeError, match="already initialised"):  # idle: refused too
            rx.__init__(other.fileno())  # type: ignore[misc]
        rx.close()


def test_receiver_keeps_its_socket_when_the_fd_number_is_reused() -> None:
    """The Receiver works on its own duplicate: the socket closed and its number given to a
    new one, serve() still reads the first socket (the old one read the new socket's)."""
    from types import SimpleNamespace

    from clusterset.server import _fastudp

    server, client = _udp_pair()
    with client:
        fd, address = server.fileno(), server.getsockname()
        rx = _fastudp.Receiver(fd)
        server.close()
        reused = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if reused.fileno() != fd:  # the lowest free number may be another
            os.dup2(reused.fileno(), fd)
            reused.close()
            reused = socket.socket(fileno=fd)
        no_zone = SimpleNamespace(zone=None)  # everything handed back
        with reused:
            reused.bind(("127.0.0.1", 0))
            client.sendto(b"to the new socket", reused.getsockname())
            client.sendto(b"to the first one", address)
            time.sleep(0.1)
            misses = rx.serve(no_zone, [0] * 24)[0]  # type: ignore[arg-type]
            assert [m[0] for m in misses] == [b"to the first one"]
            reused.settimeout(2)
            assert reused.recvfrom(100)[0] == b"to the new socket"
        rx.close()
        with pytest.raises(OSError):  # closed: as a closed socket
            rx.serve(no_zone, [0] * 24)  # type: ignore[arg-type]


def test_receiver_rcodes_shrunk_while_serving() -> None:
    """The list is checked again once the GIL is back (the old code indexed the emptied
    list: a crash)."""
    from types import SimpleNamespace

    from clusterset.server import _fastudp

    server, client = _udp_pair()
    with server, client:
        rx = _fastudp.Receiver(server.fileno())
        holder = SimpleNamespace(zone=SimpleNamespace(memo_udp={_QUERY[2:]: _REPLY[2:]}))
        rcodes = [0] * 24
        t, out = _serving_thread(rx, holder, rcodes)
        rcodes.clear()
        client.sendto(_QUERY, server.getsockname())
        t.join(5)
        assert isinstance(out[0], ValueError), out
        assert client.recvfrom(100)[0] == _REPLY  # sent before the count failed
        rcodes += [0] * 24
        client.sendto(_QUERY, server.getsockname())
        rx.serve(holder, rcodes)  # type: ignore[arg-type]
        assert rcodes[3] == 1
        rx.close()


def test_receiver_closed_while_serving_sends_nothing_more() -> None:
    """close() from another thread during serve(): the batch's memo hit is not sent nor
    counted as a response, and the fd is closed when serve() returns."""
    from types import SimpleNamespace

    from clusterset.server import _fastudp

    server, client = _udp_pair()
    with server, client:
        rx = _fastudp.Receiver(server.fileno())
        holder = SimpleNamespace(zone=SimpleNamespace(memo_udp={_QUERY[2:]: _REPLY[2:]}))
        rcodes = [0] * 24
        t, out = _serving_thread(rx, holder, rcodes)
        rx.close()  # busy: takes effect in the running serve()
        client.sendto(_QUERY, server.getsockname())
        t.join(5)
        assert out == [([], 1, 0, 1)]  # received, dropped
        assert rcodes == [0] * 24
        client.settimeout(0.3)
        with pytest.raises(TimeoutError):
            client.recvfrom(100)
        with pytest.raises(OSError):
            rx.serve(holder, rcodes)  # type: ignore[arg-type]


def test_receiver_woken_by_shutdown_counts_nothing() -> None:
    """shutdown(SHUT_RD) (UdpServer.stop) ends a blocked serve(); its end marker (no
    length, no peer) is not a query."""
    from types import SimpleNamespace

    from clusterset.server import _fastudp

    server, client = _udp_pair()
    with server, client:
        rx = _fastudp.Receiver(server.fileno())
        t, out = _serving_thread(rx, SimpleNamespace(zone=None), [0] * 24)
        with contextlib.suppress(OSError):  # ENOTCONN on Linux, but the receive is woken
            server.shutdown(socket.SHUT_RD)
        t.join(5)
        assert out == [([], 0, 0, 0)]
        rx.close()
