"""The Helm chart, the plain manifests and the image contract, checked for real.

1. `helm lint` and `helm template` on several value sets; the output parsed and asserted
   (security context, probes, ports, PDB, RBAC verbs, toggles); every container's args
   parsed by the real CLI; deploy/manifests/* equal to a fresh render.
2. A real kube-apiserver (tests/controlplane.py): the chart's CRDs applied for real, then
   every rendered object applied with server-side dry-run; then the RBAC for real, asked
   with SubjectAccessReviews; then the real `clusterset dns` and `clusterset controller`
   processes, run with the chart's args and authenticated as the chart's ServiceAccounts,
   export a service end to end — so the least-privilege roles are proven sufficient.

helm comes from scripts/build-peers.sh --with-helm (${CLUSTERSET_CACHE:-~/.cache/clusterset}/bin);
a missing helm fails these tests, it does not skip them.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import dns.rcode
import pytest
import yaml

from tests.conftest import eventually
from tests.controlplane import ControlPlane, ControlPlaneError, cache_bin_dir
from tests.integration.servers import free_port, query

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "chart" / "clusterset"
MANIFESTS = ROOT / "deploy" / "manifests"
NAMESPACE = "clusterset"
RELEASE = "clusterset"
SSA = "application/apply-patch+yaml"
MCS = "/apis/multicluster.x-k8s.io/v1beta1"
Obj = dict[str, Any]

# Value sets rendered by the tests below (helm flags).
CONTROLLER = ["--set", "controller.enabled=true", "--set", "dns.enabled=false"]
MEMBER_RBAC = ["--set", "memberRBAC.enabled=true"]
EVERYTHING = [
    "--set", "controller.enabled=true",
    "--set", "controller.replicas=2",
    "--set", "controller.contexts={member1,member2}",
    "--set", "controller.leaderElection.leaseContext=member1",
    "--set", "memberRBAC.enabled=true",
    "--set", "memberRBAC.subjects[0].kind=User",
    "--set", "memberRBAC.subjects[0].name=alice",
    "--set", "memberRBAC.subjects[0].apiGroup=rbac.authorization.k8s.io",
    "--set", "dns.clusterID=member1",
    "--set", "dns.service.clusterIP=10.96.0.53",
    "--set", "dns.nsAddresses={10.96.0.53}",
    "--set", "dns.defaultPolicy=local-first",
    "--set", "dns.unified.enabled=true",
    "--set", "dns.unified.upstream=10.96.0.10",
    "--set", "dns.unified.allow={10.0.0.0/8}",
    "--set", "image.tag=dev",
    "--set", "sourceLeases.clusters={member1,member2}",
    "--set", "controller.createNamespaces=true",
    "--set", "memberRBAC.createNamespaces=true",
]  # fmt: skip
KARMADA = [*CONTROLLER, "--set", "controller.karmada=true", "--set", "controller.contexts={m1}"]
VALUE_SETS = {
    "defaults": [],
    "controller": CONTROLLER,
    "memberRBAC": MEMBER_RBAC,
    "everything": EVERYTHING,
    "karmada": KARMADA,
}

DNS_READS = {
    ("multicluster.x-k8s.io", "serviceimports"),
    ("discovery.k8s.io", "endpointslices"),
    ("", "namespaces"),
    ("", "services"),
    ("about.k8s.io", "clusterproperties"),  # the cluster's own ID, for local-first
}
# The DNS server's second, separate role: the hub's per-source-cluster liveness Leases, in
# one namespace (sourceLeases.namespace, kube-system by default: all `clusterset dns` reads).
LEASES = ("coordination.k8s.io", "leases")
DNS_LEASES = {LEASES: {"list", "watch"}}
SOURCE_LEASES_NS = "kube-system"
WRITE = {"create", "update", "patch", "delete", "get", "list", "watch"}
HUB_RULES = {
    ("multicluster.x-k8s.io", "serviceimports"): WRITE,
    ("multicluster.x-k8s.io", "serviceimports/status"): WRITE,
    ("discovery.k8s.io", "endpointslices"): WRITE,
    ("", "services"): WRITE,
    ("multicluster.x-k8s.io", "serviceexports"): {"get", "list", "watch", "patch"},
    ("multicluster.x-k8s.io", "serviceexports/status"): {"get", "list", "watch", "patch"},
    ("", "namespaces"): {"list", "watch"},
    ("about.k8s.io", "clusterproperties"): {"get", "list", "watch"},
    ("networking.k8s.io", "servicecidrs"): {"list", "watch"},  # which IP families it serves
}


# -- helm -------------------------------------------------------------------------------------


def helm_binary() -> Path:
    path = cache_bin_dir() / "helm"
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"helm not found at {path}: run scripts/build-peers.sh --with-helm "
            "(it builds helm from the Go module proxy; CLUSTERSET_CACHE moves the cache)",
            pytrace=False,
        )
    return path


def helm(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(helm_binary()), *args], capture_output=True, text=True, check=False, cwd=ROOT
    )
    if ok:
        assert proc.returncode == 0, f"helm {' '.join(args)}:\n{proc.stderr}"
    return proc


def render(*flags: str, crds: bool = False) -> list[Obj]:
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE, *flags]
    if crds:
        args.append("--include-crds")
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def one(objs: list[Obj], kind: str, name: str | None = None) -> Obj:
    found = [o for o in by_kind(objs, kind) if name is None or o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind} {name or ''}: {[o['metadata']['name'] for o in found]}"
    return found[0]


def deployment(objs: list[Obj], component: str) -> Obj:
    return one(objs, "Deployment", f"{RELEASE}-{component}")


def container(dep: Obj) -> Obj:
    containers = dep["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    c: Obj = containers[0]
    return c


def flag(args: list[str], name: str) -> list[str]:
    """Every value of --name=value in args."""
    return [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]


def rules(role: Obj) -> dict[tuple[str, str], set[str]]:
    out: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        assert "nonResourceURLs" not in rule
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out.setdefault((group, resource), set()).update(rule["verbs"])
    return out


def chart_meta() -> Obj:
    meta: Obj = yaml.safe_load((CHART / "Chart.yaml").read_text())
    return meta


@pytest.fixture(scope="module")
def defaults() -> list[Obj]:
    return render()


@pytest.fixture(scope="module")
def everything() -> list[Obj]:
    return render(*EVERYTHING)


# -- 1. lint, render, assert ------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_helm_lint(name: str) -> None:
    out = helm("lint", "--strict", str(CHART), *VALUE_SETS[name]).stdout
    assert "0 chart(s) failed" in out, out


def test_chart_crds_are_deploy_crds() -> None:
    ours = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    source = {p.name: p.read_bytes() for p in (ROOT / "deploy" / "crds").glob("*.yaml")}
    assert ours == source, "chart crds/ differ from deploy/crds/: run deploy/manifests/render.sh"


def test_chart_version_and_image_follow_the_package(defaults: list[Obj]) -> None:
    from clusterset import __version__

    meta = chart_meta()
    assert meta["appVersion"] == __version__ == "0.1.0"
    image = container(deployment(defaults, "dns"))["image"]
    assert image == f"ghcr.io/clusterset/clusterset:{__version__}"
    other = container(
        deployment(render("--set", "image.tag=x", "--set", "image.digest=sha256:ab"), "dns")
    )
    assert other["image"] == "ghcr.io/clusterset/clusterset:x@sha256:ab"


def test_defaults_are_the_member_dns_only(defaults: list[Obj]) -> None:
    kinds = sorted((o["kind"], o["metadata"]["name"]) for o in defaults)
    assert kinds == [
        ("ClusterRole", "clusterset-dns"),
        ("ClusterRoleBinding", "clusterset-dns"),
        ("ConfigMap", "clusterset-in-cluster-kubeconfig"),
        ("Deployment", "clusterset-dns"),
        ("PodDisruptionBudget", "clusterset-dns"),
        ("Role", "clusterset-dns-source-leases"),
        ("RoleBinding", "clusterset-dns-source-leases"),
        ("Service", "clusterset-dns"),
        ("ServiceAccount", "clusterset-dns"),
    ]
    for o in defaults:
        if o["kind"] in ("Role", "RoleBinding"):
            assert o["metadata"]["namespace"] == SOURCE_LEASES_NS
        elif o["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert o["metadata"]["namespace"] == NAMESPACE, o["kind"]
        assert o["metadata"]["labels"]["app.kubernetes.io/part-of"] == "clusterset"
    crds = by_kind(render(crds=True), "CustomResourceDefinition")
    assert sorted(c["metadata"]["name"] for c in crds) == [
        "clusterproperties.about.k8s.io",
        "serviceexports.multicluster.x-k8s.io",
        "serviceimports.multicluster.x-k8s.io",
    ]


def test_every_piece_toggles_off() -> None:
    assert render("--set", "dns.enabled=false") == []
    only_rbac = render("--set", "dns.enabled=false", *MEMBER_RBAC)
    assert {o["kind"] for o in only_rbac} == {
        "ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"
    }  # fmt: skip
    no_pdb = render("--set", "dns.podDisruptionBudget.enabled=false")
    assert by_kind(no_pdb, "PodDisruptionBudget") == []


@pytest.mark.parametrize("component", ["dns", "controller"])
def test_security_context(everything: list[Obj], component: str) -> None:
    pod = deployment(everything, component)["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 65532
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container(deployment(everything, component))["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The one capability kept: binding port 53 (the controller needs it in its bounding set
    # only to exec the image's interpreter, which carries it as a file capability).
    assert sc["capabilities"]["add"] == ["NET_BIND_SERVICE"]
    # A read-only root: the only writable place is the emptyDir on /tmp.
    mounts = {
        m["mountPath"]: m for m in container(deployment(everything, component))["volumeMounts"]
    }
    assert all(m.get("readOnly") for path, m in mounts.items() if path != "/tmp")
    assert "/tmp" in mounts


def test_dns_deployment_ports_probes_resources(defaults: list[Obj]) -> None:
    dep = deployment(defaults, "dns")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    c = container(dep)
    ports = {(p["name"], p["containerPort"], p["protocol"]) for p in c["ports"]}
    assert ports == {("dns-udp", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")}
    assert c["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][kind]), kind
    args = c["args"]
    assert args[args.index("dns") - 2 : args.index("dns")] == [
        "--log-level=info",
        "--log-format=json",
    ]
    assert flag(args, "--listen") == ["0.0.0.0:53"]
    assert flag(args, "--metrics-listen") == ["0.0.0.0:9153"]
    # Keep answering (readiness 503) for a while after SIGTERM, within the grace period.
    (lameduck,) = flag(args, "--lameduck")
    assert 0 < float(lameduck) < pod["spec"]["terminationGracePeriodSeconds"]
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == "9153"
    # --kubeconfig is the in-cluster kubeconfig the chart renders, mounted read-only.
    (path,) = flag(args, "--kubeconfig")
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == mount["name"])
    cm = one(defaults, "ConfigMap", volume["configMap"]["name"])
    kubeconfig = yaml.safe_load(cm["data"][path.rsplit("/", 1)[1]])
    assert kubeconfig["users"][0]["user"] == {
        "tokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token"
    }
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://kubernetes.default.svc"
    assert pod["spec"]["serviceAccountName"] == "clusterset-dns"


def test_dns_service_and_pdb(defaults: list[Obj], everything: list[Obj]) -> None:
    svc = one(defaults, "Service")
    dep = deployment(defaults, "dns")
    assert svc["spec"]["type"] == "ClusterIP"
    assert "clusterIP" not in svc["spec"]
    ports = {(p["port"], p["protocol"], p["targetPort"]) for p in svc["spec"]["ports"]}
    assert ports == {(53, "UDP", "dns-udp"), (53, "TCP", "dns-tcp"), (9153, "TCP", "metrics")}
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    pdb = one(defaults, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    # The optional fixed address.
    assert one(everything, "Service")["spec"]["clusterIP"] == "10.96.0.53"


def test_dns_cluster_role_is_read_only_on_four_resources(everything: list[Obj]) -> None:
    role = one(everything, "ClusterRole", "clusterset-dns")
    got = rules(role)
    assert set(got) == DNS_READS
    assert all(verbs == {"get", "list", "watch"} for verbs in got.values()), got
    assert all("resourceNames" not in r for r in role["rules"])
    binding = one(everything, "ClusterRoleBinding", "clusterset-dns")
    assert binding["roleRef"]["name"] == "clusterset-dns"
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "clusterset-dns", "namespace": NAMESPACE}
    ]
    # Its one other role: list/watch Leases (the hub's liveness Leases), separate, toggleable.
    leases = one(everything, "Role", "clusterset-dns-source-leases")
    assert leases["metadata"]["namespace"] == SOURCE_LEASES_NS
    assert rules(leases) == DNS_LEASES
    sa = {"kind": "ServiceAccount", "name": "clusterset-dns", "namespace": NAMESPACE}
    bound = sorted(
        b["roleRef"]["name"]
        for kind in ("ClusterRoleBinding", "RoleBinding")
        for b in by_kind(everything, kind)
        if sa in b["subjects"]
    )
    assert bound == ["clusterset-dns", "clusterset-dns-source-leases"]
    off = render("--set", "dns.rbac.sourceLeases=false")
    assert [r["metadata"]["name"] for r in by_kind(off, "ClusterRole")] == ["clusterset-dns"]
    assert by_kind(off, "Role") == []


def test_dns_flags_from_values(everything: list[Obj]) -> None:
    args = container(deployment(everything, "dns"))["args"]
    assert flag(args, "--cluster") == ["member1"]
    assert flag(args, "--ns-address") == ["10.96.0.53"]
    assert flag(args, "--default-policy") == ["local-first"]
    assert "--unified-cluster-local" in args
    assert flag(args, "--upstream") == ["10.96.0.10"]
    assert flag(args, "--allow") == ["10.0.0.0/8"]
    assert container(deployment(everything, "dns"))["image"].endswith(":dev")


def test_controller_deployment_and_lease_role() -> None:
    objs = render(*CONTROLLER)
    assert {o["kind"] for o in objs} == {"Deployment", "ServiceAccount", "Role", "RoleBinding"}
    dep = deployment(objs, "controller")
    assert dep["spec"]["replicas"] == 1
    c = container(dep)
    args = c["args"]
    assert args[2] == "controller"
    assert flag(args, "--kubeconfig") == ["/etc/clusterset/members/kubeconfig"]
    assert "--all-contexts" in args
    assert "--leader-elect" in args
    assert flag(args, "--lease-namespace") == [NAMESPACE]
    assert flag(args, "--lease-name") == ["clusterset-controller"]
    assert flag(args, "--identity") == ["$(POD_NAME)"]
    # Liveness Leases where `clusterset dns` reads them and memberRBAC lets the hub write them.
    assert flag(args, "--source-lease-namespace") == [SOURCE_LEASES_NS]
    env = {e["name"]: e for e in c["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert c["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    # The members' kubeconfig: a Secret, mounted read-only.
    pod = dep["spec"]["template"]["spec"]
    (vol,) = [v for v in pod["volumes"] if "secret" in v]
    assert vol["secret"]["secretName"] == "clusterset-members"
    assert vol["secret"]["defaultMode"] == 0o440
    (mount,) = [m for m in c["volumeMounts"] if m["name"] == vol["name"]]
    assert mount == {"name": vol["name"], "mountPath": "/etc/clusterset/members", "readOnly": True}
    # Leases of its own namespace only: a Role, and the one Lease by name where possible.
    role = one(objs, "Role")
    assert role["metadata"]["namespace"] == NAMESPACE
    assert rules(role) == {("coordination.k8s.io", "leases"): {"create", "get", "update"}}
    named = [r for r in role["rules"] if "resourceNames" in r]
    assert named == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["clusterset-controller"],
            "verbs": ["get", "update"],
        }
    ]
    binding = one(objs, "RoleBinding")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"][0]["name"] == pod["serviceAccountName"]


def test_controller_variants(everything: list[Obj]) -> None:
    args = container(deployment(everything, "controller"))["args"]
    assert deployment(everything, "controller")["spec"]["replicas"] == 2
    assert flag(args, "--context") == ["member1", "member2"]
    assert "--all-contexts" not in args
    assert flag(args, "--lease-context") == ["member1"]
    karmada = container(deployment(render(*KARMADA), "controller"))["args"]
    assert flag(karmada, "--karmada-kubeconfig") == ["/etc/clusterset/members/kubeconfig"]
    assert flag(karmada, "--context") == ["m1"]
    assert flag(karmada, "--kubeconfig") == []
    assert flag(karmada, "--karmada-control-plane") == []
    beside = render(*CONTROLLER, "--set", "controller.karmadaControlPlane.secretName=karmada-api")
    pod = deployment(beside, "controller")["spec"]["template"]["spec"]
    assert flag(container(deployment(beside, "controller"))["args"], "--karmada-control-plane") == [
        "/etc/clusterset/karmada/kubeconfig"
    ]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["karmada-kubeconfig"]["secret"]["secretName"] == "karmada-api"
    assert "karmada-kubeconfig" not in str(deployment(everything, "controller"))
    off = render(*CONTROLLER, "--set", "controller.leaderElection.enabled=false")
    assert "--no-leader-elect" in container(deployment(off, "controller"))["args"]
    assert "--create-namespaces" in args
    assert "--create-namespaces" not in container(deployment(off, "controller"))["args"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--set", "dns.unified.enabled=true"], "dns.unified.upstream"),
        (
            [*CONTROLLER, "--set", "controller.replicas=2",
             "--set", "controller.leaderElection.enabled=false"],
            "leaderElection",
        ),
        (
            ["--set", "memberRBAC.enabled=true", "--set", "memberRBAC.serviceAccount.create=false"],
            "memberRBAC needs a subject",
        ),
        (["--set", "dns.ttl=4000"], "/dns/ttl"),
        (["--set", "dns.replica=3"], "replica"),
        (["--set", "dns.defaultPolicy=nearest"], "defaultPolicy"),
    ],
)  # fmt: skip
def test_bad_values_fail_the_render(flags: list[str], message: str) -> None:
    proc = helm("template", RELEASE, str(CHART), *flags, ok=False)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_member_rbac_is_exactly_what_the_hub_writes() -> None:
    objs = render("--set", "dns.enabled=false", *MEMBER_RBAC)
    role = one(objs, "ClusterRole", "clusterset-hub")
    assert rules(role) == HUB_RULES
    sa = one(objs, "ServiceAccount", "clusterset-hub")
    token = one(objs, "Secret", "clusterset-hub-token")
    assert token["type"] == "kubernetes.io/service-account-token"
    assert (
        token["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "clusterset-hub"
    )
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": NAMESPACE}
    assert one(objs, "ClusterRoleBinding")["subjects"] == [subject]
    leader = one(objs, "Role", "clusterset-hub-leader-election")
    assert leader["metadata"]["namespace"] == NAMESPACE
    assert rules(leader) == {LEASES: {"create", "get", "update"}}
    assert [r for r in leader["rules"] if "resourceNames" in r] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["clusterset-controller"],
            "verbs": ["get", "update"],
        }
    ]
    source = one(objs, "Role", "clusterset-hub-source-leases")
    assert source["metadata"]["namespace"] == SOURCE_LEASES_NS
    assert rules(source) == {LEASES: {"create", "patch"}}
    for binding in by_kind(objs, "RoleBinding"):
        assert binding["subjects"] == [subject]
        assert binding["metadata"]["namespace"] in (NAMESPACE, SOURCE_LEASES_NS)
    # With the clusterset's IDs, patch is narrowed to their Leases.
    named = render(*MEMBER_RBAC, "--set", "sourceLeases.clusters={member1,member2}")
    patch = [
        r
        for r in one(named, "Role", "clusterset-hub-source-leases")["rules"]
        if "patch" in r["verbs"]
    ]
    assert patch == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["clusterset-source-member1", "clusterset-source-member2"],
            "verbs": ["patch"],
        }
    ]
    # Opt-in: namespaces made where a service is consumed but was never deployed.
    made = render(*MEMBER_RBAC, "--set", "memberRBAC.createNamespaces=true")
    assert rules(one(made, "ClusterRole", "clusterset-hub")) == {
        **HUB_RULES,
        ("", "namespaces"): {"list", "watch", "create", "patch"},
    }
    # A subject from values, instead of the ServiceAccount.
    user = {"kind": "User", "name": "karmada-hub", "apiGroup": "rbac.authorization.k8s.io"}
    other = render(
        "--set", "dns.enabled=false", *MEMBER_RBAC,
        "--set", "memberRBAC.serviceAccount.create=false",
        "--set", "memberRBAC.subjects[0].kind=User",
        "--set", "memberRBAC.subjects[0].name=karmada-hub",
        "--set", "memberRBAC.subjects[0].apiGroup=rbac.authorization.k8s.io",
    )  # fmt: skip
    assert one(other, "ClusterRoleBinding")["subjects"] == [user]
    assert by_kind(other, "ServiceAccount") == by_kind(other, "Secret") == []


def expand(args: list[str], env: dict[str, str]) -> list[str]:
    """$(VAR) references in args, expanded as the kubelet does."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), a) for a in args]


@pytest.mark.parametrize("name", sorted(VALUE_SETS))
def test_every_rendered_flag_exists_in_the_cli(name: str) -> None:
    """The real CLI parses each container's args (--help: parse, then exit before running)."""
    for dep in by_kind(render(*VALUE_SETS[name]), "Deployment"):
        args = expand(container(dep)["args"], {"POD_NAME": "pod-0"})
        proc = subprocess.run(
            [sys.executable, "-m", "clusterset", *args, "--help"],
            capture_output=True, text=True, check=False, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, f"{dep['metadata']['name']}: {args}\n{proc.stderr}"


def test_image_contract_matches_the_chart(defaults: list[Obj]) -> None:
    docker = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", docker, re.M)
    assert len(froms) >= 2, "multi-stage"
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in docker
    # The build stage: the same Python with a compiler (it builds the UDP fast path); the
    # runtime stage: the slim one.
    assert "ARG BUILD_IMAGE=python:3.11" in docker
    assert froms[0].startswith("${BUILD_IMAGE}") and froms[-1] == "${PYTHON_IMAGE}"
    assert "import clusterset.server._fastudp" in docker, "the build fails without the extension"
    assert re.search(r"^USER 65532:65532$", docker, re.M)
    assert re.search(r'^ENTRYPOINT \["clusterset"\]$', docker, re.M)
    (expose,) = re.findall(r"^EXPOSE (.+)$", docker, re.M)
    assert set(expose.split()) == {"53/udp", "53/tcp", "9153"}
    assert re.search(r"pip install [^\n]* \.(\s|$)", docker), "the project itself is installed"
    # Port 53 as uid 65532 with every capability dropped but NET_BIND_SERVICE: the file
    # capability on the interpreter is what makes that work (tests/image runs it).
    assert '"security.capability"' in docker
    pod = deployment(defaults, "dns")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 65532
    assert container(deployment(defaults, "dns"))["ports"][-1]["containerPort"] == 9153
    assert "CLUSTERSET_" not in "".join(re.findall(r"^ENV .*(?:\n\s+.*)*", docker, re.M))


def test_manifests_equal_a_fresh_render(tmp_path: Path) -> None:
    env = {**os.environ, "HELM": str(helm_binary()), "SYNC_CRDS": "0"}
    proc = subprocess.run(
        [str(MANIFESTS / "render.sh"), str(tmp_path)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    fresh = {p.name: p.read_text() for p in tmp_path.glob("*.yaml")}
    committed = {p.name: p.read_text() for p in MANIFESTS.glob("*.yaml")}
    assert sorted(fresh) == sorted(committed) == ["clusterset.yaml", "hub.yaml", "member.yaml"]
    for name in fresh:
        assert committed[name] == fresh[name], (
            f"deploy/manifests/{name} is stale: run deploy/manifests/render.sh"
        )
    # The defaults file is the defaults render with CRDs.
    objs = [d for d in yaml.safe_load_all(committed["clusterset.yaml"]) if d]
    assert [o for o in objs if o["kind"] != "CustomResourceDefinition"] == render()
    assert len(by_kind(objs, "CustomResourceDefinition")) == 3


# -- 2. a real kube-apiserver -----------------------------------------------------------------


@pytest.fixture(scope="module")
def cp() -> Iterator[ControlPlane]:
    plane = ControlPlane(["member1"])
    failure = ""
    try:
        plane.start()
    except ControlPlaneError as err:
        failure = str(err)
    if failure:  # outside the except: no chained traceback around the message
        pytest.fail(f"control plane did not start: {failure}", pytrace=False)
    try:
        yield plane
    finally:
        plane.stop()


_DISCOVERY: dict[tuple[int, str], dict[str, tuple[str, bool]]] = {}


def resource_path(cp: ControlPlane, obj: Obj) -> str:
    """The REST path of obj, from the apiserver's discovery (kind -> plural, namespaced)."""
    api = obj["apiVersion"]
    base = f"/api/{api}" if "/" not in api else f"/apis/{api}"
    key = (id(cp), base)
    if key not in _DISCOVERY:
        status, body = cp.request("member1", "GET", base)
        assert status == 200, f"discovery {base}: {body}"
        _DISCOVERY[key] = {
            r["kind"]: (r["name"], r["namespaced"])
            for r in body["resources"]
            if "/" not in r["name"]
        }
    plural, namespaced = _DISCOVERY[key][obj["kind"]]
    meta = obj["metadata"]
    ns = f"/namespaces/{meta['namespace']}" if namespaced else ""
    assert not namespaced or meta.get("namespace"), f"{obj['kind']} {meta['name']}: no namespace"
    return f"{base}{ns}/{plural}/{meta['name']}"


def apply(cp: ControlPlane, obj: Obj, *, dry_run: bool = False) -> Obj:
    path = resource_path(cp, obj) + "?fieldManager=test&force=true"
    if dry_run:
        path += "&dryRun=All"
    status, body = cp.request("member1", "PATCH", path, obj, content_type=SSA)
    assert status in (200, 201), f"{obj['kind']} {obj['metadata']['name']}: {status} {body}"
    result: Obj = body
    return result


def established(cp: ControlPlane, name: str) -> bool:
    _, crd = cp.request(
        "member1", "GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{name}"
    )
    conds = {
        c["type"]: c["status"] for c in ((crd or {}).get("status") or {}).get("conditions") or []
    }
    return conds.get("Established") == "True" and conds.get("NamesAccepted") == "True"


@pytest.fixture(scope="module")
def installed(cp: ControlPlane) -> ControlPlane:
    """The chart's CRDs for real (from a render), then its namespace."""
    crds = by_kind(render(crds=True), "CustomResourceDefinition")
    assert len(crds) == 3
    for crd in crds:
        apply(cp, crd)
    for crd in crds:
        name: str = crd["metadata"]["name"]
        eventually(f"CRD {name} established", functools.partial(established, cp, name))
    for group in ("/apis/multicluster.x-k8s.io/v1beta1", "/apis/about.k8s.io/v1beta1"):

        def served(g: str = group) -> bool:
            return cp.request("member1", "GET", g)[0] == 200

        eventually(f"{group} served", served)
    apply(cp, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
    return cp


def manifest_objects(name: str) -> list[Obj]:
    return [d for d in yaml.safe_load_all((MANIFESTS / name).read_text()) if d]


@pytest.mark.kube
@pytest.mark.parametrize("source", ["clusterset.yaml", "member.yaml", "hub.yaml", "everything"])
def test_server_side_dry_run_accepts_every_object(installed: ControlPlane, source: str) -> None:
    cp = installed
    objs = render(*EVERYTHING, crds=True) if source == "everything" else manifest_objects(source)
    assert objs
    seen = set()
    for obj in objs:
        if obj["kind"] == "CustomResourceDefinition":
            apply(cp, obj)  # already there: applying again must be a no-op, not a conflict
            continue
        answer = apply(cp, obj, dry_run=True)
        assert answer["kind"] == obj["kind"]
        assert answer["metadata"]["name"] == obj["metadata"]["name"]
        seen.add(obj["kind"])
        if obj["kind"] == "Service" and obj["spec"].get("clusterIP"):
            assert answer["spec"]["clusterIP"] == obj["spec"]["clusterIP"]
    # Nothing was created by the dry runs.
    assert (
        cp.request("member1", "GET", f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments")[1][
            "items"
        ]
        == []
    )
    assert seen


def access(cp: ControlPlane, user: str, groups: list[str], verb: str, group: str, resource: str,
           namespace: str = "", name: str = "") -> bool:  # fmt: skip
    sub, _, rest = resource.partition("/")
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": user,
            "groups": groups,
            "resourceAttributes": {
                "verb": verb, "group": group, "resource": sub, "subresource": rest,
                "namespace": namespace, "name": name,
            },
        },
    }  # fmt: skip
    status, body = cp.request(
        "member1", "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", review
    )
    assert status == 201, body
    return bool(body["status"].get("allowed"))


def sa_user(name: str) -> tuple[str, list[str]]:
    return (
        f"system:serviceaccount:{NAMESPACE}:{name}",
        ["system:serviceaccounts", f"system:serviceaccounts:{NAMESPACE}", "system:authenticated"],
    )


@pytest.fixture(scope="module")
def deployed(installed: ControlPlane) -> ControlPlane:
    """member.yaml and hub.yaml created for real (no kubelet: nothing runs), with the hub's
    liveness-Lease patch narrowed to this cluster's ID (member1, its context name)."""
    for name in ("member.yaml", "hub.yaml"):
        for obj in manifest_objects(name):
            apply(installed, obj)
    narrowed = render(*MEMBER_RBAC, "--set", "sourceLeases.clusters={member1}")
    apply(installed, one(narrowed, "Role", "clusterset-hub-source-leases"))
    return installed


@pytest.mark.kube
def test_rbac_as_the_apiserver_sees_it(deployed: ControlPlane) -> None:
    cp = deployed
    user, groups = sa_user("clusterset-dns")
    every = [(g, r) for g, r in sorted(HUB_RULES)] + [
        ("", "secrets"), ("", "configmaps"), ("", "pods"), ("multicluster.x-k8s.io", "serviceexports"),
        ("about.k8s.io", "clusterproperties"), ("coordination.k8s.io", "leases"),
    ]  # fmt: skip
    for group, resource in every:
        for verb in sorted(WRITE):
            want = (group, resource) in DNS_READS and verb in ("get", "list", "watch")
            assert access(cp, user, groups, verb, group, resource, "default") == want, (
                f"dns: {verb} {group}/{resource}"
            )
            want = want or verb in DNS_LEASES.get((group, resource), set())
            assert access(cp, user, groups, verb, group, resource, SOURCE_LEASES_NS) == want, (
                f"dns: {verb} {group}/{resource} in {SOURCE_LEASES_NS}"
            )

    user, groups = sa_user("clusterset-hub")
    for group, resource in every:
        for verb in sorted(WRITE):
            want = verb in HUB_RULES.get((group, resource), set())
            assert access(cp, user, groups, verb, group, resource, "default") == want, (
                f"hub: {verb} {group}/{resource}"
            )
    lease = LEASES
    # The leader Lease in the release namespace: create, and get/update of that one name.
    assert access(cp, user, groups, "create", *lease, NAMESPACE)
    assert access(cp, user, groups, "update", *lease, NAMESPACE, "clusterset-controller")
    assert not access(cp, user, groups, "update", *lease, NAMESPACE, "someone-else")
    assert not access(cp, user, groups, "delete", *lease, NAMESPACE, "clusterset-controller")
    # Liveness Leases in kube-system: create, and patch of clusterset-source-<id> only; the
    # control plane's own leader Leases there stay out of reach.
    assert access(cp, user, groups, "create", *lease, SOURCE_LEASES_NS)
    assert access(cp, user, groups, "patch", *lease, SOURCE_LEASES_NS, "clusterset-source-member1")
    for verb in ("patch", "update", "delete", "get"):
        assert not access(cp, user, groups, verb, *lease, SOURCE_LEASES_NS, "kube-scheduler")

    user, groups = sa_user("clusterset-controller")
    assert access(cp, user, groups, "get", *lease, NAMESPACE, "clusterset-controller")
    assert not access(cp, user, groups, "get", *lease, "default", "clusterset-controller")
    assert not access(cp, user, groups, "list", "", "secrets", NAMESPACE)
    assert not access(cp, user, groups, "list", "multicluster.x-k8s.io", "serviceimports")


# -- 3. the real processes, with the chart's args and identities ---------------------------------


def sa_token(cp: ControlPlane, name: str) -> str:
    request = {
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600},
    }
    path = f"/api/v1/namespaces/{NAMESPACE}/serviceaccounts/{name}/token"
    status, body = cp.request("member1", "POST", path, request)
    assert status == 201, body
    token: str = body["status"]["token"]
    return token


def local_kubeconfig(cp: ControlPlane, template: str, token_file: Path) -> Obj:
    """The chart's in-cluster kubeconfig, pointed at the test apiserver."""
    config: Obj = yaml.safe_load(template)
    cluster = config["clusters"][0]["cluster"]
    cluster["server"] = cp.servers["member1"]
    cluster["certificate-authority"] = str(cp.ca_path)
    config["users"][0]["user"]["tokenFile"] = str(token_file)
    # The context is the cluster ID the processes see.
    config["contexts"][0]["name"] = config["current-context"] = "member1"
    return config


def override(args: list[str], values: dict[str, str]) -> list[str]:
    out = []
    for a in args:
        name = a.split("=", 1)[0]
        out.append(f"{name}={values.pop(name)}" if name in values else a)
    assert not values, f"flags not in the chart's args: {sorted(values)}"
    return out


def pod_env(c: Obj, tmp: Path) -> dict[str, str]:
    env = {"POD_NAME": "clusterset-test-0", "POD_NAMESPACE": NAMESPACE}
    for e in c.get("env") or []:
        if "value" in e:
            env[e["name"]] = e["value"].replace("/tmp", str(tmp))
    return env


class Running:
    """A clusterset process and, once it has stopped, its log."""

    def __init__(self, args: list[str], env: dict[str, str], log: Any) -> None:
        self.name = args[args.index("dns") if "dns" in args else args.index("controller")]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "clusterset", *args],
            stdout=log, stderr=log, env={**os.environ, **env},
        )  # fmt: skip
        self.log = log
        self.output = ""

    def alive(self) -> bool:
        if self.proc.poll() is None:
            return True
        self.log.seek(0)
        raise AssertionError(
            f"{self.name} exited with {self.proc.returncode}:\n"
            f"{self.log.read().decode(errors='replace')[-3000:]}"
        )

    def refusals(self) -> list[str]:
        """Log lines where the apiserver refused the process something (HTTP 403)."""
        return [line for line in self.output.splitlines() if "forbidden" in line.lower()]


@contextmanager
def process(args: list[str], env: dict[str, str]) -> Iterator[Running]:
    with tempfile.TemporaryFile() as log:
        running = Running(args, env, log)
        try:
            yield running
        finally:
            running.proc.terminate()
            try:
                running.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                running.proc.kill()
                running.proc.wait()
            log.seek(0)
            running.output = log.read().decode(errors="replace")
            if "Traceback" in running.output:
                print(f"--- {running.name}:\n{running.output[-4000:]}")


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        with err:
            return err.code, err.read().decode()
    except OSError as err:
        return 0, str(err)


def ssa(cp: ControlPlane, path: str, obj: Obj) -> None:
    status, body = cp.request(
        "member1", "PATCH", f"{path}?fieldManager=test&force=true", obj, content_type=SSA
    )
    assert status in (200, 201), body


def export_serve(cp: ControlPlane) -> None:
    ssa(cp, "/api/v1/namespaces/default/services/serve", {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "serve", "namespace": "default"},
        "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]},
    })  # fmt: skip
    ssa(cp, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/serve-abc", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "serve-abc", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "serve"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": ["10.244.1.5"], "conditions": {"ready": True}}],
    })  # fmt: skip
    ssa(cp, f"{MCS}/namespaces/default/serviceexports/serve", {
        "apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport",
        "metadata": {"name": "serve", "namespace": "default"},
    })  # fmt: skip


class Launch:
    """A rendered Deployment's container, moved to this machine: its args with addresses and
    files replaced (every replaced flag must be in the chart's args), its env, its ports."""

    def __init__(self, c: Obj, tmp: Path, overrides: dict[str, str]) -> None:
        self.env = pod_env(c, tmp)
        self.args = override(expand(c["args"], self.env), overrides)


def dns_launch(cp: ControlPlane, tmp: Path) -> tuple[Launch, int, int]:
    """`clusterset dns` as the clusterset-dns ServiceAccount, through the chart's in-cluster
    kubeconfig; returns (launch, DNS port, metrics port)."""
    member = manifest_objects("member.yaml")
    token = tmp / "dns-token"
    token.write_text(sa_token(cp, "clusterset-dns"))
    cm = one(member, "ConfigMap", "clusterset-in-cluster-kubeconfig")
    kubeconfig = tmp / "dns-kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(local_kubeconfig(cp, cm["data"]["kubeconfig"], token)))
    port, metrics = free_port(), free_port()
    launch = Launch(
        container(deployment(member, "dns")),
        tmp,
        {
            "--kubeconfig": str(kubeconfig),
            "--listen": f"127.0.0.1:{port}",
            "--metrics-listen": f"127.0.0.1:{metrics}",
        },
    )
    return launch, port, metrics


def controller_launch(cp: ControlPlane, tmp: Path) -> tuple[Launch, int]:
    """`clusterset controller` with a members kubeconfig of one member, as the clusterset-hub
    ServiceAccount that memberRBAC made there; returns (launch, metrics port)."""
    cm = one(manifest_objects("member.yaml"), "ConfigMap", "clusterset-in-cluster-kubeconfig")
    token = tmp / "hub-token"
    token.write_text(sa_token(cp, "clusterset-hub"))
    members = tmp / "members-kubeconfig"
    members.write_text(yaml.safe_dump(local_kubeconfig(cp, cm["data"]["kubeconfig"], token)))
    metrics = free_port()
    launch = Launch(
        container(deployment(manifest_objects("hub.yaml"), "controller")),
        tmp,
        {"--kubeconfig": str(members), "--metrics-listen": f"127.0.0.1:{metrics}"},
    )
    return launch, metrics


def wait_ready(running: Running, metrics: int) -> None:
    eventually(
        f"{running.name} /ready (the readiness probe)",
        lambda: running.alive() and http_get(metrics, "/ready")[0] == 200,
        timeout=30,
    )


@pytest.mark.kube
def test_member_dns_runs_with_the_chart_args_and_role(
    deployed: ControlPlane, tmp_path: Path
) -> None:
    """The DNS Deployment's exact args, as its ServiceAccount: probes answer, the zone is
    served, and the apiserver refused it nothing."""
    launch, port, metrics = dns_launch(deployed, tmp_path)
    with process(launch.args, launch.env) as dns_proc:
        wait_ready(dns_proc, metrics)
        assert http_get(metrics, "/health")[0] == 200  # the liveness probe
        assert "clusterset_dns_" in http_get(metrics, "/metrics")[1]
        answer = query(port, "dns-version.clusterset.local", "TXT")
        assert answer.rcode() == dns.rcode.NOERROR and answer.answer
        time.sleep(1)  # let every informer make its first list and watch
    assert dns_proc.refusals() == [], "clusterset-dns needs more RBAC than the chart grants"


@pytest.mark.kube
def test_hub_and_member_dns_export_end_to_end(deployed: ControlPlane, tmp_path: Path) -> None:
    """The controller (hub.yaml's args, as memberRBAC's ServiceAccount) and the DNS server
    (member.yaml's args, as its ServiceAccount) export `serve`: Lease held, ServiceImport and
    conditions written, the name answered — and neither was refused anything."""
    cp = deployed
    dns_l, dns_port, dns_metrics = dns_launch(cp, tmp_path)
    ctl_l, ctl_metrics = controller_launch(cp, tmp_path)
    with process(dns_l.args, dns_l.env) as dns_proc, process(ctl_l.args, ctl_l.env) as ctl_proc:
        wait_ready(dns_proc, dns_metrics)
        export_serve(cp)

        def imported() -> Any:
            ctl_proc.alive()
            _, si = cp.request("member1", "GET", f"{MCS}/namespaces/default/serviceimports/serve")
            return (si or {}).get("spec", {}).get("ips")

        ips = eventually("ServiceImport serve with ips, written by the hub", imported)
        lease_path = (
            f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/clusterset-controller"
        )
        holder = eventually(
            "the leader Lease",
            lambda: (
                cp.request("member1", "GET", lease_path)[1].get("spec", {}).get("holderIdentity")
            ),
        )
        assert holder == ctl_l.env["POD_NAME"]

        def conditions() -> Any:
            _, se = cp.request("member1", "GET", f"{MCS}/namespaces/default/serviceexports/serve")
            conds = (se.get("status") or {}).get("conditions") or []
            return {c["type"]: c["status"] for c in conds}

        assert eventually("ServiceExport conditions", conditions) == {
            "Valid": "True",
            "Ready": "True",
            "Conflict": "False",
        }
        assert http_get(ctl_metrics, "/health")[0] == 200  # the controller's probes

        def answered() -> Any:
            r = query(dns_port, "serve.default.svc.clusterset.local", "A")
            got = sorted(rr.address for rrset in r.answer for rr in rrset)
            return got if got == sorted(ips) else None

        eventually("serve.default.svc.clusterset.local answered by the member DNS", answered)
    assert dns_proc.refusals() == [], "clusterset-dns needs more RBAC than the chart grants"
    assert ctl_proc.refusals() == [], "clusterset-hub needs more RBAC than memberRBAC grants"


# -- 4. the reference keeps up with the CLI ------------------------------------------------------


def reference_section(text: str, heading: str) -> str:
    start = text.index(heading)
    ends = [i for i in (text.find("\n### ", start + 1), text.find("\n## ", start + 1)) if i > 0]
    return text[start : min(ends)]


def test_reference_documents_every_flag_annotation_and_condition() -> None:
    """docs/reference.md names every flag (in its command's section) and every environment
    variable, every clusterset.io annotation, every condition type and reason."""
    import typer

    from clusterset.cli.main import app
    from clusterset.model import clusterselect, exportto, liveness
    from clusterset.model.conditions import ConditionType, Reason
    from clusterset.server import probe
    from clusterset.zone import policy

    ref = (ROOT / "docs" / "reference.md").read_text()
    root = typer.main.get_command(app)
    assert isinstance(root, typer.core.TyperGroup)
    missing = []
    sections = [("Global flags", "### Global flags", root)] + [
        (name, f"### `clusterset {name}", sub) for name, sub in root.commands.items()
    ]
    for name, heading, command in sections:
        assert heading in ref, f"no section {heading!r} in docs/reference.md"
        section = reference_section(ref, heading)
        for param in command.params:
            if param.name == "help" or param.param_type_name == "argument":
                continue
            opts = (*param.opts, *param.secondary_opts)
            missing += [f"{name}: {opt}" for opt in opts if f"`{opt}`" not in section]
            envvar = param.envvar or (
                f"CLUSTERSET_{name.upper().replace('-', '_')}_{(param.name or '').upper()}"
                if command is not root
                else f"CLUSTERSET_{(param.name or '').upper()}"
            )
            if f"`{envvar}`" not in section:
                missing.append(f"{name}: {envvar}")
    annotations = [policy.ANNOTATION, policy.MIN_READY, policy.HYSTERESIS, policy.FAILOVER]
    annotations += [policy.WEIGHTS, policy.TIERS, probe.PROBE, probe.PORT]
    annotations += [probe.INTERVAL, probe.TIMEOUT, clusterselect.ANNOTATION]
    annotations += [liveness.PROPERTIES_ANNOTATION, exportto.ANNOTATION]
    missing += [a for a in annotations if f"`{a}`" not in ref]
    missing += [f"condition {c.value}" for c in ConditionType if f"`{c.value}`" not in ref]
    missing += [f"reason {r.value}" for r in Reason if f"`{r.value}`" not in ref]
    assert missing == [], f"docs/reference.md lacks: {missing}"
