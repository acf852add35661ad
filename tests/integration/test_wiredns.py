"""`clusterset wire-dns` against a real kube-apiserver and real CoreDNS processes.

The cluster's DNS is a real CoreDNS serving the content of the `coredns` ConfigMap (and,
in the NodeLocal test, a second one serving `node-local-dns`). The control plane has no
kubelet: `KubeletVolumeSyncStandIn` (a stand-in, named as such) plays the kubelet's
ConfigMap volume sync, and the pod network: it copies data.Corefile into the file CoreDNS
runs, made loopback by the same `wiredns.corefile.loopback` the canary uses (ports,
bind, kubeconfig for the kubernetes plugin; `.` forwarded to a dead loopback port: no
query leaves the machine). CoreDNS's own `reload` plugin picks the file up.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from clusterset.wiredns import corefile as cf
from tests.conftest import eventually
from tests.controlplane import ControlPlane, cache_bin_dir
from tests.integration.servers import clusterset, free_port, query
from tests.integration.test_kube import apply, get
from tests.unit.test_corefile import KUBEADM, nodelocal_corefile

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]
CM = "/api/v1/namespaces/kube-system/configmaps"
SERVE = "serve.default.svc.clusterset.local"
DISCARD = "127.0.0.1:9"


def configmap(cp: ControlPlane, cluster: str, name: str, corefile: str) -> None:
    cp.request(cluster, "DELETE", f"{CM}/{name}")
    apply(
        cp,
        cluster,
        f"{CM}/{name}",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": "kube-system"},
            "data": {"Corefile": corefile},
        },
    )


class KubeletVolumeSyncStandIn:
    """Stand-in for the kubelet's ConfigMap volume sync (and the pod network), for tests only:
    copies data.Corefile of kube-system/`name` into the file a real CoreDNS runs on
    127.0.0.1:`port`, made loopback, with `reload 2s 1s` so that changes land in seconds."""

    def __init__(
        self, cp: ControlPlane, cluster: str, name: str, work: Path, *, substitute: dict[str, str]
    ) -> None:
        self.cp, self.cluster, self.name = cp, cluster, name
        self.port = free_port()
        self.file = work / f"{name}.Corefile"
        self.substitute = substitute
        self.stop = threading.Event()
        self.synced = ""
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = (work / f"{name}.log").open("wb")

    def sync_once(self) -> None:
        cm = get(self.cp, self.cluster, f"{CM}/{self.name}") or {}
        text = (cm.get("data") or {}).get("Corefile", "")
        if text and text != self.synced:
            self.file.write_text(
                cf.loopback(
                    text,
                    port=self.port,
                    kubeconfig=str(self.cp.kubeconfig_path),
                    context=self.cluster,
                    substitute=self.substitute,
                    forward={".": DISCARD},
                    reload="2s 1s",
                )
            )
            self.synced = text

    def run(self) -> None:
        while not self.stop.wait(0.2):
            with contextlib.suppress(Exception):
                self.sync_once()

    @contextlib.contextmanager
    def running(self) -> Iterator[KubeletVolumeSyncStandIn]:
        self.sync_once()
        binary = cache_bin_dir() / "coredns"
        self.proc = subprocess.Popen(
            [str(binary), "-conf", str(self.file)], stdout=self.log, stderr=subprocess.STDOUT
        )
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            eventually(
                f"{self.name} answering cluster.local",
                lambda: self.answers("kubernetes.default.svc.cluster.local"),
            )
            yield self
        finally:
            self.stop.set()
            thread.join()
            self.proc.terminate()
            self.proc.wait(timeout=10)
            self.log.close()

    def answers(self, name: str, rdtype: str = "A") -> list[str]:
        try:
            r = query(self.port, name, rdtype, timeout=0.5)
        except Exception:
            return []
        return [rr.to_text() for rrset in r.answer for rr in rrset]


def wire_dns(
    cp: ControlPlane, *args: str, context: str = "member1"
) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "clusterset", "wire-dns", "--kubeconfig", str(cp.kubeconfig_path),
         "--context", context, *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    print(r.stdout, r.stderr)
    return r


def corefile_of(
    cp: ControlPlane, name: str, cluster: str = "member1"
) -> tuple[str, dict[str, Any]]:
    cm = get(cp, cluster, f"{CM}/{name}")
    return cm["data"]["Corefile"], cm["metadata"]


@pytest.fixture(scope="module")
def clusterset_dns(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """The real clusterset server, answering the seed scenario as member2 sees it."""
    state = tmp_path_factory.mktemp("state")
    root = Path(__file__).resolve().parents[2] / "examples" / "clusters"
    with clusterset(
        "run", "--manifests", str(root), "--cluster", "member2", env={"XDG_STATE_HOME": str(state)}
    ) as (port, _):
        yield port


@pytest.fixture
def coredns_cm(control_plane: ControlPlane, tmp_path: Path) -> Iterator[KubeletVolumeSyncStandIn]:
    cp = control_plane
    configmap(cp, "member1", "coredns", KUBEADM)
    try:
        with KubeletVolumeSyncStandIn(
            cp, "member1", "coredns", tmp_path, substitute={}
        ).running() as dns:
            yield dns
    finally:
        cp.request("member1", "DELETE", f"{CM}/coredns")


def test_dry_run_apply_idempotent_undo(
    control_plane: ControlPlane, coredns_cm: KubeletVolumeSyncStandIn, clusterset_dns: int
) -> None:
    cp, dns = control_plane, coredns_cm
    server = f"127.0.0.1:{clusterset_dns}"
    probe = f"127.0.0.1:{dns.port}"
    assert dns.answers(SERVE) == []  # not wired: the `.` block has nowhere to send it

    r = wire_dns(cp, "--server", server, "--dry-run")
    assert r.returncode == 0, r.stderr
    assert (
        f"+clusterset.local:53 {{\n+    errors\n+    cache 5\n+    forward . {server}\n+}}\n"
        in r.stdout
    )
    assert corefile_of(cp, "coredns")[0] == KUBEADM

    r = wire_dns(cp, "--server", server, "--probe", probe, "--grace", "8")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "canary: answers cluster.local and clusterset.local" in r.stdout
    assert "wire-dns: wired: clusterset.local answers" in r.stdout
    text, meta = corefile_of(cp, "coredns")
    assert text == cf.wire(KUBEADM, zone="clusterset.local", server=server)
    assert meta["annotations"]["clusterset.io/previous-corefile"] == KUBEADM
    assert "clusterset-wire-dns" in {m["manager"] for m in meta["managedFields"]}
    assert dns.answers(SERVE)[0].startswith("10.250.")  # the cluster's real DNS now resolves it
    assert dns.answers("kubernetes.default.svc.cluster.local")

    version = meta["resourceVersion"]
    r = wire_dns(cp, "--server", server, "--probe", probe, "--grace", "1")
    assert r.returncode == 0
    assert "already wired" in r.stdout
    assert corefile_of(cp, "coredns")[1]["resourceVersion"] == version

    r = wire_dns(cp, "--undo", "--dry-run")
    assert r.returncode == 0
    assert f"-    forward . {server}\n" in r.stdout
    assert corefile_of(cp, "coredns")[1]["resourceVersion"] == version

    r = wire_dns(cp, "--undo")
    assert r.returncode == 0, r.stdout
    text, meta = corefile_of(cp, "coredns")
    assert text == KUBEADM
    assert "clusterset.io/previous-corefile" not in (meta.get("annotations") or {})
    eventually("clusterset.local no longer answered", lambda: dns.answers(SERVE) == [])


@pytest.mark.parametrize(
    ("corefile", "extra", "expected"),
    [
        pytest.param(
            KUBEADM.replace("    cache 30 {", "    cahce 30 {"),
            (),
            "Unknown directive 'cahce'",
            id="typo-in-the-configmap-coredns-has-not-loaded",
        ),
        pytest.param(
            KUBEADM, ("--canary-server", DISCARD), "no good answers", id="clusterset-unreachable"
        ),
    ],
)
def test_the_canary_stops_before_writing(
    control_plane: ControlPlane,
    clusterset_dns: int,
    corefile: str,
    extra: tuple[str, ...],
    expected: str,
) -> None:
    cp = control_plane
    configmap(cp, "member1", "coredns", corefile)
    try:
        version = corefile_of(cp, "coredns")[1]["resourceVersion"]
        r = wire_dns(cp, "--server", f"127.0.0.1:{clusterset_dns}", "--probe", DISCARD, *extra)
        assert r.returncode == 1
        assert expected in r.stdout
        assert "canary failed: nothing changed" in r.stdout
        assert corefile_of(cp, "coredns")[1]["resourceVersion"] == version
    finally:
        cp.request("member1", "DELETE", f"{CM}/coredns")


def test_rollback_after_a_failed_grace_period(
    control_plane: ControlPlane, coredns_cm: KubeletVolumeSyncStandIn, clusterset_dns: int
) -> None:
    """The canary reaches clusterset (a port-forward, say) but the --server the cluster would
    use is wrong: the real answers fail during the grace period and wire-dns undoes itself."""
    cp, dns = control_plane, coredns_cm
    wrong = f"127.0.0.1:{free_port()}"
    r = wire_dns(
        cp, "--server", wrong, "--canary-server", f"127.0.0.1:{clusterset_dns}",
        "--probe", f"127.0.0.1:{dns.port}", "--grace", "8",
    )  # fmt: skip
    assert r.returncode == 1
    assert "grace failed: clusterset.local never answered" in r.stdout
    assert "rolled back ConfigMap kube-system/coredns" in r.stdout
    text, meta = corefile_of(cp, "coredns")
    assert text == KUBEADM
    assert "clusterset.io/previous-corefile" not in (meta.get("annotations") or {})


def test_nodelocal_dnscache_is_wired_too(
    control_plane: ControlPlane,
    coredns_cm: KubeletVolumeSyncStandIn,
    clusterset_dns: int,
    tmp_path: Path,
) -> None:
    cp, core = control_plane, coredns_cm
    upstream = nodelocal_corefile()
    configmap(cp, "member1", "node-local-dns", upstream)
    node = KubeletVolumeSyncStandIn(
        cp, "member1", "node-local-dns", tmp_path,
        substitute={"__PILLAR__CLUSTER__DNS__": f"127.0.0.1:{core.port}", "__PILLAR__UPSTREAM__SERVERS__": DISCARD},
    )  # fmt: skip
    server = f"127.0.0.1:{clusterset_dns}"
    try:
        with node.running():
            r = wire_dns(
                cp, "--server", server, "--probe", f"127.0.0.1:{node.port}", "--grace", "8"
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert "ConfigMap kube-system/node-local-dns (NodeLocal DNSCache)" in r.stdout
            text, meta = corefile_of(cp, "node-local-dns")
            assert text.endswith(
                f"{cf.MARKER}\nclusterset.local:53 {{\n    errors\n    cache 5\n"
                f"    bind 169.254.20.10 10.96.0.10\n    forward . {server}\n}}\n"
            )
            assert meta["annotations"]["clusterset.io/previous-corefile"] == upstream
            assert node.answers(SERVE)[0].startswith("10.250.")  # pods asking the node cache
            assert wire_dns(cp, "--undo").returncode == 0
            assert corefile_of(cp, "node-local-dns")[0] == upstream
            assert corefile_of(cp, "coredns")[0] == KUBEADM
    finally:
        cp.request("member1", "DELETE", f"{CM}/node-local-dns")


def test_kube_dns_is_reported_and_left_alone(control_plane: ControlPlane) -> None:
    cp = control_plane
    apply(
        cp,
        "member2",
        f"{CM}/kube-dns",
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "kube-dns", "namespace": "kube-system"},
            "data": {"stubDomains": "{}"},
        },
    )
    try:
        r = wire_dns(cp, "--server", "10.96.0.53", context="member2")
        assert r.returncode == 1
        assert "runs kube-dns" in r.stdout and "Nothing changed" in r.stdout
        assert get(cp, "member2", f"{CM}/coredns") is None
    finally:
        cp.request("member2", "DELETE", f"{CM}/kube-dns")


def test_printed_corefile_one_liner_adds_the_block_once(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """`clusterset corefile --context C`'s kubectl command, run twice as a user would paste
    it: one block (it appended a second on every run), which wire-dns recognises as its own."""
    cp = control_plane
    configmap(cp, "member1", "coredns", KUBEADM)
    try:
        printed = subprocess.run(
            [sys.executable, "-m", "clusterset", "corefile", "--server", "10.96.0.53",
             "--context", "member1"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
        command = printed.split("in place, once (CoreDNS's reload plugin picks it up):\n")[1]
        env = {"PATH": f"{cache_bin_dir()}:/usr/bin:/bin", "KUBECONFIG": str(cp.kubeconfig_path)}
        for _ in range(2):
            subprocess.run(["sh", "-c", command], env=env, cwd=tmp_path, check=True, timeout=60)
        text = get(cp, "member1", f"{CM}/coredns")["data"]["Corefile"]
        assert text.count("clusterset.local:53 {") == 1, text
        assert text.startswith(KUBEADM.rstrip("\n")), text
        ours = [b for b in cf.parse(text) if b.marked]
        assert [b.zones for b in ours] == [("clusterset.local",)], text
    finally:
        cp.request("member1", "DELETE", f"{CM}/coredns")
