"""The hub's admission webhook called by a real kube-apiserver, and `check` on real clusters.

A ServiceExport that would conflict, sent through the API, comes back with the
pre-flight finding in the HTTP `Warning` header (what kubectl prints as
"Warning: ..."); with --deny-conflicts it is refused; with the webhook down the
apiserver keeps admitting (failurePolicy Ignore). The webhook's certificate is the
control plane's own serving certificate (CA-signed, SAN 127.0.0.1); the hub writes its
CA into the configuration's caBundle itself.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import eventually
from tests.controlplane import ControlPlane
from tests.integration.servers import free_port
from tests.integration.test_kube import MCS, apply, get

pytestmark = [pytest.mark.kube, pytest.mark.timeout(300)]
NS = "preflight"
VWC = "clusterset-preflight"
VWC_PATH = "/apis/admissionregistration.k8s.io/v1/validatingwebhookconfigurations"


def webhook_configuration(member: str, port: int) -> dict[str, Any]:
    """What the chart renders in a member (admission.url set), before the hub's caBundle."""
    rules = [
        {
            "apiGroups": ["multicluster.x-k8s.io"],
            "apiVersions": ["*"],
            "resources": ["serviceexports"],
            "operations": ["CREATE", "UPDATE"],
        },
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "resources": ["services"],
            "operations": ["CREATE", "UPDATE"],
        },
    ]
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": VWC, "labels": {"clusterset.io/managed": "true"}},
        "webhooks": [
            {
                "name": "preflight.clusterset.io",
                "clientConfig": {"url": f"https://127.0.0.1:{port}/validate/{member}"},
                "rules": rules,
                "failurePolicy": "Ignore",
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "timeoutSeconds": 5,
                "namespaceSelector": {"matchLabels": {"clusterset.io/preflight": "enabled"}},
            }
        ],
    }


def create(
    cp: ControlPlane, cluster: str, path: str, obj: dict[str, Any], *, dry_run: bool = False
) -> tuple[int, Any, list[str]]:
    """POST through the API: (status, body, Warning headers)."""
    url = cp.servers[cluster] + path + ("?dryRun=All" if dry_run else "")
    req = urllib.request.Request(
        url,
        data=json.dumps(obj).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {cp.admin_token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30, context=cp.ssl_context()) as r:
            return r.status, json.loads(r.read()), r.headers.get_all("Warning") or []
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read()), err.headers.get_all("Warning") or []


def export_obj(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "multicluster.x-k8s.io/v1beta1",
        "kind": "ServiceExport",
        "metadata": {"name": name, "namespace": NS},
    }


def service(cp: ControlPlane, cluster: str, name: str, port: int) -> None:
    apply(
        cp,
        cluster,
        f"/api/v1/namespaces/{NS}/services/{name}",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": NS},
            "spec": {"ports": [{"name": "http", "port": port, "protocol": "TCP"}]},
        },
    )


@pytest.fixture(scope="module")
def world(
    control_plane: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ControlPlane, Path, int]]:
    cp = control_plane
    # The webhook's port is picked now, not at collection: a port free when the tests were
    # collected may be some connection's ephemeral port half an hour later.
    port = free_port()
    certs = tmp_path_factory.mktemp("webhook-certs")
    pki = cp.workdir / "pki"
    shutil.copy(pki / "serving.crt", certs / "tls.crt")
    shutil.copy(pki / "serving.key", certs / "tls.key")
    shutil.copy(pki / "ca.crt", certs / "ca.crt")
    for member in ("member1", "member2"):
        apply(
            cp,
            member,
            f"/api/v1/namespaces/{NS}",
            {
                "apiVersion": "v1",
                "kind": "Namespace",
                "metadata": {"name": NS, "labels": {"clusterset.io/preflight": "enabled"}},
            },
        )
        apply(cp, member, f"{VWC_PATH}/{VWC}", webhook_configuration(member, port))
    # member1 exports web on http:80 (the older export); member2 has web on http:8080.
    service(cp, "member1", "web", 80)
    apply(cp, "member1", f"{MCS}/namespaces/{NS}/serviceexports/web", export_obj("web"))
    service(cp, "member2", "web", 8080)
    service(cp, "member2", "other", 8080)
    try:
        yield cp, certs, port
    finally:
        # No namespace controller here (a deleted namespace would stay Terminating with its
        # objects): remove what this module and its hub made, and leave the empty namespace.
        for member in ("member1", "member2"):
            cp.request(member, "DELETE", f"{VWC_PATH}/{VWC}")
            for path in (
                f"{MCS}/namespaces/{NS}/serviceexports",
                f"{MCS}/namespaces/{NS}/serviceimports",
                f"/api/v1/namespaces/{NS}/services",
                f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices",
            ):
                _, listed = cp.request(member, "GET", path)
                for item in (listed or {}).get("items") or []:
                    cp.request(member, "DELETE", f"{path}/{item['metadata']['name']}")


@contextlib.contextmanager
def controller(cp: ControlPlane, certs: Path, port: int, *extra: str) -> Iterator[None]:
    """The hub with its webhook; its output must hold no traceback (shutdown included)."""
    args = [
        "controller", "--kubeconfig", str(cp.kubeconfig_path),
        "--context", "member1", "--context", "member2", "--no-leader-elect",
        "--webhook-listen", f"127.0.0.1:{port}", "--webhook-cert-dir", str(certs),
        "--webhook-config", VWC, *extra,
    ]  # fmt: skip
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen([sys.executable, "-m", "clusterset", *args], stdout=log, stderr=log)
        try:
            yield
        except BaseException:
            # What the hub said is what explains a failed wait: show it with the failure.
            proc.terminate()
            proc.wait(timeout=15)
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace")[-8000:])
            raise
        proc.terminate()
        proc.wait(timeout=15)
        log.seek(0)
        output = log.read().decode(errors="replace")
        assert "Traceback" not in output, output[-4000:]


def test_conflicting_export_gets_the_warning_then_the_apiserver_survives_the_webhook(
    world: tuple[ControlPlane, Path, int],
) -> None:
    cp, certs, port = world
    path = f"{MCS}/namespaces/{NS}/serviceexports"
    with controller(cp, certs, port):
        eventually(
            "the hub's CA in member2's caBundle",
            lambda: (get(cp, "member2", f"{VWC_PATH}/{VWC}") or {})["webhooks"][0][
                "clientConfig"
            ].get("caBundle"),
        )
        eventually(
            "member1's web imported (the hub has seen it)",
            lambda: get(cp, "member2", f"{MCS}/namespaces/{NS}/serviceimports/web"),
        )
        # The apiserver picks up the new caBundle within a moment: ask with dry runs until then.
        eventually(
            "a warning on a dry-run export",
            lambda: create(cp, "member2", path, export_obj("web"), dry_run=True)[2],
        )
        status, body, warnings = create(cp, "member2", path, export_obj("web"))
        assert status == 201, body
        text = " ".join(warnings)
        assert "PortConflict" in text
        assert "the oldest export, in member1, wins" in text
        assert "http:8080/TCP of member2 would not be in the merged ServiceImport" in text
        # The webhook says nothing about an export that conflicts with nobody.
        status, _, warnings = create(cp, "member2", path, export_obj("other"), dry_run=True)
        assert status == 201 and warnings == []
    # The hub (and its webhook) is down: exports are still admitted, promptly.
    started = time.monotonic()
    status, body, warnings = create(cp, "member2", path, export_obj("other"))
    assert status == 201, body
    assert warnings == []
    assert time.monotonic() - started < 5


def test_deny_conflicts_refuses_the_export(world: tuple[ControlPlane, Path, int]) -> None:
    cp, certs, port = world
    path = f"{MCS}/namespaces/{NS}/serviceexports"
    cp.request("member2", "DELETE", f"{path}/web")
    with controller(cp, certs, port, "--deny-conflicts"):

        def refused() -> Any:
            status, body, _ = create(cp, "member2", path, export_obj("web"), dry_run=True)
            return body if status == 403 else None

        body = eventually("a 403 for the conflicting export", refused)
        assert "--deny-conflicts" in body["message"]
        assert "PortConflict" in body["message"]


def test_a_webhook_port_in_use_is_one_error_line(world: tuple[ControlPlane, Path, int]) -> None:
    cp, certs, _ = world
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "clusterset", "controller", "--kubeconfig", str(cp.kubeconfig_path),
             "--context", "member1", "--no-leader-elect", "--metrics-listen", "127.0.0.1:0",
             "--webhook-listen", f"127.0.0.1:{port}", "--webhook-cert-dir", str(certs)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    assert r.returncode != 0
    assert "Traceback" not in r.stderr, r.stderr
    errors = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, r.stderr
    assert f"127.0.0.1:{port}" in errors[0], r.stderr


def test_check_reads_real_clusters(world: tuple[ControlPlane, Path, int]) -> None:
    cp, _, _ = world
    cp.request("member2", "DELETE", f"{MCS}/namespaces/{NS}/serviceexports/web")
    r = subprocess.run(
        [sys.executable, "-m", "clusterset", "check", "--kubeconfig", str(cp.kubeconfig_path),
         "--context", "member1", "--context", "member2", "--cluster", "member2",
         "--service", f"{NS}/web", "-o", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["before"]["clusters"] == ["member1"]
    assert {c["winner"] for c in out["conflicts"]} == {"member1"}
    # ClusterSetIP answers come from the derived Services the hub made in each member.
    answers = {a["consumer"]: a for a in out["answers"]}
    assert answers["member2"]["before"][0].startswith("A 10.97.")


# -- the chart's pieces ------------------------------------------------------------------------

HUB_VALUES = [
    "--set",
    "controller.enabled=true",
    "--set",
    "dns.enabled=false",
    "--set",
    "admission.enabled=true",
]
MEMBER_VALUES = [
    "--set", "memberRBAC.enabled=true", "--set", "admission.enabled=true",
    "--set", "admission.clusterName=member2",
    "--set", "admission.url=https://hub.example.com:8443/",
]  # fmt: skip


def test_chart_member_side_registers_the_webhook_with_failure_policy_ignore(
    control_plane: ControlPlane,
) -> None:
    from tests.integration.test_deploy import one, render, rules

    objs = render(*MEMBER_VALUES)
    vwc = one(objs, "ValidatingWebhookConfiguration", "clusterset-preflight")
    (hook,) = vwc["webhooks"]
    assert hook["failurePolicy"] == "Ignore"
    assert hook["sideEffects"] == "None"
    assert hook["clientConfig"] == {"url": "https://hub.example.com:8443/validate/member2"}
    assert hook["namespaceSelector"]["matchExpressions"][0]["values"] == ["kube-system"]
    assert {(r["apiGroups"][0], r["resources"][0]) for r in hook["rules"]} == {
        ("multicluster.x-k8s.io", "serviceexports"),
        ("", "services"),
    }
    role = one(objs, "ClusterRole", "clusterset-hub")
    assert rules(role)[("admissionregistration.k8s.io", "validatingwebhookconfigurations")] == {
        "get",
        "update",
    }
    assert any(r.get("resourceNames") == ["clusterset-preflight"] for r in role["rules"])
    # The real apiserver accepts the configuration as rendered (server-side dry run; under
    # another name: the webhook tests of this module hold the default one).
    renamed = {**vwc, "metadata": {**vwc["metadata"], "name": "chart-dry-run"}}
    status, body = control_plane.request("member1", "POST", f"{VWC_PATH}?dryRun=All", renamed)
    assert status == 201, body
    # Same cluster as the hub: the Service, with the path.
    local = one(render(*MEMBER_VALUES[:-2]), "ValidatingWebhookConfiguration")
    assert local["webhooks"][0]["clientConfig"]["service"] == {
        "name": "clusterset-admission", "namespace": "clusterset", "port": 443, "path": "/validate/member2",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            ["--set", "memberRBAC.enabled=true", "--set", "admission.enabled=true"],
            "admission.clusterName",
        ),
        ([*HUB_VALUES, "--set", "admission.certs=secret"], "admission.existingSecret"),
    ],
    ids=["member-without-cluster-name", "own-secret-without-its-name"],
)
def test_chart_refuses_incomplete_values(values: list[str], message: str) -> None:
    from tests.integration.test_deploy import helm

    proc = helm("template", "clusterset", "deploy/chart/clusterset", *values, ok=False)
    assert proc.returncode != 0
    assert message in proc.stderr


def test_chart_hub_side_serves_a_certificate_the_controller_loads(tmp_path: Path) -> None:
    import base64

    from clusterset.controller.admission import CertFiles
    from tests.integration.test_deploy import container, deployment, expand, one, render

    objs = render(*HUB_VALUES)
    args = container(deployment(objs, "controller"))["args"]
    assert "--webhook-listen=0.0.0.0:9443" in args
    assert "--webhook-cert-dir=/etc/clusterset/webhook" in args
    assert "--webhook-config=clusterset-preflight" in args
    assert "--deny-conflicts" not in args
    proc = subprocess.run([sys.executable, "-m", "clusterset", *expand(args, {"POD_NAME": "p"}), "--help"],
                          capture_output=True, text=True, check=False, timeout=60)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    svc = one(objs, "Service", "clusterset-admission")
    assert svc["spec"]["ports"] == [
        {"name": "https", "port": 443, "targetPort": "webhook", "protocol": "TCP"}
    ]
    secret = one(objs, "Secret", "clusterset-admission-tls")
    for key in ("tls.crt", "tls.key", "ca.crt"):
        (tmp_path / key).write_bytes(base64.b64decode(secret["data"][key]))
    CertFiles(tmp_path)  # Python's ssl loads the pair helm generated
    verify = subprocess.run(
        ["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verify.returncode == 0, verify.stdout + verify.stderr
    text = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "tls.crt")],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "DNS:clusterset-admission.clusterset.svc" in text
    managed = render(
        *HUB_VALUES,
        "--set",
        "admission.certs=cert-manager",
        "--set",
        "admission.denyConflicts=true",
    )
    cert = one(managed, "Certificate", "clusterset-admission")
    assert cert["spec"]["secretName"] == "clusterset-admission-tls"
    assert one(managed, "Issuer")["spec"] == {"selfSigned": {}}
    assert [o for o in managed if o["kind"] == "Secret"] == []
    assert "--deny-conflicts" in container(deployment(managed, "controller"))["args"]


@pytest.mark.parametrize("values", [HUB_VALUES, MEMBER_VALUES], ids=["hub", "member"])
def test_chart_lints_with_the_webhook(values: list[str]) -> None:
    from tests.integration.test_deploy import CHART, helm

    helm("lint", "--strict", str(CHART), *values)
