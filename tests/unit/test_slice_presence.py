"""`ServiceImport.status.endpointSliceObjects: Present` (KEP-1645, enhancements#6037) on every
import clusterset writes where the member's schema has the field; a schema that prunes it (an
older v1beta1 CRD) gets it left out after one write, not re-sent on every pass."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clusterset.controller.hub import Hub
from clusterset.model.ids import ClusterId
from clusterset.model.objects import ImportType, ServiceImport
from clusterset.reconcile import render
from tests.unit.test_hub_membership import FakeApiserver, _exporting

Obj = dict[str, Any]
BETA = "/apis/multicluster.x-k8s.io/v1beta1"


@pytest.mark.parametrize(
    ("version", "presence", "want"),
    [("v1beta1", True, "Present"), ("v1alpha1", True, None), ("v1beta1", False, None)],
)
def test_the_status_says_present_where_the_schema_has_the_field(
    version: str, presence: bool, want: str | None
) -> None:
    imp = ServiceImport("ns", "web", ImportType.CLUSTER_SET_IP, clusters=(ClusterId("member1"),))
    obj = render.service_import_status(imp, version, presence=presence)
    assert obj["status"].get("endpointSliceObjects") == want


class BetaApiserver(FakeApiserver):
    """Serves v1beta1; with `prunes`, its ServiceImport schema lacks endpointSliceObjects."""

    def __init__(self, name: str, prunes: bool, *objs: tuple[str, Obj]) -> None:
        super().__init__(name, *objs)
        self.prunes = prunes

    async def get(self, path: str) -> Obj:
        if path == "/apis/multicluster.x-k8s.io":
            return {"versions": [{"version": "v1beta1"}]}
        return await super().get(path)

    async def apply(self, path: str, obj: Obj, **kw: Any) -> Obj:
        if self.prunes and path.endswith("/status"):
            status = {k: v for k, v in obj["status"].items() if k != "endpointSliceObjects"}
            obj = {**obj, "status": status}
        return await super().apply(path, obj, **kw)


@pytest.mark.parametrize("prunes", [False, True], ids=["schema-has-it", "schema-prunes-it"])
def test_a_pruning_schema_costs_one_status_write(prunes: bool) -> None:
    source = _exporting("member1", "web")
    ns: Obj = {"kind": "Namespace", "metadata": {"name": "ns"}}
    member = BetaApiserver("member2", prunes, ("/api/v1/namespaces/ns", ns))
    path = f"{BETA}/namespaces/ns/serviceimports/web"

    async def scenario() -> list[tuple[str, str]]:
        hub = Hub({"member1": source, "member2": member}, debounce=0.01)  # type: ignore[dict-item]
        task = asyncio.create_task(hub.run())
        try:
            for _ in range(250):
                if path in member.objects and (member.objects[path].get("status") or {}):
                    break
                await asyncio.sleep(0.02)
            for _ in range(3):  # more passes over the same state
                assert await hub.reconcile_once(full=True)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return [w for w in member.writes if w == ("apply", path + "/status")]

    writes = asyncio.run(scenario())
    status = member.objects[path]["status"]
    assert status.get("endpointSliceObjects") == (None if prunes else "Present")
    assert len(writes) <= 2, writes  # not one per pass
