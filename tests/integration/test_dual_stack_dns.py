"""Dual-stack through the live server: `clusterset run` over two member folders whose
Services are IPv4, IPv6 or dual-stack, asked by dig and dnspython over UDP and TCP. The
ClusterSetIPs are the allocator's (--clusterset-cidr, --clusterset-cidr-v6), read back from
the state file; the endpoints are the exporter's pods."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator

import dns.message
import dns.rcode
import dns.rdatatype
import pytest

from tests.conftest import eventually
from tests.integration.servers import clusterset, need, query
from tests.unit.test_dual_stack import C1, C2, POD_IPS, Shape, cluster_folder, hello_objects

pytestmark = pytest.mark.integration

SHAPES = {
    "v4": Shape(("IPv4",)),
    "v6": Shape(("IPv6",)),
    "dual": Shape(("IPv6", "IPv4")),
    "hl6": Shape(("IPv6",), headless=True),
    "sts": Shape(("IPv4", "IPv6"), headless=True, hostnames=True),
}


def name(ns: str) -> str:
    return f"hello.{ns}.svc.clusterset.local."


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, dict[str, list[str]]]]:
    """c1 exports `hello` in one namespace per shape; c2 (which has the namespaces) is
    served. Yields the port and c2's ClusterSetIPs by namespace."""
    root = tmp_path_factory.mktemp("clusters")
    cluster_folder(
        root / "c1", C1, [doc for ns, s in SHAPES.items() for doc in hello_objects(s, ns=ns)]
    )
    namespaces = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}} for ns in SHAPES
    ]
    cluster_folder(root / "c2", C2, namespaces)
    state = root / "state.json"
    args = ("run", "--manifests", str(root), "--cluster", C2, "--state-file", str(state))
    with clusterset(*args) as (port, _proc):

        def allocated() -> dict[str, list[str]] | None:
            held = json.loads(state.read_text()).get(C2, {}) if state.exists() else {}
            return {k.split("/")[0]: v for k, v in held.items()} if len(held) == 3 else None

        ips = eventually("c2's ClusterSetIPs saved", allocated)
        eventually("the zone loaded", lambda: query(port, name("v4")).rcode() == dns.rcode.NOERROR)
        yield port, ips


def records(r: dns.message.Message, section: str = "answer") -> list[tuple[str, str, str]]:
    """(owner, type, data) of every record of a section, sorted."""
    return sorted(
        (rs.name.to_text(), dns.rdatatype.to_text(rs.rdtype), rd.to_text())
        for rs in getattr(r, section)
        for rd in rs
    )


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_a_and_aaaa_answer_each_family_of_the_import(
    served: tuple[int, dict[str, list[str]]], tcp: bool
) -> None:
    """A answers the IPv4 ClusterSetIP, AAAA the IPv6 one; a family the import lacks is
    NODATA (NOERROR, the SOA, no records), so a client asking both gets what exists."""
    port, ips = served
    v4, v6 = ips["dual"][1], ips["dual"][0]  # IPv6 first: the Service's order
    for ns, rdtype, want in [
        ("dual", "A", [v4]),
        ("dual", "AAAA", [v6]),
        ("v6", "AAAA", ips["v6"]),
        ("v4", "A", ips["v4"]),
    ]:
        r = query(port, name(ns), rdtype, tcp=tcp)
        assert [d for _, _, d in records(r)] == want, (ns, rdtype)
    for ns, rdtype in [("v4", "AAAA"), ("v6", "A")]:
        r = query(port, name(ns), rdtype, tcp=tcp)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer, (ns, rdtype)
        assert [t for _, t, _ in records(r, "authority")] == ["SOA"]


def dig(port: int, *args: str) -> list[tuple[str, str, str]]:
    """(owner, type, data) of dig's answer and additional sections."""
    out = subprocess.run(
        [need("dig"), "@127.0.0.1", "-p", str(port), "+time=2", "+tries=1",
         "+noall", "+answer", "+additional", *args],
        capture_output=True, text=True, timeout=10, check=True,
    ).stdout  # fmt: skip
    lines = [line.split(None, 4) for line in out.splitlines() if line and not line.startswith(";")]
    return sorted((owner, rdtype, data) for owner, _ttl, _cls, rdtype, data in lines)


@pytest.mark.parametrize("transport", ["+notcp", "+tcp"])
def test_srv_carries_a_and_aaaa_glue(
    served: tuple[int, dict[str, list[str]]], transport: str
) -> None:
    """dig's SRV of a dual-stack ClusterSetIP service: one record, and its target's A and
    AAAA in the additional section; of a dual-stack StatefulSet: one record per hostname,
    each with its pod's A and AAAA."""
    port, ips = served
    target = name("dual")
    assert dig(port, transport, target, "SRV") == sorted(
        [(target, "SRV", f"0 25 42 {target}")]
        + [(target, "A" if "." in ip else "AAAA", ip) for ip in ips["dual"]]
    )
    sts = name("sts")
    hosts = {f"hello-ss-{i}.{C1}.{sts}": i for i in range(2)}
    want = [(sts, "SRV", f"0 12 42 {h}") for h in hosts]
    want += [(h, "A", POD_IPS["IPv4"][i]) for h, i in hosts.items()]
    want += [(h, "AAAA", POD_IPS["IPv6"][i]) for h, i in hosts.items()]
    assert dig(port, transport, sts, "SRV") == sorted(want)


def test_headless_ipv6_answers_aaaa_for_the_service_and_each_endpoint(
    served: tuple[int, dict[str, list[str]]],
) -> None:
    """An IPv6-only headless service: AAAA of the service is every ready pod address, A is
    NODATA; each pod's dashed-address name answers its AAAA; a StatefulSet pod's hostname
    answers A and AAAA of its two addresses."""
    port, _ = served
    r = query(port, name("hl6"), "AAAA")
    assert [d for _, _, d in records(r)] == list(POD_IPS["IPv6"])
    r = query(port, name("hl6"), "A")
    assert r.rcode() == dns.rcode.NOERROR and not r.answer
    for ip in POD_IPS["IPv6"]:
        pod = f"{ip.replace(':', '-')}.{C1}.{name('hl6')}"
        assert [d for _, _, d in records(query(port, pod, "AAAA"))] == [ip]
    pod = f"hello-ss-1.{C1}.{name('sts')}"
    assert dig(port, pod, "AAAA") == [(pod, "AAAA", POD_IPS["IPv6"][1])]
    assert dig(port, pod, "A") == [(pod, "A", POD_IPS["IPv4"][1])]


def test_each_consumer_holds_one_address_per_family(
    served: tuple[int, dict[str, list[str]]],
) -> None:
    """The allocator's side of what DNS answers: one ClusterSetIP per family of each
    ClusterSetIP import, in the order of its families, none for a headless one."""
    _, ips = served
    fams = {ns: ["IPv6" if ":" in ip else "IPv4" for ip in held] for ns, held in ips.items()}
    assert fams == {"v4": ["IPv4"], "v6": ["IPv6"], "dual": ["IPv6", "IPv4"]}
