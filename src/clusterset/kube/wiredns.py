"""`clusterset wire-dns`: point a cluster's DNS at clusterset dns, safely.

Steps, each of which can stop the run before the next:
1. discover: CoreDNS's `coredns` ConfigMap in kube-system (and NodeLocal DNSCache's
   `node-local-dns` when present). kube-dns, or a Corefile without the kubernetes
   plugin, is reported and nothing is touched.
2. compute the new Corefiles (reconcile.corefile.wire); equal to today's: done.
3. canary: the real CoreDNS binary runs each new Corefile on a loopback port
   (reconcile.corefile.loopback; its kubernetes plugin watches the real cluster through
   the kubeconfig) and must answer a cluster.local name and the clusterset zone's SOA.
   Nothing is written when it does not.
4. apply: server-side apply of `data.Corefile` under the field manager
   `clusterset-wire-dns`, the previous Corefile kept in the annotation
   `clusterset.io/previous-corefile`.
5. grace: the cluster's DNS (`probe`) is asked the same names for `grace` seconds; when
   the clusterset zone never answers, or cluster.local stops answering, the previous
   Corefile is applied again (rollback).
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import logging
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

from clusterset.kube.api import ApiError, KubeApi, Obj
from clusterset.reconcile import corefile as cf

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
COREDNS = "coredns"
NODELOCAL = "node-local-dns"
KUBE_DNS = "kube-dns"
PREVIOUS_ANNOTATION = "clusterset.io/previous-corefile"
FIELD_MANAGER = "clusterset-wire-dns"
# A cluster.local name every cluster has (the apiserver's Service).
CLUSTER_NAME = "kubernetes.default.svc"
# Where the canary sends what it must not forward for real (nothing listens on port 9).
DISCARD = "127.0.0.1:9"


class WireError(Exception):
    """wire-dns stopped; the message says why and what was (not) changed. Exit 1."""


@dataclass(frozen=True, slots=True)
class Target:
    """One ConfigMap holding a Corefile that wire-dns edits."""

    name: str
    corefile: str
    previous: str | None  # the annotation: the Corefile before the first wiring
    nodelocal: bool

    @property
    def path(self) -> str:
        return f"/api/v1/namespaces/{NAMESPACE}/configmaps/{self.name}"


async def _get(api: KubeApi, path: str) -> Obj | None:
    try:
        return await api.get(path)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise


async def discover(api: KubeApi) -> list[Target]:
    """The ConfigMaps to edit; WireError for a cluster DNS wire-dns cannot edit."""
    cms = f"/api/v1/namespaces/{NAMESPACE}/configmaps"
    core = await _get(api, f"{cms}/{COREDNS}")
    if core is None:
        if await _get(api, f"{cms}/{KUBE_DNS}") is not None or await _get(
            api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{KUBE_DNS}"
        ):
            raise WireError(
                f"{api.name}: the cluster runs kube-dns (no ConfigMap {NAMESPACE}/{COREDNS}); "
                "wire-dns edits CoreDNS only: add the zone to kube-dns's stubDomains by hand. "
                "Nothing changed."
            )
        raise WireError(
            f"{api.name}: no ConfigMap {NAMESPACE}/{COREDNS}: not a CoreDNS cluster wire-dns "
            "knows. Nothing changed."
        )
    targets = [_target(api, core, nodelocal=False)]
    node = await _get(api, f"{cms}/{NODELOCAL}")
    if node is not None:
        targets.append(_target(api, node, nodelocal=True))
    return targets


def _target(api: KubeApi, cm: Obj, *, nodelocal: bool) -> Target:
    name = cm["metadata"]["name"]
    text = (cm.get("data") or {}).get("Corefile")
    if not isinstance(text, str) or not text.strip():
        raise WireError(
            f"{api.name}: ConfigMap {NAMESPACE}/{name}: no data.Corefile. Nothing changed."
        )
    try:
        if not nodelocal and not cf.has_kubernetes(text):
            raise WireError(
                f"{api.name}: ConfigMap {NAMESPACE}/{name}: the Corefile has no kubernetes plugin; "
                "not a cluster DNS wire-dns knows. Nothing changed."
            )
    except cf.CorefileError as exc:
        raise WireError(f"{api.name}: ConfigMap {NAMESPACE}/{name}: Corefile {exc}") from exc
    annotations = (cm.get("metadata") or {}).get("annotations") or {}
    return Target(name, text, annotations.get(PREVIOUS_ANNOTATION), nodelocal)


def plan(targets: list[Target], *, zone: str, server: str, ttl: int) -> dict[str, str]:
    """ConfigMap name -> new Corefile, only for those that change."""
    out: dict[str, str] = {}
    for t in targets:
        try:
            new = cf.wire(t.corefile, zone=zone, server=server, ttl=ttl, nodelocal=t.nodelocal)
        except cf.CorefileError as exc:
            raise WireError(
                f"ConfigMap {NAMESPACE}/{t.name}: Corefile {exc}. Nothing changed."
            ) from exc
        if new != t.corefile:
            out[t.name] = new
    return out


def diff(targets: list[Target], new: dict[str, str]) -> str:
    parts: list[str] = []
    for t in targets:
        if t.name in new:
            parts.extend(
                difflib.unified_diff(
                    t.corefile.splitlines(keepends=True),
                    new[t.name].splitlines(keepends=True),
                    f"{NAMESPACE}/{t.name} (now)",
                    f"{NAMESPACE}/{t.name} (wired)",
                )
            )
    return "".join(parts)


def find_coredns(explicit: str | None = None) -> Path:
    """The CoreDNS binary for the canary: --coredns, the peers cache, else $PATH."""
    if explicit:
        return Path(explicit)
    base = os.environ.get("CLUSTERSET_CACHE") or str(Path.home() / ".cache" / "clusterset")
    cached = Path(base) / "bin" / "coredns"
    if cached.is_file():
        return cached
    found = shutil.which("coredns")
    if found is None:
        raise WireError("the canary needs a CoreDNS binary: give --coredns PATH (nothing changed)")
    return Path(found)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (CoreDNS listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise WireError("no free loopback port for the canary")


async def ask(
    server: tuple[str, int], name: str, rdtype: str, *, wait: float = 1.0
) -> tuple[str, int]:
    """(rcode text, answer count) of one UDP query, or ('TIMEOUT', 0)."""
    q = dns.message.make_query(name, dns.rdatatype.from_text(rdtype))
    try:
        r = await dns.asyncquery.udp(q, server[0], port=server[1], timeout=wait)
    except (dns.exception.Timeout, OSError):
        return "TIMEOUT", 0
    return dns.rcode.to_text(r.rcode()), len(r.answer)


async def answers(
    server: tuple[str, int], *, zone: str, cluster_domain: str
) -> tuple[bool, bool, str]:
    """(cluster.local answered, clusterset zone answered, what was seen)."""
    rc1, n1 = await ask(server, f"{CLUSTER_NAME}.{cluster_domain}", "A")
    rc2, n2 = await ask(server, zone, "SOA")
    seen = f"{CLUSTER_NAME}.{cluster_domain} A: {rc1}/{n1}; {zone} SOA: {rc2}/{n2}"
    return rc1 == "NOERROR" and n1 > 0, rc2 == "NOERROR" and n2 > 0, seen


@contextlib.asynccontextmanager
async def coredns(
    binary: Path, text: str, *, port: int, workdir: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real CoreDNS process running `text` (already made loopback) on 127.0.0.1:port."""
    conf = workdir / f"Corefile.{port}"
    conf.write_text(text)
    log_path = workdir / f"coredns.{port}.log"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(binary), "-conf", str(conf), stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


async def canary(
    *,
    binary: Path,
    corefiles: dict[str, str],
    nodelocal: set[str],
    kubeconfig: str,
    context: str,
    zone: str,
    server: str,
    cluster_domain: str = "cluster.local",
    within: float = 20.0,
) -> list[str]:
    """Run every new Corefile in a real CoreDNS; one line per one that fails (empty: ok).

    `server`: where the canary's clusterset zone is forwarded (clusterset dns as reachable
    from here). The `.` zone is forwarded nowhere (DISCARD): the canary asks no outside name.
    """
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="clusterset-canary-") as tmp:
        workdir = Path(tmp)
        core_port = free_port()
        order = sorted(corefiles, key=lambda n: n in nodelocal)  # CoreDNS first
        async with contextlib.AsyncExitStack() as stack:
            for name in order:
                port = core_port if name not in nodelocal else free_port()
                text = cf.loopback(
                    corefiles[name],
                    port=port,
                    kubeconfig=kubeconfig,
                    context=context,
                    substitute={
                        "__PILLAR__CLUSTER__DNS__": f"127.0.0.1:{core_port}",
                        "__PILLAR__UPSTREAM__SERVERS__": DISCARD,
                    },
                    forward={zone: server, ".": DISCARD},
                )
                proc = await stack.enter_async_context(
                    coredns(binary, text, port=port, workdir=workdir)
                )
                problem = await _until_answers(
                    proc,
                    ("127.0.0.1", port),
                    zone=zone,
                    cluster_domain=cluster_domain,
                    within=within,
                    log_path=workdir / f"coredns.{port}.log",
                )
                if problem:
                    problems.append(f"ConfigMap {NAMESPACE}/{name}: canary: {problem}")
                    break
    return problems


async def _until_answers(
    proc: asyncio.subprocess.Process,
    addr: tuple[str, int],
    *,
    zone: str,
    cluster_domain: str,
    within: float,
    log_path: Path,
) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen = ""
    while loop.time() < deadline:
        if proc.returncode is not None:
            return f"CoreDNS exited ({proc.returncode}): {_tail(log_path)}"
        local, clusterset, seen = await answers(addr, zone=zone, cluster_domain=cluster_domain)
        if local and clusterset:
            return ""
        await asyncio.sleep(0.3)
    return f"no good answers within {within:g}s ({seen}); CoreDNS says: {_tail(log_path)}"


async def apply(api: KubeApi, target: Target, text: str, *, keep_previous: bool) -> None:
    """Server-side apply of data.Corefile (+ the previous Corefile annotation, or none)."""
    meta: dict[str, object] = {"name": target.name, "namespace": NAMESPACE}
    if keep_previous:
        previous = target.previous if target.previous is not None else target.corefile
        meta["annotations"] = {PREVIOUS_ANNOTATION: previous}
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": text}}
    await api.apply(target.path, body, force=True, field_manager=FIELD_MANAGER)


async def grace(
    probe: tuple[str, int],
    *,
    zone: str,
    seconds: float,
    interval: float = 1.0,
    cluster_domain: str = "cluster.local",
    failures: int = 3,
    report: Callable[[str], None] = lambda _: None,
) -> str:
    """Watch the cluster's real answers; '' when healthy, else why it must roll back.

    Healthy: the clusterset zone answered at least once, and cluster.local never failed
    `failures` times in a row.
    """
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    wired = False
    bad = 0
    seen = ""
    while loop.time() < end:
        local, clusterset, seen = await answers(probe, zone=zone, cluster_domain=cluster_domain)
        report(seen)
        wired = wired or clusterset
        bad = 0 if local else bad + 1
        if bad >= failures:
            return f"cluster.local stopped answering at {probe[0]}:{probe[1]} ({seen})"
        await asyncio.sleep(interval)
    if not wired:
        return f"{zone} never answered at {probe[0]}:{probe[1]} within {seconds:g}s ({seen})"
    return ""


async def probe_address(api: KubeApi) -> tuple[str, int]:
    """The kube-dns Service's ClusterIP (CoreDNS keeps that Service name)."""
    svc = await _get(api, f"/api/v1/namespaces/{NAMESPACE}/services/{KUBE_DNS}")
    ip = ((svc or {}).get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        raise WireError(
            f"{api.name}: no Service {NAMESPACE}/{KUBE_DNS} to watch after applying: "
            "give --probe IP"
        )
    return str(ip), 53
