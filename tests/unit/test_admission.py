"""Admission decisions (controller.admission.review) from AdmissionReview bodies."""

from __future__ import annotations

import asyncio
import copy
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from clusterset.controller.admission import KarmadaView, View, review, review_karmada, run
from clusterset.kube import api as k
from clusterset.model.ids import ClusterId, ServiceKey
from tests.factories import cluster, clusterset, export, port, service

KEY = ServiceKey("ns", "svc")
A, B = ClusterId("a"), ClusterId("b")
STATE = clusterset(
    cluster("a", services=(service(),), exports=(export(created=1.0),)),
    cluster("b", services=(service(ports=(port(8080, "http"),)),)),
)
IPS = {(A, KEY): ("10.250.0.1",), (B, KEY): ("10.250.0.1",)}
VIEW = View(STATE, {"ctx-a": A, "ctx-b": B}, True, lambda key: IPS)


def body(kind: str, obj: dict[str, Any], operation: str = "CREATE") -> dict[str, Any]:
    group = "multicluster.x-k8s.io" if kind == "ServiceExport" else ""
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "u-1",
            "kind": {"group": group, "version": "v1", "kind": kind},
            "operation": operation,
            "object": obj,
        },
    }


EXPORT = {
    "apiVersion": "multicluster.x-k8s.io/v1beta1",
    "kind": "ServiceExport",
    "metadata": {"name": "svc", "namespace": "ns", "creationTimestamp": "2026-11-29T17:00:00Z"},
}


def test_conflicting_export_is_allowed_with_warnings_naming_the_winner() -> None:
    out = review(body("ServiceExport", EXPORT), "ctx-b", VIEW, deny=False, now=2e9)
    r = out["response"]
    assert r["uid"] == "u-1"
    assert r["allowed"] is True
    assert any("PortConflict" in w and "the oldest export, in a, wins" in w for w in r["warnings"])
    assert any(
        "http:8080/TCP of b would not be in the merged ServiceImport" in w for w in r["warnings"]
    )


def test_deny_conflicts_refuses_with_403() -> None:
    r = review(body("ServiceExport", EXPORT), "ctx-b", VIEW, deny=True, now=2e9)["response"]
    assert r["allowed"] is False
    assert r["status"]["code"] == 403
    assert "PortConflict" in r["status"]["message"]


def test_clean_export_has_no_warning() -> None:
    r = review(body("ServiceExport", EXPORT), "ctx-a", VIEW, deny=True, now=2e9)["response"]
    assert r == {"uid": "u-1", "allowed": True}


def test_service_change_of_an_exported_service_is_checked() -> None:
    both = clusterset(
        cluster("a", services=(service(),), exports=(export(created=1.0),)),
        cluster("b", services=(service(),), exports=(export(created=2.0),)),
    )
    view = View(both, VIEW.ids, True, VIEW.ips)
    svc = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "svc", "namespace": "ns"},
        "spec": {"clusterIP": "None", "ports": [{"name": "http", "port": 80}]},
    }
    r = review(body("Service", svc, "UPDATE"), "ctx-b", view, deny=False, now=2e9)["response"]
    assert r["allowed"] is True
    assert any("TypeConflict" in w and "in a, wins" in w for w in r["warnings"])
    same = {**svc, "spec": {"ports": [{"name": "http", "port": 80}]}}
    r = review(body("Service", same, "UPDATE"), "ctx-b", view, deny=True, now=2e9)["response"]
    assert r == {"uid": "u-1", "allowed": True}


def test_service_of_an_unexported_name_is_not_checked() -> None:
    # No ports: a Service the converter refuses, but nobody exports it: not even read.
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "svc", "namespace": "ns"}}

    def no_ips(key: ServiceKey) -> Any:
        raise AssertionError("ClusterSetIPs computed for a Service nobody exports")

    view = View(STATE, VIEW.ids, True, no_ips)
    r = review(body("Service", svc), "ctx-b", view, deny=True, now=2e9)["response"]
    assert r == {"uid": "u-1", "allowed": True}


def test_unknown_member_and_unsynced_hub_allow_with_a_warning() -> None:
    r = review(body("ServiceExport", EXPORT), "nope", VIEW, deny=True, now=2e9)["response"]
    assert r["allowed"] is True and "unknown member 'nope'" in r["warnings"][0]
    unsynced = View(STATE, VIEW.ids, False, VIEW.ips)
    r = review(body("ServiceExport", EXPORT), "ctx-b", unsynced, deny=True, now=2e9)["response"]
    assert r["allowed"] is True and "not synced" in r["warnings"][0]


def test_a_bad_object_is_allowed_with_one_line() -> None:
    bad = {"apiVersion": "multicluster.x-k8s.io/v1beta1", "kind": "ServiceExport", "metadata": {}}
    r = review(body("ServiceExport", bad), "ctx-b", VIEW, deny=True, now=2e9)["response"]
    assert r["allowed"] is True
    assert "metadata.name" in r["warnings"][0]


class FakeWebhookApi:
    """One member's ValidatingWebhookConfiguration calls: absent until `vwc` is set."""

    name = "m1"

    def __init__(self) -> None:
        self.vwc: dict[str, Any] | None = None
        self.gets: asyncio.Queue[str] = asyncio.Queue()  # one item per round

    async def get(self, path: str) -> dict[str, Any]:
        self.gets.put_nowait(path)
        if self.vwc is None:
            raise k.ApiError(404, "not found", path=path)
        return copy.deepcopy(self.vwc)

    async def replace(self, path: str, obj: dict[str, Any]) -> dict[str, Any]:
        self.vwc = copy.deepcopy(obj)
        return obj


def test_a_missing_webhook_configuration_is_logged_once_per_member(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 22: ensure_ca_bundle answered False and logged by itself, so a member without
    the configuration got a warning at every round (30 s), forever."""

    async def stop() -> None:
        pass

    certs = SimpleNamespace(ca_bundle=lambda: b"CA", reload=lambda: False)
    server = SimpleNamespace(certs=certs, stop=stop, karmada=None)

    async def scenario() -> None:
        api = FakeWebhookApi()  # its queue belongs to this loop
        hub = SimpleNamespace(members={"m1": SimpleNamespace(name="m1", api=api)}, karmada=None)

        async def rounds(n: int) -> None:
            """`n` rounds that saw what is there now (earlier gets are dropped)."""
            while not api.gets.empty():
                api.gets.get_nowait()
            for _ in range(n):
                await api.gets.get()

        task = asyncio.create_task(run(hub, server, config_name="vwc", interval=0.001))  # type: ignore[arg-type]
        await rounds(5)
        api.vwc = {"webhooks": [{"name": "preflight.clusterset.io", "clientConfig": {}}]}
        await rounds(3)
        assert api.vwc["webhooks"][0]["clientConfig"]["caBundle"] == "Q0E="
        api.vwc = None  # deleted: worth saying again, once
        await rounds(5)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    with caplog.at_level(logging.INFO):
        asyncio.run(scenario())
    missing = [r for r in caplog.records if "no ValidatingWebhookConfiguration" in r.getMessage()]
    assert [r.getMessage() for r in missing] == [
        "m1: no ValidatingWebhookConfiguration vwc: the webhook is not registered there"
    ] * 2
    updated = [r for r in caplog.records if "caBundle" in r.getMessage()]
    assert len(updated) == 1  # set once; the rounds after found it unchanged


# Issue 21 item 2: a ServiceExport applied to the karmada-apiserver is checked in the
# members Karmada places it in (its Cluster names are the hub's member names here).
KARMADA_CLUSTERS = {n: {"metadata": {"name": n}, "spec": {}} for n in ("ctx-a", "ctx-b")}
TEMPLATE = {
    "apiVersion": "multicluster.x-k8s.io/v1alpha1",
    "kind": "ServiceExport",
    "metadata": {"name": "svc", "namespace": "ns"},
}


def karmada_policy(name: str, members: list[str], **placement: Any) -> dict[str, Any]:
    return {
        "apiVersion": "policy.karmada.io/v1alpha1",
        "kind": "PropagationPolicy",
        "metadata": {"name": name, "namespace": "ns"},
        "spec": {
            "resourceSelectors": [
                {"apiVersion": TEMPLATE["apiVersion"], "kind": "ServiceExport", "name": "svc"}
            ],
            "placement": {"clusterAffinity": {"clusterNames": members}, **placement},
        },
    }


def karmada(*policies: dict[str, Any], bindings: dict[str, Any] | None = None) -> KarmadaView:
    return KarmadaView(policies, (), KARMADA_CLUSTERS, bindings or {})


def karmada_review(kind: str, obj: dict[str, Any], kv: KarmadaView, deny: bool = False) -> Any:
    b = body(kind, obj)
    b["request"]["kind"]["group"] = (
        "policy.karmada.io" if "Policy" in kind else b["request"]["kind"]["group"]
    )
    return review_karmada(b, VIEW, kv, deny=deny, now=2e9)["response"]


def test_template_is_checked_in_the_member_its_policy_places_it_in() -> None:
    r = karmada_review("ServiceExport", TEMPLATE, karmada(karmada_policy("p", ["ctx-b"])))
    assert r["allowed"] is True
    assert any("PortConflict" in w and "the oldest export, in a, wins" in w for w in r["warnings"])
    r = karmada_review("ServiceExport", TEMPLATE, karmada(karmada_policy("p", ["ctx-a"])))
    assert r == {"uid": "u-1", "allowed": True}


def test_the_binding_says_where_once_karmada_scheduled_it() -> None:
    binding = {
        "ns/svc-serviceexport": {
            "metadata": {"namespace": "ns", "name": "svc-serviceexport"},
            "spec": {"clusters": [{"name": "ctx-b"}]},
        }
    }
    kv = karmada(karmada_policy("p", ["ctx-a"]), bindings=binding)
    r = karmada_review("ServiceExport", TEMPLATE, kv)
    assert any("PortConflict" in w for w in r["warnings"])


def test_deny_refuses_a_template_that_conflicts_in_a_member() -> None:
    r = karmada_review(
        "ServiceExport", TEMPLATE, karmada(karmada_policy("p", ["ctx-b"])), deny=True
    )
    assert r["allowed"] is False and "PortConflict" in r["status"]["message"]


def test_a_policy_naming_an_export_is_checked_where_it_places_it() -> None:
    """The guide applies the ServiceExport, then its policy: the policy is what exports it."""
    r = karmada_review("PropagationPolicy", karmada_policy("p", ["ctx-b"]), karmada())
    assert any("PortConflict" in w for w in r["warnings"])
    r = karmada_review("PropagationPolicy", karmada_policy("p", ["ctx-a"]), karmada())
    assert r == {"uid": "u-1", "allowed": True}
    by_label = karmada_policy("p", ["ctx-b"])
    del by_label["spec"]["resourceSelectors"][0]["name"]
    r = karmada_review("PropagationPolicy", by_label, karmada())
    assert r["warnings"] == [
        "clusterset: PropagationPolicy p selects ServiceExports by label or namespace: each is "
        "checked when it is applied, not with the policy"
    ]


def test_what_cannot_be_known_is_said_not_guessed() -> None:
    r = karmada_review("ServiceExport", TEMPLATE, karmada())
    assert r["allowed"] is True and r["warnings"] == [
        "clusterset: no PropagationPolicy or ClusterPropagationPolicy selects ServiceExport "
        "ns/svc yet, so Karmada does not propagate it; the pre-flight check runs when a policy "
        "naming it is applied"
    ]
    groups = karmada_policy(
        "p", [], clusterAffinities=[{"affinityName": "x", "clusterNames": ["ctx-b"]}]
    )
    r = karmada_review("ServiceExport", TEMPLATE, karmada(groups), deny=True)
    assert r["allowed"] is True
    assert r["warnings"] == [
        "clusterset: where Karmada places ServiceExport ns/svc is not known before it schedules "
        "(PropagationPolicy p: its clusterAffinities are tried in turn by the scheduler): no "
        "pre-flight check"
    ]
    elsewhere = karmada_policy("p", ["ctx-c"])
    kv = KarmadaView(
        (elsewhere,), (), {**KARMADA_CLUSTERS, "ctx-c": {"metadata": {"name": "ctx-c"}}}, {}
    )
    r = karmada_review("ServiceExport", TEMPLATE, kv)
    assert r["warnings"] == [
        "clusterset: PropagationPolicy p places ServiceExport ns/svc in ctx-c, which the hub "
        "does not follow: not checked there"
    ]


def test_karmada_review_ignores_what_it_does_not_check() -> None:
    r = karmada_review("Deployment", {"metadata": {"name": "d", "namespace": "ns"}}, karmada())
    assert r == {"uid": "u-1", "allowed": True}
    plain = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x", "namespace": "ns"}}
    assert karmada_review("Service", plain, karmada()) == {"uid": "u-1", "allowed": True}


def test_a_policy_that_does_not_decide_is_not_checked() -> None:
    """Karmada binds the export to the higher-priority policy: the reviewed one places
    nothing, so it gets no finding (nor, with deny, a refusal)."""
    winner = karmada_policy("winner", ["ctx-a"])
    winner["spec"]["priority"] = 5
    r = karmada_review(
        "PropagationPolicy", karmada_policy("p", ["ctx-b"]), karmada(winner), deny=True
    )
    assert r == {"uid": "u-1", "allowed": True}
    # Already scheduled by Karmada (its binding): a new policy does not move it.
    binding = {"ns/svc-serviceexport": {"spec": {"clusters": [{"name": "ctx-a"}]}}}
    r = karmada_review(
        "PropagationPolicy", karmada_policy("p", ["ctx-b"]), karmada(bindings=binding)
    )
    assert r == {"uid": "u-1", "allowed": True}
    # Bound to the policy being changed: Karmada schedules it again by the new placement.
    claimed = {
        "ns/svc-serviceexport": {
            "metadata": {
                "annotations": {
                    "propagationpolicy.karmada.io/name": "p",
                    "propagationpolicy.karmada.io/namespace": "ns",
                },
                "labels": {"propagationpolicy.karmada.io/permanent-id": "uid-1"},
            },
            "spec": {"clusters": [{"name": "ctx-a"}]},
        }
    }
    r = karmada_review(
        "PropagationPolicy", karmada_policy("p", ["ctx-b"]), karmada(bindings=claimed)
    )
    assert any("PortConflict" in w for w in r["warnings"])
    # The policy being changed is the one that decides: checked where it now places it.
    r = karmada_review(
        "PropagationPolicy", karmada_policy("p", ["ctx-b"]), karmada(karmada_policy("p", ["ctx-a"]))
    )
    assert any("PortConflict" in w for w in r["warnings"])


def test_unsynced_karmada_nowhere_and_odd_shapes_are_said() -> None:
    unsynced = KarmadaView(
        (karmada_policy("p", ["ctx-b"]),), (), KARMADA_CLUSTERS, {}, synced=False
    )
    r = karmada_review("ServiceExport", TEMPLATE, unsynced)
    assert r["warnings"] == [
        "clusterset: the hub has not synced Karmada's policies and clusters yet: no pre-flight check"
    ]
    r = karmada_review("ServiceExport", TEMPLATE, karmada(karmada_policy("p", ["elsewhere"])))
    assert r["warnings"] == [
        "clusterset: PropagationPolicy p places ServiceExport ns/svc in no cluster"
    ]
    odd = body("ServiceExport", TEMPLATE)
    odd["request"]["object"] = ["not", "an", "object"]
    r = review_karmada(odd, VIEW, karmada(), deny=True, now=2e9)["response"]
    assert r["allowed"] is True and r["warnings"][0].startswith("clusterset: no pre-flight check: ")
