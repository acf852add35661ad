"""Hostile-but-fair clients against the real server process (issue 11): forged upstream
replies, forwarding loops, idle TCP clients holding slots, amplification, dual-stack
clients, and start-up mistakes that must be one line and exit 2."""

from __future__ import annotations

import asyncio
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rrset
import pytest

from clusterset.server.forward import Forwarder
from tests.integration.servers import ROOT, clusterset, free_port, knotd_serving, wait_answering

pytestmark = pytest.mark.integration

KUBE_DNS_ZONE = """\
$ORIGIN cluster.local.
$TTL 30
@ IN SOA ns.dns.cluster.local. hostmaster.cluster.local. 1 7200 1800 86400 30
@ IN NS ns.dns.cluster.local.
ns.dns IN A 127.0.0.1
kubernetes.default.svc IN A 10.97.0.1
"""

HEADLESS = """\
apiVersion: multicluster.x-k8s.io/v1alpha1
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


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """One headless service with 150 endpoints: its A answer is about 2.5 KB."""
    d = tmp_path / "member2"
    d.mkdir()
    eps = "".join(
        f"  - addresses: [10.244.{i // 200}.{i % 200 + 1}]\n    conditions: {{ready: true}}\n"
        for i in range(150)
    )
    (d / "db.yaml").write_text(HEADLESS.format(endpoints=eps))
    return d


@pytest.fixture
def kube_dns(tmp_path: Path) -> Iterator[int]:
    """knotd playing the cluster's kube-dns for cluster.local."""
    knot_dir = tmp_path / "knot"
    knot_dir.mkdir()
    with knotd_serving("cluster.local", KUBE_DNS_ZONE, knot_dir) as port:
        yield port


@contextmanager
def started(*args: str, port: int, host: str = "127.0.0.1") -> Iterator[subprocess.Popen[bytes]]:
    """`clusterset ARGS` already given its --listen; running and answering on `port`."""
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "clusterset", *args], stdout=log, stderr=log)
    proc.log = log  # type: ignore[attr-defined]
    try:
        wait_answering(port, proc)
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def metric(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + " ") or line.startswith(name + "{")
    )


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clusterset", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )


# -- start-up mistakes: one line, exit 2 --------------------------------------------------


def test_metrics_listen_on_a_port_in_use_is_one_line_exit_2(folder: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        taken = busy.getsockname()[1]
        out = run_cli(
            "dns",
            "--manifests",
            str(folder),
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            f"127.0.0.1:{taken}",
        )
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"--metrics-listen 127.0.0.1:{taken}: Address already in use" in lines[0]


@pytest.mark.parametrize(
    ("upstream", "message"),
    [
        ("dns.google", "--upstream 'dns.google': expected IP[:PORT]; 'dns.google' is not an IP"),
        ("127.0.0.1:99999", "--upstream '127.0.0.1:99999': expected IP[:PORT] with a port in"),
    ],
)
def test_bad_upstream_is_one_line_exit_2(folder: Path, upstream: str, message: str) -> None:
    out = run_cli(
        "dns",
        "--manifests",
        str(folder),
        "--listen",
        "127.0.0.1:0",
        "--unified-cluster-local",
        "--upstream",
        upstream,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0]


@pytest.mark.parametrize("listen_host", ["127.0.0.1", "0.0.0.0"])
def test_upstream_at_our_own_listen_address_is_refused_at_start(
    folder: Path, listen_host: str
) -> None:
    port = free_port()
    out = run_cli(
        "dns",
        "--manifests",
        str(folder),
        "--listen",
        f"{listen_host}:{port}",
        "--unified-cluster-local",
        "--upstream",
        f"127.0.0.1:{port}",
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert f"--upstream 127.0.0.1:{port} is this server's own --listen address" in lines[0]


def test_udp_size_out_of_range_is_one_line_exit_2(folder: Path) -> None:
    out = run_cli("dns", "--manifests", str(folder), "--udp-size", "100")
    assert out.returncode == 2
    assert out.stderr.strip() == "clusterset: error: --udp-size 100: expected 512-65535"


# -- forwarding ---------------------------------------------------------------------------


def test_forwarding_loop_between_two_servers_stays_bounded(folder: Path) -> None:
    """A forwards to B and B to A (no start-up check can see it): one query must cost a
    handful of forwards, not a storm (75,000 in 5 s before the guard)."""
    a, b, ma, mb = (free_port() for _ in range(4))
    common = ["dns", "--manifests", str(folder), "--unified-cluster-local"]
    with (
        started(
            *common,
            "--listen",
            f"127.0.0.1:{a}",
            "--upstream",
            f"127.0.0.1:{b}",
            "--metrics-listen",
            f"127.0.0.1:{ma}",
            port=a,
        ),
        started(
            *common,
            "--listen",
            f"127.0.0.1:{b}",
            "--upstream",
            f"127.0.0.1:{a}",
            "--metrics-listen",
            f"127.0.0.1:{mb}",
            port=b,
        ),
    ):
        q = dns.message.make_query("loop.example.", "A")
        r = dns.query.udp(q, "127.0.0.1", port=a, timeout=5)
        assert r.rcode() == dns.rcode.SERVFAIL  # nobody can answer it: the upstream timed out
        time.sleep(1)
        forwards = metric(ma, "clusterset_dns_forwarded_total") + metric(
            mb, "clusterset_dns_forwarded_total"
        )
        assert 2 <= forwards <= 10
        # Both still answer their own zone right away.
        for port in (a, b):
            r = dns.query.udp(
                dns.message.make_query("db.data.svc.clusterset.local.", "A"),
                "127.0.0.1",
                port=port,
                timeout=2,
            )
            assert r.rcode() == dns.rcode.NOERROR


def test_v4_client_of_a_dual_stack_listener_is_matched_against_v4_allow(
    folder: Path, kube_dns: int
) -> None:
    port = free_port()
    with started(
        "dns",
        "--manifests",
        str(folder),
        "--listen",
        f"[::]:{port}",
        "--unified-cluster-local",
        "--upstream",
        f"127.0.0.1:{kube_dns}",
        "--allow",
        "127.0.0.0/8",
        port=port,
    ):
        q = dns.message.make_query("kubernetes.default.svc.cluster.local.", "A")
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)  # arrives as ::ffff:127.0.0.1
        assert r.rcode() == dns.rcode.NOERROR
        assert [rd.address for rd in r.answer[0]] == ["10.97.0.1"]


def test_forged_upstream_replies_are_never_delivered_or_cached() -> None:
    """The upstream here is a bare UDP socket of the test (a stand-in: the test must see the
    query ID to forge a reply a real off-path attacker would have to guess)."""

    async def scenario() -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.bind(("127.0.0.1", 0))
        upstream.setblocking(False)
        forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        forger.bind(("127.0.0.1", 0))
        loop = asyncio.get_running_loop()
        fwd = Forwarder(upstream.getsockname(), timeout=1.0)
        await fwd.start()
        got: list[bytes] = []
        try:
            # 1. IDs are random and queries leave from more than one port.
            ids, ports = [], set()
            for i in range(64):
                qw = dns.message.make_query(f"n{i}.example.", "A", id=i + 1).to_wire()
                fwd._handle(qw, ("127.0.0.1", 40000), lambda data, addr: got.append(data))
                data, src = await loop.sock_recvfrom(upstream, 4096)
                ids.append(struct.unpack_from("!H", data)[0])
                ports.add(src[1])
            assert ids != list(range(1, 65)) and len(set(ids)) > 50
            assert len(ports) > 1

            # 2. A forged reply (right ID, right question, wrong source) is dropped.
            got.clear()
            q = dns.message.make_query("victim.example.", "A", id=7)
            fwd._handle(q.to_wire(), ("127.0.0.1", 40001), lambda d, a: got.append(d))
            data, src = await loop.sock_recvfrom(upstream, 4096)
            asked = dns.message.from_wire(data)
            forged = dns.message.make_response(asked)
            forged.answer.append(dns.rrset.from_text("victim.example.", 300, "IN", "A", "6.6.6.6"))
            forger.sendto(forged.to_wire(), src)
            # 3. So is one from the right source with another question.
            other = dns.message.make_response(dns.message.make_query("other.example.", "A"))
            other.id = asked.id
            other.answer.append(dns.rrset.from_text("other.example.", 300, "IN", "A", "6.6.6.6"))
            upstream.sendto(other.to_wire(), src)
            await asyncio.sleep(0.2)
            assert got == []
            # The wrong-source reply never reaches us (the socket is connected to the
            # upstream, so the kernel drops it); the wrong question is dropped by the check.
            assert fwd.mismatched in (1, 2)
            # 4. The genuine reply still gets through, with the client's ID.
            real = dns.message.make_response(asked)
            real.answer.append(dns.rrset.from_text("victim.example.", 300, "IN", "A", "192.0.2.7"))
            upstream.sendto(real.to_wire(), src)
            await asyncio.sleep(0.2)
            assert len(got) == 1
            reply = dns.message.from_wire(got[0])
            assert reply.id == 7 and reply.answer[0][0].address == "192.0.2.7"
            # 5. And nothing forged was cached: a second client gets the genuine answer.
            got.clear()
            fwd._handle(q.to_wire(), ("127.0.0.1", 40002), lambda d, a: got.append(d))
            assert dns.message.from_wire(got[0]).answer[0][0].address == "192.0.2.7"
        finally:
            await fwd.stop()
            upstream.close()
            forger.close()

    asyncio.run(scenario())


# -- UDP size -------------------------------------------------------------------------------


def test_udp_size_flag_caps_replies_whatever_the_client_advertises(folder: Path) -> None:
    q = dns.message.make_query("db.data.svc.clusterset.local.", "A", use_edns=0, payload=65535)
    with clusterset("dns", "--manifests", str(folder)) as (port, _):
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
        assert len(r.to_wire()) <= 1232 and r.flags & dns.flags.TC
    with clusterset("dns", "--manifests", str(folder), "--udp-size", "4096") as (port, _):
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=2)
        assert not r.flags & dns.flags.TC and len(r.answer[0]) == 150
        assert r.payload == 4096


# -- TCP slots ------------------------------------------------------------------------------


def test_idle_tcp_clients_cannot_lock_out_new_ones(folder: Path) -> None:
    """256 idle connections fill every slot; a new client is still answered at once (the
    longest-idle connection makes room)."""
    q = dns.message.make_query("db.data.svc.clusterset.local.", "A")
    with clusterset("dns", "--manifests", str(folder)) as (port, _):
        idle = []
        try:
            for _ in range(300):
                s = socket.create_connection(("127.0.0.1", port), timeout=2)
                idle.append(s)
            time.sleep(0.5)
            started_at = time.monotonic()
            r = dns.query.tcp(q, "127.0.0.1", port=port, timeout=2)
            assert r.rcode() == dns.rcode.NOERROR
            assert time.monotonic() - started_at < 1.0
            # The evicted connections are the oldest ones: their server side is closed.
            idle[0].settimeout(2)
            assert idle[0].recv(1) == b""
        finally:
            for s in idle:
                s.close()


def test_a_client_dribbling_a_message_loses_its_slot_quickly(folder: Path) -> None:
    with clusterset("dns", "--manifests", str(folder)) as (port, _):
        s = socket.create_connection(("127.0.0.1", port), timeout=6)
        try:
            s.sendall(b"\x00\x40\x12")  # promises 64 bytes, sends one, then stalls
            t0 = time.monotonic()
            assert s.recv(1) == b""  # closed by the server...
            assert time.monotonic() - t0 < 5  # ...well before the 10 s idle timeout
        finally:
            s.close()


def test_many_clients_sharing_slots_are_all_answered(folder: Path) -> None:
    """Fair slots under load: 100 clients, each opening, asking, closing, all answered."""
    q = dns.message.make_query("db.data.svc.clusterset.local.", "A")
    with clusterset("dns", "--manifests", str(folder)) as (port, _):
        hog = [socket.create_connection(("127.0.0.1", port), timeout=2) for _ in range(256)]
        try:
            answered = sum(
                dns.query.tcp(q, "127.0.0.1", port=port, timeout=2).rcode() == dns.rcode.NOERROR
                for _ in range(100)
            )
            assert answered == 100
        finally:
            for s in hog:
                s.close()


def test_forwards_in_flight_are_coalesced_and_bounded_per_client() -> None:
    """An upstream that never answers (a bare socket of the test): identical questions share
    one upstream query, and one client cannot hold more than its share of forwards."""
    from clusterset.server import forward

    async def scenario() -> None:
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.bind(("127.0.0.1", 0))
        fwd = Forwarder(upstream.getsockname(), timeout=30)
        await fwd.start()
        replies: list[bytes] = []
        try:
            same = dns.message.make_query("same.example.", "A").to_wire()
            for port in range(3):
                fwd._handle(same, ("127.0.0.1", 50000 + port), lambda d, a: replies.append(d))
            assert fwd.forwarded == 1 and fwd.coalesced == 2
            for i in range(forward.MAX_PER_CLIENT + 20):
                q = dns.message.make_query(f"n{i}.example.", "A").to_wire()
                fwd._handle(q, ("10.1.1.1", 53000), lambda d, a: replies.append(d))
            assert fwd.forwarded == 1 + forward.MAX_PER_CLIENT
            assert fwd.limited == 20 and len(replies) == 20
            assert {dns.message.from_wire(r).rcode() for r in replies} == {dns.rcode.REFUSED}
            other = dns.message.make_query("other.example.", "A").to_wire()
            fwd._handle(other, ("10.1.1.2", 53000), lambda d, a: replies.append(d))
            assert fwd.forwarded == 2 + forward.MAX_PER_CLIENT  # other clients still served
        finally:
            await fwd.stop()
            upstream.close()

    asyncio.run(scenario())
