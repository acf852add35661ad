"""Admission decisions (controller.admission.review) from AdmissionReview bodies."""

from __future__ import annotations

import asyncio
import copy
import logging
from types import SimpleNamespace
from typing import Any

import pytest

from clusterset.controller.admission import View, review, run
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
    server = SimpleNamespace(certs=certs, stop=stop)

    async def scenario() -> None:
        api = FakeWebhookApi()  # its queue belongs to this loop
        hub = SimpleNamespace(members={"m1": SimpleNamespace(name="m1", api=api)})

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
