"""The real server on loopback, queried by dig, kdig and dnspython over UDP and TCP."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest

from tests.integration.servers import ROOT, clusterset, free_port, need, query, unbound_in_front

pytestmark = pytest.mark.integration

IMPORT = """\
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata: {{name: serve, namespace: default}}
spec:
  type: ClusterSetIP
  ips: [{ip}]
  ports: [{{port: 80, name: http, protocol: TCP}}]
---
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
  - addresses: [{db_ip}]
    hostname: db-0
    conditions: {{ready: true}}
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "member2"
    d.mkdir()
    (d / "imports.yaml").write_text(IMPORT.format(ip="10.250.0.10", db_ip="10.244.1.20"))
    return d


@pytest.fixture
def server(folder: Path):  # type: ignore[no-untyped-def]
    with clusterset("dns", "--manifests", str(folder)) as (port, _proc):
        yield port


def dig(port: int, *args: str) -> str:
    out = subprocess.run(
        [need("dig"), "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1", *args],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return " ".join(out.stdout.replace("\t", " ").split(" "))


def test_dig_udp_and_tcp(server: int) -> None:
    for transport in ("+notcp", "+tcp"):
        out = dig(server, transport, "serve.default.svc.clusterset.local", "A")
        assert "status: NOERROR" in out
        assert "flags: qr aa rd;" in out  # authoritative, recursion not available
        assert "serve.default.svc.clusterset.local. 5 IN A 10.250.0.10" in out
    out = dig(server, "nothere.default.svc.clusterset.local")
    assert "status: NXDOMAIN" in out and "5 IN SOA ns.dns.clusterset.local." in out


def test_kdig_srv_headless(server: int) -> None:
    for transport in ("+notcp", "+tcp"):
        out = subprocess.run(
            [
                need("kdig"),
                "@127.0.0.1",
                "-p",
                str(server),
                transport,
                "_pg._tcp.db.data.svc.clusterset.local",
                "SRV",
            ],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.replace("\t", " ")
        assert "status: NOERROR" in out
        assert "0 100 5432 db-0.member1.db.data.svc.clusterset.local." in out
        assert "db-0.member1.db.data.svc.clusterset.local. 5 IN A 10.244.1.20" in out


def test_dnspython_udp_tcp_identical(server: int) -> None:
    for name, rdtype in [
        ("db.data.svc.clusterset.local", "A"),
        ("db.data.svc.clusterset.local", "SRV"),
        ("clusterset.local", "SOA"),
        ("x.clusterset.local", "A"),
    ]:
        u, t = query(server, name, rdtype), query(server, name, rdtype, tcp=True)
        assert u.rcode() == t.rcode()
        assert u.answer == t.answer and u.authority == t.authority and u.additional == t.additional


def test_edit_shows_within_one_second_without_dropped_queries(folder: Path, server: int) -> None:
    stop = threading.Event()
    failures: list[str] = []
    answers: set[str] = set()
    sent = 0

    def hammer() -> None:
        nonlocal sent
        while not stop.is_set():
            sent += 1
            try:
                # Asked once, never retried: a dropped query is a timeout and a failure. The
                # timeout is long so that a late answer on a starved 2-core box still counts.
                r = query(server, "serve.default.svc.clusterset.local", timeout=3)
            except dns.exception.Timeout:
                failures.append(f"query {sent} dropped (no answer in 3 s)")
                continue
            except Exception as exc:
                failures.append(repr(exc))
                continue
            if r.rcode() != dns.rcode.NOERROR or not r.answer:
                failures.append(dns.rcode.to_text(r.rcode()))
            else:
                answers.add(r.answer[0][0].address)

    t = threading.Thread(target=hammer)
    t.start()
    try:
        for i in range(3):
            ip = f"10.250.1.{i + 1}"
            (folder / "imports.yaml").write_text(IMPORT.format(ip=ip, db_ip="10.244.1.20"))
            start = time.monotonic()
            while time.monotonic() - start < 1.0:
                r = query(server, "serve.default.svc.clusterset.local")
                if r.answer and r.answer[0][0].address == ip:
                    break
                time.sleep(0.01)
            else:
                pytest.fail(f"edit {i} not served within 1 s")
    finally:
        stop.set()
        t.join()
    assert failures == [], f"{len(failures)} of {sent} queries failed"
    assert sent >= 10, "the hammer did not run during the edits"
    # Every answer was one of the versions written, never anything else.
    assert answers <= {"10.250.0.10", "10.250.1.1", "10.250.1.2", "10.250.1.3"}, answers


def served_within(port: int, name: str, want: str, seconds: float) -> float:
    """Seconds until `name` answers `want` (fails after `seconds`)."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        r = query(port, name)
        if r.answer and r.answer[0][0].address == want:
            return time.monotonic() - start
        time.sleep(0.01)
    raise AssertionError(f"{name} not {want} within {seconds} s")


def test_edits_under_a_relative_root_are_seen_at_once(tmp_path: Path) -> None:
    """`--manifests member2` (relative, as the README writes it): the watcher reports absolute
    paths; an in-place edit and a new file each show within 2 s, not at the 60 s full look."""
    (tmp_path / "member2").mkdir()
    imports = tmp_path / "member2" / "imports.yaml"
    imports.write_text(IMPORT.format(ip="10.250.0.10", db_ip="10.244.1.20"))
    with clusterset("dns", "--manifests", "member2", cwd=tmp_path) as (port, _proc):
        imports.write_text(IMPORT.format(ip="10.250.2.1", db_ip="10.244.1.20"))
        served_within(port, "serve.default.svc.clusterset.local", "10.250.2.1", 2.0)
        extra = IMPORT.format(ip="10.250.2.2", db_ip="10.244.1.21")
        (tmp_path / "member2" / "more.yaml").write_text(extra.replace("name: serve", "name: more"))
        served_within(port, "more.default.svc.clusterset.local", "10.250.2.2", 2.0)


def test_run_edits_under_a_relative_root_are_seen_at_once(tmp_path: Path) -> None:
    """`run --manifests clusters`: a member's Service edited in place (member2's local-first
    answer is its own ClusterIP) and an export in a new file, each within 2 s."""
    shutil.copytree(ROOT / "examples" / "clusters", tmp_path / "clusters")
    args = ["run", "--manifests", "clusters", "--cluster", "member2",
            "--default-policy", "local-first", "--state-file", str(tmp_path / "alloc.json")]  # fmt: skip
    with clusterset(*args, cwd=tmp_path) as (port, _proc):
        web = tmp_path / "clusters" / "member2" / "web.yaml"
        text = web.read_text()
        old = query(port, "web.default.svc.clusterset.local").answer[0][0].address
        assert old in text, (old, "member2's web is not answered local-first")
        new = "10.97.99.99"
        web.write_text(text.replace(old, new))
        served_within(port, "web.default.svc.clusterset.local", new, 2.0)
        serve = (tmp_path / "clusters" / "member1" / "serve.yaml").read_text()
        (tmp_path / "clusters" / "member1" / "serve2.yaml").write_text(
            serve.replace("name: serve\n", "name: serve2\n")
            .replace("kubernetes.io/service-name: serve\n", "kubernetes.io/service-name: serve2\n")
            .replace("10.96.12.34", "10.96.12.35")
        )
        start = time.monotonic()
        while not query(port, "serve2.default.svc.clusterset.local").answer:
            assert time.monotonic() - start < 2.0, "a new file's export not served within 2 s"
            time.sleep(0.01)


def test_bad_edit_keeps_serving_last_good(folder: Path, server: int) -> None:
    (folder / "imports.yaml").write_text(IMPORT.format(ip="not-an-ip", db_ip="10.244.1.20"))
    time.sleep(0.5)
    r = query(server, "serve.default.svc.clusterset.local")
    assert r.answer[0][0].address == "10.250.0.10"


def test_garbage_does_not_stop_the_server(server: int) -> None:
    import random
    import socket

    rng = random.Random(7)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _ in range(2000):
            s.sendto(
                bytes(rng.randrange(256) for _ in range(rng.randrange(0, 600))),
                ("127.0.0.1", server),
            )
    with socket.create_connection(("127.0.0.1", server)) as c:
        c.sendall(b"\x00\x05hello\xff\xff" + b"x" * 100)
    # TCP clients that never finish their message do not block anyone else.
    stalled = [socket.create_connection(("127.0.0.1", server)) for _ in range(5)]
    try:
        for c in stalled:
            c.sendall(b"\x00\x40abc")
        r = query(server, "serve.default.svc.clusterset.local", tcp=True)
        assert r.answer[0][0].address == "10.250.0.10"
    finally:
        for c in stalled:
            c.close()
    assert query(server, "serve.default.svc.clusterset.local").rcode() == dns.rcode.NOERROR


def test_unbound_stub_zone_in_front(server: int, tmp_path: Path) -> None:
    """A real forwarding resolver (as the cluster DNS would) resolves through us."""
    with unbound_in_front(server, tmp=tmp_path) as port:
        r = query(port, "serve.default.svc.clusterset.local")
        assert r.rcode() == dns.rcode.NOERROR
        assert [rd.address for rd in r.answer[0]] == ["10.250.0.10"]
        assert r.flags & dns.flags.RA  # the resolver recurses; we do not
        r = query(port, "db-0.member1.db.data.svc.clusterset.local")
        assert [rd.address for rd in r.answer[0]] == ["10.244.1.20"]
        r = query(port, "nope.default.svc.clusterset.local")
        assert r.rcode() == dns.rcode.NXDOMAIN
        r = query(port, "_pg._tcp.db.data.svc.clusterset.local", "SRV", tcp=True)
        assert r.answer and r.answer[0][0].port == 5432


def test_sigterm_is_a_graceful_exit(folder: Path) -> None:
    with clusterset("dns", "--manifests", str(folder)) as (_port, proc):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dns", "--manifests", "/nonexistent"], "--manifests /nonexistent: not a directory"),
        (["dns", "--manifests", ".", "--listen", "nope"], "--listen 'nope': expected HOST:PORT"),
        (["dns", "--manifests", ".", "--ttl", "-1"], "--ttl -1: expected 0-3600"),
        (["dns", "--frobnicate"], "No such option: --frobnicate"),
        (
            ["run", "--manifests", "examples/clusters", "--cluster", "Bad_Name"],
            "--cluster: cluster ID 'Bad_Name'",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(args: list[str], message: str) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "clusterset", *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0]


def test_listen_port_in_use_is_exit_2(folder: Path) -> None:
    import socket

    port = free_port()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", port))
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "clusterset",
                "dns",
                "--manifests",
                str(folder),
                "--listen",
                f"127.0.0.1:{port}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert out.returncode == 2
    assert "Address already in use" in out.stderr


def test_tools_present() -> None:
    for tool in ("dig", "kdig", "unbound"):
        need(tool)
    assert shutil.which("dnsperf") is not None
