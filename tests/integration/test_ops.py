"""Operations: metrics and probes scraped from a running server, lameduck shutdown, JSON logs,
and the printed CoreDNS stanza run by a real CoreDNS in front of us."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import dns.rcode
import pytest

from tests.integration.servers import ROOT, clusterset, free_port, query, server_log

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def metric(text: str, name: str, **labels: str) -> float:
    sel = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pattern = rf"^{re.escape(name)}{re.escape('{' + sel + '}') if sel else ''} ([0-9.e+]+)$"
    m = re.search(pattern, text, re.M)
    assert m, f"{name}{{{sel}}} not in metrics"
    return float(m.group(1))


@pytest.fixture
def ops_server(tmp_path: Path):  # type: ignore[no-untyped-def]
    mport = free_port()
    with clusterset(
        "--log-format",
        "json",
        "run",
        "--manifests",
        str(ROOT / "examples" / "clusters"),
        "--cluster",
        "member2",
        "--state-file",
        str(tmp_path / "a.json"),
        "--metrics-listen",
        f"127.0.0.1:{mport}",
        "--lameduck",
        "1",
    ) as (port, proc):
        yield port, mport, proc


def test_metrics_count_what_was_served(ops_server) -> None:  # type: ignore[no-untyped-def]
    port, mport, _ = ops_server
    for _ in range(5):
        assert query(port, "serve.default.svc.clusterset.local").rcode() == dns.rcode.NOERROR
    for _ in range(3):
        assert query(port, "nope.default.svc.clusterset.local").rcode() == dns.rcode.NXDOMAIN
    query(port, "serve.default.svc.clusterset.local", tcp=True)
    status, text = get(f"http://127.0.0.1:{mport}/metrics")
    assert status == 200
    assert metric(text, "clusterset_dns_requests_total", proto="udp") >= 8
    assert metric(text, "clusterset_dns_requests_total", proto="tcp") >= 1
    assert metric(text, "clusterset_dns_responses_total", rcode="NXDOMAIN") >= 3
    assert metric(text, "clusterset_dns_responses_total", rcode="NOERROR") >= 6
    assert metric(text, "clusterset_dns_zone_generation") >= 1
    assert metric(text, "clusterset_dns_zone_names") > 5
    assert metric(text, "clusterset_dns_ready") == 1
    assert metric(text, "clusterset_dns_change_to_answer_seconds_count") >= 1


def test_health_ready_and_lameduck_shutdown(ops_server) -> None:  # type: ignore[no-untyped-def]
    port, mport, proc = ops_server
    assert get(f"http://127.0.0.1:{mport}/health") == (200, "OK")
    # /ready also says which cluster ID the answers are for, and where it came from.
    assert get(f"http://127.0.0.1:{mport}/ready") == (
        200,
        "OK\ncluster ID: member2 (from --cluster)",
    )
    assert get(f"http://127.0.0.1:{mport}/nope")[0] == 404
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    assert get(f"http://127.0.0.1:{mport}/ready")[0] == 503  # taken out of rotation...
    assert (
        query(port, "serve.default.svc.clusterset.local").rcode() == dns.rcode.NOERROR
    )  # ...still answering
    assert proc.wait(timeout=10) == 0
    lines = [json.loads(line) for line in server_log(proc).splitlines() if line.startswith("{")]
    assert any(entry["msg"].startswith("lameduck") for entry in lines)
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)


def test_not_ready_before_first_load(tmp_path: Path) -> None:
    """A folder source that never loads (unreadable file aside, it loads at once), so use
    --kubeconfig at a dead apiserver: /ready stays 503 and in-zone names are SERVFAIL."""
    kc = tmp_path / "kubeconfig"
    kc.write_text("""apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: x}}]
contexts: [{name: member9, context: {cluster: c, user: u}}]
current-context: member9
""")
    port, mport = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "clusterset",
            "dns",
            "--kubeconfig",
            str(kc),
            "--listen",
            f"127.0.0.1:{port}",
            "--metrics-listen",
            f"127.0.0.1:{mport}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                r = query(port, "serve.default.svc.clusterset.local", timeout=0.3)
                break
            except Exception:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert r.rcode() == dns.rcode.SERVFAIL
        assert r.authority and r.authority[0].rdtype == 6
        assert get(f"http://127.0.0.1:{mport}/ready")[0] == 503
        assert get(f"http://127.0.0.1:{mport}/health")[0] == 200
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def coredns_binary() -> str:
    path = (
        Path(os.environ.get("CLUSTERSET_CACHE", Path.home() / ".cache" / "clusterset"))
        / "bin"
        / "coredns"
    )
    if not path.exists():
        raise AssertionError(
            f"{path} missing: run scripts/build-peers.sh (the README's test command does)"
        )
    return str(path)


def test_printed_corefile_stanza_works_in_a_real_coredns(ops_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    port, _, _ = ops_server
    out = subprocess.run(
        [sys.executable, "-m", "clusterset", "corefile", "--server", f"127.0.0.1:{port}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    # The server block, without the comments (ours, and wire-dns's marker line)
    stanza = "\n".join(x for x in out.split("\n\n")[0].splitlines() if not x.startswith("#"))
    assert stanza.startswith("clusterset.local:53 {")
    cport = free_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(stanza.replace(":53 {", f":{cport} {{\n    bind 127.0.0.1"))
    proc = subprocess.Popen(
        [coredns_binary(), "-conf", str(corefile)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                r = query(cport, "serve.default.svc.clusterset.local", timeout=0.5)
                if r.answer:
                    break
            except Exception:
                pass
            assert time.monotonic() < deadline, "CoreDNS did not answer"
            time.sleep(0.1)
        direct = query(port, "serve.default.svc.clusterset.local")
        assert [rd.address for rd in r.answer[0]] == [rd.address for rd in direct.answer[0]]
        assert r.answer[0].ttl <= 5  # the cache respects our TTL
        assert query(cport, "nope.default.svc.clusterset.local").rcode() == dns.rcode.NXDOMAIN
        r = query(cport, "_postgres._tcp.db.data.svc.clusterset.local", "SRV")
        assert len(r.answer[0]) == 3
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
