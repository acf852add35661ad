"""Faults on real kube-apiservers: an apiserver restarted mid-watch, etcd compacted so that
watches get a real 410, the controller killed during apply, and a source cluster unreachable
while the controller restarts. Afterwards every cluster holds exactly the objects an
undisturbed run gives: no duplicates, nothing lost, nothing deleted from a partial view.

What "converged" means here (`snapshot`): in a namespace of a cluster, the ServiceImports
(type, ports, source clusters), one derived Service per ClusterSetIP import whose ClusterIPs
are the import's `spec.ips` and no other Service of ours, and the MCS EndpointSlices (service,
source cluster, ports, addresses), each belonging to a wanted import and labelled with its
derived Service. Slice names are deterministic, so consumers hold the same names.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually, install_crds
from tests.controlplane import ControlPlane
from tests.integration.servers import free_port
from tests.integration.test_kube import MCS, apply, export_service, get

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]
ALL = ("member1", "member2", "member3")
OURS = "controller.clusterset.io"
MANAGED = "clusterset.io/managed"
DERIVED = "multicluster.kubernetes.io/derived-service"
RELISTED = "resourceVersion expired (410), relisting"

# -- the controller as a process ------------------------------------------------------------


@dataclass
class Controller:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def check_alive(self) -> None:
        """Fail at once (not as a timeout) when the controller has exited."""
        if self.proc.poll() is not None:
            raise RuntimeError(
                f"controller exited with {self.proc.returncode}:\n{self.output()[-3000:]}"
            )


@contextmanager
def controller(log: Path, *args: str) -> Iterator[Controller]:
    """`clusterset controller ARGS` with stdout+stderr in `log`; stopped (SIGTERM) at exit."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "clusterset", "controller", *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    ctl = Controller(proc, log)
    try:
        yield ctl
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)  # in case a test left it stopped
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if "Traceback" in ctl.output():
            print(ctl.output()[-4000:])


def hub_args(cp: ControlPlane, clusters: Iterable[str], lease: str, *extra: str) -> list[str]:
    args = ["--kubeconfig", str(cp.kubeconfig_path)]
    for c in clusters:
        args += ["--context", c]
    return [*args, "--lease-name", lease, *extra]


def metrics(port: int) -> dict[str, float]:
    """The controller's /metrics as {'name{labels}': value}; {} while not listening."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def crash(cp: ControlPlane, name: str) -> None:
    """kill -9 one apiserver: its cluster goes down hard (start it with `cp.start_cluster`).

    `cp.stop_cluster` sends SIGTERM, and a draining kube-apiserver waits for open watches
    (the controller's) until the harness's 15 s timeout kills it anyway."""
    proc = cp._cluster(name).proc
    assert proc is not None and proc.poll() is None, f"{name} is not running"
    proc.kill()
    proc.wait(timeout=15)
    cp.stop_cluster(name)  # bookkeeping only: the process has exited


# -- objects --------------------------------------------------------------------------------


def make_namespace(cp: ControlPlane, clusters: Iterable[str], ns: str) -> None:
    for c in clusters:
        apply(
            cp,
            c,
            f"/api/v1/namespaces/{ns}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        )


def export(cp: ControlPlane, cluster: str, ns: str, name: str, addresses: Iterable[str]) -> None:
    """Service + EndpointSlice `<name>-abc` + ServiceExport (server-side apply: idempotent)."""
    export_service(
        cp,
        cluster,
        ns,
        name,
        endpoints=[{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    )


def delete(cp: ControlPlane, cluster: str, path: str) -> None:
    status, body = cp.request(cluster, "DELETE", path)
    assert status in (200, 202, 404), body


def unexport(
    cp: ControlPlane, cluster: str, ns: str, name: str, *, everything: bool = False
) -> None:
    delete(cp, cluster, f"{MCS}/namespaces/{ns}/serviceexports/{name}")
    if everything:
        delete(cp, cluster, f"/api/v1/namespaces/{ns}/services/{name}")
        delete(cp, cluster, f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices/{name}-abc")


def conditions(cp: ControlPlane, cluster: str, ns: str, name: str) -> dict[str, tuple[str, str]]:
    se = get(cp, cluster, f"{MCS}/namespaces/{ns}/serviceexports/{name}") or {}
    return {
        c["type"]: (c["status"], c["reason"])
        for c in (se.get("status") or {}).get("conditions") or []
    }


EXPORTED = {
    "Valid": ("True", "Valid"),
    "Ready": ("True", "Exported"),
    "Conflict": ("False", "NoConflicts"),
}

# -- what a cluster holds, and what it should hold ------------------------------------------

PORTS = (("http", 80, "TCP"),)
# service -> source cluster -> endpoint addresses
Want = Mapping[str, Mapping[str, Iterable[str]]]


def _ports(ports: list[dict[str, Any]] | None) -> tuple[tuple[str, int, str], ...]:
    return tuple(
        sorted((p.get("name", ""), p["port"], p.get("protocol", "TCP")) for p in ports or [])
    )


def _items(cp: ControlPlane, cluster: str, path: str) -> list[dict[str, Any]]:
    status, body = cp.request(cluster, "GET", path)
    assert status == 200, f"{cluster} GET {path}: {status} {body}"
    items: list[dict[str, Any]] = body["items"]
    return items


@dataclass(frozen=True)
class Snapshot:
    view: dict[str, Any]  # comparable across clusters (no IPs, uids or names of slices)
    slice_names: frozenset[str]
    uids: dict[str, str]  # kind/name -> uid of every object the hub made here


def snapshot(cp: ControlPlane, cluster: str, ns: str) -> Snapshot:
    """What the hub made in `cluster`/`ns`; AssertionError while it is inconsistent."""
    imports = _items(cp, cluster, f"{MCS}/namespaces/{ns}/serviceimports")
    services = _items(
        cp, cluster, f"/api/v1/namespaces/{ns}/services?labelSelector={MANAGED}%3Dtrue"
    )
    slices = _items(
        cp,
        cluster,
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices"
        f"?labelSelector=endpointslice.kubernetes.io/managed-by%3D{OURS}",
    )
    by_name = {s["metadata"]["name"]: s for s in services}
    uids: dict[str, str] = {}
    view_imports: dict[str, Any] = {}
    derived_of: dict[str, str] = {}
    for si in imports:
        name = si["metadata"]["name"]
        uids[f"ServiceImport/{name}"] = si["metadata"]["uid"]
        spec = si.get("spec") or {}
        clusters = tuple(
            sorted(c["cluster"] for c in (si.get("status") or {}).get("clusters") or [])
        )
        view_imports[name] = (spec.get("type"), _ports(spec.get("ports")), clusters)
        if spec.get("type") == "ClusterSetIP":
            derived = (si["metadata"].get("annotations") or {}).get(DERIVED)
            assert derived, f"{cluster}: import {name} names no derived Service"
            svc = by_name.get(derived)
            assert svc is not None, f"{cluster}: derived Service {derived} of {name} missing"
            ips = spec.get("ips") or []
            assert ips, f"{cluster}: import {name} has no ips yet"
            assert ips == svc["spec"].get("clusterIPs"), (
                f"{cluster}: import {name} ips {ips} != derived Service {svc['spec']}"
            )
            assert _ports(svc["spec"].get("ports")) == _ports(spec.get("ports"))
            derived_of[name] = derived
    extra = set(by_name) - set(derived_of.values())
    assert not extra, f"{cluster}: Services of ours that no import wants: {sorted(extra)}"
    view_slices = []
    for s in slices:
        labels = s["metadata"].get("labels") or {}
        service = labels.get("multicluster.kubernetes.io/service-name", "")
        uids[f"EndpointSlice/{s['metadata']['name']}"] = s["metadata"]["uid"]
        assert service in view_imports, f"{cluster}: orphaned slice {s['metadata']['name']}"
        if service in derived_of:
            assert labels.get("kubernetes.io/service-name") == derived_of[service], labels
        addresses = tuple(sorted(a for e in s.get("endpoints") or [] for a in e["addresses"]))
        view_slices.append(
            (
                service,
                labels.get("multicluster.kubernetes.io/source-cluster"),
                _ports(s.get("ports")),
                addresses,
            )
        )
    for svc in services:
        uids[f"Service/{svc['metadata']['name']}"] = svc["metadata"]["uid"]
    return Snapshot(
        {"imports": view_imports, "slices": sorted(view_slices)},
        frozenset(s["metadata"]["name"] for s in slices),
        uids,
    )


def expected(want: Want) -> dict[str, Any]:
    """The view of every consumer when `want` (ClusterSetIP services on port http/80)."""
    imports = {
        name: ("ClusterSetIP", PORTS, tuple(sorted(sources))) for name, sources in want.items()
    }
    slices = sorted(
        (name, source, PORTS, tuple(sorted(addresses)))
        for name, sources in want.items()
        for source, addresses in sources.items()
    )
    return {"imports": imports, "slices": slices}


def wait_converged(
    cp: ControlPlane,
    ctl: Controller,
    ns: str,
    want: Want,
    clusters: Iterable[str],
    *,
    timeout: float = 60.0,
) -> dict[str, Snapshot]:
    """Every cluster holds exactly `want`, and the same slice names as the others."""
    clusters = list(clusters)
    goal = expected(want)

    def check() -> dict[str, Snapshot] | None:
        ctl.check_alive()
        snaps = {c: snapshot(cp, c, ns) for c in clusters}
        for c, s in snaps.items():
            assert s.view == goal, f"{c}: {s.view} != {goal}"
        names = {s.slice_names for s in snaps.values()}
        assert len(names) == 1, f"slice names differ between clusters: {names}"
        return snaps

    return eventually(f"{', '.join(clusters)} converged in {ns}", check, timeout=timeout)


def wait_conditions(
    cp: ControlPlane, ctl: Controller, cluster: str, ns: str, names: Iterable[str]
) -> None:
    def check() -> bool:
        ctl.check_alive()
        for name in names:
            assert conditions(cp, cluster, ns, name) == EXPORTED, name
        return True

    eventually(f"ServiceExport conditions in {cluster}/{ns}", check)


# -- an apiserver restarted while the controller watches it ----------------------------------


def test_apiserver_restart_mid_watch_converges(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    ns = "faults-restart"
    make_namespace(cp, ALL, ns)
    export(cp, "member1", ns, "ra", ["10.244.20.1"])
    export(cp, "member1", ns, "rb", ["10.244.20.2"])
    with controller(tmp_path / "ctl.log", *hub_args(cp, ALL, "faults-restart")) as ctl:
        before = wait_converged(
            cp,
            ctl,
            ns,
            {"ra": {"member1": ["10.244.20.1"]}, "rb": {"member1": ["10.244.20.2"]}},
            ALL,
        )
        crash(cp, "member2")
        try:
            # While member2 is down: an endpoint added, a service exported, another unexported.
            export(cp, "member1", ns, "ra", ["10.244.20.1", "10.244.20.3"])
            export(cp, "member1", ns, "rc", ["10.244.20.4"])
            unexport(cp, "member1", ns, "rb")
            want = {
                "ra": {"member1": ["10.244.20.1", "10.244.20.3"]},
                "rc": {"member1": ["10.244.20.4"]},
            }
            started = time.monotonic()
            # The clusters that stayed up get it while member2 is down.
            wait_converged(cp, ctl, ns, want, ("member1", "member3"))
            print(f"member1+member3 converged {time.monotonic() - started:.1f}s with member2 down")
        finally:
            cp.start_cluster("member2")
        started = time.monotonic()
        after = wait_converged(cp, ctl, ns, want, ALL)
        print(f"member2 converged {time.monotonic() - started:.1f}s after its restart")
        # Updated in place: ra's import, derived Service and slice in member2 are the same
        # objects as before the restart.
        ra = [
            "ServiceImport/ra",
            f"Service/{_derived(cp, ns)}",
            *(k for k in before["member2"].uids if k.startswith("EndpointSlice/ra-")),
        ]
        assert len(ra) == 3, before["member2"].uids
        for kind in ra:
            assert after["member2"].uids[kind] == before["member2"].uids[kind], kind
        assert after["member2"].slice_names == after["member3"].slice_names
        wait_conditions(cp, ctl, "member1", ns, ["ra", "rc"])
        unexport(cp, "member1", ns, "ra")
        unexport(cp, "member1", ns, "rc")
        wait_converged(cp, ctl, ns, {}, ALL)


def _derived(cp: ControlPlane, ns: str) -> str:
    si = get(cp, "member2", f"{MCS}/namespaces/{ns}/serviceimports/ra")
    return str(si["metadata"]["annotations"][DERIVED])


def test_unreachable_member_does_not_delay_the_others(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    """While member2's apiserver is down, changes still reach member1 and member3 promptly."""
    cp = control_plane
    ns = "faults-slow"
    make_namespace(cp, ALL, ns)
    export(cp, "member1", ns, "sa", ["10.244.70.1"])
    up = ("member1", "member3")
    took = float("inf")
    with controller(tmp_path / "ctl.log", *hub_args(cp, ALL, "faults-slow")) as ctl:
        wait_converged(cp, ctl, ns, {"sa": {"member1": ["10.244.70.1"]}}, ALL)
        crash(cp, "member2")
        try:
            # member2 now misses a change, so every pass has something to write into it.
            down = time.monotonic()
            export(cp, "member1", ns, "sa", ["10.244.70.1", "10.244.70.2"])
            wait_converged(cp, ctl, ns, {"sa": {"member1": ["10.244.70.1", "10.244.70.2"]}}, up)
            time.sleep(max(0.0, 9.5 - (time.monotonic() - down)))
            addresses = ["10.244.70.1", "10.244.70.2", "10.244.70.3"]
            export(cp, "member1", ns, "sa", addresses)
            started = time.monotonic()
            with contextlib.suppress(AssertionError):
                wait_converged(cp, ctl, ns, {"sa": {"member1": addresses}}, up, timeout=10)
                took = time.monotonic() - started
        finally:
            unexport(cp, "member1", ns, "sa")
            cp.start_cluster("member2")
        failed_passes = ctl.output().count("reconcile failed")
    assert took < 3.0, (
        f"with member2 down for 10 s, a change in member1 took {took:.1f}s to reach member1 "
        f"and member3 ({failed_passes} reconcile passes aborted)"
    )
    assert failed_passes == 0


# -- the controller killed during apply ------------------------------------------------------


def test_controller_killed_during_apply_converges(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp = control_plane
    ns = "faults-kill"
    n = 30
    make_namespace(cp, ALL, ns)
    want = {f"k{i:02d}": {"member1": [f"10.244.50.{i + 1}"]} for i in range(n)}
    for name, sources in want.items():
        export(cp, "member1", ns, name, sources["member1"])
    # Same identity for both: a restarted replica takes back the Lease it held, at once.
    args = hub_args(cp, ALL, "faults-kill", "--identity", "faults-kill-replica")

    def imported(cluster: str) -> int:
        return len(_items(cp, cluster, f"{MCS}/namespaces/{ns}/serviceimports"))

    with controller(tmp_path / "first.log", *args) as first:

        def started_applying() -> bool:
            first.check_alive()
            return imported("member2") >= 3

        eventually("the first ServiceImports", started_applying, interval=0.02)
        first.proc.kill()
        first.proc.wait()
    partial = {c: imported(c) for c in ALL}
    with_conditions = sum(bool(conditions(cp, "member1", ns, name)) for name in want)
    print(f"killed with imports {partial} and {with_conditions}/{n} export conditions")
    assert sum(partial.values()) < len(ALL) * n or with_conditions < n, "not killed mid-apply"
    with controller(tmp_path / "second.log", *args) as second:
        wait_converged(cp, second, ns, want, ALL, timeout=90)
        wait_conditions(cp, second, "member1", ns, want)
        # Exactly one import per service and cluster, one slice per import: nothing doubled.
        for c in ALL:
            assert imported(c) == n
            assert len(snapshot(cp, c, ns).slice_names) == n
        for name in want:
            unexport(cp, "member1", ns, name, everything=True)
        wait_converged(cp, second, ns, {}, ALL)


# -- no mass deletion from a partial view -----------------------------------------------------


def unchanged(before: Snapshot, now: Snapshot, cluster: str) -> None:
    """Every object the hub had made is still there, the same object (not deleted+recreated)."""
    for kind, uid in before.uids.items():
        assert now.uids.get(kind) == uid, f"{cluster}: {kind} was deleted or recreated"


def test_restart_while_source_unreachable_deletes_nothing(
    control_plane: ControlPlane, tmp_path: Path
) -> None:
    cp = control_plane
    ns = "faults-partial"
    make_namespace(cp, ALL, ns)
    export(cp, "member1", ns, "pa", ["10.244.60.1"])
    export(cp, "member1", ns, "pb", ["10.244.60.2", "10.244.60.3"])
    want: dict[str, dict[str, list[str]]] = {
        "pa": {"member1": ["10.244.60.1"]},
        "pb": {"member1": ["10.244.60.2", "10.244.60.3"]},
    }
    consumers = ("member2", "member3")
    # The leader Lease lives in member2, so the controller can lead while member1 is down.
    lease = ("--lease-context", "member2")
    with controller(tmp_path / "first.log", *hub_args(cp, ALL, "faults-partial", *lease)) as ctl:
        before = wait_converged(cp, ctl, ns, want, ALL)
    cp.stop_cluster("member1")
    try:
        port = free_port()
        args = hub_args(cp, ALL, "faults-partial", *lease, "--metrics-listen", f"127.0.0.1:{port}")
        with controller(tmp_path / "second.log", *args) as ctl:

            def leading_without_member1() -> dict[str, float] | None:
                ctl.check_alive()
                m = metrics(port)
                ok = (
                    m.get("clusterset_leader") == 1.0
                    and m.get("clusterset_reconcile_total", 0) >= 1
                    and m.get('clusterset_cluster_synced{cluster="member1"}') == 0.0
                    and m.get('clusterset_cluster_synced{cluster="member2"}') == 1.0
                )
                return m if ok else None

            eventually("the new controller leads and reconciles", leading_without_member1)
            # It is writing: a service exported from member3 now is imported everywhere else.
            export(cp, "member3", ns, "pq", ["10.246.60.1"])
            live = {**want, "pq": {"member3": ["10.246.60.1"]}}
            wait_converged(cp, ctl, ns, live, consumers)
            for c in consumers:
                unchanged(before[c], snapshot(cp, c, ns), c)
            # One more pass (prune phase included), and still nothing of member1's is gone.
            export(cp, "member3", ns, "pq", ["10.246.60.1", "10.246.60.2"])
            live = {**want, "pq": {"member3": ["10.246.60.1", "10.246.60.2"]}}
            now = wait_converged(cp, ctl, ns, live, consumers)
            for c in consumers:
                unchanged(before[c], now[c], c)
            assert metrics(port).get('clusterset_cluster_synced{cluster="member1"}') == 0.0, (
                "member1 came back too early for this test"
            )
            cp.start_cluster("member1")
            after = wait_converged(cp, ctl, ns, live, ALL)
            for c in consumers:
                unchanged(before[c], after[c], c)
            for name in ("pa", "pb"):
                unexport(cp, "member1", ns, name)
            unexport(cp, "member3", ns, "pq")
            wait_converged(cp, ctl, ns, {}, ALL)
    finally:
        cp.start_cluster("member1")


# -- etcd compacted while the controller's watches were broken: a real 410 -------------------


@pytest.fixture(scope="module")
def cp_no_watch_cache() -> Iterator[ControlPlane]:
    """Two apiservers that read watches straight from etcd, so compaction gives real 410s."""
    with ControlPlane(("member1", "member2"), watch_cache=False) as cp:
        for c in cp.cluster_names:
            install_crds(cp, c)
        yield cp


def test_compacted_watch_gets_410_relists_and_converges(
    cp_no_watch_cache: ControlPlane, tmp_path: Path
) -> None:
    cp = cp_no_watch_cache
    ns = "faults-gone"
    both = ("member1", "member2")
    make_namespace(cp, both, ns)
    export(cp, "member1", ns, "gx", ["10.244.40.1"])
    export(cp, "member1", ns, "gy", ["10.244.40.2"])
    export(cp, "member1", ns, "gw", ["10.244.40.3"])
    # The leader Lease lives in member2, whose apiserver stays up.
    args = hub_args(cp, both, "faults-gone", "--lease-context", "member2")
    with controller(tmp_path / "ctl.log", *args) as ctl:
        wait_converged(
            cp,
            ctl,
            ns,
            {
                "gx": {"member1": ["10.244.40.1"]},
                "gy": {"member1": ["10.244.40.2"]},
                "gw": {"member1": ["10.244.40.3"]},
            },
            both,
        )
        assert RELISTED not in ctl.output()
        # Frozen, the controller cannot reconnect: member1's apiserver restarts (its watch
        # connections close), objects change and go, and etcd is compacted past every
        # resourceVersion the controller holds. Resumed, it re-watches from those: 410.
        ctl.proc.send_signal(signal.SIGSTOP)
        try:
            crash(cp, "member1")
            cp.start_cluster("member1")
            export(cp, "member1", ns, "gx", ["10.244.40.1", "10.244.40.9"])
            unexport(cp, "member1", ns, "gy")  # the export goes, the Service stays
            unexport(cp, "member1", ns, "gw", everything=True)  # the Service goes too
            export(cp, "member1", ns, "gz", ["10.244.40.4"])
            revision = cp.compact_etcd()
        finally:
            ctl.proc.send_signal(signal.SIGCONT)
        assert revision > 0
        want = {
            "gx": {"member1": ["10.244.40.1", "10.244.40.9"]},
            "gz": {"member1": ["10.244.40.4"]},
        }
        wait_converged(cp, ctl, ns, want, both)
        wait_conditions(cp, ctl, "member1", ns, ["gx", "gz"])
        out = ctl.output()
        for resource in ("serviceexports", "services", "endpointslices"):
            assert f"watch member1/{resource}: {RELISTED}" in out, out[-3000:]
