"""The seed article on a real Karmada (v1.18.2, Karmada's own binaries: tests/karmada.py).

Karmada's multi-cluster service guide, step by step, in the karmada-apiserver: the MCS CRDs
propagated to the members by ClusterPropagationPolicies (Karmada's own v1alpha1-only CRDs);
Deployment + Service `serve` with PropagationPolicy `mcs-workload` to member1; ServiceExport
`serve` with `serve-export-policy` to member1. `clusterset controller --karmada-kubeconfig`
(reaching the members through Karmada's cluster proxy, as a ServiceAccount of the
karmada-apiserver that the members authorize by the chart's member RBAC) and member2's
`clusterset dns` then answer `dig serve.default.svc.clusterset.local` in member2, with no
ServiceImport and no IP written by hand. Then the article's manual step: a ServiceImport
`serve` with `serve-import-policy` to member2, whose `spec.ips` clusterset fills with the
ClusterIP of Karmada's own `derived-serve`, and which then stays stable.

The members have no kubelet: member1's EndpointSlice is written by the test, labelled as the
Kubernetes endpointslice controller labels its own. MultiClusterService is on
(`--feature-gates=MultiClusterService=true`, as hack/local-up-karmada.sh runs it).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterset.model.ids import ServiceKey
from clusterset.reconcile.desired import derived_name
from tests.conftest import ROOT, eventually
from tests.controlplane import ControlPlane, free_port
from tests.integration.servers import need, wait_answering
from tests.integration.test_deploy import helm_binary
from tests.integration.test_kube import process
from tests.integration.test_kube_faults import Controller, controller
from tests.karmada import (
    CLUSTER_API,
    MCS_ALPHA,
    POLICY,
    Karmada,
    mcs_crd_policies,
    mcs_crds,
    propagation_policy,
)

pytestmark = [pytest.mark.kube, pytest.mark.timeout(600)]

NAME = "serve"
SA_NS = "clusterset-system"
SA = "clusterset-controller"
# Who Karmada's cluster proxy says is calling, in the members (it impersonates the caller).
CALLER = f"system:serviceaccount:{SA_NS}:{SA}"


def _article() -> list[tuple[str, dict[str, Any]]]:
    """The guide's objects, as it writes them (path in the karmada-apiserver, object)."""
    deploy = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": NAME}},
            "template": {
                "metadata": {"labels": {"app": NAME}},
                "spec": {
                    "containers": [
                        {
                            "name": NAME,
                            "image": "jeremyot/serve:0a40de8",
                            "args": ["--message='hello from cluster member1'"],
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": NAME}},
    }
    workload_policy = propagation_policy(
        "mcs-workload",
        [("apps/v1", "Deployment"), ("v1", "Service")],
        ["member1"],
    )
    export = {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {"name": NAME, "namespace": "default"},
    }
    export_policy = propagation_policy(
        "serve-export-policy", [("multicluster.x-k8s.io/v1alpha1", "ServiceExport")], ["member1"]
    )
    return [
        ("/apis/apps/v1/namespaces/default/deployments/serve", deploy),
        ("/api/v1/namespaces/default/services/serve", service),
        (f"{POLICY}/namespaces/default/propagationpolicies/mcs-workload", workload_policy),
        (f"{MCS_ALPHA}/namespaces/default/serviceexports/serve", export),
        (f"{POLICY}/namespaces/default/propagationpolicies/serve-export-policy", export_policy),
    ]


def _manual_import() -> list[tuple[str, dict[str, Any]]]:
    imp = {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceImport",
        "metadata": {"name": NAME, "namespace": "default"},
        "spec": {"type": "ClusterSetIP", "ports": [{"port": 80, "protocol": "TCP"}]},
    }
    policy = propagation_policy(
        "serve-import-policy", [("multicluster.x-k8s.io/v1alpha1", "ServiceImport")], ["member2"]
    )
    return [
        (f"{MCS_ALPHA}/namespaces/default/serviceimports/serve", imp),
        (f"{POLICY}/namespaces/default/propagationpolicies/serve-import-policy", policy),
    ]


def _helm_template(*values: str) -> list[dict[str, Any]]:
    out = subprocess.run(
        [
            str(helm_binary()),
            "template",
            "clusterset",
            str(ROOT / "deploy" / "chart" / "clusterset"),
            "--namespace",
            SA_NS,
            *(a for v in values for a in ("--set", v)),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _apply_all(cp: ControlPlane, cluster: str, docs: list[dict[str, Any]]) -> None:
    for doc in docs:
        kind, meta = doc["kind"], doc["metadata"]
        ns = meta.get("namespace")
        plural = {
            "ClusterRole": "/apis/rbac.authorization.k8s.io/v1/clusterroles",
            "ClusterRoleBinding": "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
            "Role": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/roles",
            "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1/namespaces/{ns}/rolebindings",
            "ServiceAccount": f"/api/v1/namespaces/{ns}/serviceaccounts",
            "ValidatingWebhookConfiguration": (
                "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"
            ),
        }[kind]
        if ns:
            _ns(cp, cluster, ns)
        status, body = cp.request(
            cluster,
            "PATCH",
            f"{plural}/{meta['name']}?fieldManager=tests&force=true",
            doc,
            content_type="application/apply-patch+yaml",
        )
        assert status in (200, 201), (cluster, kind, body)


def _ns(cp: ControlPlane, cluster: str, ns: str) -> None:
    status, body = cp.request(
        cluster,
        "PATCH",
        f"/api/v1/namespaces/{ns}?fieldManager=tests&force=true",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        content_type="application/apply-patch+yaml",
    )
    assert status in (200, 201), body


def _controller_kubeconfig(cp: ControlPlane, km: Karmada) -> Path:
    """A kubeconfig for the karmada-apiserver as the controller's ServiceAccount there."""
    _ns(cp, km.control, SA_NS)
    status, body = cp.request(
        km.control,
        "POST",
        f"/api/v1/namespaces/{SA_NS}/serviceaccounts",
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": SA}},
    )
    assert status in (201, 409), body
    status, body = cp.request(
        km.control,
        "POST",
        f"/api/v1/namespaces/{SA_NS}/serviceaccounts/{SA}/token",
        {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    assert status == 201, body
    return cp.context_kubeconfig(km.control, token=body["status"]["token"])


@pytest.fixture(scope="module")
def karmada() -> Iterator[tuple[ControlPlane, Karmada]]:
    with (
        # member3: joined and unjoined while the controller runs (test_membership_follows...).
        ControlPlane(("karmada", "member1", "member2", "member3"), aggregators=("karmada",)) as cp,
        Karmada(cp, members=("member1", "member2"), feature_gates="MultiClusterService=true") as km,
    ):
        for path, obj in mcs_crd_policies():
            km.apply(path, obj)
        for m in km.members:
            km.wait(
                f"Karmada's MCS CRDs in {m}",
                lambda m=m: cp.request(m, "GET", MCS_ALPHA)[0] == 200,
                timeout=90,
            )
            km.wait(
                f"{m}'s Cluster lists ServiceExport",
                lambda m=m: km.api_enabled(m, "multicluster.x-k8s.io/v1alpha1", "ServiceImport"),
                timeout=90,
            )
        yield cp, km


def _member_rbac(*values: str) -> list[dict[str, Any]]:
    """Member side: the chart's member RBAC, naming the caller Karmada's proxy impersonates."""
    return _helm_template(
        "dns.enabled=false",
        "controller.enabled=false",
        "memberRBAC.enabled=true",
        "memberRBAC.serviceAccount.create=false",
        "memberRBAC.leaderLease.enabled=false",
        "memberRBAC.subjects[0].kind=User",
        f"memberRBAC.subjects[0].name={CALLER}",
        "sourceLeases.namespace=default",
        *values,
    )


@pytest.fixture(scope="module")
def deployed(
    karmada: tuple[ControlPlane, Karmada], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """clusterset as the chart deploys it beside Karmada: the controller as a ServiceAccount
    of the karmada-apiserver (its RBAC there: Karmada's cluster-proxy role and what the hub
    reads and writes in Karmada), members authorizing that caller by the chart's member RBAC,
    and member2's DNS server with the chart's DNS RBAC."""
    cp, km = karmada
    tmp = tmp_path_factory.mktemp("karmada-clusterset")
    # The pre-flight webhook, registered by the chart in the karmada-apiserver and in each
    # member (its url: where they reach the hub), with the apiservers' serving certificate.
    webhook = free_port()
    for m in km.members:
        admission = ("admission.enabled=true", f"admission.url=https://127.0.0.1:{webhook}")
        _apply_all(cp, m, _member_rbac(*admission, f"admission.clusterName={m}"))
    certs = tmp / "webhook-certs"
    certs.mkdir()
    pki = cp.workdir / "pki"
    for src, dst in (("serving.crt", "tls.crt"), ("serving.key", "tls.key"), ("ca.crt", "ca.crt")):
        shutil.copy(pki / src, certs / dst)
    # Karmada side: what the controller may do in the karmada-apiserver, and the webhook.
    _apply_all(
        cp,
        km.control,
        _helm_template(
            "dns.enabled=false",
            "controller.enabled=false",
            "karmadaRBAC.enabled=true",
            "karmadaRBAC.subjects[0].kind=ServiceAccount",
            f"karmadaRBAC.subjects[0].name={SA}",
            f"karmadaRBAC.subjects[0].namespace={SA_NS}",
            "admission.enabled=true",
            f"admission.url=https://127.0.0.1:{webhook}",
        ),
    )
    kubeconfig = _controller_kubeconfig(cp, km)
    log = tmp / "controller.log"
    metrics = free_port()
    with (
        controller(
            log,
            "--karmada-kubeconfig",
            str(kubeconfig),
            "--lease-namespace",
            SA_NS,
            "--source-lease-namespace",
            "default",
            "--metrics-listen",
            f"127.0.0.1:{metrics}",
            "--webhook-listen",
            f"127.0.0.1:{webhook}",
            "--webhook-cert-dir",
            str(certs),
            "--webhook-config",
            "clusterset-preflight",
        ) as ctl,
        member2_dns(cp) as (port, dns_proc),
    ):
        yield {
            "ctl": ctl,
            "dns_port": port,
            "dns": dns_proc,
            "log": log,
            "metrics": metrics,
            "admission": admission,
        }


@contextlib.contextmanager
def member2_dns(cp: ControlPlane) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """member2's `clusterset dns` on member kubeconfigs (port, process), once it answers."""
    port = free_port()
    with process(
        "dns",
        "--kubeconfig",
        str(cp.kubeconfig_path),
        "--context",
        "member2",
        "--listen",
        f"127.0.0.1:{port}",
        "--source-lease-namespace",
        "default",
    ) as dns_proc:
        wait_answering(port, timeout=60)
        yield port, dns_proc


def dig(port: int, name: str) -> list[str]:
    out = subprocess.run(
        [need("dig"), "@127.0.0.1", "-p", str(port), "+short", "+time=1", "+tries=1", name, "A"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return [line for line in out.split() if line and line[0].isdigit()]


def _get(cp: ControlPlane, cluster: str, path: str) -> Any:
    status, body = cp.request(cluster, "GET", path)
    return body if status == 200 else None


def _absent(cp: ControlPlane, cluster: str, path: str) -> bool:
    return _get(cp, cluster, path) is None


def _member1_endpoints(cp: ControlPlane) -> None:
    """What member1's endpointslice controller would write for the Deployment's one pod."""
    cp.request(
        "member1",
        "PATCH",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/serve-7xk2p"
        "?fieldManager=endpointslice-controller&force=true",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "serve-7xk2p",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": NAME,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
        },
        content_type="application/apply-patch+yaml",
    )


def test_article_auto_flow_answers_in_member2(
    karmada: tuple[ControlPlane, Karmada], deployed: dict[str, Any]
) -> None:
    """Steps 1 and 2 of the guide, nothing else: member2's DNS answers the ClusterSetIP."""
    cp, km = karmada
    ctl: Controller = deployed["ctl"]
    started = time.monotonic()
    for path, obj in _article():
        km.apply(path, obj)
    eventually(
        "Service serve propagated to member1",
        lambda: _get(cp, "member1", "/api/v1/namespaces/default/services/serve"),
        timeout=60,
    )
    _member1_endpoints(cp)

    def answered() -> list[str] | None:
        ctl.check_alive()
        km.check_alive()
        imp = _get(cp, "member2", f"{MCS_ALPHA}/namespaces/default/serviceimports/serve")
        ips = ((imp or {}).get("spec") or {}).get("ips")
        got = dig(deployed["dns_port"], "serve.default.svc.clusterset.local")
        return got if ips and got == ips else None

    ips = eventually("dig serve.default.svc.clusterset.local from member2", answered, timeout=120)
    elapsed = time.monotonic() - started
    print(f"\nkubectl apply of the article's objects -> first correct dig: {elapsed:.1f} s")
    # The answer is member2's own ClusterIP of the derived Service (a data path there).
    derived = _get(cp, "member2", "/api/v1/namespaces/default/services")["items"]
    ours = [s for s in derived if (s["metadata"].get("labels") or {}).get("clusterset.io/managed")]
    assert [s["spec"]["clusterIP"] for s in ours] == ips
    # Exported: Valid and Ready on member1's ServiceExport (written through Karmada's proxy).
    export = _get(cp, "member1", f"{MCS_ALPHA}/namespaces/default/serviceexports/serve")
    conds = {c["type"]: c["status"] for c in (export.get("status") or {}).get("conditions") or []}
    assert conds.get("Valid") == "True", conds
    assert "403" not in ctl.output() and "Forbidden" not in ctl.output(), ctl.output()[-3000:]


def test_members_keep_karmadas_v1alpha1_crds(karmada: tuple[ControlPlane, Karmada]) -> None:
    """clusterset speaks v1alpha1 where that is all a member serves, and never touches the
    CRD Karmada propagates (no v1beta1 in storedVersions, no clusterset field manager)."""
    cp, km = karmada
    for m in km.members:
        for crd in ("serviceimports", "serviceexports"):
            body = _get(
                cp,
                m,
                f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{crd}.multicluster.x-k8s.io",
            )
            assert [v["name"] for v in body["spec"]["versions"]] == ["v1alpha1"]
            assert body["status"]["storedVersions"] == ["v1alpha1"]
            managers = {f.get("manager") for f in body["metadata"].get("managedFields") or []}
            assert "clusterset" not in managers, managers


@contextlib.contextmanager
def _diagnosed(ctl: Controller) -> Iterator[None]:
    """On failure, print the controller's log tail and its Python stacks (py-spy, if there):
    a hub that says nothing is told apart from one stuck in an await."""
    try:
        yield
    except BaseException:
        print(f"\n--- controller log (tail) ---\n{ctl.output()[-6000:]}")
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if ctl.proc.poll() is None and Path(spy).exists():
            dump = subprocess.run(
                [spy, "dump", "--pid", str(ctl.proc.pid)],
                capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            print(f"--- py-spy dump ---\n{dump.stdout}{dump.stderr}")
        raise


def _versions(cp: ControlPlane, cluster: str, path: str, seconds: float) -> list[str]:
    """Every resourceVersion the object goes through in `seconds` (a real watch)."""
    obj = _get(cp, cluster, path)
    assert obj is not None
    rv = obj["metadata"]["resourceVersion"]
    name = obj["metadata"]["name"]
    folder = path.rsplit("/", 1)[0]
    url = (
        f"{cp.servers[cluster]}{folder}?watch=1&resourceVersion={rv}"
        f"&fieldSelector=metadata.name%3D{name}&timeoutSeconds={int(seconds)}"
    )
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {cp.admin_token}"})
    seen = []
    with urllib.request.urlopen(req, timeout=seconds + 30, context=cp.ssl_context()) as r:
        for line in r:
            event = json.loads(line)
            seen.append(f"{event['type']} {event['object']['metadata'].get('resourceVersion')}")
    return seen


def test_article_manual_flow_karmadas_import_filled_and_stable(
    karmada: tuple[ControlPlane, Karmada], deployed: dict[str, Any]
) -> None:
    """Step 2's ServiceImport, propagated by Karmada to member2: Karmada owns it; clusterset
    fills spec.ips with the ClusterIP of Karmada's derived-serve, makes no second derived
    Service, and the import is not fought over (it was 273 versions in 60 s)."""
    cp, km = karmada
    ctl: Controller = deployed["ctl"]
    for path, obj in _manual_import():
        km.apply(path, obj)
    imp_path = f"{MCS_ALPHA}/namespaces/default/serviceimports/serve"

    def settled() -> tuple[str, dict[str, Any]] | None:
        ctl.check_alive()
        km.check_alive()
        imp = _get(cp, "member2", imp_path) or {}
        labels = (imp.get("metadata") or {}).get("labels") or {}
        derived = _get(cp, "member2", "/api/v1/namespaces/default/services/derived-serve")
        if labels.get("karmada.io/managed") != "true" or not derived:
            return None
        ip = derived["spec"]["clusterIP"]
        ips = (imp.get("spec") or {}).get("ips")
        got = dig(deployed["dns_port"], "serve.default.svc.clusterset.local")
        return (ip, imp) if ips == [ip] and got == [ip] else None

    with _diagnosed(ctl):
        ip, imp = eventually(
            "Karmada's import in member2 filled with derived-serve's IP", settled, 120
        )
    assert "clusterset.io/managed" not in (imp["metadata"].get("labels") or {})
    eventually(
        "no second derived Service in member2",
        lambda: (
            not [
                s
                for s in _get(cp, "member2", "/api/v1/namespaces/default/services")["items"]
                if (s["metadata"].get("labels") or {}).get("clusterset.io/managed")
            ]
        ),
        timeout=30,
    )
    # kube-proxy's view: every slice feeding derived-serve is Karmada's imported-*; ours feed
    # DNS only (no endpoint reaches the data path twice).
    # Karmada dispatches them after derived-serve, on its own time.
    slices = eventually(
        "Karmada's imported-* slices for derived-serve",
        lambda: _get(
            cp,
            "member2",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
            "?labelSelector=kubernetes.io%2Fservice-name%3Dderived-serve",
        )["items"],
        timeout=30,
    )
    assert all(not (s["metadata"]["labels"]).get("clusterset.io/managed") for s in slices)
    addresses = [a for s in slices for e in s["endpoints"] for a in e["addresses"]]
    assert addresses == ["10.244.1.5"]

    def ours_dns_only() -> bool:
        mcs = _get(
            cp,
            "member2",
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
            "?labelSelector=multicluster.kubernetes.io%2Fservice-name%3Dserve",
        )["items"]
        return bool(mcs) and all(
            "kubernetes.io/service-name" not in s["metadata"]["labels"] for s in mcs
        )

    eventually("clusterset's MCS slices in member2 feed DNS only", ours_dns_only, timeout=30)
    # Stable: count the member object's versions over 60 s.
    seen = _versions(cp, "member2", imp_path, 60)
    print(f"\nmember2 ServiceImport versions in 60 s: {len(seen)} {seen}")
    assert len(seen) <= 3, seen
    assert dig(deployed["dns_port"], "serve.default.svc.clusterset.local") == [ip]


def _warned(cp: ControlPlane, method: str, path: str, obj: dict[str, Any]) -> list[str]:
    """Send `obj` to the karmada-apiserver as kubectl would: the Warning headers it gets."""
    req = urllib.request.Request(
        cp.servers["karmada"] + path,
        data=json.dumps(obj).encode(),
        method=method,
        headers={"Authorization": f"Bearer {cp.admin_token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30, context=cp.ssl_context()) as r:
        assert r.status in (200, 201), r.status
        # RFC 7234 form, as the apiserver sends them: 299 - "text"
        return [
            w.removeprefix('299 - "').removesuffix('"') for w in r.headers.get_all("Warning") or []
        ]


def test_conflicting_export_applied_to_karmada_warns_its_caller(
    karmada: tuple[ControlPlane, Karmada], deployed: dict[str, Any], tmp_path: Path
) -> None:
    """Issue 21 item 2: the user applies to the karmada-apiserver; the finding of the
    pre-flight check in the member Karmada places the export in reaches them (kubectl's
    "Warning:"): for the ServiceExport template once a policy places it, and for the policy
    that places an export already applied (the guide's order)."""
    cp, km = karmada
    ctl: Controller = deployed["ctl"]
    _export(cp, "member1", "web")  # the older export: web on port 80, in member1 itself
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"ports": [{"port": 8080, "protocol": "TCP"}]},
    }
    km.apply("/api/v1/namespaces/default/services/web", svc)
    km.apply(
        f"{POLICY}/namespaces/default/propagationpolicies/web-service",
        propagation_policy("web-service", [("v1", "Service")], ["member2"], resource="web"),
    )
    eventually(
        "Karmada's web (port 8080) in member2",
        lambda: _get(cp, "member2", "/api/v1/namespaces/default/services/web"),
        timeout=60,
    )
    export = {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {"name": "web", "namespace": "default"},
    }
    exports = f"{MCS_ALPHA}/namespaces/default/serviceexports"
    with _diagnosed(ctl):
        # No policy places it yet: said, not guessed (a dry run until the webhook answers).
        eventually(
            "the webhook's answer in the karmada-apiserver",
            lambda: _warned(cp, "POST", f"{exports}?dryRun=All", export),
            timeout=30,
        )
        warnings = _warned(cp, "POST", exports, export)
        assert warnings == [
            "clusterset: no PropagationPolicy or ClusterPropagationPolicy selects ServiceExport "
            "default/web yet, so Karmada does not propagate it; the pre-flight check runs when a "
            "policy naming it is applied"
        ], warnings
        # Its policy is what exports it: the finding in member2 comes with the policy.
        policy = propagation_policy(
            "web-export",
            [("multicluster.x-k8s.io/v1alpha1", "ServiceExport")],
            ["member2"],
            resource="web",
        )
        warnings = eventually(
            "the policy's warning (the webhook sees the policies and member2's Service)",
            lambda: (
                _warned(
                    cp,
                    "POST",
                    f"{POLICY}/namespaces/default/propagationpolicies?dryRun=All",
                    policy,
                )
                or None
            ),
            timeout=30,
        )
        text = " ".join(warnings)
        assert "default/web in member2 would report Conflict (PortConflict)" in text, warnings
        assert "the oldest export, in member1, wins" in text, warnings
        # `clusterset check` says the same before anything is applied: the policy in the file.
        proposal = tmp_path / "web.yaml"
        proposal.write_text(yaml.safe_dump_all([export, policy]))
        kubeconfig = cp.context_kubeconfig(km.control)
        checked = subprocess.run(
            [sys.executable, "-m", "clusterset", "check", str(proposal),
             "--karmada-kubeconfig", str(kubeconfig)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert checked.returncode == 1, checked
        assert checked.stdout.startswith(
            "Karmada places ServiceExport default/web in member2 (PropagationPolicy web-export)"
        ), checked.stdout
        assert "member2: Conflict=True PortConflict" in checked.stdout, checked.stdout
        _warned(cp, "POST", f"{POLICY}/namespaces/default/propagationpolicies", policy)

        # The template again (an UPDATE): placed by its ResourceBinding or the policy now.
        def edited() -> list[str] | None:
            current = _get(cp, km.control, f"{exports}/web")
            current["metadata"].setdefault("labels", {})["edited"] = str(time.time())
            try:
                warnings = _warned(cp, "PUT", f"{exports}/web", current)
            except urllib.error.HTTPError as err:
                if err.code == 409:  # Karmada's detector labelled it meanwhile: again
                    return None
                raise
            return [w for w in warnings if "PortConflict" in w] or None

        warnings = eventually("the template's warning", edited, timeout=30)
        assert any("default/web in member2 would report Conflict" in w for w in warnings), warnings
    for path in (
        f"{exports}/web",
        f"{POLICY}/namespaces/default/propagationpolicies/web-export",
        f"{POLICY}/namespaces/default/propagationpolicies/web-service",
        "/api/v1/namespaces/default/services/web",
    ):
        cp.request(km.control, "DELETE", path)
    for path in (
        f"{MCS_ALPHA}/namespaces/default/serviceexports/web",
        "/api/v1/namespaces/default/services/web",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/web-1",
    ):
        cp.request("member1", "DELETE", path)


def test_multiclusterservice_dispatch_is_not_member2s_own(
    karmada: tuple[ControlPlane, Karmada], deployed: dict[str, Any]
) -> None:
    """A MultiClusterService (CrossCluster) for serve dispatches member1's endpoints into
    member2 as slices of member2's propagated Service serve. With the export in member2 too,
    member2 exports no endpoints: nothing is re-exported with source-cluster member2."""
    cp, km = karmada
    km.apply(
        "/apis/networking.karmada.io/v1alpha1/namespaces/default/multiclusterservices/serve",
        {
            "apiVersion": "networking.karmada.io/v1alpha1",
            "kind": "MultiClusterService",
            "metadata": {"name": NAME, "namespace": "default"},
            "spec": {
                "types": ["CrossCluster"],
                "providerClusters": [{"name": "member1"}],
                "consumerClusters": [{"name": "member2"}],
            },
        },
    )
    km.apply(
        f"{POLICY}/namespaces/default/propagationpolicies/serve-export-policy",
        propagation_policy(
            "serve-export-policy",
            [("multicluster.x-k8s.io/v1alpha1", "ServiceExport")],
            ["member1", "member2"],
        ),
    )

    def dispatched() -> list[dict[str, Any]]:
        km.check_alive()
        return [
            s
            for s in _get(
                cp,
                "member2",
                "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                "?labelSelector=kubernetes.io%2Fservice-name%3Dserve",
            )["items"]
            if "karmada"
            in (s["metadata"]["labels"] or {}).get("endpointslice.kubernetes.io/managed-by", "")
        ]

    eventually("Karmada dispatches member1's slice into member2", dispatched, timeout=90)
    eventually(
        "member2's export seen by clusterset (Valid)",
        lambda: any(
            c["type"] == "Valid"
            for c in (
                (_get(cp, "member2", f"{MCS_ALPHA}/namespaces/default/serviceexports/serve") or {})
                .get("status", {})
                .get("conditions")
                or []
            )
        ),
        timeout=60,
    )
    time.sleep(3)  # a few reconcile passes
    for m in km.members:
        from_member2 = _get(
            cp,
            m,
            "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
            "?labelSelector=multicluster.kubernetes.io%2Fsource-cluster%3Dmember2",
        )["items"]
        assert from_member2 == [], (m, from_member2)
    assert dig(deployed["dns_port"], "serve.default.svc.clusterset.local")


def _watch(cp: ControlPlane, cluster: str, folder: str, seconds: float, out: list[str]) -> None:
    """Every event of `folder` (a collection) in `seconds`, as 'TYPE name resourceVersion'."""
    _, listed = cp.request(cluster, "GET", folder)
    url = (
        f"{cp.servers[cluster]}{folder}?watch=1&resourceVersion="
        f"{listed['metadata']['resourceVersion']}&timeoutSeconds={int(seconds)}"
    )
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {cp.admin_token}"})
    with urllib.request.urlopen(req, timeout=seconds + 30, context=cp.ssl_context()) as r:
        for line in r:
            meta = json.loads(line)["object"]["metadata"]
            out.append(f"{json.loads(line)['type']} {meta['name']} {meta.get('resourceVersion')}")


def test_multiclusterservice_is_answered_under_clusterset_local_without_a_second_path(
    karmada: tuple[ControlPlane, Karmada], deployed: dict[str, Any]
) -> None:
    """Issue 21 item 3: Karmada's recommended path, a MultiClusterService (CrossCluster, echo
    from member1 to member2) and no ServiceExport at all: member2 answers
    echo.default.svc.clusterset.local with the ClusterIP of its own echo, into which Karmada
    dispatches member1's endpoints (the only data path: clusterset makes no derived Service
    and its MCS slices feed DNS only), and nothing is fought over for 60 s."""
    cp, km = karmada
    ctl: Controller = deployed["ctl"]
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "echo", "namespace": "default"},
        "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": "echo"}},
    }
    km.apply("/api/v1/namespaces/default/services/echo", svc)
    km.apply(
        f"{POLICY}/namespaces/default/propagationpolicies/echo",
        propagation_policy("echo", [("v1", "Service")], ["member1", "member2"], resource="echo"),
    )
    slices = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    eventually(
        "echo in member1", lambda: _get(cp, "member1", "/api/v1/namespaces/default/services/echo")
    )
    status, body = cp.request(
        "member1",
        "PATCH",
        f"{slices}/echo-4kq2d?fieldManager=endpointslice-controller&force=true",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": "echo-4kq2d",
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": "echo",
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": ["10.244.1.77"], "conditions": {"ready": True}}],
        },
        content_type="application/apply-patch+yaml",
    )
    assert status in (200, 201), body
    km.apply(
        "/apis/networking.karmada.io/v1alpha1/namespaces/default/multiclusterservices/echo",
        {
            "apiVersion": "networking.karmada.io/v1alpha1",
            "kind": "MultiClusterService",
            "metadata": {"name": "echo", "namespace": "default"},
            "spec": {
                "types": ["CrossCluster"],
                "providerClusters": [{"name": "member1"}],
                "consumerClusters": [{"name": "member2"}],
            },
        },
    )
    imp_path = f"{MCS_ALPHA}/namespaces/default/serviceimports/echo"

    def answered() -> str | None:
        ctl.check_alive()
        km.check_alive()
        own = _get(cp, "member2", "/api/v1/namespaces/default/services/echo")
        imp = _get(cp, "member2", imp_path)
        if not own or not imp:
            return None
        ip = str(own["spec"]["clusterIP"])
        got = dig(deployed["dns_port"], "echo.default.svc.clusterset.local")
        return ip if (imp.get("spec") or {}).get("ips") == [ip] and got == [ip] else None

    with _diagnosed(ctl):
        ip = eventually("member2 answers echo's ClusterSetIP: its own echo", answered, 120)
    labels = _get(cp, "member2", imp_path)["metadata"].get("labels") or {}
    assert labels.get("clusterset.io/managed") == "true"  # clusterset's import, not Karmada's

    def dispatched() -> list[list[str]]:
        return [
            e["addresses"]
            for s in _get(cp, "member2", slices)["items"]
            if (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == "echo"
            and "karmada"
            in s["metadata"]["labels"].get("endpointslice.kubernetes.io/managed-by", "")
            for e in s["endpoints"]
        ]

    got = eventually("Karmada dispatches member1's endpoint into member2", dispatched, 90)
    assert got == [["10.244.1.77"]], got
    in_member2 = _get(cp, "member2", slices)["items"]
    ours = [
        s for s in in_member2
        if (s["metadata"].get("labels") or {}).get("multicluster.kubernetes.io/service-name") == "echo"
    ]  # fmt: skip
    assert ours and all("kubernetes.io/service-name" not in s["metadata"]["labels"] for s in ours)
    derived = [
        s["metadata"]["name"]
        for s in _get(cp, "member2", "/api/v1/namespaces/default/services")["items"]
        if (s["metadata"].get("annotations") or {}).get("multicluster.kubernetes.io/service-name")
        == "echo"
        or s["metadata"]["name"] == derived_name(ServiceKey("default", "echo"))
    ]
    assert derived == [], derived  # no second data path
    # Nobody fights: every write in member2 over 60 s, to the import, the Services and slices.
    events: dict[str, list[str]] = {"imports": [], "services": [], "slices": []}
    watches = [
        threading.Thread(target=_watch, args=(cp, "member2", folder, 60, events[what]))
        for what, folder in (
            ("imports", f"{MCS_ALPHA}/namespaces/default/serviceimports"),
            ("services", "/api/v1/namespaces/default/services"),
            ("slices", slices),
        )
    ]
    for t in watches:
        t.start()
    for t in watches:
        t.join()
    echo = {w: [e for e in evs if "echo" in e.split()[1]] for w, evs in events.items()}
    managers = [
        (f["manager"], f.get("operation"), f.get("time"))
        for f in _get(
            cp, "member2", "/api/v1/namespaces/default/services/echo?showManagedFields=1"
        )["metadata"].get("managedFields", [])
    ]
    print(
        f"\nmember2 writes in 60 s beside the MultiClusterService: {echo}; echo's managers {managers}"
    )
    assert all(len(evs) <= 3 for evs in echo.values()), echo
    assert dig(deployed["dns_port"], "echo.default.svc.clusterset.local") == [ip]
    km.request(
        "DELETE",
        "/apis/networking.karmada.io/v1alpha1/namespaces/default/multiclusterservices/echo",
    )
    eventually("echo's import withdrawn from member2", lambda: _absent(cp, "member2", imp_path), 60)


def _own_slice(cp: ControlPlane, cluster: str, service: str, address: str, ready: bool) -> None:
    """What the cluster's endpointslice controller would write for one pod of `service`."""
    name = f"{service}-{cluster}"
    status, body = cp.request(
        cluster,
        "PATCH",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/"
        f"{name}?fieldManager=endpointslice-controller&force=true",
        {
            "apiVersion": "discovery.k8s.io/v1",
            "kind": "EndpointSlice",
            "metadata": {
                "name": name,
                "namespace": "default",
                "labels": {
                    "kubernetes.io/service-name": service,
                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                },
            },
            "addressType": "IPv4",
            "ports": [{"name": "", "port": 80, "protocol": "TCP"}],
            "endpoints": [{"addresses": [address], "conditions": {"ready": ready}}],
        },
        content_type="application/apply-patch+yaml",
    )
    assert status in (200, 201), body


def test_multiclusterservice_headless_answers_local_first_then_fails_over(
    karmada: tuple[ControlPlane, Karmada], deployed: dict[str, Any]
) -> None:
    """The answer policies work on the MultiClusterService path: a headless `hl` provided by
    member1 and member2 and consumed in member2, annotated clusterset.io/dns-policy:
    local-first, is answered in member2 with member2's own pod while it is ready, and with
    member1's (which Karmada also dispatches into member2) when it is not."""
    cp, km = karmada
    ctl: Controller = deployed["ctl"]
    km.apply(
        "/api/v1/namespaces/default/services/hl",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "hl", "namespace": "default"},
            "spec": {"clusterIP": "None", "ports": [{"port": 80, "protocol": "TCP"}]},
        },
    )
    km.apply(
        f"{POLICY}/namespaces/default/propagationpolicies/hl",
        propagation_policy("hl", [("v1", "Service")], ["member1", "member2"], resource="hl"),
    )
    for m, address in (("member1", "10.244.1.88"), ("member2", "10.244.2.88")):
        eventually(f"hl in {m}", partial(_get, cp, m, "/api/v1/namespaces/default/services/hl"))
        _own_slice(cp, m, "hl", address, ready=True)
    km.apply(
        "/apis/networking.karmada.io/v1alpha1/namespaces/default/multiclusterservices/hl",
        {
            "apiVersion": "networking.karmada.io/v1alpha1",
            "kind": "MultiClusterService",
            "metadata": {
                "name": "hl",
                "namespace": "default",
                "annotations": {"clusterset.io/dns-policy": "local-first"},
            },
            "spec": {
                "types": ["CrossCluster"],
                "providerClusters": [{"name": "member1"}, {"name": "member2"}],
                "consumerClusters": [{"name": "member2"}],
            },
        },
    )
    port = deployed["dns_port"]
    name = "hl.default.svc.clusterset.local"
    with _diagnosed(ctl):
        eventually(
            "member2's own pod, local-first", lambda: dig(port, name) == ["10.244.2.88"], 120
        )
        _own_slice(cp, "member2", "hl", "10.244.2.88", ready=False)
        started = time.monotonic()
        eventually(
            "member1's pod once member2's is not ready",
            lambda: dig(port, name) == ["10.244.1.88"],
            60,
        )
        print(f"\nlocal pod not ready -> answer is member1's: {time.monotonic() - started:.1f} s")
        _own_slice(cp, "member2", "hl", "10.244.2.88", ready=True)
        eventually("back to member2's own pod", lambda: dig(port, name) == ["10.244.2.88"], 60)
    km.request(
        "DELETE", "/apis/networking.karmada.io/v1alpha1/namespaces/default/multiclusterservices/hl"
    )


def _export(cp: ControlPlane, cluster: str, name: str) -> None:
    """A Service with one ready endpoint, exported (written in the member itself)."""
    base = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
    objs: tuple[tuple[str, dict[str, Any]], ...] = (
        (f"/api/v1/namespaces/default/services/{name}",
         {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
          "spec": {"ports": [{"port": 80, "protocol": "TCP"}]}}),
        (f"{MCS_ALPHA}/namespaces/default/serviceexports/{name}",
         {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": "ServiceExport",
          "metadata": {"name": name}}),
        (f"{base}/{name}-1",
         {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
          "addressType": "IPv4", "ports": [{"port": 80, "protocol": "TCP"}],
          "endpoints": [{"addresses": ["10.244.3.7"], "conditions": {"ready": True}}]}),
    )  # fmt: skip
    for path, obj in objs:
        status, body = cp.request(
            cluster,
            "PATCH",
            f"{path}?fieldManager=tests&force=true",
            {**obj, "metadata": {**obj["metadata"], "namespace": "default"}},
            content_type="application/apply-patch+yaml",
        )
        assert status in (200, 201), (path, body)


def _ours(cp: ControlPlane, cluster: str) -> list[str]:
    """What clusterset wrote in `cluster`'s namespace default and withdraws when it leaves
    (imports, derived Services, MCS slices; not the source Leases: they expire)."""
    owned = "?labelSelector=clusterset.io%2Fmanaged%3Dtrue"
    paths = (
        f"{MCS_ALPHA}/namespaces/default/serviceimports{owned}",
        f"/api/v1/namespaces/default/services{owned}",
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        "?labelSelector=endpointslice.kubernetes.io%2Fmanaged-by%3Dcontroller.clusterset.io",
    )
    return [
        f"{path.split('?')[0].rsplit('/', 1)[1]}/{o['metadata']['name']}"
        for path in paths
        for o in (_get(cp, cluster, path) or {}).get("items") or []
    ]


def test_membership_follows_karmadas_join_and_unjoin(
    karmada: tuple[ControlPlane, Karmada], deployed: dict[str, Any]
) -> None:
    """member3 joined while the controller runs gets the clusterset's imports within 10 s
    (no restart); unjoined, what clusterset wrote there is withdrawn and its export leaves
    member1's and member2's imports."""
    cp, km = karmada
    ctl: Controller = deployed["ctl"]
    # member3 made ready to join: Karmada's MCS CRDs, the chart's member RBAC, an export.
    for crd in mcs_crds():
        name = crd["metadata"]["name"]
        km.apply(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}", crd, "member3")
    eventually("MCS CRDs in member3", lambda: cp.request("member3", "GET", MCS_ALPHA)[0] == 200)
    _apply_all(cp, "member3", _member_rbac(*deployed["admission"], "admission.clusterName=member3"))
    _export(cp, "member1", "hello")
    _export(cp, "member3", "leaver")
    imports = f"{MCS_ALPHA}/namespaces/default/serviceimports"

    started = time.monotonic()
    km.join("member3")
    with _diagnosed(ctl):
        eventually("hello imported into member3", lambda: _get(cp, "member3", f"{imports}/hello"),
                   timeout=10)  # fmt: skip
    joined = time.monotonic() - started
    for m in ("member1", "member2"):
        eventually(f"leaver imported into {m}", partial(_get, cp, m, f"{imports}/leaver"), 30)
    written = _ours(cp, "member3")
    assert any(w.startswith("serviceimports/") for w in written), written

    started = time.monotonic()
    status, body = km.request("DELETE", f"{CLUSTER_API}/member3")  # as `karmadactl unjoin`
    assert status == 200, body
    with _diagnosed(ctl):
        eventually("member3 emptied of clusterset's objects", lambda: not _ours(cp, "member3"), 30)
    withdrawn = time.monotonic() - started
    for m in ("member1", "member2"):
        eventually(f"leaver gone from {m}", partial(_absent, cp, m, f"{imports}/leaver"), 30)
    left = time.monotonic() - started
    print(f"\njoin -> first import in member3: {joined:.1f} s; unjoin -> member3 emptied: "
          f"{withdrawn:.1f} s, -> its export gone from the others: {left:.1f} s")  # fmt: skip
    said = ctl.output()
    assert "karmada: cluster member3 joined" in said, said[-3000:]
    assert "karmada: cluster member3 left (unjoined); withdrew" in said, said[-3000:]
    assert _get(cp, "member3", "/api/v1/namespaces/default/services/leaver"), "theirs stays"


def test_a_rotated_cluster_secret_reconnects_without_a_restart(
    karmada: tuple[ControlPlane, Karmada], deployed: dict[str, Any]
) -> None:
    """member2's Cluster moved to new Secrets (as a credential rotation does): the hub
    reconnects to it through Karmada's proxy, and the next export reaches member2."""
    cp, km = karmada
    ctl: Controller = deployed["ctl"]
    secrets = "/api/v1/namespaces/karmada-cluster/secrets"
    for name in ("member2", "member2-impersonator"):
        old = km.request("GET", f"{secrets}/{name}")[1]
        km.apply(
            f"{secrets}/{name}-rotated",
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": f"{name}-rotated", "namespace": "karmada-cluster"},
                "data": old["data"],
            },
        )
    started = time.monotonic()
    status, body = km.request(
        "PATCH",
        f"{CLUSTER_API}/member2",
        {
            "spec": {
                "secretRef": {"namespace": "karmada-cluster", "name": "member2-rotated"},
                "impersonatorSecretRef": {
                    "namespace": "karmada-cluster",
                    "name": "member2-impersonator-rotated",
                },
            }
        },
        content_type="application/merge-patch+json",
    )
    assert status == 200, body
    with _diagnosed(ctl):
        eventually(
            "the hub reconnected to member2",
            lambda: (
                "karmada: cluster member2: its apiEndpoint or secrets changed; reconnected"
                in ctl.output()
            ),
            timeout=30,
        )
        reconnected = time.monotonic() - started
        _export(cp, "member1", "after-rotation")
        eventually(
            "after-rotation imported into member2",
            partial(
                _get, cp, "member2", f"{MCS_ALPHA}/namespaces/default/serviceimports/after-rotation"
            ),
            timeout=10,
        )
    print(f"\nmember2's Secrets rotated -> reconnected: {reconnected:.1f} s")


def test_a_dead_members_endpoint_leaves_clustersets_slices_karmada_keeps_its_own(
    karmada: tuple[ControlPlane, Karmada], deployed: dict[str, Any]
) -> None:
    """Issue 21 item 4 on the real Karmada: member1 (serve's only source) stops. Within the
    source Lease (40 s) its endpoint in member2's MCS slices is neither ready nor serving,
    never deleted (those slices are the ClusterSetIP's data path where clusterset's own
    derived Service is it: test_kube_leases.py; here serve's is Karmada's derived-serve, so
    they feed DNS). What Karmada does to its own imported-* slices of derived-serve is
    recorded over the same time: clusterset does not rewrite them."""
    cp, km = karmada
    ctl: Controller = deployed["ctl"]
    mcs_slices = (
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        "?labelSelector=multicluster.kubernetes.io/source-cluster%3Dmember1,"
        "multicluster.kubernetes.io/service-name%3Dserve"
    )
    karmadas = (
        "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
        "?labelSelector=kubernetes.io%2Fservice-name%3Dderived-serve"
    )

    def ours() -> list[tuple[Any, Any]]:
        return [
            ((e.get("conditions") or {}).get("ready"), (e.get("conditions") or {}).get("serving"))
            for s in _get(cp, "member2", mcs_slices)["items"]
            for e in s.get("endpoints") or []
        ]

    def theirs() -> list[tuple[str, Any]]:
        return [
            (a, (e.get("conditions") or {}).get("ready"))
            for s in _get(cp, "member2", karmadas)["items"]
            for e in s.get("endpoints") or []
            for a in e["addresses"]
        ]

    with _diagnosed(ctl):
        eventually(
            "member1's serve endpoint in service in member2", lambda: ours() == [(True, None)], 60
        )
    before = theirs()
    cp.stop_cluster("member1")
    killed = time.monotonic()
    seen: list[tuple[float, list[tuple[str, Any]]]] = [(0.0, before)]
    left = not_ready = None

    def karmada_ready() -> bool:
        conds = (km.request("GET", f"{CLUSTER_API}/member1")[1].get("status") or {}).get(
            "conditions"
        ) or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conds)

    try:
        while time.monotonic() - killed < 100:
            now = time.monotonic() - killed
            if left is None and ours() == [(False, False)]:
                left = now
            if not_ready is None and not karmada_ready():
                not_ready = now
            got = theirs()
            if got != seen[-1][1]:
                seen.append((round(now, 1), got))
            time.sleep(1)
    finally:
        cp.start_cluster("member1")
    print(
        f"\nmember1 stopped -> its endpoint out of service in clusterset's slices in member2: "
        f"{left} s (source Lease 40 s); Karmada's Cluster member1 not Ready: {not_ready} s; "
        f"Karmada's imported-* slices of derived-serve in member2 "
        f"over 100 s (s, [(address, ready)]): {seen}"
    )
    assert left is not None and left < 60, left
    with _diagnosed(ctl):
        eventually("member1's endpoint back in service", lambda: ours() == [(True, None)], 120)


def test_member_kubeconfig_mode_on_karmadas_v1alpha1_crds(tmp_path: Path) -> None:
    """Without Karmada's proxy, on members holding only Karmada's v1alpha1 MCS CRDs (where
    every v1beta1 watch used to get 404 and nothing was created): imports with spec.ips."""
    with ControlPlane(("member1", "member2")) as cp:
        for m in cp.cluster_names:
            for crd in mcs_crds():
                status, body = cp.request(
                    m,
                    "PATCH",
                    "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                    f"{crd['metadata']['name']}?fieldManager=tests&force=true",
                    crd,
                    content_type="application/apply-patch+yaml",
                )
                assert status in (200, 201), body

            def served(m: str = m) -> bool:
                return cp.request(m, "GET", MCS_ALPHA)[0] == 200

            eventually(f"v1alpha1 served in {m}", served)
        cp.request(
            "member1",
            "PATCH",
            "/api/v1/namespaces/default/services/serve?fieldManager=tests&force=true",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": {"name": NAME, "namespace": "default"},
                "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "selector": {"app": NAME}},
            },
            content_type="application/apply-patch+yaml",
        )
        _member1_endpoints(cp)
        cp.request(
            "member1",
            "PATCH",
            f"{MCS_ALPHA}/namespaces/default/serviceexports/serve?fieldManager=tests&force=true",
            {
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceExport",
                "metadata": {"name": NAME, "namespace": "default"},
            },
            content_type="application/apply-patch+yaml",
        )
        with controller(
            tmp_path / "controller.log",
            "--kubeconfig",
            str(cp.kubeconfig_path),
            "--context",
            "member1",
            "--context",
            "member2",
        ) as ctl:

            def imported() -> list[str] | None:
                ctl.check_alive()
                imp = _get(cp, "member2", f"{MCS_ALPHA}/namespaces/default/serviceimports/serve")
                return ((imp or {}).get("spec") or {}).get("ips")

            assert eventually("v1alpha1 import in member2 with ips", imported, timeout=60)
            assert "multicluster.x-k8s.io/v1beta1" not in ctl.output(), ctl.output()[-2000:]
