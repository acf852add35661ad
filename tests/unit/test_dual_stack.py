"""Dual-stack end to end in manifest mode, as the mcs-api conformance suite checks it.

kubernetes-sigs/mcs-api#143 ("Conformance: add IPv6 and dual-stack support", in the suite
since v0.5.0) makes every spec loop over the IP families: the `hello` Service asks
`PreferDualStack`, and each check runs once per family of the Service or of the
ServiceImport. Each test below is one of those specs, as a table over the shapes a
Service can have (IPv4, IPv6, both in either order; ClusterSetIP, Headless, a StatefulSet's
hostnames), run through the whole manifest-mode pipeline: folders -> reconcile -> the
ClusterSetIP allocator (--clusterset-cidr, --clusterset-cidr-v6) -> the objects `clusterset
render` writes -> the zone member2 serves, asked like the suite's `nslookup -type=A|AAAA|SRV`.

The suite itself needs pods on dual-stack nodes (nslookup and nc in netshoot); the fleet
(tests/fleet.py) is IPv4-only, so there its per-family loops run for IPv4 alone.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import yaml

from clusterset.controller.manifest import ClusterSetFeed
from clusterset.model import convert
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import IPFamily, family_of
from clusterset.reconcile import allocate, render
from clusterset.reconcile.desired import changed_keys, reconcile
from tests.dnsutil import ask, compile_view
from tests.factories import cluster, clusterset, export, service

CIDRS: dict[IPFamily, allocate.Network] = {
    IPFamily.IPV4: ipaddress.IPv4Network("10.250.0.0/16"),
    IPFamily.IPV6: ipaddress.IPv6Network("fd63:6c75:7374::/112"),
}
NS = "mcs-conformance-1686874467"
NAME = f"hello.{NS}.svc.clusterset.local."
C1, C2 = ClusterId("c1"), ClusterId("c2")
# The exporter's own ClusterIPs and its pods' addresses (two replicas), per family.
CLUSTER_IPS = {"IPv4": "10.96.98.203", "IPv6": "fd00:10:96::a3c9"}
POD_IPS = {"IPv4": ("10.244.0.51", "10.244.0.52"), "IPv6": ("fd00:10:244::33", "fd00:10:244::34")}
RECORD = {"IPv4": "A", "IPv6": "AAAA"}  # the suite's dnsRecordTypeOf
OTHER = {"IPv4": "IPv6", "IPv6": "IPv4"}


@dataclass(frozen=True)
class Shape:
    """How the exported `hello` Service looks in c1."""

    families: tuple[str, ...]
    headless: bool = False
    hostnames: bool = False  # a StatefulSet's pods: hello-ss-0, hello-ss-1 in every family


SHAPES = {
    "ipv4": Shape(("IPv4",)),
    "ipv6": Shape(("IPv6",)),
    "dual-ipv4-first": Shape(("IPv4", "IPv6")),
    "dual-ipv6-first": Shape(("IPv6", "IPv4")),
    "headless-ipv6": Shape(("IPv6",), headless=True),
    "headless-dual": Shape(("IPv4", "IPv6"), headless=True),
    "headless-dual-ipv6-first": Shape(("IPv6", "IPv4"), headless=True),
    "statefulset-ipv6": Shape(("IPv6",), headless=True, hostnames=True),
    "statefulset-dual": Shape(("IPv4", "IPv6"), headless=True, hostnames=True),
}
CLUSTERSET_IP = [pytest.param(s, id=i) for i, s in SHAPES.items() if not s.headless]
HEADLESS = [pytest.param(s, id=i) for i, s in SHAPES.items() if s.headless]
STATEFULSET = [pytest.param(s, id=i) for i, s in SHAPES.items() if s.hostnames]
EVERY = [pytest.param(s, id=i) for i, s in SHAPES.items()]


def hello_objects(
    shape: Shape,
    *,
    ns: str = NS,
    cluster_ips: Mapping[str, str] = CLUSTER_IPS,
    pod_ips: Mapping[str, tuple[str, ...]] = POD_IPS,
    ready: bool = True,
    export: dict[str, Any] | None = None,
    created: str = "2026-11-01T10:00:00Z",
) -> list[dict[str, Any]]:
    """A cluster's hello Service in `ns` (newHelloService: tcp/42/TCP, udp/42/UDP), one
    EndpointSlice per family as the EndpointSlice controller makes them, and its
    ServiceExport (`export`: its metadata.annotations and spec)."""
    ports = [
        {"name": "tcp", "port": 42, "protocol": "TCP"},
        {"name": "udp", "port": 42, "protocol": "UDP"},
    ]
    spec: dict[str, Any] = {
        "ports": ports,
        "ipFamilies": list(shape.families),
        "ipFamilyPolicy": "PreferDualStack",
    }
    if shape.headless:
        spec["clusterIP"] = "None"
    else:
        spec["clusterIPs"] = [cluster_ips[f] for f in shape.families]
        spec["clusterIP"] = spec["clusterIPs"][0]
    meta = {"name": "hello", "namespace": ns}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec},
    ]
    for family in shape.families:
        endpoints = [
            {"addresses": [ip], "conditions": {"ready": ready}}
            | ({"hostname": f"hello-ss-{i}"} if shape.hostnames else {})
            for i, ip in enumerate(pod_ips[family])
        ]
        docs.append(
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"hello-{family.lower()}",
                    "namespace": ns,
                    "labels": {"kubernetes.io/service-name": "hello"},
                },
                "addressType": family,
                "ports": ports,
                "endpoints": endpoints,
            }
        )
    export = export or {}
    docs.append(
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceExport",
            "metadata": meta
            | {"creationTimestamp": created, "annotations": export.get("annotations", {})},
            "spec": export.get("spec", {}),
        }
    )
    return docs


def cluster_folder(folder: Path, cid: str, docs: list[dict[str, Any]]) -> None:
    folder.mkdir(parents=True)
    prop = {
        "apiVersion": "about.k8s.io/v1alpha1",
        "kind": "ClusterProperty",
        "metadata": {"name": "cluster.clusterset.k8s.io"},
        "spec": {"value": cid},
    }
    (folder / "objects.yaml").write_text(yaml.safe_dump_all([prop, *docs]))


@dataclass(frozen=True)
class Outcome:
    """What c2 (a consumer that only has the namespace) holds, and its zone."""

    objects: dict[str, list[dict[str, Any]]]  # kind -> the objects `clusterset render` writes
    zone: Any

    @property
    def service_import(self) -> dict[str, Any]:
        (si,) = self.objects["ServiceImport"]
        return si

    def ask(self, rdtype: str, name: str = NAME) -> dns.message.Message:
        return ask(self.zone, name, rdtype, tcp=True)

    def addresses(self, rdtype: str, name: str = NAME) -> list[str]:
        r = self.ask(rdtype, name)
        assert r.rcode() == dns.rcode.NOERROR, dns.rcode.to_text(r.rcode())
        return sorted(rd.address for rrset in r.answer for rd in rrset)


def consume(c1: list[dict[str, Any]], c2: list[dict[str, Any]]) -> Outcome:
    """c1's and c2's objects through the manifest-mode pipeline, as c2 sees the result."""
    root = Path(tempfile.mkdtemp(prefix="clusterset-dual-stack-"))
    cluster_folder(root / "c1", C1, c1)
    cluster_folder(root / "c2", C2, c2)
    feed = ClusterSetFeed(root, cidrs=CIDRS, state_file=root / "state.json")
    observed = feed.observe()
    objects: dict[str, list[dict[str, Any]]] = {}
    for obj in render.cluster_objects(observed.desired.clusters[C2]):
        objects.setdefault(obj["kind"], []).append(obj)
    return Outcome(objects, compile_view(feed.view(observed, C2)))


@functools.cache
def outcome(shape: Shape) -> Outcome:
    """`shape` exported by c1 and consumed by c2, which only has the namespace."""
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}
    return consume(hello_objects(shape), [namespace])


# -- service_import.go ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", CLUSTERSET_IP)
def test_an_ip_is_allocated_for_each_ip_family(shape: Shape) -> None:
    """The spec "An IP should be allocated for a ClusterSetIP ServiceImport for each IP family": as
    many `spec.ips` as `spec.ipFamilies`, each a valid IP of the family at its index. Ours:
    the families are the exported Service's, in its order, and each address comes from
    that family's ClusterSetIP range."""
    spec = outcome(shape).service_import["spec"]
    assert spec["ipFamilies"] == list(shape.families)
    assert len(spec["ips"]) == len(spec["ipFamilies"])
    for ip, family in zip(spec["ips"], spec["ipFamilies"], strict=True):
        assert family_of(ip).value == family
        assert ipaddress.ip_address(ip) in CIDRS[IPFamily(family)]


@pytest.mark.parametrize("shape", HEADLESS)
def test_no_clusterset_ip_is_allocated_for_a_headless_import(shape: Shape) -> None:
    """The spec "No clusterset IP should be allocated for a Headless ServiceImport", in any family;
    its `ipFamilies` still say which families its endpoints come in (the suite loops over
    them for the headless DNS specs)."""
    out = outcome(shape)
    assert "ips" not in out.service_import["spec"]
    assert out.service_import["spec"]["ipFamilies"] == list(shape.families)
    assert "Service" not in out.objects  # no derived Service either


@pytest.mark.parametrize("shape", CLUSTERSET_IP)
def test_the_derived_service_asks_the_import_families(shape: Shape) -> None:
    """Ours (not a suite spec): the derived Service, whose ClusterIPs are the ClusterSetIPs
    on real clusters, asks the import's families in its order: SingleStack for one,
    PreferDualStack for two, with `clusterIPs` in the order of `ipFamilies`."""
    out = outcome(shape)
    (svc,) = out.objects["Service"]
    spec = svc["spec"]
    assert spec["ipFamilies"] == list(shape.families)
    assert spec["ipFamilyPolicy"] == (
        "PreferDualStack" if len(shape.families) > 1 else "SingleStack"
    )
    assert spec["clusterIPs"] == out.service_import["spec"]["ips"]
    assert spec["clusterIP"] == spec["clusterIPs"][0]


# -- endpoint_slice.go ---------------------------------------------------------------------


@pytest.mark.parametrize("shape", EVERY)
def test_an_mcs_endpointslice_per_ip_family(shape: Shape) -> None:
    """The spec "Exporting a service should create an MCS EndpointSlice ... with the required MCS
    labels": for each family of the ServiceImport, a slice of that addressType with
    endpoints, the service-name and source-cluster labels, and a managed-by that is not
    the EndpointSlice controller's."""
    out = outcome(shape)
    slices = out.objects["EndpointSlice"]
    for family in out.service_import["spec"]["ipFamilies"]:
        (eps,) = [s for s in slices if s["addressType"] == family]
        labels = eps["metadata"]["labels"]
        assert labels["multicluster.kubernetes.io/service-name"] == "hello"
        assert labels["multicluster.kubernetes.io/source-cluster"] == C1
        assert labels["endpointslice.kubernetes.io/managed-by"] != "endpointslice-controller.k8s.io"
        assert sorted(a for e in eps["endpoints"] for a in e["addresses"]) == list(POD_IPS[family])
        if shape.hostnames:  # the StatefulSet spec: every endpoint ready, with its hostname
            assert [e["hostname"] for e in eps["endpoints"]] == ["hello-ss-0", "hello-ss-1"]
    assert len(slices) == len(shape.families)


# -- clusterip_service_dns.go --------------------------------------------------------------


@pytest.mark.parametrize("shape", CLUSTERSET_IP)
def test_clusterip_dns_resolves_each_clusterset_ip(shape: Shape) -> None:
    """The spec "A DNS lookup of the <service>.<ns>.svc.clusterset.local domain for a ClusterIP
    service should resolve to the clusterset IP": for each of `spec.ips`, `nslookup -type=A`
    (IPv4) or `-type=AAAA` (IPv6) answers it. Ours: a family the import lacks is NODATA (the
    name exists: an SOA, no records), never NXDOMAIN."""
    out = outcome(shape)
    for ip in out.service_import["spec"]["ips"]:
        assert out.addresses(RECORD[family_of(ip).value]) == [ip]
    if len(shape.families) == 1:
        r = out.ask(RECORD[OTHER[shape.families[0]]])
        assert (r.rcode(), r.answer, [a.rdtype for a in r.authority]) == (
            dns.rcode.NOERROR,
            [],
            [dns.rdatatype.SOA],
        )


@pytest.mark.parametrize("shape", CLUSTERSET_IP)
def test_clusterip_srv_is_one_record_with_glue_of_each_family(shape: Shape) -> None:
    """The spec "A DNS SRV query ... for a ClusterIP service should return valid SRV records":
    exactly one (port 42, target the service name), dual-stack too. Ours: the additional
    section carries the target's A and AAAA, one glue record per ClusterSetIP."""
    out = outcome(shape)
    r = out.ask("SRV")
    srv = [rd for rrset in r.answer for rd in rrset]
    assert [(rd.port, rd.target.to_text()) for rd in srv] == [(42, NAME)]
    glue = sorted(
        (dns.rdatatype.to_text(rs.rdtype), rd.address, rs.name.to_text())
        for rs in r.additional
        for rd in rs
    )
    ips = out.service_import["spec"]["ips"]
    assert glue == sorted((RECORD[family_of(ip).value], ip, NAME) for ip in ips)


# -- headless_service_dns.go ---------------------------------------------------------------


@pytest.mark.parametrize("shape", HEADLESS)
def test_headless_dns_returns_the_ready_endpoints_of_each_family(shape: Shape) -> None:
    """The spec "A DNS query of the <service>.<ns>.svc.clusterset.local domain for a headless
    service should return the ready endpoint addresses of all the backing pods": for each
    family of the ServiceImport, the A (AAAA) answer is exactly c1's endpoint addresses of
    that addressType (HaveAddresses). Ours: a family it lacks is NODATA."""
    out = outcome(shape)
    for family in out.service_import["spec"]["ipFamilies"]:
        assert out.addresses(RECORD[family]) == list(POD_IPS[family])
    if len(shape.families) == 1:
        assert out.addresses(RECORD[OTHER[shape.families[0]]]) == []


@pytest.mark.parametrize("shape", STATEFULSET)
def test_statefulset_hostname_names_answer_each_family(shape: Shape) -> None:
    """The spec "A DNS query of the <hostname>.<clusterid>.<service>.<ns>.svc.clusterset.local
    domain for a headless StatefulSet service should return the requested pod's endpoint
    address": for each family, each endpoint of the MCS slice of that addressType answers its
    own address under its hostname and source cluster."""
    out = outcome(shape)
    for eps in out.objects["EndpointSlice"]:
        cluster = eps["metadata"]["labels"]["multicluster.kubernetes.io/source-cluster"]
        for ep in eps["endpoints"]:
            name = f"{ep['hostname']}.{cluster}.{NAME}"
            assert out.addresses(RECORD[eps["addressType"]], name) == ep["addresses"]


@pytest.mark.parametrize("shape", HEADLESS)
def test_headless_srv_has_a_record_for_every_endpoint_of_every_family(shape: Shape) -> None:
    """The spec "A DNS SRV query ... for a headless service should return valid SRV records": the
    endpoints "for all IP families in the service" each have an SRV record whose target
    starts with their hostname (else the dashed address) and whose port is 42. Ours: one
    record per target (a dual-stack pod's hostname is one target), each target's A and
    AAAA in the additional section."""
    out = outcome(shape)
    r = out.ask("SRV")
    targets = [(rd.port, rd.target.to_text()) for rrset in r.answer for rd in rrset]
    want: dict[str, list[str]] = {}
    for family in shape.families:
        for i, ip in enumerate(POD_IPS[family]):
            host = f"hello-ss-{i}" if shape.hostnames else ip.replace(".", "-").replace(":", "-")
            want.setdefault(f"{host}.{C1}.{NAME}", []).append(ip)
    assert sorted(targets) == sorted((42, t) for t in want)
    glue = sorted((rs.name.to_text(), rd.address) for rs in r.additional for rd in rs)
    assert glue == sorted((t, ip) for t, ips in want.items() for ip in ips)


# -- local-first and KEP-5939 cluster selection with IPv6 ClusterIPs -----------------------

C2_CLUSTER_IPS = {"IPv4": "10.97.98.203", "IPv6": "fd00:10:97::a3c9"}
C2_POD_IPS = {"IPv4": ("10.245.0.51",), "IPv6": ("fd00:10:245::33",)}
LOCAL_FIRST = {"annotations": {"clusterset.io/dns-policy": "local-first"}}
FAILOVER = {
    "annotations": {
        "clusterset.io/dns-policy": "local-first",
        "clusterset.io/failover": "endpoints",
    }
}


def _selectors(value: str, fallback: str) -> dict[str, Any]:
    selector = {"propertySelector": {"matchLabels": {"cluster.clusterset.k8s.io": value}}}
    return {"spec": {"clusterSelectors": [selector], "clusterSelectorsFallbackPolicy": fallback}}


SAME_AS_IMPORTER = _selectors("@SameAsImporter@", "None")
DUAL, V6_ONLY = Shape(("IPv4", "IPv6")), Shape(("IPv6",))


@pytest.mark.parametrize(
    ("export", "local", "ready", "answer"),
    [
        # Local-first: a healthy local copy answers its own ClusterIP of each family.
        pytest.param(LOCAL_FIRST, DUAL, True, "local", id="local-first-healthy"),
        pytest.param(LOCAL_FIRST, DUAL, False, "clustersetip", id="local-first-local-down"),
        pytest.param(FAILOVER, DUAL, False, "c1-endpoints", id="local-first-failover-endpoints"),
        # KEP-5939: the asking cluster alone is the tier: its own ClusterIPs.
        pytest.param(SAME_AS_IMPORTER, DUAL, True, "local", id="selectors-same-as-importer"),
        pytest.param(SAME_AS_IMPORTER, DUAL, False, "none", id="selectors-down-fallback-none"),
        pytest.param(_selectors(C1, "None"), DUAL, True, "c1-endpoints", id="selectors-c1"),
        # An IPv6-only local copy (IPFamilyConflict) answers AAAA. Local-first gives the
        # IPv4 ClusterSetIP for A (local first, where the local copy serves the family);
        # a tier of the asking cluster alone (data sovereignty) has no IPv4 to give.
        pytest.param(
            LOCAL_FIRST, V6_ONLY, True, "local+clustersetip", id="local-first-local-ipv6-only"
        ),
        pytest.param(SAME_AS_IMPORTER, V6_ONLY, True, "local", id="selectors-local-ipv6-only"),
    ],
)
def test_local_answers_follow_the_family_asked(
    export: dict[str, Any], local: Shape, ready: bool, answer: str
) -> None:
    """c1 (the oldest) and c2 export `hello`, c1 dual-stack; c2 asks. Each family's record
    type answers that family's addresses of what the policy chose: c2's own ClusterIP, the
    ClusterSetIP, or the chosen clusters' endpoints."""
    c2 = hello_objects(
        local,
        cluster_ips=C2_CLUSTER_IPS,
        pod_ips=C2_POD_IPS,
        ready=ready,
        export=export,
        created="2026-11-01T11:00:00Z",
    )
    out = consume(hello_objects(DUAL, export=export), c2)
    clusterset_ips = {family_of(ip).value: [ip] for ip in out.service_import["spec"]["ips"]}
    for family in DUAL.families:
        want = {
            "local": [C2_CLUSTER_IPS[family]] if family in local.families else [],
            "local+clustersetip": (
                [C2_CLUSTER_IPS[family]] if family in local.families else clusterset_ips[family]
            ),
            "clustersetip": clusterset_ips[family],
            "c1-endpoints": list(POD_IPS[family]),
            "none": [],
        }[answer]
        assert out.addresses(RECORD[family]) == want, family


# -- the hub: what each consumer's apiserver is asked, and what it holds -------------------

V4, V6 = IPFamily.IPV4, IPFamily.IPV6
HUB_KEY = ServiceKey("ns", "svc")
M1, M2 = ClusterId("member1"), ClusterId("member2")
IPS = {V4: "10.97.0.9", V6: "fd00:10:97::9"}


@pytest.mark.parametrize(
    ("exported", "served", "held", "families", "ips", "policy"),
    [
        # A dual-stack consumer: the import's families, its derived Service's ClusterIPs.
        pytest.param(
            (V4, V6), (V4, V6), (V4, V6), (V4, V6), (V4, V6), "PreferDualStack", id="dual"
        ),
        pytest.param(
            (V6, V4), (V4, V6), (V6, V4), (V6, V4), (V6, V4), "PreferDualStack", id="dual-v6-first"
        ),
        pytest.param((V6,), (V4, V6), (V6,), (V6,), (V6,), "SingleStack", id="ipv6"),
        # Before the derived Service has its ClusterIPs: none; a family being added: the
        # ones it has (the apiserver adds the other).
        pytest.param(
            (V4, V6), (V4, V6), (), (V4, V6), (), "PreferDualStack", id="not-allocated-yet"
        ),
        pytest.param((V4, V6), (V4, V6), (V4,), (V4, V6), (V4,), "PreferDualStack", id="upgrading"),
        # A family dropped: its address left out; the primary changed: none (made again).
        pytest.param((V4,), (V4, V6), (V4, V6), (V4,), (V4,), "SingleStack", id="ipv6-dropped"),
        pytest.param(
            (V6, V4), (V4, V6), (V4, V6), (V6, V4), (), "PreferDualStack", id="primary-moved"
        ),
        # A single-stack consumer of a dual-stack service: its own family only, not a
        # derived Service its apiserver refuses ("not configured on this cluster").
        pytest.param((V6, V4), (V4,), (V4,), (V4,), (V4,), "SingleStack", id="ipv4-only-consumer"),
        pytest.param((V4, V6), (V6,), (V6,), (V6,), (V6,), "SingleStack", id="ipv6-only-consumer"),
        # Unknown (no ServiceCIDR API or no permission), or nothing in common: as exported.
        pytest.param((V4, V6), (), (V4, V6), (V4, V6), (V4, V6), "PreferDualStack", id="unknown"),
        pytest.param((V6,), (V4,), (), (V6,), (), "SingleStack", id="nothing-in-common"),
    ],
)
def test_a_consumer_imports_the_families_it_serves(
    exported: tuple[IPFamily, ...],
    served: tuple[IPFamily, ...],
    held: tuple[IPFamily, ...],
    families: tuple[IPFamily, ...],
    ips: tuple[IPFamily, ...],
    policy: str,
) -> None:
    """member1 exports a Service of `exported` families; member2 serves `served` (its
    ServiceCIDRs) and its derived Service holds ClusterIPs of `held` families. member2's
    ServiceImport has `families` and the ClusterIPs of `ips` (spec.ips[i] of ipFamilies[i],
    the suite's check), and its derived Service asks those families with `policy`."""
    state = clusterset(
        cluster(
            "member1",
            services=(service(families=exported, ips=tuple(CLUSTER_IPS[f] for f in exported)),),
            exports=(export(),),
        ),
        dataclasses.replace(cluster("member2"), service_families=served),
    )
    d = reconcile(state, ips={(M2, HUB_KEY): tuple(IPS[f] for f in held)})
    imp = d.clusters[M2].imports[HUB_KEY]
    assert (imp.ip_families, imp.ips) == (families, tuple(IPS[f] for f in ips))
    svc = render.derived_service(imp, d.clusters[M2].derived[HUB_KEY])["spec"]
    assert (svc["ipFamilies"], svc["ipFamilyPolicy"]) == ([f.value for f in families], policy)
    assert svc.get("clusterIPs", []) == [IPS[f] for f in ips]
    # The exporter's own import is as exported (its families are unknown here).
    assert d.clusters[M1].imports[HUB_KEY].ip_families == exported


def test_a_consumer_serving_other_families_is_reconciled_again() -> None:
    """A cluster's ServiceCIDRs moving (a cluster made dual-stack) changes every import
    there: the incremental pass sees every key as changed."""
    before = clusterset(cluster("member1", services=(service(),), exports=(export(),)))
    after = clusterset(
        dataclasses.replace(cluster("member1", services=(service(),), exports=(export(),)),
                            service_families=(V4, V6))
    )  # fmt: skip
    assert changed_keys(before, after) is None


@pytest.mark.parametrize(
    ("cidrs", "families"),
    [
        pytest.param([], (), id="none-unknown"),
        pytest.param([("kubernetes", ["10.96.0.0/16"], False)], (V4,), id="ipv4"),
        pytest.param(
            [("kubernetes", ["fd00:10:96::/112", "10.96.0.0/16"], False)],
            (V6, V4),
            id="dual-v6-primary",
        ),
        # Another range (KEP-1880 lets one be added): the default one says which is primary.
        pytest.param(
            [("extra", ["fd00:10:99::/112"], False), ("kubernetes", ["10.96.0.0/16"], False)],
            (V4, V6),
            id="added-range",
        ),
        # A range being removed (dual-stack to single-stack) asks no new address of it.
        pytest.param(
            [("kubernetes", ["10.96.0.0/16"], False), ("v6", ["fd00:10:96::/112"], True)],
            (V4,),
            id="range-being-deleted",
        ),
    ],
)
def test_service_families_come_from_the_servicecidrs(
    cidrs: list[tuple[str, list[str], bool]], families: tuple[IPFamily, ...]
) -> None:
    objs = [
        {
            "metadata": {"name": name}
            | ({"deletionTimestamp": "2026-11-01T10:00:00Z"} if gone else {}),
            "spec": {"cidrs": ranges},
        }
        for name, ranges, gone in cidrs
    ]
    assert convert.service_families(objs) == families
