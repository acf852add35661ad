"""A real Karmada control plane for tests: Karmada's own binaries, no containers, no kubelet.

One cluster of a :class:`ControlPlane` (started with it in ``aggregators``) is the
karmada-apiserver. Beside it run the binaries that ``scripts/build-karmada.sh`` builds from
the v1.18.2 source snapshot: ``karmada-aggregated-apiserver`` (``cluster.karmada.io`` and its
cluster proxy, registered through an APIService and an ExternalName Service ``localhost``),
``karmada-webhook`` (its webhook configuration from ``artifacts/deploy``, URLs pointed at
loopback), ``karmada-controller-manager`` and ``karmada-scheduler``. Karmada's CRDs come from
the same snapshot (``charts/karmada/_crds/bases``). Members are joined in Push mode the way
``karmadactl join`` writes them: namespace ``karmada-cluster``, Secrets ``<name>`` (token,
caBundle) and ``<name>-impersonator``, and a Cluster object. Member apiservers have no
kubelet or controller-manager: tests create EndpointSlices themselves, as the Kubernetes
endpointslice controller would.

    with ControlPlane(("karmada", "member1", "member2"), aggregators=("karmada",)) as cp:
        with Karmada(cp, members=("member1", "member2")) as km:
            km.apply("/apis/policy.karmada.io/v1alpha1/...", obj)
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import yaml

from tests.controlplane import (
    ControlPlane,
    ControlPlaneError,
    MissingBinaryError,
    _spawn,
    _stop_process,
    _tail,
    cache_bin_dir,
    free_port,
)

BUILD_HINT = "run scripts/build-karmada.sh (it builds Karmada from ../shared/third_party)"
COMPONENTS = ("aggregated-apiserver", "controller-manager", "scheduler", "webhook")
CLUSTER_API = "/apis/cluster.karmada.io/v1alpha1/clusters"
POLICY = "/apis/policy.karmada.io/v1alpha1"
MCS_ALPHA = "/apis/multicluster.x-k8s.io/v1alpha1"


def karmada_source() -> Path:
    """The unpacked Karmada source tree that scripts/build-karmada.sh left beside its binaries."""
    bin_dir = cache_bin_dir()
    for c in COMPONENTS:
        if not (bin_dir / f"karmada-{c}").is_file():
            raise MissingBinaryError(f"karmada-{c} not found in {bin_dir}: {BUILD_HINT}")
    stamp = bin_dir / "karmada.src"
    src = Path(stamp.read_text().strip()) if stamp.is_file() else Path()
    if not (src / "charts" / "karmada" / "_crds").is_dir():
        raise MissingBinaryError(f"Karmada source tree not found ({stamp}): {BUILD_HINT}")
    return src


def mcs_crds() -> list[dict[str, Any]]:
    """Karmada's own ServiceExport/ServiceImport CRDs (v1alpha1 only)."""
    folder = karmada_source() / "charts" / "karmada" / "_crds" / "bases" / "multicluster"
    return [yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))]


def propagation_policy(
    name: str, selectors: list[tuple[str, str]], clusters: list[str], resource: str = "serve"
) -> dict[str, Any]:
    """A PropagationPolicy in `default` placing `resource` of each (apiVersion, kind)."""
    return {
        "apiVersion": "policy.karmada.io/v1alpha1",
        "kind": "PropagationPolicy",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "resourceSelectors": [
                {"apiVersion": api, "kind": kind, "name": resource} for api, kind in selectors
            ],
            "placement": {"clusterAffinity": {"clusterNames": clusters}},
        },
    }


def mcs_crd_policies() -> list[tuple[str, dict[str, Any]]]:
    """The guide's prerequisite: Karmada's MCS CRDs propagated to member1 and member2."""
    out = []
    for crd in mcs_crds():
        name = crd["metadata"]["name"]
        policy_name = name.split(".")[0][:-1] + "-policy"  # serviceexport-policy, ...
        out.append(
            (
                f"{POLICY}/clusterpropagationpolicies/{policy_name}",
                {
                    "apiVersion": "policy.karmada.io/v1alpha1",
                    "kind": "ClusterPropagationPolicy",
                    "metadata": {"name": policy_name},
                    "spec": {
                        "resourceSelectors": [
                            {
                                "apiVersion": "apiextensions.k8s.io/v1",
                                "kind": "CustomResourceDefinition",
                                "name": name,
                            }
                        ],
                        "placement": {"clusterAffinity": {"clusterNames": ["member1", "member2"]}},
                    },
                },
            )
        )
    return out


class Karmada:
    """Karmada's control-plane binaries over the ``control`` apiserver of ``cp``."""

    def __init__(
        self,
        cp: ControlPlane,
        *,
        control: str = "karmada",
        members: Sequence[str] = ("member1", "member2"),
        feature_gates: str = "",
    ) -> None:
        self.cp = cp
        self.control = control
        self.members = list(members)
        self.feature_gates = feature_gates
        self.src = karmada_source()
        self.dir = cp.workdir / "karmada"
        self.kubeconfig = cp.context_kubeconfig(control)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- requests ----------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.cp.request(self.control, method, path, body, **kw)

    def apply(self, path: str, obj: dict[str, Any], cluster: str | None = None) -> Any:
        """Server-side apply of ``obj`` at ``path`` (in the karmada-apiserver by default)."""
        status, body = self.cp.request(
            cluster or self.control,
            "PATCH",
            f"{path}?fieldManager=tests&force=true",
            obj,
            content_type="application/apply-patch+yaml",
        )
        if status not in (200, 201):
            raise ControlPlaneError(f"apply {path}: {status} {body}")
        return body

    def log(self, component: str) -> Path:
        return self.dir / f"{component}.log"

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self._install_crds()
        self._start_aggregated_apiserver()
        self._start_webhook()
        self._spawn(
            "controller-manager",
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--metrics-bind-address=0",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}",
            "--cluster-status-update-frequency=1s",
            *([f"--feature-gates={self.feature_gates}"] if self.feature_gates else []),
        )
        self._spawn(
            "scheduler",
            f"--kubeconfig={self.kubeconfig}",
            "--leader-elect=false",
            "--metrics-bind-address=0",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}",
        )
        for m in self.members:
            self.join(m)
        self.wait(
            "every member Ready in Karmada",
            lambda: all(self.cluster_ready(m) for m in self.members),
            timeout=90,
        )

    def stop(self) -> None:
        for proc in self.procs.values():
            _stop_process(proc, timeout=10)
        self.procs.clear()

    def check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise ControlPlaneError(
                    f"karmada-{name} exited with {proc.returncode}; last lines of "
                    f"{self.log(name)}:\n{_tail(self.log(name))}"
                )

    def wait(self, what: str, check: Any, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            self.check_alive()
            last = check()
            if last:
                return last
            time.sleep(0.2)
        raise ControlPlaneError(f"timed out after {timeout:.0f}s waiting for {what}; last {last!r}")

    # -- pieces ----------------------------------------------------------------

    def _spawn(self, component: str, *args: str) -> None:
        binary = cache_bin_dir() / f"karmada-{component}"
        self.procs[component] = _spawn([str(binary), *args], self.log(component))

    def _install_crds(self) -> None:
        bases = self.src / "charts" / "karmada" / "_crds" / "bases"
        names = []
        for path in sorted(bases.rglob("*.yaml")):
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    name = doc["metadata"]["name"]
                    self.apply(
                        f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", doc
                    )
                    names.append(name)

        def established() -> bool:
            for name in names:
                _, crd = self.request(
                    "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
                )
                conds = (crd.get("status") or {}).get("conditions") or []
                if not any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                    return False
            return True

        self.wait(f"{len(names)} Karmada CRDs established", established)

    def _namespace(self, name: str, cluster: str | None = None) -> None:
        self.apply(
            f"/api/v1/namespaces/{name}",
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
            cluster,
        )

    def _serving_cert(self, name: str, dns: str) -> tuple[Path, Path]:
        """A serving cert from the control plane's CA for `dns` (the aggregator checks the
        name <service>.<namespace>.svc) and 127.0.0.1."""
        pki = self.cp.workdir / "pki"
        key, csr, crt, ext = (self.dir / f"{name}.{x}" for x in ("key", "csr", "crt", "ext"))
        ext.write_text(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
            f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{dns},DNS:localhost,IP:127.0.0.1\n"
        )
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for args in (
            ["req", "-new", *ec, "-keyout", key, "-out", csr, "-subj", f"/CN={dns}"],
            ["x509", "-req", "-in", csr, "-CA", pki / "ca.crt", "-CAkey", pki / "ca.key",
             "-CAcreateserial", "-out", crt, "-days", "365", "-extfile", ext],
        ):  # fmt: skip
            subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)
        return crt, key

    def _start_aggregated_apiserver(self) -> None:
        port = free_port()
        crt, key = self._serving_cert(
            "aggregated-apiserver", "karmada-aggregated-apiserver.karmada-system.svc"
        )
        self._spawn(
            "aggregated-apiserver",
            f"--kubeconfig={self.kubeconfig}",
            f"--authentication-kubeconfig={self.kubeconfig}",
            f"--authorization-kubeconfig={self.kubeconfig}",
            f"--etcd-servers={self.cp.etcd_endpoint}",
            f"--etcd-prefix=/{self.control}-aggregated",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--tls-cert-file={crt}",
            f"--tls-private-key-file={key}",
            "--audit-log-maxage=0",
        )
        self._namespace("karmada-system")
        self.apply(
            "/api/v1/namespaces/karmada-system/services/karmada-aggregated-apiserver",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": "karmada-aggregated-apiserver", "namespace": "karmada-system"},
                "spec": {"type": "ExternalName", "externalName": "localhost"},
            },
        )
        ca = base64.b64encode(self.cp.ca_path.read_bytes()).decode()
        self.apply(
            "/apis/apiregistration.k8s.io/v1/apiservices/v1alpha1.cluster.karmada.io",
            {
                "apiVersion": "apiregistration.k8s.io/v1",
                "kind": "APIService",
                "metadata": {"name": "v1alpha1.cluster.karmada.io"},
                "spec": {
                    "group": "cluster.karmada.io",
                    "version": "v1alpha1",
                    "groupPriorityMinimum": 2000,
                    "versionPriority": 10,
                    "caBundle": ca,
                    "service": {
                        "namespace": "karmada-system",
                        "name": "karmada-aggregated-apiserver",
                        "port": port,
                    },
                },
            },
        )
        self.wait(
            "cluster.karmada.io served through the aggregation layer",
            lambda: self.request("GET", CLUSTER_API)[0] == 200,
        )

    def _start_webhook(self) -> None:
        port = free_port()
        pki = self.cp.workdir / "pki"
        certs = self.dir / "webhook-certs"
        certs.mkdir(parents=True, exist_ok=True)
        shutil.copy(pki / "serving.crt", certs / "tls.crt")
        shutil.copy(pki / "serving.key", certs / "tls.key")
        self._spawn(
            "webhook",
            f"--kubeconfig={self.kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={certs}",
            "--metrics-bind-address=0",
            f"--health-probe-bind-address=127.0.0.1:{free_port()}",
        )
        ca = base64.b64encode(self.cp.ca_path.read_bytes()).decode()
        text = (self.src / "artifacts" / "deploy" / "webhook-configuration.yaml").read_text()
        text = re.sub(
            r"https://karmada-webhook\.karmada-system\.svc:443/", f"https://127.0.0.1:{port}/", text
        ).replace("{{caBundle}}", ca)
        for doc in yaml.safe_load_all(text):
            if not doc:
                continue
            plural = doc["kind"].lower() + "s"
            self.apply(
                f"/apis/admissionregistration.k8s.io/v1/{plural}/{doc['metadata']['name']}", doc
            )
        self.wait(
            "karmada-webhook serving",
            lambda: _https_up(port),
        )

    def join(self, member: str) -> None:
        """Push mode, as `karmadactl join` writes it (admin token as both secrets' token)."""
        self._namespace("karmada-cluster")
        ca = base64.b64encode(self.cp.ca_path.read_bytes()).decode()
        token = base64.b64encode(self.cp.admin_token.encode()).decode()
        for name, data in (
            (member, {"token": token, "caBundle": ca}),
            (f"{member}-impersonator", {"token": token}),
        ):
            self.apply(
                f"/api/v1/namespaces/karmada-cluster/secrets/{name}",
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": name, "namespace": "karmada-cluster"},
                    "data": data,
                },
            )
        _, ks = self.cp.request(member, "GET", "/api/v1/namespaces/kube-system")
        status, body = self.request(
            "POST",
            CLUSTER_API,
            {
                "apiVersion": "cluster.karmada.io/v1alpha1",
                "kind": "Cluster",
                "metadata": {"name": member},
                "spec": {
                    "id": ks["metadata"]["uid"],
                    "syncMode": "Push",
                    "apiEndpoint": self.cp.servers[member],
                    "secretRef": {"namespace": "karmada-cluster", "name": member},
                    "impersonatorSecretRef": {
                        "namespace": "karmada-cluster",
                        "name": f"{member}-impersonator",
                    },
                },
            },
        )
        if status not in (201, 409):
            raise ControlPlaneError(f"join {member}: {status} {body}")

    def cluster_ready(self, member: str) -> bool:
        status, body = self.request("GET", f"{CLUSTER_API}/{member}")
        conds = ((body or {}).get("status") or {}).get("conditions") or [] if status == 200 else []
        return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)

    def api_enabled(self, member: str, group_version: str, kind: str) -> bool:
        """The member's Cluster status lists the API (the scheduler places only on those)."""
        _, body = self.request("GET", f"{CLUSTER_API}/{member}")
        for e in ((body or {}).get("status") or {}).get("apiEnablements") or []:
            if e.get("groupVersion") == group_version and any(
                r.get("kind") == kind for r in e.get("resources") or []
            ):
                return True
        return False


def _https_up(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, sort_keys=True)
