"""Synthetic inputs shared by the benchmarks (not a test helper; bench/ only).

YAML is written from string templates, not yaml.dump, so that generating tens
of thousands of objects takes well under a second per thousand.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
VENV_BIN = REPO / ".venv" / "bin"
CLUSTERSET = VENV_BIN / "clusterset"
PYTHON = VENV_BIN / "python"

NAMESPACES = 10


def ns_of(i: int) -> str:
    return f"team-{i % NAMESPACES}"


def svc_of(i: int) -> str:
    return f"svc-{i:05d}"


def is_headless(i: int) -> bool:
    """20% headless: every fifth service."""
    return i % 5 == 4


def clusterset_ip(i: int) -> str:
    return f"10.250.{(i // 250) % 256}.{i % 250 + 1}"


# ---------------------------------------------------------------------------
# One consuming cluster's imported view (the input of `clusterset dns`).

_IMPORT_CSIP = """\
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata:
  name: {name}
  namespace: {ns}
spec:
  type: ClusterSetIP
  ips: [{ip}]
  ipFamilies: [IPv4]
  ports:
    - {{name: http, port: 80, protocol: TCP}}
    - {{name: grpc, port: 9090, protocol: TCP}}
status:
  clusters: [{{cluster: east}}, {{cluster: west}}]
"""

_IMPORT_HEADLESS = """\
apiVersion: multicluster.x-k8s.io/v1beta1
kind: ServiceImport
metadata:
  name: {name}
  namespace: {ns}
spec:
  type: Headless
  ipFamilies: [IPv4]
  ports:
    - {{name: db, port: 5432, protocol: TCP}}
status:
  clusters: [{{cluster: east}}, {{cluster: west}}]
"""

_MCS_SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{cluster}
  namespace: {ns}
  labels:
    multicluster.kubernetes.io/service-name: {name}
    multicluster.kubernetes.io/source-cluster: {cluster}
    endpointslice.kubernetes.io/managed-by: controller.clusterset.io
addressType: IPv4
ports:
  - {{name: db, port: 5432, protocol: TCP}}
endpoints:
{endpoints}"""

_ENDPOINT = """\
  - addresses: [{ip}]
    hostname: {hostname}
    conditions: {{ready: true}}
"""


def headless_endpoints(i: int) -> dict[str, list[tuple[str, str]]]:
    """3 endpoints from 2 clusters: east has pod-0 and pod-1, west has pod-0."""
    a, b = (i // 250) % 256, i % 250 + 1
    return {
        "east": [("pod-0", f"10.1.{a}.{b}"), ("pod-1", f"10.2.{a}.{b}")],
        "west": [("pod-0", f"10.3.{a}.{b}")],
    }


def write_imported_folder(root: Path, services: int, *, per_file: int = 100) -> None:
    """ServiceImports (80% ClusterSetIP with 1 IP and 2 named ports, 20% Headless) and the
    Headless services' MCS EndpointSlices (3 endpoints from 2 clusters), `per_file` services
    to a file."""
    root.mkdir(parents=True, exist_ok=True)
    docs: list[str] = []
    file_no = 0

    def flush() -> None:
        nonlocal docs, file_no
        if docs:
            (root / f"imports-{file_no:03d}.yaml").write_text("---\n".join(docs))
            file_no += 1
            docs = []

    for i in range(services):
        name, ns = svc_of(i), ns_of(i)
        if is_headless(i):
            docs.append(_IMPORT_HEADLESS.format(name=name, ns=ns))
            for cluster, eps in headless_endpoints(i).items():
                body = "".join(_ENDPOINT.format(ip=ip, hostname=h) for h, ip in eps)
                docs.append(_MCS_SLICE.format(name=name, ns=ns, cluster=cluster, endpoints=body))
        else:
            docs.append(_IMPORT_CSIP.format(name=name, ns=ns, ip=clusterset_ip(i)))
        if (i + 1) % per_file == 0:
            flush()
    flush()


# ---------------------------------------------------------------------------
# Member clusters (the input of `clusterset run`): Service + EndpointSlice + ServiceExport.

_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {ns}
spec:
  clusterIP: {cluster_ip}
  ports:
    - {{name: http, port: 80, protocol: TCP}}
"""

_LOCAL_SLICE = """\
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}-{suffix}
  namespace: {ns}
  labels:
    kubernetes.io/service-name: {name}
addressType: IPv4
ports:
  - {{name: http, port: 80, protocol: TCP}}
endpoints:
{endpoints}"""

_LOCAL_ENDPOINT = """\
  - addresses: [{ip}]
{hostname}    conditions: {{ready: true}}
"""

_EXPORT = """\
apiVersion: multicluster.x-k8s.io/v1alpha1
kind: ServiceExport
metadata:
  name: {name}
  namespace: {ns}
  creationTimestamp: "2026-11-01T10:00:{sec:02d}Z"
"""


def member_service_docs(
    i: int, cluster_index: int, endpoints: int, *, headless: bool | None = None
) -> str:
    """One service as member `cluster_index` holds it: Service, EndpointSlice, ServiceExport."""
    name, ns = svc_of(i), ns_of(i)
    hl = is_headless(i) if headless is None else headless
    cluster_ip = "None" if hl else f"10.{96 + cluster_index % 32}.{(i // 250) % 256}.{i % 250 + 1}"
    eps = []
    for e in range(endpoints):
        n = i * endpoints + e
        ip = f"10.{(cluster_index % 200) + 20}.{(n // 250) % 256}.{n % 250 + 1}"
        hostname = f"    hostname: {name}-{e}\n" if hl else ""
        eps.append(_LOCAL_ENDPOINT.format(ip=ip, hostname=hostname))
    return "---\n".join(
        [
            _SERVICE.format(name=name, ns=ns, cluster_ip=cluster_ip),
            _LOCAL_SLICE.format(name=name, ns=ns, suffix="abcde", endpoints="".join(eps)),
            _EXPORT.format(name=name, ns=ns, sec=cluster_index % 60),
        ]
    )


def write_member_folder(
    folder: Path,
    cluster: str,
    cluster_index: int,
    service_ids: Sequence[int],
    endpoints: int,
    *,
    per_file: int = 1,
    prefix: str = "gen",
    headless: Callable[[int], bool] = is_headless,
) -> None:
    """Services of one member: one file per `per_file` services."""
    folder.mkdir(parents=True, exist_ok=True)
    prop = folder / "cluster.yaml"
    if not prop.exists():
        prop.write_text(
            "apiVersion: about.k8s.io/v1alpha1\nkind: ClusterProperty\n"
            f"metadata:\n  name: cluster.clusterset.k8s.io\nspec:\n  value: {cluster}\n"
        )
    chunk: list[str] = []
    for n, i in enumerate(service_ids):
        chunk.append(member_service_docs(i, cluster_index, endpoints, headless=headless(i)))
        if len(chunk) == per_file or n == len(service_ids) - 1:
            (folder / f"{prefix}-{i:05d}.yaml").write_text("---\n".join(chunk))
            chunk = []


# ---------------------------------------------------------------------------
# Processes.


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    import socket

    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
                return port
    raise RuntimeError("no free port")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a whole process (all threads), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    fields = stat[stat.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """Busy time of all CPUs (everything but idle and iowait), from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_with_rusage(argv: list[str], out: Path) -> float:
    """Run argv to completion with stdout+stderr to `out`; its user+sys CPU seconds."""
    with out.open("wb") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        try:
            _, status, ru = os.wait4(proc.pid, 0)
        except BaseException:
            proc.kill()
            raise
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, argv)
    return ru.ru_utime + ru.ru_stime


def wait_quiet(threshold: float = 0.10, window: float = 0.5, timeout: float = 30.0) -> float:
    """Wait (at most `timeout`) until the machine's busy share over `window` is below
    `threshold` of all cores; returns the last busy share seen."""
    deadline = time.monotonic() + timeout
    share = 1.0
    while time.monotonic() < deadline:
        b0 = busy_seconds()
        time.sleep(window)
        share = (busy_seconds() - b0) / (window * (os.cpu_count() or 1))
        if share < threshold:
            break
    return share


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)


def wait_dns(
    port: int, qname: str, *, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None
) -> None:
    """Until `qname` SOA answers NOERROR on UDP 127.0.0.1:port."""
    import dns.message
    import dns.query
    import dns.rcode

    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before answering")
        try:
            r = dns.query.udp(
                dns.message.make_query(qname, "SOA"), "127.0.0.1", port=port, timeout=0.3
            )
            if r.rcode() == dns.rcode.NOERROR and r.answer:
                return
            last = dns.rcode.to_text(r.rcode())
        except Exception as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"no answer on 127.0.0.1:{port} within {timeout}s (last: {last})")


def machine() -> str:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores ({cpu}), Python {sys.version.split()[0]}"
