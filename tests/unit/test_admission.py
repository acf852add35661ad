"""Admission decisions (controller.admission.review) from AdmissionReview bodies."""

from __future__ import annotations

from typing import Any

from clusterset.controller.admission import View, review
from clusterset.model.ids import ClusterId, ServiceKey
from tests.factories import cluster, clusterset, export, port, service

KEY = ServiceKey("ns", "svc")
A, B = ClusterId("a"), ClusterId("b")
STATE = clusterset(
    cluster("a", services=(service(),), exports=(export(created=1.0),)),
    cluster("b", services=(service(ports=(port(8080, "http"),)),)),
)
IPS = {(A, KEY): ("10.250.0.1",), (B, KEY): ("10.250.0.1",)}
VIEW = View(STATE, {"ctx-a": A, "ctx-b": B}, True, lambda: IPS)


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

    def no_ips() -> Any:
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
