"""A real fleet on this machine: Kubernetes clusters whose nodes run real pods.

Each cluster is a kube-apiserver (tests/controlplane.py, one shared etcd),
kube-controller-manager and kube-scheduler in the host's network namespace,
and one node (or more) each in a network namespace of its own: containerd (runc from
Debian, the CNI bridge and host-local plugins), kubelet and kube-proxy in
iptables mode. The node's ``eth0`` is one end of a veth pair whose host end
holds the apiserver's address; the host routes every cluster's pod range to
its node, so pods of different clusters reach each other directly (the flat
pod network of the mcs-api and of the Karmada article). CoreDNS runs in
every cluster as kubeadm deploys it: a Deployment with kubeadm's Corefile
behind the ``kube-dns`` Service.

Why one network namespace per node: two kube-proxies in one namespace own
the same iptables chains and delete each other's rules. Why bind files
outside /run/netns and ``nsenter`` rather than ``ip netns``: see
../shared/FLEET-NOTES.md (``ip netns`` remounts /run/netns and /sys).

Everything lives under one folder (``CLUSTERSET_FLEET_DIR``, default
/var/tmp/clusterset-fleet); :func:`cleanup` removes what a fleet made —
processes, mounts, cgroups, links, host sysctls — from that folder's
records, so a killed run is cleaned by the next one. One fleet at a time
per machine.

Binaries: scripts/build-peers.sh (Kubernetes, containerd, CNI plugins);
images: scripts/build-fleet-images (built here with buildah, never pulled).
Needs root. Stdlib and PyYAML only::

    with Fleet(("member1", "member2")) as fleet:
        fleet.kubectl("member1", "get", "nodes")
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TextIO

import yaml

from tests.controlplane import (
    ControlPlane,
    ControlPlaneError,
    MissingBinaryError,
    cache_bin_dir,
    find_binary,
    free_port,
)

__all__ = ["Fleet", "FleetError", "Member", "cleanup", "fleet_dir", "fleet_images"]

ROOT = Path(__file__).resolve().parents[1]
LINK_PREFIX = "csfleet"  # host ends of the nodes' veth pairs: csfleet1, csfleet2, ...
CGROUP_PREFIX = "clusterset-fleet-"  # each kubelet's cgroupRoot
# Host sysctls kubelet and the bridge plugin change; restored by cleanup().
SYSCTLS = (
    "vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops", "net/ipv4/ip_forward",
    "net/ipv6/conf/all/forwarding",
)  # fmt: skip
COREDNS_IMAGE = "localhost/clusterset-fleet/coredns:v1.15.0"
PAUSE_IMAGE = "registry.k8s.io/pause:3.10"
# kubeadm v1.37's Corefile, as its CoreDNS addon writes it.
KUBEADM_COREFILE = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""


class FleetError(ControlPlaneError):
    """A part of the fleet failed to start or to answer."""


def fleet_dir() -> Path:
    return Path(os.environ.get("CLUSTERSET_FLEET_DIR") or "/var/tmp/clusterset-fleet")


def fleet_images() -> list[Path]:
    """The images' OCI archives, built (once per input) by scripts/build-fleet-images."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "build-fleet-images")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if proc.returncode != 0:
        raise FleetError(f"scripts/build-fleet-images failed: {proc.stderr.strip()[-2000:]}")
    return [Path(line) for line in proc.stdout.split() if line.endswith(".tar")]


@dataclass
class Node:
    """One node: its own network namespace, containerd, kubelet and kube-proxy."""

    cluster: str
    name: str  # <cluster>-node, <cluster>-node2, ...
    number: int  # fleet-wide, 1-based: link csfleet<number>, 172.31.<number>.0/24
    pod_cidr: str
    dir: Path
    pod_cidr_v6: str | None = None  # a dual-stack cluster's: fd00:<200+i>:<j>::/64
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    kubelet_args: list[str] = field(default_factory=list)

    @property
    def host_ip(self) -> str:
        """The host's end of the node's link (the first node's holds the apiserver)."""
        return f"172.31.{self.number}.1"

    @property
    def node_ip(self) -> str:
        return f"172.31.{self.number}.2"

    @property
    def host_ip6(self) -> str:
        return f"fd00:31:{self.number}::1"

    @property
    def node_ip6(self) -> str:
        return f"fd00:31:{self.number}::2"

    @property
    def node_ips(self) -> list[str]:
        """IPv4 first (the primary family), then IPv6 on a dual-stack cluster."""
        return [self.node_ip, self.node_ip6] if self.pod_cidr_v6 else [self.node_ip]

    @property
    def pod_cidrs(self) -> list[str]:
        return [self.pod_cidr, self.pod_cidr_v6] if self.pod_cidr_v6 else [self.pod_cidr]

    @property
    def netns(self) -> Path:
        return self.dir / "netns"

    @property
    def link(self) -> str:
        return f"{LINK_PREFIX}{self.number}"

    @property
    def cgroup_root(self) -> str:
        return f"/{CGROUP_PREFIX}{self.name}"

    @property
    def containerd_socket(self) -> Path:
        return self.dir / "containerd" / "containerd.sock"


@dataclass
class Member:
    """One cluster of the fleet: its control-plane processes and its nodes."""

    name: str
    index: int  # 1-based
    dir: Path
    service_cidr: str
    service_cidr_v6: str | None = None  # a dual-stack cluster's second range (IPv4 is primary)
    nodes: list[Node] = field(default_factory=list)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def host_ip(self) -> str:
        """Where the apiserver binds: the host's end of the first node's link."""
        return self.nodes[0].host_ip

    @property
    def pod_cidr(self) -> str:
        """The cluster's pod range (kube-proxy's clusterCIDR); node j has 10.<200+i>.<j>.0/24."""
        return f"10.{200 + self.index}.0.0/16"

    @property
    def pod_cidrs(self) -> list[str]:
        """The pod ranges, IPv4 first; node j's IPv6 range is fd00:<200+i>:<j>::/64."""
        if self.service_cidr_v6 is None:
            return [self.pod_cidr]
        return [self.pod_cidr, f"fd00:{200 + self.index}::/32"]

    @property
    def service_cidrs(self) -> list[str]:
        if self.service_cidr_v6 is None:
            return [self.service_cidr]
        return [self.service_cidr, self.service_cidr_v6]

    @property
    def dns_ip(self) -> str:
        """The kube-dns Service's ClusterIP (the tenth address, as kubeadm picks it)."""
        return self.service_cidr.replace(".0.0/16", ".0.10")


class Fleet:
    """N clusters with one node each (or more); see the module docstring."""

    def __init__(
        self,
        clusters: Sequence[str] = ("member1", "member2"),
        *,
        nodes: Mapping[str, int] | None = None,
        control_only: Sequence[str] = (),
        aggregators: Sequence[str] = (),
        images: Sequence[Path] | None = None,
        start_timeout: float = 120.0,
        dual_stack: bool = False,
    ) -> None:
        """``clusters`` get a node each (``nodes``: more for some); ``control_only`` are
        apiservers on loopback without one (a Karmada control plane: ``aggregators`` as in
        ControlPlane). ``dual_stack``: the clusters with nodes are IPv4/IPv6 dual-stack
        (IPv4 primary): two service ranges, two pod ranges, nodes with an address of each
        family, kube-proxy in both, the host routing both."""
        if os.geteuid() != 0:
            raise FleetError("the fleet needs root (network namespaces, mounts, cgroups)")
        self.dir = fleet_dir()
        self.start_timeout = start_timeout
        self._images = list(images) if images is not None else None
        names = [*control_only, *clusters]
        members = [  # service ranges as ControlPlane gives them: 10.96.0.0/16 for the first
            Member(
                name, i, self.dir / name, f"10.{96 + names.index(name)}.0.0/16",
                f"fd00:10:{96 + names.index(name)}::/112" if dual_stack else None,
            )
            for i, name in enumerate(clusters, start=1)
        ]  # fmt: skip
        number = 0
        for m in members:
            for j in range(1, (nodes or {}).get(m.name, 1) + 1):
                number += 1
                node = f"{m.name}-node" if j == 1 else f"{m.name}-node{j}"
                v6 = f"fd00:{200 + m.index}:{j}::/64" if dual_stack else None
                m.nodes.append(
                    Node(m.name, node, number, f"10.{200 + m.index}.{j}.0/24", m.dir / node, v6)
                )
        self.cp = ControlPlane(
            names,
            aggregators=aggregators,
            workdir=self.dir / "control-plane",
            keep_workdir=True,  # cleanup() removes the whole fleet folder
            hosts={m.name: m.host_ip for m in members},
            users=[(f"system:node:{n.name}", "system:nodes") for m in members for n in m.nodes]
            + [("system:kube-proxy", "system:node-proxiers")],
            dual_stack=list(clusters) if dual_stack else (),
        )
        self.members = {m.name: m for m in members}
        self._bin = cache_bin_dir()

    # -- lifecycle -------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Clean what an earlier fleet left, start every cluster; return when CoreDNS serves."""
        for name in ("kubelet", "kube-proxy", "kube-controller-manager", "kube-scheduler"):
            find_binary(name, path_ok=False)
        for name in ("containerd", "containerd-shim-runc-v2", "ctr", "kubectl"):
            find_binary(name, path_ok=False)
        for name in ("runc", "iptables", "nsenter", "unshare", "ip"):
            if not _which(name):
                raise MissingBinaryError(f"{name} not found: scripts/test installs it")
        self._lock()
        cleanup(self.dir)
        atexit.register(self.stop)
        try:
            images = self._images if self._images is not None else fleet_images()
            self.dir.mkdir(parents=True)
            _save_sysctls(self.dir)
            _write_sysctl("net/ipv4/ip_forward", "1")
            if any(m.service_cidr_v6 for m in self.members.values()):
                _write_sysctl("net/ipv6/conf/all/forwarding", "1")
            for m in self.members.values():
                m.dir.mkdir(parents=True)
                for n in m.nodes:
                    self._network(m, n)
            self.cp.start()
            for m in self.members.values():
                self._control_plane_parts(m)
                for n in m.nodes:
                    self._node(m, n, images)
            for m in self.members.values():
                for n in m.nodes:
                    self._wait_node_ready(n)
                self._coredns(m)
            for m in self.members.values():
                self.wait_rollout(m.name, "kube-system", "deployment/coredns")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop everything and remove the fleet's folder, links, mounts and cgroups."""
        atexit.unregister(self.stop)
        if os.environ.get("CLUSTERSET_KEEP_FLEET"):  # left running for a look; scripts/fleet down
            atexit.unregister(self.cp.stop)
            return
        for m in self.members.values():
            for procs in [m.procs, *(n.procs for n in m.nodes)]:
                for proc in procs.values():
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait()
                procs.clear()
        self.cp.stop()
        cleanup(self.dir)
        self._unlock()

    def _lock(self, timeout: float = 1200.0) -> None:
        """One fleet at a time on a machine (fixed links, routes and cgroups): wait for the
        fleet of another process (a test run, or `scripts/fleet up` still starting) to stop."""
        self._lock_file: TextIO | None = open(f"{self.dir}.lock", "w")  # held until stop()
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise FleetError(
                        f"another fleet held {self.dir}.lock for {timeout:.0f} s"
                    ) from None
                time.sleep(1)

    def _unlock(self) -> None:
        lock = getattr(self, "_lock_file", None)
        if lock is not None:
            lock.close()
            self._lock_file = None

    def node(self, name: str) -> Node:
        for m in self.members.values():
            for n in m.nodes:
                if n.name == name:
                    return n
        raise KeyError(f"no node {name!r}")

    def stop_node(self, name: str) -> None:
        """Power a node off: kubelet, kube-proxy, containerd and every pod on it die at once
        (its network namespace stays, as a dead machine's address stays routed)."""
        n = self.node(name)
        for proc_name in ("kubelet", "kube-proxy"):
            proc = n.procs.pop(proc_name, None)
            if proc is not None:
                proc.kill()
                proc.wait()
        _kill_cgroup_tree(n.cgroup_root)
        _kill_matching(str(n.dir / "containerd"))
        proc = n.procs.pop("containerd", None)
        if proc is not None:
            proc.wait()

    def start_node(self, name: str) -> None:
        """Power a node on again: kubelet restarts its pods."""
        n = self.node(name)
        self._start_containerd(n)
        self._start_kubelet_and_proxy(n)
        self._wait_node_ready(n)

    # -- for tests -------------------------------------------------------

    def kubectl(
        self,
        cluster: str,
        *args: str,
        input: str | None = None,
        check: bool = True,
        timeout: float = 120.0,
    ) -> str:
        """Run kubectl against a cluster (admin); its stdout. Raises with stderr on failure."""
        cmd = [str(self._bin / "kubectl"), f"--kubeconfig={self.cp.kubeconfig_path}",
               f"--context={cluster}", *args]  # fmt: skip
        proc = subprocess.run(
            cmd, input=input, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            raise FleetError(f"kubectl {' '.join(args)} in {cluster}: {proc.stderr.strip()}")
        return proc.stdout

    def apply(self, cluster: str, *objects: dict[str, Any]) -> str:
        return self.kubectl(
            cluster, "apply", "--server-side", "--force-conflicts", "-f", "-",
            input=yaml.safe_dump_all(objects),
        )  # fmt: skip

    def wait_rollout(self, cluster: str, namespace: str, what: str, timeout: float = 120) -> None:
        self.kubectl(cluster, "-n", namespace, "rollout", "status", what, f"--timeout={timeout:.0f}s",
                     timeout=timeout + 10)  # fmt: skip

    def exec(self, cluster: str, namespace: str, pod: str, *cmd: str, timeout: float = 60) -> str:
        return self.kubectl(cluster, "-n", namespace, "exec", pod, "--", *cmd, timeout=timeout)

    # -- internals -------------------------------------------------------

    def _network(self, m: Member, n: Node) -> None:
        """The node's namespace, its veth pair, addresses and the host's route to its pods."""
        n.dir.mkdir(parents=True)
        n.netns.touch()
        _run(["unshare", f"--net={n.netns}", "true"])
        peer = f"{n.link}n"
        _run(["ip", "link", "add", n.link, "type", "veth", "peer", "name", peer])
        _run(["ip", "link", "set", peer, "netns", str(n.netns)])
        _run(["ip", "addr", "add", f"{n.host_ip}/24", "dev", n.link])
        _run(["ip", "link", "set", n.link, "up"])
        ns = ["nsenter", f"--net={n.netns}"]
        _run([*ns, "ip", "link", "set", peer, "name", "eth0"])
        _run([*ns, "ip", "addr", "add", f"{n.node_ip}/24", "dev", "eth0"])
        _run([*ns, "ip", "link", "set", "eth0", "up"])
        _run([*ns, "ip", "link", "set", "lo", "up"])
        _run([*ns, "ip", "route", "add", "default", "via", n.host_ip])
        _run(["ip", "route", "add", n.pod_cidr, "via", n.node_ip])
        if n.pod_cidr_v6:
            # nodad: the addresses are usable at once (no 1-2 s of duplicate detection).
            _run(["ip", "-6", "addr", "add", f"{n.host_ip6}/64", "dev", n.link, "nodad"])
            _run([*ns, "ip", "-6", "addr", "add", f"{n.node_ip6}/64", "dev", "eth0", "nodad"])
            _run([*ns, "ip", "-6", "route", "add", "default", "via", n.host_ip6])
            _run(["ip", "-6", "route", "add", n.pod_cidr_v6, "via", n.node_ip6])
        if n is m.nodes[0]:
            # The host (an admin's machine) reaches the cluster's Services through its first
            # node, as on a network that routes the service range: `wire-dns` asks kube-dns.
            _run(["ip", "route", "add", m.service_cidr, "via", n.node_ip])
        for key, value in (
            ("net/ipv4/ip_forward", "1"),
            ("net/ipv6/conf/all/forwarding", "1"),
            ("net/bridge/bridge-nf-call-iptables", "1"),
            ("net/bridge/bridge-nf-call-ip6tables", "1"),
        ):
            _run([*ns, "sh", "-c", f"echo {value} > /proc/sys/{key}"])

    def _kubeconfig(self, m: Member, path: Path, token: str | None) -> Path:
        return self.cp.write_kubeconfig(path, m.name, token)

    def _control_plane_parts(self, m: Member) -> None:
        pki = self.cp.workdir / "pki"
        admin = self._kubeconfig(m, m.dir / "admin.kubeconfig", None)
        common = [f"--kubeconfig={admin}", f"--authentication-kubeconfig={admin}",
                  f"--authorization-kubeconfig={admin}", "--leader-elect=false",
                  "--bind-address=127.0.0.1"]  # fmt: skip
        m.procs["kube-controller-manager"] = _spawn(
            [str(self._bin / "kube-controller-manager"), *common,
             f"--secure-port={free_port()}",
             # No nodeipam: the CNI plugin allocates from the node's own range.
             "--controllers=*,-nodeipam",
             f"--service-account-private-key-file={pki / 'sa.key'}",
             f"--root-ca-file={pki / 'ca.crt'}",
             f"--cluster-name={m.name}",
             f"--service-cluster-ip-range={','.join(m.service_cidrs)}",
             # A stopped node's pods turn NotReady after 20 s (upstream default: 50 s).
             "--node-monitor-grace-period=20s"],
            m.dir / "kube-controller-manager.log",
        )  # fmt: skip
        m.procs["kube-scheduler"] = _spawn(
            [str(self._bin / "kube-scheduler"), *common, f"--secure-port={free_port()}"],
            m.dir / "kube-scheduler.log",
        )

    def _node(self, m: Member, n: Node, images: Sequence[Path]) -> None:
        """Write the node's configuration, start its processes, load the images."""
        pki = self.cp.workdir / "pki"
        d = n.dir
        for sub in ("containerd", "cni/net.d", "kubelet", "kubelet-pki", "pod-logs", "runc"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        _make_cgroup_root(n.cgroup_root)
        (d / "resolv.conf").write_text(
            # The upstream of CoreDNS's `forward .`: an address on this machine where nothing
            # answers, so no query ever leaves it.
            f"nameserver {n.host_ip}\n"
        )
        cni_bin = self._bin.parent / "cni" / "bin"
        (d / "containerd" / "config.toml").write_text(f"""\
version = 3
root = "{d}/containerd/root"
state = "{d}/containerd/state"

[grpc]
  address = "{n.containerd_socket}"

[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = "{PAUSE_IMAGE}"

[plugins.'io.containerd.cri.v1.runtime']
  # Root here lacks CAP_SYS_RESOURCE: runc may not lower oom_score_adj (FLEET-NOTES.md).
  restrict_oom_score_adj = true
  # Pod netns under the node's state, not /run/netns (which `ip netns` remounts).
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{d}/cni/net.d"
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      SystemdCgroup = false
      BinaryName = "{_which("runc")}"
      Root = "{d}/runc"
""")
        (d / "cni" / "net.d" / "10-fleet.conflist").write_text(json.dumps({
            "cniVersion": "1.0.0",
            "name": f"clusterset-fleet-{n.name}",
            "plugins": [
                {
                    "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": cidr}] for cidr in n.pod_cidrs],
                        # Without a default route pods cannot reach ClusterIPs.
                        "routes": [{"dst": "0.0.0.0/0"}]
                        + ([{"dst": "::/0"}] if n.pod_cidr_v6 else []),
                        "dataDir": f"{d}/cni/ipam",
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        }, indent=2))  # fmt: skip
        kubelet_kc = self._kubeconfig(
            m, d / "kubelet.kubeconfig", self.cp.token(f"system:node:{n.name}")
        )
        proxy_kc = self._kubeconfig(
            m, d / "kube-proxy.kubeconfig", self.cp.token("system:kube-proxy")
        )
        (d / "kubelet.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kubelet.config.k8s.io/v1beta1",
            "kind": "KubeletConfiguration",
            "failCgroupV1": False,  # the machine has cgroup v1
            "cgroupDriver": "cgroupfs",
            "cgroupRoot": n.cgroup_root,  # its own: kubelets clean each other's pods otherwise
            "containerRuntimeEndpoint": f"unix://{n.containerd_socket}",
            "failSwapOn": False,
            "readOnlyPort": 0,
            "address": n.node_ip,
            "healthzBindAddress": "127.0.0.1",
            "clusterDNS": [m.dns_ip],
            "clusterDomain": "cluster.local",
            "resolvConf": str(d / "resolv.conf"),
            "authentication": {
                "anonymous": {"enabled": False},
                "webhook": {"enabled": True},
                "x509": {"clientCAFile": str(pki / "ca.crt")},
            },
            "authorization": {"mode": "Webhook"},
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%",
                             "imagefs.available": "1%", "nodefs.inodesFree": "1%"},
            "imageGCHighThresholdPercent": 100,
            "imageGCLowThresholdPercent": 99,
            "podLogsDir": str(d / "pod-logs"),
            # ConfigMap volumes (CoreDNS's Corefile) follow an edit within ~10 s.
            "syncFrequency": "10s",
        }))  # fmt: skip
        (d / "kube-proxy.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(proxy_kc)},
            "mode": "iptables",
            "clusterCIDR": ",".join(m.pod_cidrs),
            "hostnameOverride": n.name,
            "bindAddress": n.node_ip,
            "healthzBindAddress": "127.0.0.1:10256",
            "metricsBindAddress": "127.0.0.1:10249",
            "nodePortAddresses": [f"{n.node_ip}/32"]
            + ([f"{n.node_ip6}/128"] if n.pod_cidr_v6 else []),
            # Leave the host's conntrack sysctls alone.
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s",
                          "tcpCloseWaitTimeout": "0s"},
        }))  # fmt: skip
        n.kubelet_args = [
            str(self._bin / "kubelet"), f"--config={d / 'kubelet.yaml'}",
            f"--kubeconfig={kubelet_kc}", f"--root-dir={d / 'kubelet'}",
            f"--cert-dir={d / 'kubelet-pki'}", f"--hostname-override={n.name}",
            f"--node-ip={','.join(n.node_ips)}",
        ]  # fmt: skip
        self._start_containerd(n)
        for image in images:
            _run([str(self._bin / "ctr"), "-a", str(n.containerd_socket), "-n", "k8s.io",
                  "images", "import", "--platform", "linux/amd64", str(image)])  # fmt: skip
        self._start_kubelet_and_proxy(n)

    def _in_node(self, n: Node, args: list[str], log: str) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PATH": f"{self._bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        return _spawn(["nsenter", f"--net={n.netns}", "--", *args], n.dir / log, env=env)

    def _start_containerd(self, n: Node) -> None:
        n.containerd_socket.unlink(missing_ok=True)  # a killed containerd leaves it behind
        n.procs["containerd"] = self._in_node(
            n, [str(self._bin / "containerd"), f"--config={n.dir / 'containerd' / 'config.toml'}"],
            "containerd.log",
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while not _accepts(n.containerd_socket):
            if n.procs["containerd"].poll() is not None or time.monotonic() > deadline:
                raise FleetError(f"containerd of {n.name} did not start:\n"
                                 f"{_tail(n.dir / 'containerd.log')}")  # fmt: skip
            time.sleep(0.05)

    def _start_kubelet_and_proxy(self, n: Node) -> None:
        n.procs["kubelet"] = self._in_node(n, n.kubelet_args, "kubelet.log")
        n.procs["kube-proxy"] = self._in_node(
            n, [str(self._bin / "kube-proxy"), f"--config={n.dir / 'kube-proxy.yaml'}"],
            "kube-proxy.log",
        )  # fmt: skip

    def _wait_node_ready(self, n: Node) -> None:
        deadline = time.monotonic() + self.start_timeout
        last = ""
        while time.monotonic() < deadline:
            for name, proc in n.procs.items():
                if proc.poll() is not None:
                    raise FleetError(f"{name} of {n.name} exited with {proc.returncode}:\n"
                                     f"{_tail(n.dir / f'{name}.log')}")  # fmt: skip
            status, node = self.cp.request(n.cluster, "GET", f"/api/v1/nodes/{n.name}")
            if status == 200:
                conds = {c["type"]: c for c in node.get("status", {}).get("conditions", [])}
                ready = conds.get("Ready", {})
                if ready.get("status") == "True":
                    return
                last = ready.get("message", "")
            time.sleep(0.5)
        raise FleetError(f"node {n.name} not Ready after {self.start_timeout:.0f} s ({last}):\n"
                         f"{_tail(n.dir / 'kubelet.log')}")  # fmt: skip

    def _coredns(self, m: Member) -> None:
        self.apply(m.name, *coredns_objects(m.dns_ip, m.nodes[0].name))


def coredns_objects(dns_ip: str, node: str) -> list[dict[str, Any]]:
    """CoreDNS as kubeadm v1.37 deploys it (Corefile, RBAC, Deployment, kube-dns Service), on
    the cluster's first node (the others hold workloads only, so stopping one takes nothing
    else away)."""
    ns = "kube-system"
    labels = {"k8s-app": "kube-dns"}
    corefile = KUBEADM_COREFILE
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "system:coredns"},
            "rules": [
                {"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                 "verbs": ["list", "watch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                 "verbs": ["list", "watch"]},
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "system:coredns"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "system:coredns"},
            "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}],
        },
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": ns},
         "data": {"Corefile": corefile}},
        {
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
            "spec": {
                "replicas": 2,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "priorityClassName": "system-cluster-critical",
                        "nodeSelector": {"kubernetes.io/hostname": node},
                        "serviceAccountName": "coredns",
                        "dnsPolicy": "Default",
                        "containers": [{
                            "name": "coredns", "image": COREDNS_IMAGE,
                            "imagePullPolicy": "Never",
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "resources": {"limits": {"memory": "170Mi"},
                                          "requests": {"cpu": "100m", "memory": "70Mi"}},
                            "volumeMounts": [{"name": "config-volume",
                                              "mountPath": "/etc/coredns", "readOnly": True}],
                            "ports": [
                                {"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                {"containerPort": 9153, "name": "metrics", "protocol": "TCP"},
                            ],
                            "livenessProbe": {
                                "httpGet": {"path": "/health", "port": 8080},
                                "initialDelaySeconds": 60, "timeoutSeconds": 5,
                                "failureThreshold": 5,
                            },
                            "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}},
                            "securityContext": {
                                "allowPrivilegeEscalation": False,
                                "capabilities": {"add": ["NET_BIND_SERVICE"], "drop": ["ALL"]},
                                "readOnlyRootFilesystem": True,
                            },
                        }],
                        "volumes": [{"name": "config-volume", "configMap": {
                            "name": "coredns",
                            "items": [{"key": "Corefile", "path": "Corefile"}]}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": ns, "labels": {
                **labels, "kubernetes.io/name": "CoreDNS"}},
            "spec": {
                "selector": labels, "clusterIP": dns_ip,
                "ports": [
                    {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53},
                    {"name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153},
                ],
            },
        },
    ]  # fmt: skip


# -- cleanup -------------------------------------------------------------------


def cleanup(base: Path) -> None:
    """Remove what a fleet under ``base`` made, whether it stopped cleanly or was killed.

    Order matters: kubelets first (they restart what dies), then every process in the
    kubelets' cgroups (pods), then every process naming ``base`` (containerd and its shims,
    kube-proxy, the control plane), then mounts, cgroups, links, sysctls, files.
    """
    for pid in _pids_naming(str(base), "kubelet"):
        _kill(pid)
    for root in _cgroup_roots():
        _kill_cgroup_tree(root)
    _kill_matching(str(base))
    for point in sorted(_mounts_under(base), key=lambda p: p.count("/"), reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)
    for root in _cgroup_roots():
        _remove_cgroup_tree(root)
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True,
                           check=False).stdout  # fmt: skip
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0]
        if name.startswith(LINK_PREFIX):
            subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)
    _restore_sysctls(base)
    for leftover in Path("/var/lib/cni/results").glob("clusterset-fleet-*"):
        leftover.unlink(missing_ok=True)
    for link in Path("/var/log/containers").glob("*.log"):
        if link.is_symlink() and str(os.readlink(link)).startswith(str(base)):
            link.unlink(missing_ok=True)
    if base.exists():
        subprocess.run(["rm", "-rf", "--one-file-system", str(base)], check=False)


def _pids_naming(text: str, exe: str = "") -> Iterator[int]:
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        joined = b" ".join(args).decode(errors="replace")
        if text in joined and (not exe or Path(args[0].decode(errors="replace")).name == exe):
            yield int(entry.name)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _kill_matching(text: str) -> None:
    """SIGKILL every process whose command line names ``text``; wait until they are gone."""
    pids = set(_pids_naming(text))
    for pid in pids:
        _kill(pid)
    deadline = time.monotonic() + 10
    while pids and time.monotonic() < deadline:
        pids = {p for p in pids if Path(f"/proc/{p}").exists() and not _is_zombie(p)}
        time.sleep(0.05)


def _is_zombie(pid: int) -> bool:
    try:
        return " Z " in Path(f"/proc/{pid}/stat").read_text().split(")", 1)[1][:3]
    except OSError:
        return True


def _controllers() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    return [p for p in base.iterdir() if p.is_dir() and (p / "cgroup.procs").exists()]


def _cgroup_roots() -> set[str]:
    roots = set()
    for ctrl in _controllers():
        for p in ctrl.glob(f"{CGROUP_PREFIX}*"):
            roots.add(f"/{p.name}")
    return roots


def _make_cgroup_root(root: str) -> None:
    """Create the kubelet's cgroupRoot in every v1 hierarchy (cpuset needs cpus and mems)."""
    for ctrl in _controllers():
        path = ctrl / root.lstrip("/")
        path.mkdir(exist_ok=True)
        if ctrl.name == "cpuset":
            for key in ("cpuset.cpus", "cpuset.mems"):
                (path / key).write_text((ctrl / key).read_text())


def _cgroup_dirs(root: str) -> list[Path]:
    """Every cgroup under `root` in every hierarchy, deepest first (os.walk: cgroups that
    vanish while it looks are skipped)."""
    found = []
    for ctrl in _controllers():
        for here, _, _ in os.walk(ctrl / root.lstrip("/")):
            found.append(Path(here))
    return sorted(found, key=lambda p: -len(p.parts))


def _kill_cgroup_tree(root: str) -> None:
    for _ in range(20):
        pids: set[int] = set()
        for d in _cgroup_dirs(root):
            with contextlib.suppress(OSError, ValueError):
                pids.update(int(x) for x in (d / "cgroup.procs").read_text().split())
        if not pids:
            return
        for pid in pids:
            _kill(pid)
        time.sleep(0.1)


def _remove_cgroup_tree(root: str) -> None:
    for d in _cgroup_dirs(root):
        for _ in range(20):
            try:
                d.rmdir()
                break
            except FileNotFoundError:
                break
            except OSError:
                time.sleep(0.05)


def _mounts_under(base: Path) -> list[str]:
    prefix = str(base)
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point == prefix or point.startswith(prefix + "/"):
            points.append(point)
    return points


def _save_sysctls(base: Path) -> None:
    saved = {key: Path("/proc/sys", key).read_text().strip() for key in SYSCTLS}
    (base / "sysctls.json").write_text(json.dumps(saved))


def _restore_sysctls(base: Path) -> None:
    path = base / "sysctls.json"
    if not path.exists():
        return
    for key, value in json.loads(path.read_text()).items():
        with contextlib.suppress(OSError):
            _write_sysctl(key, value)
    path.unlink()


def _write_sysctl(key: str, value: str) -> None:
    Path("/proc/sys", key).write_text(value + "\n")


def _accepts(path: Path) -> bool:
    """A unix socket something listens on."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


def _which(name: str) -> str:
    for d in [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/sbin"]:
        p = Path(d) / name
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
    return ""


def _run(args: Sequence[str]) -> str:
    proc = subprocess.run(list(args), capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        out = (proc.stdout + proc.stderr).strip()[-3000:]
        raise FleetError(f"{' '.join(args)} failed ({proc.returncode}): {out}")
    return proc.stdout


def _spawn(
    args: Sequence[str], log: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            list(args), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


# -- clusterset, installed as the README says ------------------------------------


def dns_service_ip(m: Member) -> str:
    """The fixed ClusterIP of clusterset dns in a member (the chart's dns.service.clusterIP)."""
    return m.service_cidr.replace(".0.0/16", ".0.53")


def install_clusterset(
    fleet: Fleet,
    *,
    hub: str | None = None,
    namespace: str = "clusterset",
    values: Sequence[str] = (),
    wire_dns_grace: float = 75.0,
) -> None:
    """helm install in every member (DNS, member RBAC) and the controller in `hub`
    (default: the first member), the members' kubeconfig from the chart's own hub
    tokens, then `clusterset wire-dns` on every member's CoreDNS: what docs/quickstart.md
    tells a user to type, in that order."""
    hub = hub or next(iter(fleet.members))
    helm = str(find_binary("helm"))
    chart = str(ROOT / "deploy" / "chart" / "clusterset")
    kc = str(fleet.cp.kubeconfig_path)
    sets = [f"--set={v}" for v in values]
    _run_all(
        {
            m.name: [helm, f"--kubeconfig={kc}", f"--kube-context={m.name}", "install",
                     "clusterset", chart, f"--namespace={namespace}", "--create-namespace",
                     # No dns.clusterID, as the quickstart: each member DNS learns its ID
                     # from the hub's Leases (docs/operations.md).
                     "--set=image.pullPolicy=Never",
                     f"--set=dns.service.clusterIP={dns_service_ip(m)}",
                     "--set=memberRBAC.enabled=true",
                     # Beside CoreDNS on the first node: further nodes hold workloads only.
                     f"--set-string=dns.nodeSelector.kubernetes\\.io/hostname={m.nodes[0].name}",
                     f"--set-string=controller.nodeSelector.kubernetes\\.io/hostname={m.nodes[0].name}",
                     *sets, "--wait", "--timeout=180s"]
            for m in fleet.members.values()
        },
        timeout=240,
    )  # fmt: skip
    members: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [], "users": [], "contexts": [], "current-context": hub,
    }  # fmt: skip
    ca = fleet.kubectl(hub, "config", "view", "--raw", "--minify",
                       "-o", "jsonpath={.clusters[0].cluster.certificate-authority-data}")  # fmt: skip
    for m in fleet.members.values():
        token = fleet.kubectl(m.name, "-n", namespace, "get", "secret", "clusterset-hub-token",
                              "-o", "jsonpath={.data.token}")  # fmt: skip
        members["clusters"].append({"name": m.name, "cluster": {
            "server": fleet.cp.servers[m.name], "certificate-authority-data": ca}})  # fmt: skip
        members["users"].append({"name": f"hub-{m.name}", "user": {
            "token": base64.b64decode(token).decode()}})  # fmt: skip
        members["contexts"].append({"name": m.name, "context": {
            "cluster": m.name, "user": f"hub-{m.name}"}})  # fmt: skip
    path = fleet.dir / "members.kubeconfig"
    path.write_text(yaml.safe_dump(members))
    fleet.kubectl(hub, "-n", namespace, "create", "secret", "generic", "clusterset-members",
                  f"--from-file=kubeconfig={path}")  # fmt: skip
    _run([helm, f"--kubeconfig={kc}", f"--kube-context={hub}", "upgrade", "clusterset", chart,
          f"--namespace={namespace}", "--reuse-values", "--set=controller.enabled=true",
          "--wait", "--timeout=180s"])  # fmt: skip
    # Every member at once: each waits out its grace period (kubelet's ConfigMap sync, then
    # CoreDNS's `reload` poll of 30 s + jitter, before the new stanza answers).
    _run_all(
        {
            m.name: [*clusterset_cli(), "wire-dns", f"--kubeconfig={kc}", f"--context={m.name}",
                     f"--server={dns_service_ip(m)}", f"--grace={wire_dns_grace:g}"]
            for m in fleet.members.values()
        },
        timeout=wire_dns_grace + 120,
    )  # fmt: skip


def _run_all(commands: dict[str, list[str]], timeout: float) -> None:
    """One command per member at once, as a user with a terminal per cluster would run them."""
    procs = {
        name: subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for name, cmd in commands.items()
    }
    failed = []
    for name, proc in procs.items():
        out, _ = proc.communicate(timeout=timeout)
        if proc.returncode != 0:
            failed.append(f"{' '.join(commands[name][:4])} ... ({name}) failed:\n{out[-3000:]}")
    if failed:
        raise FleetError("\n".join(failed))


def upgrade_clusterset(
    fleet: Fleet, cluster: str, *args: str, namespace: str = "clusterset"
) -> None:
    """`helm upgrade --reuse-values` of a member's release, waiting for the rollout."""
    _run([str(find_binary("helm")), f"--kubeconfig={fleet.cp.kubeconfig_path}",
          f"--kube-context={cluster}", "upgrade", "clusterset",
          str(ROOT / "deploy" / "chart" / "clusterset"), f"--namespace={namespace}",
          "--reuse-values", *args, "--wait", "--timeout=180s"])  # fmt: skip


def clusterset_cli() -> list[str]:
    return [sys.executable, "-m", "clusterset"]


def main(argv: Sequence[str] | None = None) -> int:
    """`scripts/fleet up|down`: the same fleet for a person, left running after `up`."""
    import argparse

    parser = argparse.ArgumentParser(prog="scripts/fleet", description=main.__doc__)
    parser.add_argument("action", choices=("up", "down"))
    parser.add_argument("--clusters", default="member1,member2",
                        help="comma-separated cluster names (default: member1,member2)")  # fmt: skip
    parser.add_argument("--no-clusterset", action="store_true",
                        help="only the clusters and CoreDNS, without clusterset")  # fmt: skip
    parser.add_argument("--dual-stack", action="store_true",
                        help="IPv4/IPv6 dual-stack clusters (IPv4 primary)")  # fmt: skip
    args = parser.parse_args(argv)
    if args.action == "down":
        cleanup(fleet_dir())
        print(f"fleet: removed everything under {fleet_dir()}")
        return 0
    fleet = Fleet(tuple(args.clusters.split(",")), dual_stack=args.dual_stack)
    fleet.start()
    try:
        if not args.no_clusterset:
            install_clusterset(fleet)
    except BaseException:
        fleet.stop()
        raise
    atexit.unregister(fleet.stop)  # leave it running
    atexit.unregister(fleet.cp.stop)
    kc = fleet.dir / "kubeconfig"
    kc.write_text(fleet.cp.kubeconfig_path.read_text())
    kubectl = cache_bin_dir() / "kubectl"
    print(f"fleet: {', '.join(fleet.members)} are up (logs and state under {fleet.dir})")
    print(f"  export KUBECONFIG={kc}")
    print(f"  {kubectl} --context {next(iter(fleet.members))} get pods -A")
    print("  scripts/fleet down   # stops everything and undoes every host change")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
