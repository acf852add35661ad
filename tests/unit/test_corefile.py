"""Corefile edits of wire-dns (wiredns.corefile), on real-world Corefiles.

KUBEADM is kubeadm's default CoreDNS Corefile; the NodeLocal DNSCache one is the
upstream manifest's (tests/fixtures/nodelocaldns-configmap.yaml, with its attribution),
with the install-time placeholders filled the way its documentation's sed does.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from clusterset.wiredns import corefile as cf
from tests.fleet import KUBEADM_COREFILE

KUBEADM = KUBEADM_COREFILE

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "nodelocaldns-configmap.yaml"


def nodelocal_corefile() -> str:
    """The upstream Corefile with the install-time placeholders substituted."""
    text = yaml.safe_load(FIXTURE.read_text())["data"]["Corefile"]
    for old, new in {
        "__PILLAR__DNS__DOMAIN__": "cluster.local",
        "__PILLAR__LOCAL__DNS__": "169.254.20.10",
        "__PILLAR__DNS__SERVER__": "10.96.0.10",
    }.items():
        text = text.replace(old, new)
    return str(text)


WIRED_TAIL = f"""    loadbalance
}}
{cf.MARKER}
clusterset.local:53 {{
    errors
    cache 5
    forward . 10.96.0.53
}}
"""


def test_wire_appends_our_marked_block() -> None:
    out = cf.wire(KUBEADM, zone="clusterset.local", server="10.96.0.53")
    assert out.startswith(KUBEADM.rsplit("    loadbalance", 1)[0])
    assert out.endswith(WIRED_TAIL)
    assert [b.zones for b in cf.parse(out)] == [(".",), ("clusterset.local",)]


def test_wire_is_idempotent_and_replaces_only_its_own_block() -> None:
    once = cf.wire(KUBEADM, zone="clusterset.local", server="10.96.0.53")
    assert cf.wire(once, zone="clusterset.local", server="10.96.0.53") == once
    moved = cf.wire(once, zone="clusterset.local", server="10.96.0.99")
    assert moved.count("clusterset.local:53") == 1
    assert "forward . 10.96.0.99" in moved and "10.96.0.53" not in moved


def test_unwire_gives_back_the_original() -> None:
    once = cf.wire(KUBEADM, zone="clusterset.local", server="10.96.0.53")
    assert cf.unwire(once) == KUBEADM


def test_a_hand_written_block_is_reported_not_overwritten() -> None:
    hand = KUBEADM + "clusterset.local:53 {\n    forward . 10.1.2.3\n}\n"
    with pytest.raises(cf.CorefileError, match=r"line 24: a server block for clusterset\.local"):
        cf.wire(hand, zone="clusterset.local", server="10.96.0.53")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (".:53 {\n    errors\n", "missing '}'"),
        (".:53 {\n}\n}\n", "expected 'ZONE:PORT {'"),
        ("errors\n", "expected 'ZONE:PORT {'"),
    ],
)
def test_broken_corefiles_are_refused(text: str, message: str) -> None:
    with pytest.raises(cf.CorefileError, match=message):
        cf.wire(text, zone="clusterset.local", server="10.96.0.53")


def test_k3s_top_level_import_is_kept() -> None:
    text = KUBEADM + "import /etc/coredns/custom/*.server\n"
    out = cf.wire(text, zone="clusterset.local", server="10.43.0.53")
    assert "import /etc/coredns/custom/*.server\n" in out


def test_nodelocal_block_binds_like_the_cluster_domain_block() -> None:
    text = nodelocal_corefile()
    out = cf.wire(text, zone="clusterset.local", server="10.96.0.53", nodelocal=True)
    ours = out.split(cf.MARKER, 1)[1]
    assert ours == (
        "\nclusterset.local:53 {\n    errors\n    cache 5\n"
        "    bind 169.254.20.10 10.96.0.10\n    forward . 10.96.0.53\n}\n"
    )
    assert [b.zones[0] for b in cf.parse(out)] == [
        "cluster.local",
        "in-addr.arpa",
        "ip6.arpa",
        ".",
        "clusterset.local",
    ]


def test_loopback_rewrites_ports_binds_and_own_port_plugins() -> None:
    text = cf.wire(
        nodelocal_corefile(), zone="clusterset.local", server="10.96.0.53", nodelocal=True
    )
    out = cf.loopback(
        text,
        port=5399,
        substitute={
            "__PILLAR__CLUSTER__DNS__": "127.0.0.1:5398",
            "__PILLAR__UPSTREAM__SERVERS__": "127.0.0.1:9",
        },
        forward={"clusterset.local": "127.0.0.1:5300"},
    )
    assert "prometheus" not in out and "health" not in out and "169.254.20.10" not in out
    assert out.count("bind 127.0.0.1\n") == 5
    assert "cluster.local.:5399 {" in out and ".:5399 {" in out
    assert "forward . 127.0.0.1:5398 {" in out
    assert "forward . 127.0.0.1:5300\n" in out
    assert "__PILLAR__" not in out


def test_loopback_gives_the_kubernetes_plugin_a_kubeconfig() -> None:
    out = cf.loopback(KUBEADM, port=5399, kubeconfig="/tmp/k", context="member1", reload="2s 1s")
    assert out.startswith(".:5399 {\n    bind 127.0.0.1\n")  # never every address
    assert (
        "    kubernetes cluster.local in-addr.arpa ip6.arpa {\n        kubeconfig /tmp/k member1\n"
        in out
    )
    assert "    reload 2s 1s\n" in out
    assert "lameduck" not in out and "ready" not in out
