"""Karmada: the member list from cluster.karmada.io Cluster objects, each reached through
Karmada's cluster proxy (one kubeconfig), and living beside Karmada's own MCS controllers.

Karmada applies a propagated ServiceImport with plain updates from its template and puts the
template back whenever the member object changes; only fields its resource interpreter
*retains* survive. So the controller installs, in the Karmada control plane, a
ResourceInterpreterCustomization whose retention rule keeps the member's `spec.ips` (the one
field clusterset fills in Karmada's imports) while the template has none. It also reads
Karmada's ResourceBindings: a ServiceImport template placed on a member is Karmada's to create
there, so clusterset does not create (or keeps deleting its own) import of that name there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import httpx2 as httpx
from lightkube.config.kubeconfig import SingleConfig

from clusterset.kube import api as k
from clusterset.kube.informer import Informer
from clusterset.model.ids import ServiceKey
from clusterset.model.labels import LABEL_OWNED

log = logging.getLogger(__name__)
Obj = dict[str, Any]

RETENTION_NAME = "clusterset-serviceimport-ips"
# Keep the member's spec.ips unless the template sets its own (a user's explicit IPs win).
RETENTION_LUA = """function Retain(desiredObj, observedObj)
  if observedObj.spec ~= nil and observedObj.spec.ips ~= nil then
    if desiredObj.spec == nil then
      desiredObj.spec = {}
    end
    if desiredObj.spec.ips == nil or #desiredObj.spec.ips == 0 then
      desiredObj.spec.ips = observedObj.spec.ips
    end
  end
  return desiredObj
end
"""


def proxy_path(cluster: str) -> str:
    return f"/apis/cluster.karmada.io/v1alpha1/clusters/{cluster}/proxy"


def control_api(config: SingleConfig) -> k.KubeApi:
    return k.KubeApi.from_config("karmada", config)


async def members(config: SingleConfig, *, only: list[str] | None = None) -> dict[str, k.KubeApi]:
    """One KubeApi per Karmada member (Ready or not: the informers retry)."""
    control = control_api(config)
    try:
        items, _ = await control.list(k.KARMADA_CLUSTERS.path())
    finally:
        await control.close()
    names = sorted(str((c.get("metadata") or {}).get("name")) for c in items)
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise k.ConfigError(f"--context: Karmada has no cluster {', '.join(missing)}")
        names = [n for n in names if n in only]
    return {n: k.KubeApi.from_config(n, config, base_path=proxy_path(n)) for n in names}


def retention(version: str) -> Obj:
    """The ResourceInterpreterCustomization that makes Karmada keep a member's spec.ips."""
    return {
        "apiVersion": k.KARMADA_CUSTOMIZATIONS.api_version,
        "kind": k.KARMADA_CUSTOMIZATIONS.kind,
        "metadata": {
            "name": f"{RETENTION_NAME}-{version}",
            "labels": {LABEL_OWNED: "true"},
        },
        "spec": {
            "target": {"apiVersion": f"{k.MCS_GROUP}/{version}", "kind": "ServiceImport"},
            "customizations": {"retention": {"luaScript": RETENTION_LUA}},
        },
    }


def placed_imports(bindings: dict[str, Obj]) -> dict[str, frozenset[ServiceKey]]:
    """Member name -> the ServiceImports Karmada's scheduler placed there (ResourceBindings)."""
    out: dict[str, set[ServiceKey]] = {}
    for rb in bindings.values():
        spec = rb.get("spec") or {}
        res = spec.get("resource") or {}
        if res.get("kind") != "ServiceImport" or not str(res.get("apiVersion", "")).startswith(
            f"{k.MCS_GROUP}/"
        ):
            continue
        key = ServiceKey(str(res.get("namespace", "")), str(res.get("name", "")))
        for target in spec.get("clusters") or []:
            out.setdefault(str(target.get("name", "")), set()).add(key)
    return {name: frozenset(keys) for name, keys in out.items()}


class KarmadaControl:
    """What the hub reads from and writes to the Karmada control plane itself."""

    def __init__(self, api: k.KubeApi, *, on_change: Callable[[], None]) -> None:
        self.api = api
        self.bindings = Informer(api, k.KARMADA_BINDINGS, on_change=on_change, optional=True)

    def placed_imports(self) -> dict[str, frozenset[ServiceKey]]:
        return placed_imports(self.bindings.store)

    async def install_retention(self) -> bool:
        """Apply the retention rules (v1alpha1: Karmada's CRDs; v1beta1: newer ones).
        False when worth retrying (transport or server trouble); a refusal is final."""
        done = True
        for version in k.MCS_VERSIONS:
            obj = retention(version)
            path = k.KARMADA_CUSTOMIZATIONS.path(name=obj["metadata"]["name"])
            try:
                await self.api.apply(path, obj)
            except (k.ApiError, httpx.HTTPError, OSError) as exc:
                final = isinstance(exc, k.ApiError) and exc.status < 500
                done = done and final
                log.error(
                    "karmada: cannot apply ResourceInterpreterCustomization %s: %s; until it "
                    "is there, Karmada reverts spec.ips of the ServiceImports it propagates",
                    obj["metadata"]["name"],
                    exc,
                )
        return done

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.bindings.run(), name="informer karmada/resourcebindings")
            backoff = 1.0
            while not await self.install_retention():
                await asyncio.sleep(backoff)
                backoff = min(60.0, backoff * 2)
