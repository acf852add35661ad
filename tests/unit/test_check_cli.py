"""`clusterset check` end to end over the seed manifests: exit codes 0/1/2 and -o json."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from clusterset.cli.check import karmada_placement, karmada_proposal
from clusterset.kube.karmada import PlacementInputs
from clusterset.model.ids import ServiceKey
from tests.karmada import propagation_policy

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "clusters"


def check(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clusterset", "check", "--manifests", str(SEED), *args],
        capture_output=True,
        text=True,
        env={"XDG_STATE_HOME": str(tmp), "PATH": "/usr/bin:/bin"},
        timeout=60,
        check=False,
    )


def test_seed_web_port_conflict_exits_1_naming_member1(tmp_path: Path) -> None:
    r = check("--cluster", "member2", "--service", "default/web", "-o", "json", tmp=tmp_path)
    assert r.returncode == 1, r.stderr
    out = json.loads(r.stdout)
    assert out["before"]["clusters"] == ["member1"]
    assert out["after"]["clusters"] == ["member1", "member2"]
    assert out["after"]["ports"] == ["http:80/TCP"]
    assert out["droppedPorts"] == ["http:8080/TCP"]
    assert {(c["cluster"], c["winner"]) for c in out["conflicts"]} == {
        ("member1", "member1"),
        ("member2", "member1"),
    }
    assert all(c["reasons"] == ["PortConflict"] for c in out["conflicts"])
    assert [a["changed"] for a in out["answers"]] == [False, False]


def test_no_conflict_exits_0(tmp_path: Path) -> None:
    r = check("--cluster", "member1", "--service", "default/serve", tmp=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "No conflict." in r.stdout


def test_an_export_without_its_service_is_invalid_not_a_conflict(tmp_path: Path) -> None:
    export = tmp_path / "ghost.yaml"
    export.write_text(
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n"
        "metadata: {name: ghost, namespace: default}\n"
    )
    r = check(str(export), "--cluster", "member2", tmp=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "would be Valid=False NoService: Service default/ghost not found" in r.stdout
    assert r.stdout.rstrip().endswith("result: would be invalid (exit 1)"), r.stdout
    assert "conflict" not in r.stdout.lower(), r.stdout


def test_a_file_with_a_new_service_and_its_export(tmp_path: Path) -> None:
    f = tmp_path / "api.yaml"
    f.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: default}\n"
        "spec: {clusterIP: None, ports: [{name: http, port: 80}]}\n---\n"
        "apiVersion: multicluster.x-k8s.io/v1alpha1\nkind: ServiceExport\n"
        "metadata: {name: web, namespace: default}\n---\n"
        "apiVersion: policy.karmada.io/v1alpha1\nkind: PropagationPolicy\n"
        "metadata: {name: web, namespace: default}\n"
    )
    r = check(str(f), "--cluster", "member2", "-o", "yaml", tmp=tmp_path)
    assert r.returncode == 1
    assert "TypeConflict" in r.stdout
    assert "winner: member1" in r.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--cluster", "member2", "--service", "web"), "expected NAMESPACE/NAME"),
        (("--cluster", "nope", "--service", "default/web"), "--cluster nope: not one of"),
        (("--cluster", "member2"), "give either a ServiceExport FILE or --service"),
        (("--cluster", "member2", "--service", "default/web", "-o", "xml"), "-o 'xml'"),
        (("/nonexistent.yaml", "--cluster", "member2"), "/nonexistent.yaml: unreadable"),
        (
            (str(SEED / "member1" / "cluster.yaml"), "--cluster", "member2"),
            "exactly one ServiceExport, found 0",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    r = check(*args, tmp=tmp_path)
    assert r.returncode == 2
    assert message in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


# `check --karmada-kubeconfig` without --cluster: the members Karmada would place it in.
def _inputs(**kw: Any) -> PlacementInputs:
    clusters = {n: {"metadata": {"name": n}, "spec": {}} for n in ("member1", "member2")}
    base: dict[str, Any] = {
        "template": None,
        "policies": [],
        "cluster_policies": [],
        "clusters": clusters,
        "binding": None,
    }
    return PlacementInputs(**{**base, **kw})


def _policy(name: str, members: list[str]) -> dict[str, Any]:
    return propagation_policy(
        name, [("multicluster.x-k8s.io/v1alpha1", "ServiceExport")], members, resource="web"
    )


WEB = ServiceKey("default", "web")
BOUND = {
    "metadata": {"namespace": "default", "name": "web-serviceexport"},
    "spec": {"clusters": [{"name": "member1"}]},
}


@pytest.mark.parametrize(
    ("inputs", "export_doc", "file_policies", "expect"),
    [
        # Served policy; no template anywhere: Karmada's own CRD version is assumed.
        (_inputs(policies=[_policy("p", ["member2"])]), None, [], ("member2",)),
        # The file's policy replaces the served one of its name, and the binding no longer holds.
        (
            _inputs(policies=[_policy("p", ["member2"])], binding=BOUND),
            None,
            [_policy("p", ["member1", "member2"])],
            ("member1", "member2"),
        ),
        # Scheduled already: the binding.
        (_inputs(policies=[_policy("p", ["member2"])], binding=BOUND), None, [], ("member1",)),
        # A policy in the file that does not decide (p names it, q only by label) leaves it.
        (
            _inputs(policies=[_policy("p", ["member2"])], binding=BOUND),
            None,
            [
                {
                    **_policy("q", ["member2"]),
                    "spec": {
                        "resourceSelectors": [
                            {
                                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                                "kind": "ServiceExport",
                            }
                        ],
                        "placement": {},
                    },
                }
            ],
            ("member1",),
        ),
        # A ClusterPropagationPolicy without metadata in the file: no traceback.
        (
            _inputs(policies=[_policy("p", ["member2"])]),
            None,
            [{"kind": "ClusterPropagationPolicy", "spec": {}}],
            ("member2",),
        ),
        # A v1beta1 template in the file is what the selectors must name.
        (
            _inputs(policies=[_policy("p", ["member2"])]),
            {
                "apiVersion": "multicluster.x-k8s.io/v1beta1",
                "kind": "ServiceExport",
                "metadata": {"name": "web"},
            },
            [],
            (),
        ),
    ],
)
def test_karmada_placement_of_a_proposal(
    inputs: PlacementInputs,
    export_doc: dict[str, Any] | None,
    file_policies: list[dict[str, Any]],
    expect: tuple[str, ...],
) -> None:
    assert karmada_placement(inputs, WEB, export_doc, file_policies).members == expect


def test_karmada_proposal_reads_the_policies_beside_the_export(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    policy = _policy("p", ["member2"])
    del policy["metadata"]["namespace"]  # as often written: the namespace of the apply
    f.write_text(
        yaml.safe_dump_all(
            [
                {
                    "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                    "kind": "ServiceExport",
                    "metadata": {"name": "web", "namespace": "default"},
                },
                policy,
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}},
            ]
        )
    )
    export, policies = karmada_proposal(f, WEB)
    assert export is not None and export["kind"] == "ServiceExport"
    assert [p["metadata"] for p in policies] == [{"name": "p", "namespace": "default"}]


def test_the_live_templates_claim_holds_for_the_files_export() -> None:
    """The export in FILE carries no claim; the live template's does: a higher-priority
    policy in the file does not take the export from the policy Karmada bound it to."""
    live = {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {
            "name": "web",
            "namespace": "default",
            "annotations": {
                "propagationpolicy.karmada.io/name": "p",
                "propagationpolicy.karmada.io/namespace": "default",
            },
            "labels": {"propagationpolicy.karmada.io/permanent-id": "uid-1"},
        },
    }
    q = _policy("q", ["member2"])
    q["spec"]["priority"] = 9
    inputs = _inputs(template=live, policies=[_policy("p", ["member1"])], binding=BOUND)
    doc = {k: v for k, v in live.items() if k != "metadata"} | {"metadata": {"name": "web"}}
    assert karmada_placement(inputs, WEB, doc, [q]).members == ("member1",)
