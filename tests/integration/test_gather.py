"""`clusterset gather` against real apiservers: the bundle holds what support needs and no
credential (the Secret's data, the admin token of the kubeconfig used)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.controlplane import ControlPlane
from tests.integration.test_kube import MCS, apply, export_service
from tests.unit.test_corefile import KUBEADM

pytestmark = [pytest.mark.kube, pytest.mark.timeout(120)]

SECRET_VALUE = "never-in-a-bundle-9c1f"
# Credentials inside objects that gather does read: redacted on the way into the bundle.
ANNOTATED_TOKEN = "annotated-tk-51e0"
COREFILE_TOKEN = "corefile-tk-7d2a"


def test_gather_collects_and_redacts(control_plane: ControlPlane, tmp_path: Path) -> None:
    cp = control_plane
    export_service(cp, "member1", "default", "gathered")
    apply(cp, "member1", f"{MCS}/namespaces/default/serviceexports/gathered", {
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
        "metadata": {"name": "gathered", "namespace": "default",
                     "annotations": {"example.com/token": ANNOTATED_TOKEN}},
    })  # fmt: skip
    cm = "/api/v1/namespaces/kube-system/configmaps/coredns"
    apply(cp, "member2", cm, {"apiVersion": "v1", "kind": "ConfigMap",
                              "metadata": {"name": "coredns", "namespace": "kube-system"},
                              "data": {"Corefile": KUBEADM + f"# token: {COREFILE_TOKEN}\n"}})  # fmt: skip
    secret = "/api/v1/namespaces/default/secrets/gather-secret"
    apply(cp, "member1", secret, {"apiVersion": "v1", "kind": "Secret",
                                  "metadata": {"name": "gather-secret", "namespace": "default"},
                                  "data": {"v": base64.b64encode(SECRET_VALUE.encode()).decode()}})  # fmt: skip
    bundle = tmp_path / "support.tar.gz"
    try:
        out = subprocess.run(
            [sys.executable, "-m", "clusterset", "gather", "--kubeconfig", str(cp.kubeconfig_path),
             "--all-contexts", "-o", str(bundle)],
            capture_output=True, text=True, timeout=90,
        )  # fmt: skip
    finally:
        cp.request("member2", "DELETE", cm)
        cp.request("member1", "DELETE", secret)
    assert out.returncode == 0, out.stdout + out.stderr
    with tarfile.open(bundle) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
        assert all(m.mode == 0o600 for m in tar.getmembers())
    assert bundle.stat().st_mode & 0o777 == 0o600  # the archive itself: owner only
    names = {n.removeprefix("clusterset-gather/") for n in files}
    for member in ("member1", "member2"):
        assert {f"{member}/serviceexports.yaml", f"{member}/serviceimports.yaml",
                f"{member}/endpointslices-mcs.yaml", f"{member}/leases-source.yaml"} <= names  # fmt: skip
    assert b"name: gathered" in files["clusterset-gather/member1/serviceexports.yaml"]
    assert b"kubernetes" in files["clusterset-gather/member2/configmap-coredns.yaml"]
    index = json.loads(files["clusterset-gather/summary.json"])
    assert {"member1", "member2"} <= set(index["clusters"]) and index["unreachable"] == {}
    everything = b"".join(files.values())
    assert SECRET_VALUE.encode() not in everything
    assert base64.b64encode(SECRET_VALUE.encode()) not in everything
    assert cp.admin_token.encode() not in everything
    for token in (ANNOTATED_TOKEN, COREFILE_TOKEN):
        assert token.encode() not in everything, token
    assert (
        b"example.com/token: <redacted>" in files["clusterset-gather/member1/serviceexports.yaml"]
    )
    assert b"managedFields" not in everything
    for name, data in files.items():  # redaction leaves every YAML file YAML
        if name.endswith(".yaml"):
            list(yaml.safe_load_all(data))
