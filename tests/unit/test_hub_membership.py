"""Membership that follows Karmada's Cluster objects, on in-memory apiservers: a cluster
joined while the hub runs gets the imports, one unjoined is emptied of what clusterset wrote
and its exports leave the others' imports, one whose endpoint changes is reconnected."""

from __future__ import annotations

import asyncio
import builtins
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from clusterset.controller.hub import Hub
from clusterset.kube import api as k
from clusterset.kube.karmada import Membership, cluster_info, cluster_infos

Obj = dict[str, Any]
IMPORTS = "/apis/multicluster.x-k8s.io/v1alpha1/namespaces/ns/serviceimports"


def _collection(path: str) -> str:
    """The cluster-wide list path an object path belongs to."""
    return re.sub(r"/namespaces/[^/]+(?=/)", "", path.rsplit("/", 1)[0])


class FakeApiserver:
    """Just enough of a KubeApi: discovery, list, watch (fed by apply and delete), apply,
    delete, close; every write recorded."""

    def __init__(self, name: str, *objs: tuple[str, Obj]) -> None:
        self.name = name
        self.objects: dict[str, Obj] = {}
        self.watchers: dict[str, list[asyncio.Queue[tuple[str, Obj]]]] = {}
        self.writes: list[tuple[str, str]] = []
        self.closed = 0
        self.version = 0
        self.refuse: dict[str, int] = {}  # path fragment -> the status an apply there gets
        self.journal: list[tuple[str, str]] | None = None  # applies of several fakes, in order
        for path, obj in objs:
            self._put(path, obj)

    def _put(self, path: str, obj: Obj) -> Obj:
        self.version += 1
        meta = {**obj.get("metadata", {}), "resourceVersion": str(self.version)}
        new = {**obj, "metadata": meta}
        etype = "MODIFIED" if path in self.objects else "ADDED"
        self.objects[path] = new
        self._notify(path, etype, new)
        return new

    def _notify(self, path: str, etype: str, obj: Obj) -> None:
        for q in self.watchers.get(_collection(path), []):
            q.put_nowait((etype, obj))

    def event(self, path: str, obj: Obj) -> None:
        """An object changed by someone else (Karmada)."""
        self._put(path, obj)

    async def get(self, path: str) -> Obj:
        if path == "/apis/multicluster.x-k8s.io":
            return {"versions": [{"version": "v1alpha1"}]}
        raise k.ApiError(404, "not found", path=path)

    async def list(self, path: str, *, label_selector: str = "") -> tuple[list[Obj], str]:
        items = [o for p, o in self.objects.items() if _collection(p) == _collection(path + "/x")]
        return items, str(self.version)

    async def watch(
        self, path: str, resource_version: str, *, label_selector: str = ""
    ) -> AsyncIterator[tuple[str, Obj]]:
        q: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        self.watchers.setdefault(_collection(path + "/x"), []).append(q)
        try:
            while True:
                yield await q.get()
        finally:
            self.watchers[_collection(path + "/x")].remove(q)

    async def apply(self, path: str, obj: Obj, **_: Any) -> Obj:
        for fragment, status in self.refuse.items():
            if fragment in path:
                raise k.ApiError(status, "refused", path=path)
        self.writes.append(("apply", path))
        if self.journal is not None:
            self.journal.append((self.name, path))
        if path.endswith("/status"):
            path = path.removesuffix("/status")
            obj = {**self.objects.get(path, obj), "status": obj.get("status")}
        elif path in self.objects:  # server-side apply: maps merge, other values replace
            obj = _merged(self.objects[path], obj)
        if obj.get("kind") == "Service" and not obj.get("spec", {}).get("clusterIP"):
            obj = {**obj, "spec": {**obj.get("spec", {}), "clusterIP": "10.96.0.9"}}
        return self._put(path, obj)

    async def delete(self, path: str, **_: Any) -> None:
        self.writes.append(("delete", path))
        obj = self.objects.pop(path, None)
        if obj is not None:
            self._notify(path, "DELETED", obj)

    async def close(self) -> None:
        self.closed += 1

    def holds(self, kind: str) -> builtins.list[str]:
        return sorted(p for p, o in self.objects.items() if o.get("kind") == kind)


def _merged(have: Obj, applied: Obj) -> Obj:
    """Server-side apply as far as these tests need it: maps merge, so another manager's
    fields (Karmada's label) stay; unlike an apiserver, a field the applier stops sending
    is not dropped."""
    out = dict(have)
    for key, value in applied.items():
        mine = out.get(key)
        out[key] = (
            _merged(mine, value) if isinstance(mine, dict) and isinstance(value, dict) else value
        )
    return out


def _exporting(name: str, service: str) -> FakeApiserver:
    """A member with namespace ns and an exported, ready Service `service`."""
    meta = {"name": service, "namespace": "ns"}
    return FakeApiserver(
        name,
        ("/api/v1/namespaces/ns", {"kind": "Namespace", "metadata": {"name": "ns"}}),
        (
            f"/api/v1/namespaces/ns/services/{service}",
            {
                "apiVersion": "v1",
                "kind": "Service",
                "metadata": meta,
                "spec": {"clusterIP": "10.96.1.1", "ports": [{"port": 80, "protocol": "TCP"}]},
            },
        ),
        (
            f"/apis/multicluster.x-k8s.io/v1alpha1/namespaces/ns/serviceexports/{service}",
            {
                "apiVersion": "multicluster.x-k8s.io/v1alpha1",
                "kind": "ServiceExport",
                "metadata": meta,
            },
        ),
        (
            f"/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices/{service}-1",
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSlice",
                "metadata": {
                    "name": f"{service}-1",
                    "namespace": "ns",
                    "labels": {"kubernetes.io/service-name": service},
                },
                "addressType": "IPv4",
                "ports": [{"port": 80, "protocol": "TCP"}],
                "endpoints": [{"addresses": ["10.244.0.5"], "conditions": {"ready": True}}],
            },
        ),
    )


def _cluster(name: str, *, endpoint: str = "https://m", ready: bool = True, **meta: Any) -> Obj:
    return {
        "apiVersion": "cluster.karmada.io/v1alpha1",
        "kind": "Cluster",
        "metadata": {"name": name, **meta},
        "spec": {
            "apiEndpoint": endpoint,
            "secretRef": {"namespace": "karmada-cluster", "name": name},
            "impersonatorSecretRef": {"namespace": "karmada-cluster", "name": f"{name}-imp"},
        },
        "status": {
            "conditions": [{"type": "Ready", "status": str(ready), "reason": "R", "message": "m"}]
        },
    }


def _cluster_path(name: str) -> str:
    return f"{k.KARMADA_CLUSTERS.path()}/{name}"


async def _until(what: str, check: Callable[[], object]) -> None:
    """Poll `check` for up to 5 s (the hub reacts to a watch event in milliseconds)."""
    for _ in range(250):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_join_gets_imports_an_unjoin_is_withdrawn_and_leaves_the_imports(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level("INFO", logger="clusterset.controller.hub")
    m1, m2 = _exporting("member1", "web"), _exporting("member2", "db")
    karmada = FakeApiserver("karmada", (_cluster_path("member1"), _cluster("member1")))
    fakes = {"member1": m1, "member2": m2}

    async def scenario() -> None:
        hub = Hub(
            {"member1": m1},  # type: ignore[dict-item]
            karmada=karmada,  # type: ignore[arg-type]
            membership=Membership(fakes.__getitem__),  # type: ignore[arg-type]
            debounce=0.01,
            lease_duration=4,
        )
        task = asyncio.create_task(hub.run())
        try:
            await _until("member1 synced", lambda: hub.members["member1"].synced)
            karmada.event(_cluster_path("member2"), _cluster("member2"))  # joined
            await _until("web imported into member2", lambda: f"{IMPORTS}/web" in m2.objects)
            await _until("db imported into member1", lambda: f"{IMPORTS}/db" in m1.objects)
            await _until("source Leases in member2", lambda: m2.holds("Lease"))
            ours = [m2.holds(kind) for kind in ("ServiceImport", "EndpointSlice")]

            karmada.event(  # unjoined: Karmada's finalizer holds the Cluster a while
                _cluster_path("member2"),
                _cluster("member2", deletionTimestamp="2026-01-01T00:00:00Z"),
            )
            await _until("member2 gone", lambda: "member2" not in hub.members)
            assert m2.closed == 1
            # What clusterset wrote there is withdrawn; the user's own objects stay.
            assert m2.holds("ServiceImport") == []
            assert m2.holds("EndpointSlice") == [
                "/apis/discovery.k8s.io/v1/namespaces/ns/endpointslices/db-1"
            ]
            assert m2.holds("Lease"), "they expire: the member RBAC grants no delete"
            assert m2.holds("Service") == ["/api/v1/namespaces/ns/services/db"]
            assert all(ours), ours
            # Its export leaves member1's imports.
            await _until("db not in member1", lambda: f"{IMPORTS}/db" not in m1.objects)

            # member1's endpoint changes: a new client and caches, nothing else lost.
            karmada.event(_cluster_path("member1"), _cluster("member1", endpoint="https://n"))
            await _until("member1 reconnected", lambda: m1.closed == 1)
            await _until("member1 synced again", lambda: hub.members["member1"].synced)
            karmada.event(
                _cluster_path("member1"), _cluster("member1", endpoint="https://n", ready=False)
            )
            await _until("said", lambda: "member1 unreachable (R: m)" in caplog.text)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    said = caplog.text
    assert "karmada: cluster member2 joined (Ready); watching it" in said
    assert "karmada: cluster member2 left (unjoined); withdrew" in said
    assert "karmada: cluster member1: its apiEndpoint or secrets changed; reconnected" in said


def test_cluster_info_and_the_context_filter() -> None:
    info = cluster_info(_cluster("a", ready=False))
    assert (info.ready, info.why, info.leaving) == (False, "R: m", False)
    assert cluster_info({"metadata": {"name": "b"}}).why == "no Ready condition yet"
    assert cluster_info(_cluster("c", deletionTimestamp="x")).leaving
    store = {"a": _cluster("a"), "b": _cluster("b")}
    assert list(cluster_infos(store, frozenset({"b"}))) == ["b"]
    assert list(cluster_infos(store, frozenset())) == ["a", "b"]


def _beside_karmada() -> tuple[FakeApiserver, FakeApiserver]:
    """member1 exports web; member2 holds Karmada's import of it (a Work's) and Karmada's
    derived-web, whose ClusterIP is the ClusterSetIP there."""
    karmadas = {"karmada.io/managed": "true"}
    m2 = _exporting("member2", "db")
    m2.event(
        f"{IMPORTS}/web",
        {
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceImport",
            "metadata": {"name": "web", "namespace": "ns", "labels": karmadas},
            "spec": {"type": "ClusterSetIP", "ports": [{"port": 80, "protocol": "TCP"}]},
        },
    )
    m2.event(
        "/api/v1/namespaces/ns/services/derived-web",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": "derived-web", "namespace": "ns", "labels": karmadas},
            "spec": {"clusterIP": "10.96.0.77", "ports": [{"port": 80, "protocol": "TCP"}]},
        },
    )
    return _exporting("member1", "web"), m2


@pytest.mark.parametrize(
    ("control_plane", "refused", "writes", "said"),
    [
        (False, None, False, 1),  # member kubeconfigs alone: left alone, said once
        (True, None, True, 0),  # --karmada-control-plane: the rule first, then spec.ips
        (True, 500, False, 0),  # the rule not in yet (retried): wait, silently
        (True, 403, False, 1),  # the rule refused for good: as without the control plane
    ],
)
def test_karmadas_import_gets_spec_ips_only_where_karmada_keeps_them(
    control_plane: bool,
    refused: int | None,
    writes: bool,
    said: int,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On member kubeconfigs (no proxy), Karmada's import gets spec.ips only once clusterset's
    retention rule is in Karmada's control plane (else Karmada puts its template back)."""
    caplog.set_level("INFO", logger="clusterset.kube.sink")
    m1, m2 = _beside_karmada()
    karmada = FakeApiserver("karmada")
    if refused is not None:
        karmada.refuse["resourceinterpretercustomizations"] = refused
    journal: list[tuple[str, str]] = []
    karmada.journal = m2.journal = journal
    web = f"{IMPORTS}/web"

    async def scenario() -> None:
        hub = Hub(
            {"member1": m1, "member2": m2},  # type: ignore[dict-item]
            karmada=karmada if control_plane else None,  # type: ignore[arg-type]
            debounce=0.01,
            lease_duration=4,
        )
        task = asyncio.create_task(hub.run())
        try:
            await _until("db imported into member1", lambda: f"{IMPORTS}/db" in m1.objects)
            await _until("two passes", lambda: hub.reconciles >= 2)
            if writes:
                await _until("spec.ips", lambda: m2.objects[web]["spec"].get("ips"))
                assert m2.objects[web]["spec"]["ips"] == ["10.96.0.77"]
                rules = [i for i, (who, _p) in enumerate(journal) if who == "karmada"]
                ips = journal.index(("member2", web))
                assert len(rules) == 2 and max(rules) < ips, journal
            else:
                await asyncio.sleep(0.3)
                hub._wake.set()  # more passes: still said once
                await _until("three passes", lambda: hub.reconciles >= 3)
                assert ("apply", web) not in m2.writes, m2.writes
                assert "ips" not in m2.objects[web]["spec"]
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    asyncio.run(scenario())
    assert caplog.text.count("ServiceImport ns/web is Karmada's") == said, caplog.text
