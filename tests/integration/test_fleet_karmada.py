"""The seed article through Karmada, on real nodes.

tests/fleet.py brings up member1 and member2 with a node each, plus a node-less apiserver
`karmada` (loopback, aggregation flags) over which tests/karmada.py runs Karmada v1.18.2's own
binaries, member1 and member2 joined in Push mode. As Karmada's multi-cluster service guide
starts: its v1alpha1 MCS CRDs propagated to both members by ClusterPropagationPolicies. Then
clusterset is installed with helm as tests/integration/test_fleet.py does; the chart's CRDs
are left out by helm itself, which skips CRDs that already exist (docs/quickstart.md: members
keep Karmada's CRDs, clusterset speaks v1alpha1 there). The article's objects go to the
karmada-apiserver only: Deployment, Service and ServiceExport `serve` with PropagationPolicies
placing them in member1; Karmada's execution controller creates them there, member1's kubelet
runs the pods, and a pod in member2 curls `serve.default.svc.clusterset.local:8080`.

The controller is the chart's direct one (`--kubeconfig` over the members' hub tokens, in
member1), not `controller.karmada=true`: the karmada-apiserver binds loopback, which member1's
pods cannot reach (a proxy-mode controller pod would need the fleet to expose it on a node-
reachable address), and install_clusterset would have to be split to install the members'
RBAC for Karmada's impersonated caller and the karmadaRBAC instead of the hub tokens.
tests/integration/test_karmada.py covers `--karmada-kubeconfig` against the same Karmada.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.conftest import eventually
from tests.fleet import Fleet, install_clusterset
from tests.integration.test_fleet import client_pod, curl, serve_objects
from tests.karmada import MCS_ALPHA, Karmada, mcs_crd_policies, propagation_policy

pytestmark = [pytest.mark.fleet, pytest.mark.timeout(900)]

MEMBERS = ("member1", "member2")
CRDS = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"


@pytest.fixture(scope="module")
def fleet_karmada() -> Iterator[tuple[Fleet, Karmada]]:
    with (
        Fleet(MEMBERS, control_only=("karmada",), aggregators=("karmada",)) as fleet,
        Karmada(fleet.cp, members=MEMBERS) as km,
    ):
        for path, obj in mcs_crd_policies():
            km.apply(path, obj)
        for m in MEMBERS:
            km.wait(
                f"Karmada's MCS CRDs in {m}",
                lambda m=m: fleet.cp.request(m, "GET", MCS_ALPHA)[0] == 200,
                timeout=90,
            )
            km.wait(
                f"{m}'s Cluster lists ServiceExport",
                lambda m=m: km.api_enabled(m, "multicluster.x-k8s.io/v1alpha1", "ServiceExport"),
                timeout=90,
            )
        install_clusterset(fleet)
        yield fleet, km


def test_seed_through_karmada_curl_from_member2_answered_by_member1(
    fleet_karmada: tuple[Fleet, Karmada],
) -> None:
    fleet, km = fleet_karmada
    # helm left Karmada's CRDs alone: v1alpha1 only, as Karmada propagated them.
    for m in MEMBERS:
        for crd in ("serviceexports", "serviceimports"):
            status, body = fleet.cp.request(m, "GET", f"{CRDS}/{crd}.multicluster.x-k8s.io")
            assert status == 200, body
            assert [v["name"] for v in body["spec"]["versions"]] == ["v1alpha1"], (m, crd)
            assert body["status"]["storedVersions"] == ["v1alpha1"], (m, crd)
    fleet.apply("member2", client_pod())
    fleet.kubectl("member2", "wait", "--for=condition=Ready", "pod/client", "--timeout=90s")

    # The article's objects, in the karmada-apiserver only (which serves the v1alpha1 export).
    deploy, service, export = serve_objects("member1")
    export["apiVersion"] = "multicluster.x-k8s.io/v1alpha1"
    fleet.apply("karmada", deploy, service, export)
    started = time.monotonic()
    fleet.apply(
        "karmada",
        propagation_policy(
            "mcs-workload", [("apps/v1", "Deployment"), ("v1", "Service")], ["member1"]
        ),
        propagation_policy(
            "serve-export-policy",
            [("multicluster.x-k8s.io/v1alpha1", "ServiceExport")],
            ["member1"],
        ),
    )

    def running() -> list[str]:
        km.check_alive()
        phases = fleet.kubectl("member1", "get", "pods", "-l", "app=serve",
                               "-o", "jsonpath={.items[*].status.phase}").split()  # fmt: skip
        return phases if phases == ["Running", "Running"] else []

    eventually("Karmada's Deployment serve running 2 pods in member1", running, timeout=120)
    managed = fleet.kubectl("member1", "get", "deployment", "serve",
                            "-o", "jsonpath={.metadata.labels.karmada\\.io/managed}")  # fmt: skip
    assert managed == "true", managed
    assert not fleet.kubectl("member2", "get", "deployments", "-o", "name").strip()

    def answered() -> str:
        km.check_alive()
        try:
            out = curl(fleet, "member2", "http://serve.default.svc.clusterset.local:8080/")
        except Exception as exc:
            raise AssertionError(str(exc)) from exc
        return out if "hello from cluster member1" in out else ""

    out = eventually("curl from member2's pod answered by member1", answered, timeout=120)
    elapsed = time.monotonic() - started
    assert out.startswith("hello from cluster member1 (Node: member1-node Pod: serve-"), out
    print(f"\nPropagationPolicies applied in Karmada -> first good curl from member2: "
          f"{elapsed:.1f} s: {out.strip()}")  # fmt: skip
    # member2's import is clusterset's, in the version member2 serves (Karmada's v1alpha1).
    ips = fleet.kubectl("member2", "get", "serviceimports.v1alpha1.multicluster.x-k8s.io",
                        "serve", "-o", "jsonpath={.spec.ips[0]}")  # fmt: skip
    resolved = fleet.exec("member2", "default", "client", "dig", "+short",
                          "serve.default.svc.clusterset.local")  # fmt: skip
    assert resolved.split() == [ips], (resolved, ips)
