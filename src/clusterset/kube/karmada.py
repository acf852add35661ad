"""Karmada: the member list from cluster.karmada.io Cluster objects, each reached through
Karmada's cluster proxy (one kubeconfig), and living beside Karmada's own MCS controllers.

Karmada applies a propagated ServiceImport with plain updates from its template and puts the
template back whenever the member object changes; only fields its resource interpreter
*retains* survive. So the controller installs, in the Karmada control plane, a
ResourceInterpreterCustomization whose retention rule keeps the member's `spec.ips` (the one
field clusterset fills in Karmada's imports) while the template has none. It also reads
Karmada's ResourceBindings: a ServiceImport template placed on a member is Karmada's to create
there, so clusterset does not create (or keeps deleting its own) import of that name there.

Membership follows Karmada's Cluster objects while the controller runs (a watch, not a list
at start): the hub adds a joined cluster, withdraws from and drops one being unjoined, and
reconnects one whose apiEndpoint or secret references change.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from lightkube.config.kubeconfig import SingleConfig

from clusterset.kube import api as k
from clusterset.kube.informer import Informer
from clusterset.model import convert
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.labels import LABEL_OWNED
from clusterset.model.objects import ServiceExport
from clusterset.reconcile.placement import binding_name

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


def _nothing() -> None:
    pass


def proxy_path(cluster: str) -> str:
    return f"/apis/cluster.karmada.io/v1alpha1/clusters/{cluster}/proxy"


def control_api(config: SingleConfig) -> k.KubeApi:
    return k.KubeApi.from_config("karmada", config)


async def members(config: SingleConfig, *, only: list[str] | None = None) -> dict[str, k.KubeApi]:
    """One KubeApi per Karmada member at start (Ready or not: the informers retry); the
    hub then follows the Cluster objects (Membership)."""
    control = control_api(config)
    try:
        items, _ = await control.list(k.KARMADA_CLUSTERS.path())
    except (httpx.HTTPError, OSError, k.ApiError) as exc:
        raise k.ConfigError(
            f"--karmada-kubeconfig: cannot list Karmada's clusters at {config.cluster.server}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    finally:
        await control.close()
    names = sorted(str((c.get("metadata") or {}).get("name")) for c in items)
    if only:
        missing = sorted(set(only) - set(names))
        if missing:
            raise k.ConfigError(f"--context: Karmada has no cluster {', '.join(missing)}")
        names = [n for n in names if n in only]
    connect = proxied(config).connect
    return {n: connect(n) for n in names}


@dataclass(frozen=True, slots=True)
class Membership:
    """How the hub follows Karmada's Cluster objects: a client for a member by name (through
    the cluster proxy), and the only clusters to follow (--context; empty: every one)."""

    connect: Callable[[str], k.KubeApi]
    only: frozenset[str] = frozenset()


def proxied(config: SingleConfig, *, only: frozenset[str] = frozenset()) -> Membership:
    """Membership through Karmada's cluster proxy, with the control plane's credentials."""
    return Membership(
        lambda name: k.KubeApi.from_config(name, config, base_path=proxy_path(name)), only
    )


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """What the hub acts on in one Cluster object."""

    # How Karmada's proxy reaches the member: when it changes, open watches still go the
    # old way (the proxy reads the Cluster and its Secrets per request), so reconnect.
    connection: tuple[str, ...]
    ready: bool
    why: str  # the Ready condition's reason and message
    leaving: bool  # deletionTimestamp set: unjoined, its finalizers still hold the proxy


def cluster_info(obj: Obj) -> ClusterInfo:
    spec = obj.get("spec") or {}

    def ref(field: str) -> str:
        r = spec.get(field) or {}
        return f"{r.get('namespace', '')}/{r.get('name', '')}"

    conds = (obj.get("status") or {}).get("conditions") or []
    ready: Obj = next((c for c in conds if c.get("type") == "Ready"), {})
    why = ": ".join(str(ready[f]) for f in ("reason", "message") if ready.get(f))
    return ClusterInfo(
        connection=(
            str(spec.get("apiEndpoint", "")),
            str(spec.get("proxyURL", "")),
            ref("secretRef"),
            ref("impersonatorSecretRef"),
        ),
        ready=ready.get("status") == "True",
        why=why or "no Ready condition yet",
        leaving=bool((obj.get("metadata") or {}).get("deletionTimestamp")),
    )


def cluster_infos(clusters: Mapping[str, Obj], only: frozenset[str]) -> dict[str, ClusterInfo]:
    """Member name -> its ClusterInfo, for the clusters to follow."""
    return {name: cluster_info(obj) for name, obj in clusters.items() if not only or name in only}


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

    def __init__(
        self,
        api: k.KubeApi,
        *,
        on_change: Callable[[], None],
        on_clusters: Callable[[], None] | None = None,
    ) -> None:
        self.api = api
        self.on_change = on_change
        self.bindings = Informer(api, k.KARMADA_BINDINGS, on_change=on_change, optional=True)
        # MultiClusterServices (CrossCluster): exports of their own (multicluster_services).
        self.mcs = Informer(api, k.KARMADA_MCS, on_change=on_change, optional=True)
        # Whether the retention rules are in place (True), not yet (False), or refused for
        # good (None: RBAC, a webhook): writing spec.ips into an import Karmada propagates
        # without them would be fighting it (it puts the template back).
        self.retaining: bool | None = False
        # Membership follows them (on_clusters: a Cluster changed); the webhook places
        # templates on them.
        self.clusters = Informer(
            api,
            k.KARMADA_CLUSTERS,
            on_change=on_clusters or _nothing,
            optional=on_clusters is None,  # only placed on, then: not allowed, none
        )
        # Where Karmada places a template, for the webhook (watch_policies): none until then.
        self.policies = Informer(api, k.KARMADA_POLICIES, optional=True)
        self.cluster_policies = Informer(api, k.KARMADA_CLUSTER_POLICIES, optional=True)
        self._placing = False

    def watch_policies(self) -> None:
        """Also watch Karmada's (Cluster)PropagationPolicies (call before run())."""
        self._placing = True

    def placed_imports(self) -> dict[str, frozenset[ServiceKey]]:
        return placed_imports(self.bindings.store)

    async def install_retention(self) -> bool:
        """Apply the retention rules (v1alpha1: Karmada's CRDs; v1beta1: newer ones).
        False when worth retrying (transport or server trouble); a refusal is final."""
        done = applied = True
        for version in k.MCS_VERSIONS:
            obj = retention(version)
            path = k.KARMADA_CUSTOMIZATIONS.path(name=obj["metadata"]["name"])
            try:
                await self.api.apply(path, obj)
            except (k.ApiError, httpx.HTTPError, OSError) as exc:
                final = isinstance(exc, k.ApiError) and exc.status < 500
                done, applied = done and final, False
                log.error(
                    "karmada: cannot apply ResourceInterpreterCustomization %s: %s; until it "
                    "is there, Karmada reverts spec.ips of the ServiceImports it propagates",
                    obj["metadata"]["name"],
                    exc,
                )
        if applied and not self.retaining:
            self.retaining = True
            self.on_change()  # the imports whose spec.ips waited for it
        elif done and not applied:
            self.retaining = None  # refused, not retried: each import says what it lacks
            self.on_change()
        return done

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.bindings.run(), name="informer karmada/resourcebindings")
            tg.create_task(self.clusters.run(), name="informer karmada/clusters")
            tg.create_task(self.mcs.run(), name="informer karmada/multiclusterservices")
            if self._placing:
                for informer in (self.policies, self.cluster_policies):
                    tg.create_task(informer.run(), name=f"informer karmada/{informer.path}")
            backoff = 1.0
            while not await self.install_retention():
                await asyncio.sleep(backoff)
                backoff = min(60.0, backoff * 2)


@dataclass(frozen=True, slots=True)
class PlacementInputs:
    """What Karmada's placement of one ServiceExport template depends on, read once."""

    template: Obj | None  # the ServiceExport template in the karmada-apiserver, if there
    policies: list[Obj]
    cluster_policies: list[Obj]
    clusters: dict[str, Obj]
    binding: Obj | None


async def placement_inputs(api: k.KubeApi, namespace: str, name: str) -> PlacementInputs:
    """For `clusterset check` (one look; the webhook keeps informers instead)."""
    template = None
    for version in reversed(k.MCS_VERSIONS):  # Karmada's own CRD (v1alpha1) first
        resource = k.Resource(k.MCS_GROUP, version, "serviceexports", "ServiceExport")
        template = await k.get_or_none(api, resource.path(namespace, name))
        if template is not None:
            break
    policies, _ = await api.list(k.KARMADA_POLICIES.path(namespace))
    cluster_policies, _ = await api.list(k.KARMADA_CLUSTER_POLICIES.path())
    clusters, _ = await api.list(k.KARMADA_CLUSTERS.path())
    binding = await k.get_or_none(
        api, k.KARMADA_BINDINGS.path(namespace, binding_name("ServiceExport", name))
    )
    return PlacementInputs(
        template,
        policies,
        cluster_policies,
        {str(c["metadata"]["name"]): c for c in clusters},
        binding,
    )


@dataclass(frozen=True, slots=True)
class MultiClusterServices:
    """Karmada's MultiClusterServices (type CrossCluster) as clusterset sees them: each is
    an export of its Service from the providers to the consumers (exports that exist in no
    member: nothing is written to them). In a consumer Karmada dispatches the providers'
    endpoints into the consumer's own Service of the name: that is the data path there."""

    # Member name -> the exports its MultiClusterServices make there (it provides them).
    exports: Mapping[str, Mapping[ServiceKey, ServiceExport]]
    # Member name -> the keys it consumes: its own Service is the data path Karmada feeds.
    consumed: Mapping[str, frozenset[ServiceKey]]


def multicluster_services(
    store: Mapping[str, Obj], ids: Mapping[str, ClusterId]
) -> MultiClusterServices:
    """`store`: the MultiClusterService informer's; `ids`: member name -> cluster ID (a
    cluster Karmada names that is no member is left out)."""
    exports: dict[str, dict[ServiceKey, ServiceExport]] = {}
    consumed: dict[str, set[ServiceKey]] = {}
    for obj in store.values():
        spec = obj.get("spec") or {}
        if not isinstance(spec, Mapping) or "CrossCluster" not in (spec.get("types") or []):
            continue
        meta = obj.get("metadata") or {}
        # As a ServiceExport of that name, created with it: its clusterset.io/* annotations
        # are read as a ServiceExport's are (answer policies, cluster selectors).
        try:
            export = convert.service_export(
                {
                    "metadata": {
                        k: meta[k]
                        for k in ("namespace", "name", "annotations", "creationTimestamp")
                        if k in meta
                    }
                }
            )
        except convert.ObjectError:
            continue  # a name the apiserver accepted for it but no Service can have
        key = export.key
        # Empty: every cluster (Karmada: "collect ... from all clusters", "exposed to all").
        providers = [m for m in _names(spec, "providerClusters") or ids if m in ids]
        consumers = [m for m in _names(spec, "consumerClusters") or ids if m in ids]
        if spec.get("consumerClusters"):
            export = dataclasses.replace(
                export, export_to=frozenset(ids[m] for m in consumers), export_to_problem=""
            )
        for m in providers:
            exports.setdefault(m, {})[key] = export
        for m in consumers:
            consumed.setdefault(m, set()).add(key)
    return MultiClusterServices(exports, {m: frozenset(keys) for m, keys in consumed.items()})


def _names(spec: Mapping[str, Any], field: str) -> list[str]:
    items = spec.get(field)
    if not isinstance(items, list):
        return []
    return [str(c["name"]) for c in items if isinstance(c, Mapping) and c.get("name")]
