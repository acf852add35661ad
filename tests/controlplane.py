"""A real Kubernetes control plane for tests: one etcd and N kube-apiservers.

What envtest does, in plain Python: no kubelet, scheduler or
controller-manager. Each apiserver is its own "cluster" (own etcd prefix,
own service CIDR) on a free loopback port, sharing one etcd. Clients
authenticate with bearer tokens from a static token file: an admin in
``system:masters`` and an unprivileged user for RBAC tests. TLS uses a CA
made here with the ``openssl`` CLI, so the kubeconfig verifies the servers.

The binaries come from ``scripts/build-peers.sh`` (kube-apiserver) and
Debian's ``etcd-server`` package (etcd, etcdctl)::

    with ControlPlane(["member1", "member2"]) as cp:
        cp.kubeconfig_path  # contexts member1, member2
        cp.request("member1", "GET", "/api/v1/namespaces")

Stdlib and PyYAML only.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

__all__ = [
    "ControlPlane",
    "ControlPlaneError",
    "MissingBinaryError",
    "cache_bin_dir",
    "find_binary",
    "free_port",
]

BUILD_HINT = (
    "run scripts/build-peers.sh (it builds kube-apiserver and coredns from the Go module proxy)"
)
ETCD_HINT = "install Debian's etcd: apt-get install -y etcd-server etcd-client"


class ControlPlaneError(RuntimeError):
    """A process of the control plane failed to start or to answer."""


class MissingBinaryError(ControlPlaneError):
    """A binary the control plane needs is not installed."""


def cache_bin_dir() -> Path:
    """Where scripts/build-peers.sh puts its binaries."""
    base = os.environ.get("CLUSTERSET_CACHE") or str(Path.home() / ".cache" / "clusterset")
    return Path(base) / "bin"


def find_binary(name: str, *, path_ok: bool = True) -> Path:
    """``name`` from the peers cache, else (if ``path_ok``) from $PATH."""
    candidate = cache_bin_dir() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    if path_ok:
        found = shutil.which(name)
        if found:
            return Path(found)
    hint = ETCD_HINT if name.startswith("etcd") else BUILD_HINT
    where = f"{candidate}" + (" or on $PATH" if path_ok else "")
    raise MissingBinaryError(f"{name} not found at {where}: {hint}")


def free_port() -> int:
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _run(args: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None) -> str:
    proc = subprocess.run(
        [str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise ControlPlaneError(
            f"{' '.join(str(a) for a in args)} failed ({proc.returncode}): {proc.stderr.strip()}"
        )
    return proc.stdout


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 15.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


@dataclass
class _Cluster:
    name: str
    port: int
    service_cidr: str
    dir: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    args: list[str] = field(default_factory=list)

    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"


class ControlPlane:
    """One etcd and one kube-apiserver per cluster name, on loopback.

    ``watch_cache=False`` makes the apiservers read watches straight from
    etcd, so a watch from a compacted resourceVersion gets a real 410 Gone
    after :meth:`compact_etcd`.

    ``hosts`` names, for clusters that get real nodes (tests/fleet.py), the
    address their apiserver binds and advertises instead of loopback (pods
    reach it through the ``kubernetes`` Service): those run as kubeadm's do,
    with Node authorization, NodeRestriction and ServiceAccount admission, the
    lease endpoint reconciler and a kubelet client certificate. ``users`` adds
    token users ``(name, group)``; :meth:`token` gives their tokens. ``dual_stack`` names
    the clusters whose Services can be IPv4 and IPv6 (:meth:`service_cidr_v6`); the others
    are IPv4 only.
    """

    def __init__(
        self,
        clusters: Sequence[str] = ("member1", "member2"),
        *,
        watch_cache: bool = True,
        workdir: Path | None = None,
        keep_workdir: bool = False,
        extra_apiserver_args: Sequence[str] = (),
        start_timeout: float = 90.0,
        aggregators: Sequence[str] = (),
        hosts: Mapping[str, str] | None = None,
        users: Sequence[tuple[str, str]] = (),
        dual_stack: Iterable[str] = (),
    ) -> None:
        if not clusters:
            raise ValueError("at least one cluster")
        if len(set(clusters)) != len(clusters):
            raise ValueError(f"duplicate cluster names: {list(clusters)}")
        if len(clusters) > 64:
            raise ValueError("at most 64 clusters (one 10.x.0.0/16 service range each)")
        self.cluster_names: list[str] = list(clusters)
        self.watch_cache = watch_cache
        self.extra_apiserver_args = list(extra_apiserver_args)
        # Clusters whose apiserver fronts aggregated apiservers (Karmada's): front-proxy flags.
        self.aggregators = frozenset(aggregators)
        self.hosts = dict(hosts or {})
        self.dual_stack = frozenset(dual_stack)
        self._tokens = {name: (secrets.token_hex(16), group) for name, group in users}
        self.start_timeout = start_timeout
        self.keep_workdir = keep_workdir or bool(os.environ.get("CLUSTERSET_KEEP_CONTROLPLANE"))
        self._own_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="clusterset-cp-"))
        self.admin_token = secrets.token_hex(16)
        self.user_token = secrets.token_hex(16)
        self.user_name = "alice"
        self._etcd: subprocess.Popen[bytes] | None = None
        self._etcd_log = self.workdir / "etcd.log"
        self._etcd_client_port = 0
        self._clusters: dict[str, _Cluster] = {}
        self._user_kubeconfigs = 0
        self.kubeconfig_path = self.workdir / "kubeconfig"
        self.ca_path = self.workdir / "pki" / "ca.crt"

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
        """Start etcd and every apiserver; return once all are ready."""
        atexit.register(self.stop)  # if a test run ends without its teardown
        try:
            apiserver = find_binary("kube-apiserver", path_ok=False)
            etcd = find_binary("etcd")
            find_binary("etcdctl")
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._make_pki()
            self._write_token_file()
            self._start_etcd(etcd)
            for name in self.cluster_names:
                d = self.workdir / name
                (d / "certs").mkdir(parents=True, exist_ok=True)
                cluster = _Cluster(
                    name=name,
                    port=free_port(),
                    service_cidr=self.service_cidr(name),
                    dir=d,
                    log=self.workdir / f"kube-apiserver-{name}.log",
                    host=self.hosts.get(name, "127.0.0.1"),
                )
                cluster.args = self._apiserver_args(apiserver, cluster)
                self._clusters[name] = cluster
            # Start all, then wait for all: the apiservers boot in parallel.
            for cluster in self._clusters.values():
                self._spawn_apiserver(cluster)
            for cluster in self._clusters.values():
                self._wait_ready(cluster)
            self._write_kubeconfig(self.kubeconfig_path, self.admin_token, "admin")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process; remove the work dir unless asked to keep it."""
        atexit.unregister(self.stop)
        for cluster in self._clusters.values():
            _stop_process(cluster.proc)
            cluster.proc = None
        _stop_process(self._etcd)
        self._etcd = None
        if self._own_workdir and not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def stop_cluster(self, name: str) -> None:
        """Stop one apiserver (its data stays in etcd), as if its cluster went down."""
        cluster = self._cluster(name)
        _stop_process(cluster.proc)
        cluster.proc = None

    def start_cluster(self, name: str) -> None:
        """Start a stopped apiserver again, on the same port with the same data."""
        cluster = self._cluster(name)
        if cluster.proc is not None and cluster.proc.poll() is None:
            return
        self._spawn_apiserver(cluster)
        self._wait_ready(cluster)

    def restart_cluster(self, name: str) -> None:
        self.stop_cluster(name)
        self.start_cluster(name)

    def is_running(self, name: str) -> bool:
        proc = self._cluster(name).proc
        return proc is not None and proc.poll() is None

    # -- facts for clients -----------------------------------------------

    @property
    def servers(self) -> dict[str, str]:
        """Cluster name -> apiserver URL."""
        return {name: c.url for name, c in self._clusters.items()}

    def service_cidr(self, name: str) -> str:
        """The cluster's service range: 10.96.0.0/16 for the first, 10.97.0.0/16 next..."""
        return f"10.{96 + self.cluster_names.index(name)}.0.0/16"

    def service_cidr_v6(self, name: str) -> str:
        """The cluster's second service range when it is in ``dual_stack``: fd00:10:96::/112
        for the first cluster, fd00:10:97::/112 next..."""
        return f"fd00:10:{96 + self.cluster_names.index(name)}::/112"

    def token(self, user: str) -> str:
        """The bearer token of a user given in ``users``."""
        return self._tokens[user][0]

    def write_kubeconfig(self, path: Path, cluster: str, token: str | None = None) -> Path:
        """A kubeconfig with the one context ``cluster`` for ``token`` (default: admin)."""
        self._write_kubeconfig(path, token or self.admin_token, "user", only=cluster)
        return path

    @property
    def etcd_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._etcd_client_port}"

    def log_path(self, name: str) -> Path:
        """The log file of a cluster's apiserver, or of etcd for ``"etcd"``."""
        return self._etcd_log if name == "etcd" else self._cluster(name).log

    def ssl_context(self) -> ssl.SSLContext:
        """An SSL context that trusts the apiservers' CA."""
        return ssl.create_default_context(cafile=str(self.ca_path))

    def context_kubeconfig(self, name: str, token: str | None = None) -> Path:
        """A kubeconfig with the one context ``name`` (admin unless ``token`` is given)."""
        path = self.workdir / f"kubeconfig-{name}-{secrets.token_hex(3)}"
        self._write_kubeconfig(path, token or self.admin_token, "admin", only=name)
        return path

    def user_kubeconfig(self, user_token: str | None = None) -> Path:
        """A kubeconfig like :attr:`kubeconfig_path` that authenticates with
        ``user_token`` (default: the unprivileged user's)."""
        self._user_kubeconfigs += 1
        path = self.workdir / f"kubeconfig-user{self._user_kubeconfigs}"
        self._write_kubeconfig(path, user_token or self.user_token, "user")
        return path

    def request(
        self,
        cluster: str,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> tuple[int, Any]:
        """One HTTP request to a cluster's apiserver: (status, decoded JSON body).

        ``body`` is sent as JSON unless it is already ``bytes``. Errors are
        returned, not raised, so tests can assert on 4xx answers.
        """
        data: bytes | None
        if body is None:
            data = None
        elif isinstance(body, bytes):
            data = body
        else:
            data = json.dumps(body).encode()
        req = urllib.request.Request(
            self.servers[cluster] + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {token or self.admin_token}",
                "Accept": "application/json",
                "Content-Type": content_type,
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl_context()) as resp:
                status: int = resp.status
                raw = resp.read()
        except urllib.error.HTTPError as err:
            with err:
                status = err.code
                raw = err.read()
        try:
            return status, json.loads(raw) if raw else None
        except json.JSONDecodeError:
            return status, raw.decode(errors="replace")

    def compact_etcd(self) -> int:
        """Compact etcd at its current revision; return that revision.

        etcd keeps the compaction revision itself, so with
        ``watch_cache=False`` a later watch from resourceVersion X (events
        after X) ends with an ERROR event of code 410 (reason Expired) when
        X < revision - 1; a list with ``resourceVersionMatch=Exact`` at an
        older version gets HTTP 410.
        """
        etcdctl = find_binary("etcdctl")
        env = {**os.environ, "ETCDCTL_API": "3"}
        endpoint = f"--endpoints={self.etcd_endpoint}"
        out = subprocess.run(
            [str(etcdctl), endpoint, "endpoint", "status", "--write-out=json"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if out.returncode != 0:
            raise ControlPlaneError(f"etcdctl endpoint status: {out.stderr.strip()}")
        status = json.loads(out.stdout)
        revision = int(status[0]["Status"]["header"]["revision"])
        done = subprocess.run(
            [str(etcdctl), endpoint, "compact", str(revision), "--physical"],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        if done.returncode != 0 and "already been compacted" not in done.stderr:
            raise ControlPlaneError(f"etcdctl compact {revision}: {done.stderr.strip()}")
        return revision

    # -- internals -------------------------------------------------------

    def _cluster(self, name: str) -> _Cluster:
        try:
            return self._clusters[name]
        except KeyError:
            raise KeyError(f"no cluster {name!r}; have {sorted(self._clusters)}") from None

    def _make_pki(self) -> None:
        """A CA, one serving cert for 127.0.0.1/localhost, a service-account key."""
        pki = self.workdir / "pki"
        pki.mkdir(parents=True, exist_ok=True)
        if (pki / "sa.pub").exists():
            return
        openssl = shutil.which("openssl")
        if openssl is None:
            raise MissingBinaryError("openssl not found: apt-get install -y openssl")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        _run(
            [openssl, "req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt",
             "-days", "3650", "-subj", "/CN=clusterset-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            cwd=pki,
        )  # fmt: skip
        _run(
            [openssl, "req", "-new", *ec, "-keyout", "serving.key", "-out", "serving.csr",
             "-subj", "/CN=kube-apiserver"],
            cwd=pki,
        )  # fmt: skip
        # Pods reach their apiserver as kubernetes.default.svc, at the first IP of the range.
        sans = ["IP:127.0.0.1", "DNS:localhost"]
        sans += [f"IP:{host}" for host in sorted(set(self.hosts.values()))]
        if self.hosts:
            sans += [f"IP:{self.service_cidr(n).replace('.0.0/16', '.0.1')}" for n in self.hosts]
            sans += ["DNS:kubernetes", "DNS:kubernetes.default", "DNS:kubernetes.default.svc"]
            sans += ["DNS:kubernetes.default.svc.cluster.local"]
        (pki / "serving.ext").write_text(
            "basicConstraints=CA:FALSE\n"
            "keyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectKeyIdentifier=hash\n"
            "authorityKeyIdentifier=keyid,issuer\n"
            f"subjectAltName={','.join(sans)}\n"
        )
        _run(
            [openssl, "x509", "-req", "-in", "serving.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "serving.crt", "-days", "3650",
             "-extfile", "serving.ext"],
            cwd=pki,
        )  # fmt: skip
        # The aggregation layer's front proxy: its own CA and the client cert the apiserver
        # presents to aggregated apiservers (CN front-proxy-client, as kubeadm names it).
        _run(
            [openssl, "req", "-x509", *ec, "-keyout", "front-proxy-ca.key",
             "-out", "front-proxy-ca.crt", "-days", "3650", "-subj", "/CN=front-proxy-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            cwd=pki,
        )  # fmt: skip
        _run(
            [openssl, "req", "-new", *ec, "-keyout", "front-proxy-client.key",
             "-out", "front-proxy-client.csr", "-subj", "/CN=front-proxy-client"],
            cwd=pki,
        )  # fmt: skip
        (pki / "client.ext").write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            "extendedKeyUsage=clientAuth\n"
        )
        _run(
            [openssl, "x509", "-req", "-in", "front-proxy-client.csr",
             "-CA", "front-proxy-ca.crt", "-CAkey", "front-proxy-ca.key", "-CAcreateserial",
             "-out", "front-proxy-client.crt", "-days", "3650", "-extfile", "client.ext"],
            cwd=pki,
        )  # fmt: skip
        # What the apiserver presents to kubelets (logs, exec, port-forward).
        _run(
            [openssl, "req", "-new", *ec, "-keyout", "kubelet-client.key",
             "-out", "kubelet-client.csr",
             "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client"],
            cwd=pki,
        )  # fmt: skip
        _run(
            [openssl, "x509", "-req", "-in", "kubelet-client.csr", "-CA", "ca.crt",
             "-CAkey", "ca.key", "-CAcreateserial", "-out", "kubelet-client.crt",
             "-days", "3650", "-extfile", "client.ext"],
            cwd=pki,
        )  # fmt: skip
        _run([openssl, "genrsa", "-out", "sa.key", "2048"], cwd=pki)
        _run([openssl, "rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub"], cwd=pki)

    def _write_token_file(self) -> None:
        extra = "".join(
            f'{token},{name},uid-{name},"{group}"\n'
            for name, (token, group) in self._tokens.items()
        )
        (self.workdir / "tokens.csv").write_text(
            f'{self.admin_token},admin,uid1,"system:masters"\n'
            f"{self.user_token},{self.user_name},uid2\n{extra}"
        )

    def _start_etcd(self, etcd: Path) -> None:
        client, peer = free_port(), free_port()
        self._etcd_client_port = client
        args = [
            str(etcd),
            "--name=clusterset-test",
            f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls=http://127.0.0.1:{client}",
            f"--advertise-client-urls=http://127.0.0.1:{client}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=clusterset-test=http://127.0.0.1:{peer}",
            "--logger=zap",
            "--log-level=warn",
        ]
        if _etcd_supports_no_fsync(etcd):
            args.append("--unsafe-no-fsync=true")
        self._etcd = _spawn(args, self._etcd_log)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self._etcd.poll() is not None:
                raise ControlPlaneError(
                    f"etcd exited with {self._etcd.returncode}; last lines of "
                    f"{self._etcd_log}:\n{_tail(self._etcd_log)}"
                )
            try:
                with urllib.request.urlopen(f"{self.etcd_endpoint}/health", timeout=1) as r:
                    if json.loads(r.read()).get("health") == "true":
                        return
            except (OSError, ValueError):
                pass
            time.sleep(0.1)
        raise ControlPlaneError(
            f"etcd not healthy after 30 s; last lines of {self._etcd_log}:\n{_tail(self._etcd_log)}"
        )

    def _apiserver_args(self, binary: Path, c: _Cluster) -> list[str]:
        pki = self.workdir / "pki"
        if c.name in self.hosts:
            node_args = [
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
                f"--kubelet-client-key={pki / 'kubelet-client.key'}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
            if c.name not in self.aggregators:  # those pass it below
                node_args.append(f"--client-ca-file={pki / 'ca.crt'}")
        else:
            node_args = [
                # The "kubernetes" Endpoints may not point at loopback; no kubelet needs them.
                "--endpoint-reconciler-type=none",
                "--authorization-mode=RBAC",
                "--disable-admission-plugins=ServiceAccount",
            ]
        # Dual-stack: IPv4 primary (a Service asking no family stays IPv4, as before).
        ranges = c.service_cidr
        if c.name in self.dual_stack:
            ranges += "," + self.service_cidr_v6(c.name)
        args = [
            str(binary),
            f"--etcd-servers={self.etcd_endpoint}",
            f"--etcd-prefix=/{c.name}",
            f"--cert-dir={c.dir / 'certs'}",
            f"--tls-cert-file={pki / 'serving.crt'}",
            f"--tls-private-key-file={pki / 'serving.key'}",
            f"--bind-address={c.host}",
            f"--advertise-address={c.host}",
            f"--secure-port={c.port}",
            f"--service-cluster-ip-range={ranges}",
            *node_args,
            f"--service-account-issuer=https://{c.name}.clusterset.test",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--token-auth-file={self.workdir / 'tokens.csv'}",
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
        ]
        if not self.watch_cache:
            args.append("--watch-cache=false")
        if c.name in self.aggregators:
            args += [
                f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
                f"--proxy-client-key-file={pki / 'front-proxy-client.key'}",
                f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                # Published with the above in kube-system/extension-apiserver-authentication,
                # which aggregated apiservers read to authenticate requests.
                f"--client-ca-file={pki / 'ca.crt'}",
            ]
        args.extend(self.extra_apiserver_args)
        return args

    def _spawn_apiserver(self, c: _Cluster) -> None:
        c.starts += 1
        with c.log.open("ab") as log:
            log.write(f"\n==== start {c.starts}: {' '.join(c.args)}\n".encode())
        c.proc = _spawn(c.args, c.log)

    def _wait_ready(self, c: _Cluster) -> None:
        assert c.proc is not None
        deadline = time.monotonic() + self.start_timeout
        ctx = self.ssl_context()
        last = "no answer"
        while time.monotonic() < deadline:
            if c.proc.poll() is not None:
                raise ControlPlaneError(
                    f"kube-apiserver {c.name} exited with {c.proc.returncode}; "
                    f"last lines of {c.log}:\n{_tail(c.log)}"
                )
            req = urllib.request.Request(
                f"{c.url}/readyz", headers={"Authorization": f"Bearer {self.admin_token}"}
            )
            try:
                with urllib.request.urlopen(req, timeout=2, context=ctx) as resp:
                    if resp.status == 200:
                        return
            except urllib.error.HTTPError as err:
                with err:
                    last = f"HTTP {err.code}: {err.read()[-300:].decode(errors='replace')}"
            except OSError as err:
                last = str(err)
            time.sleep(0.2)
        raise ControlPlaneError(
            f"kube-apiserver {c.name} not ready after {self.start_timeout:.0f} s ({last}); "
            f"last lines of {c.log}:\n{_tail(c.log)}"
        )

    def _write_kubeconfig(self, path: Path, token: str, user: str, only: str = "") -> None:
        ca = base64.b64encode(self.ca_path.read_bytes()).decode()
        names = [only] if only else list(self._clusters)
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "preferences": {},
            "clusters": [
                {
                    "name": n,
                    "cluster": {"server": self._clusters[n].url, "certificate-authority-data": ca},
                }
                for n in names
            ],
            "users": [{"name": user, "user": {"token": token}}],
            "contexts": [{"name": n, "context": {"cluster": n, "user": user}} for n in names],
            "current-context": names[0],
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        path.chmod(0o600)


def _spawn(args: Iterable[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


_NO_FSYNC: dict[Path, bool] = {}


def _etcd_supports_no_fsync(etcd: Path) -> bool:
    """etcd >= 3.4.22 / 3.5 has --unsafe-no-fsync; older ones reject unknown flags."""
    if etcd not in _NO_FSYNC:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            probe = subprocess.run(
                [str(etcd), "--unsafe-no-fsync=true", "--version"],
                capture_output=True, timeout=10, check=False,
            )  # fmt: skip
            _NO_FSYNC[etcd] = probe.returncode == 0
        _NO_FSYNC.setdefault(etcd, False)
    return _NO_FSYNC[etcd]
