"""Partition tests on real networks: network namespaces joined by veth pairs are the clusters'
pod networks, real TCP listeners are the pods, and a link is cut with `ip link set down`.

The DNS server runs in its own namespace with no default route, so a cut link fails
connects at once inside the sandbox and no probe can leave this machine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
A_POD, B_POD = "10.211.1.2", "10.211.2.2"


def sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True, timeout=20)


@pytest.fixture(scope="module")
def net() -> Iterator[dict[str, str]]:
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise AssertionError(
            "partition tests need root and iproute2 (CI runs as root; scripts/test installs iproute2)"
        )
    tag = uuid.uuid4().hex[:6]
    ns = {"dns": f"csd{tag}", "a": f"csa{tag}", "b": f"csb{tag}"}
    links = {"a": (f"da{tag}", f"ad{tag}", "10.211.1"), "b": (f"db{tag}", f"bd{tag}", "10.211.2")}
    pods: list[subprocess.Popen[bytes]] = []
    try:
        for n in ns.values():
            sh("ip", "netns", "add", n)
            sh("ip", "-n", n, "link", "set", "lo", "up")
        for side, (near, far, net24) in links.items():
            sh(
                "ip",
                "link",
                "add",
                near,
                "netns",
                ns["dns"],
                "type",
                "veth",
                "peer",
                "name",
                far,
                "netns",
                ns[side],
            )
            sh("ip", "-n", ns["dns"], "addr", "add", f"{net24}.1/30", "dev", near)
            sh("ip", "-n", ns[side], "addr", "add", f"{net24}.2/30", "dev", far)
            sh("ip", "-n", ns["dns"], "link", "set", near, "up")
            sh("ip", "-n", ns[side], "link", "set", far, "up")
            # The "pod": a real TCP listener in the cluster's network.
            pods.append(
                subprocess.Popen(
                    [
                        "ip",
                        "netns",
                        "exec",
                        ns[side],
                        sys.executable,
                        "-m",
                        "http.server",
                        "8080",
                        "--bind",
                        f"{net24}.2",
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        yield {**ns, "link_a": links["a"][0]}
    finally:
        for p in pods:
            p.terminate()
            p.wait(timeout=5)
        for n in ns.values():
            subprocess.run(["ip", "netns", "del", n], capture_output=True)


EXPORT = """\
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: default}}
spec:
  clusterIP: None
  ports: [{{name: http, port: 8080, protocol: TCP}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: web-1
  namespace: default
  labels: {{kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{{name: http, port: 8080, protocol: TCP}}]
endpoints:
  - addresses: [{ip}]
    hostname: web-0
    conditions: {{ready: true}}
---
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: web
  namespace: default
  creationTimestamp: "{created}"
  annotations:
    clusterset.io/dns-policy: local-first
    clusterset.io/hysteresis: "2"
    clusterset.io/probe: tcp
    clusterset.io/probe-interval: "1"
    clusterset.io/probe-timeout: "0.5"
"""


def ask(ns: str, port: int) -> list[str]:
    out = subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            ns,
            "dig",
            "+short",
            "+time=1",
            "+tries=1",
            "@127.0.0.1",
            "-p",
            str(port),
            "web.default.svc.clusterset.local",
        ],
        capture_output=True,
        text=True,
        timeout=10,
    )
    return sorted(out.stdout.split())


def test_cut_link_moves_the_answer_and_healing_brings_it_back(
    net: dict[str, str], tmp_path: Path
) -> None:
    root = tmp_path / "clusters"
    for cluster, ip, created in (
        ("member1", A_POD, "2026-01-01T00:00:00Z"),
        ("member2", B_POD, "2026-01-02T00:00:00Z"),
    ):
        (root / cluster).mkdir(parents=True)
        (root / cluster / "web.yaml").write_text(EXPORT.format(ip=ip, created=created))
    port = free_port()
    log = tmp_path / "server.log"
    logf = log.open("wb")
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            net["dns"],
            sys.executable,
            "-m",
            "clusterset",
            "run",
            "--manifests",
            str(root),
            "--cluster",
            "member1",
            "--listen",
            f"127.0.0.1:{port}",
            "--state-file",
            str(tmp_path / "a.json"),
        ],
        stdout=logf,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 20
        while ask(net["dns"], port) != [A_POD]:
            assert time.monotonic() < deadline, (
                f"never answered the local pod: {log.read_text()[-2000:]}"
            )
            time.sleep(0.2)
        # Cut member1's pod network from where DNS (and its prober) run.
        sh("ip", "-n", net["dns"], "link", "set", net["link_a"], "down")
        cut = time.monotonic()
        while ask(net["dns"], port) != [B_POD]:
            assert time.monotonic() - cut < 5, (
                "answer did not move to member2 within interval + timeout"
            )
            time.sleep(0.05)
        moved = time.monotonic() - cut
        print(f"cut link -> changed answer: {moved:.2f}s")
        assert moved < 1 + 0.5 + 1.5  # one probe interval + timeout + compile/poll slack
        assert (root / "member1" / "web.yaml").exists()  # nothing deleted
        # Heal: two good probe rounds, then the 2 s hysteresis, then local again.
        sh("ip", "-n", net["dns"], "link", "set", net["link_a"], "up")
        healed = time.monotonic()
        time.sleep(1.0)
        assert ask(net["dns"], port) == [B_POD], "flapped back before recovery + hysteresis"
        while ask(net["dns"], port) != [A_POD]:
            assert time.monotonic() - healed < 10, "local copy never preferred again"
            time.sleep(0.1)
        back = time.monotonic() - healed
        print(f"healed link -> local answer again: {back:.2f}s")
        assert back >= 2.0
    finally:
        server.terminate()
        server.wait(timeout=10)
        logf.close()
