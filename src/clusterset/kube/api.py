"""The Kubernetes REST API of one cluster: list, watch, server-side apply, delete.

lightkube provides what is hard to get right (kubeconfig parsing, exec/token/cert
auth, TLS verification) as an httpx client; requests are made on raw paths and
answer raw JSON, which `model.convert` turns into the model at the boundary
(decoding into generated classes first would cost time and memory for fields
nobody reads).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import yaml
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import KubeConfig, SingleConfig

log = logging.getLogger(__name__)
FIELD_MANAGER = "clusterset"
Obj = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, path: str = "") -> None:
        self.status = status
        self.path = path
        super().__init__(f"{status} {message}" + (f" ({path})" if path else ""))


class Gone(ApiError):
    """410: the resourceVersion is too old; relist."""


# What a call to an apiserver can raise: its answer (ApiError), or no answer (httpx).
API_ERRORS = (ApiError, httpx.HTTPError)


class ConfigError(ValueError):
    """An unusable kubeconfig or context (one line for the user)."""


@dataclass(frozen=True, slots=True)
class Resource:
    """Where a kind lives in the API."""

    group: str  # "" for core
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api(self) -> str:
        return f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        p = self.api
        if self.namespaced and namespace:
            p += f"/namespaces/{namespace}"
        p += f"/{self.plural}"
        if name:
            p += f"/{name}"
        return p


SERVICES = Resource("", "v1", "services", "Service")
NAMESPACES = Resource("", "v1", "namespaces", "Namespace", namespaced=False)
ENDPOINT_SLICES = Resource("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice")
MCS_GROUP = "multicluster.x-k8s.io"
SERVICE_EXPORTS = Resource(MCS_GROUP, "v1beta1", "serviceexports", "ServiceExport")
SERVICE_IMPORTS = Resource(MCS_GROUP, "v1beta1", "serviceimports", "ServiceImport")
# The MCS versions clusterset speaks, preferred first (Karmada serves v1alpha1 only).
MCS_VERSIONS = ("v1beta1", "v1alpha1")
CLUSTER_PROPERTIES = Resource(
    "about.k8s.io", "v1beta1", "clusterproperties", "ClusterProperty", namespaced=False
)
LEASES = Resource("coordination.k8s.io", "v1", "leases", "Lease")
# A cluster's Service IP ranges (KEP-1880, GA in 1.33): which IP families its Services have.
SERVICE_CIDRS = Resource("networking.k8s.io", "v1", "servicecidrs", "ServiceCIDR", namespaced=False)
PODS = Resource("", "v1", "pods", "Pod")
CONFIGMAPS = Resource("", "v1", "configmaps", "ConfigMap")
KARMADA_CLUSTERS = Resource(
    "cluster.karmada.io", "v1alpha1", "clusters", "Cluster", namespaced=False
)
KARMADA_BINDINGS = Resource("work.karmada.io", "v1alpha2", "resourcebindings", "ResourceBinding")
KARMADA_MCS = Resource(
    "networking.karmada.io", "v1alpha1", "multiclusterservices", "MultiClusterService"
)
KARMADA_POLICIES = Resource(
    "policy.karmada.io", "v1alpha1", "propagationpolicies", "PropagationPolicy"
)
KARMADA_CLUSTER_POLICIES = Resource(
    "policy.karmada.io",
    "v1alpha1",
    "clusterpropagationpolicies",
    "ClusterPropagationPolicy",
    namespaced=False,
)
KARMADA_CUSTOMIZATIONS = Resource(
    "config.karmada.io",
    "v1alpha1",
    "resourceinterpretercustomizations",
    "ResourceInterpreterCustomization",
    namespaced=False,
)


def served_version(group: Obj, preferred: tuple[str, ...]) -> str | None:
    """The first of `preferred` that an APIGroup discovery document lists as served."""
    served = {str(v.get("version")) for v in group.get("versions") or []}
    return next((v for v in preferred if v in served), None)


def read_kubeconfig(path: Path, flag: str = "--kubeconfig") -> KubeConfig:
    """The kubeconfig at `path`, or ConfigError with one line naming the file and the fault
    (lightkube's from_file lets a missing file, an empty one or bad YAML escape as a
    traceback)."""
    where = f"{flag} {path}"
    try:
        text = path.expanduser().read_text()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where}: not YAML{at}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(data, dict) or not data.get("contexts") or not data.get("clusters"):
        raise ConfigError(f"{where}: not a kubeconfig (no contexts or no clusters)")
    try:
        return KubeConfig.from_dict(data, fname=path.expanduser())
    except Exception as exc:  # a malformed entry: lightkube raises KeyError, TypeError, ...
        raise ConfigError(f"{where}: malformed: {type(exc).__name__} {exc}") from exc


def load_contexts(
    path: Path,
    contexts: list[str] | None,
    *,
    all_contexts: bool = False,
    flag: str = "--kubeconfig",
) -> dict[str, SingleConfig]:
    """The named contexts of a kubeconfig (or its current one, or all of them)."""
    config = read_kubeconfig(path, flag)
    names = list(config.contexts) if all_contexts else (contexts or [None])  # type: ignore[list-item]
    out: dict[str, SingleConfig] = {}
    for name in names:
        if name is None and not config.current_context:
            raise ConfigError(f"{flag} {path}: no current-context; name one with --context")
        known = ", ".join(sorted(config.contexts))
        if name is None and config.current_context not in config.contexts:
            raise ConfigError(
                f"{flag} {path}: current-context {config.current_context!r} is not one of its "
                f"contexts ({known})"
            )
        if name is not None and name not in config.contexts:
            raise ConfigError(f"--context {name}: not in {flag} {path} (it has: {known})")
        try:
            single = config.get(context_name=name)
        except Exception as exc:  # a context naming a missing cluster or user: KeyError
            what = name or config.current_context
            raise ConfigError(
                f"{flag} {path}: context {what!r} names a cluster or user it lacks: {exc}"
            ) from exc
        if single is None:
            raise ConfigError(f"{flag} {path}: no context {name!r}")
        out[single.context_name] = single
    return out


class KubeApi:
    """One cluster's API over one httpx connection pool."""

    def __init__(self, name: str, http: httpx.AsyncClient) -> None:
        self.name = name
        self.http = http

    @classmethod
    def from_config(cls, name: str, config: SingleConfig, *, base_path: str = "") -> KubeApi:
        """A client for `config`; ConfigError when a file it names (CA, client certificate
        or key) cannot be read or used."""
        params = client_adapter.ConnectionParams(timeout=httpx.Timeout(30, connect=5))
        try:
            http = client_adapter.AsyncClient(config, params)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            where = f" ({config.fname})" if config.fname else ""
            why = (exc.strerror or exc) if isinstance(exc, OSError) else exc
            raise ConfigError(f"context {name}{where}: a file it names: {why}") from exc
        if base_path:
            http.base_url = httpx.URL(str(http.base_url).rstrip("/") + base_path)
        return cls(name, http)

    async def close(self) -> None:
        await self.http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The response, or ApiError for a status of 400 and above."""
        r = await self.http.request(method, path, params=params, content=content, headers=headers)
        if r.status_code >= 400:
            raise _error(r, path)
        return r

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Obj:
        r = await self._send(method, path, params=params, content=content, headers=headers)
        return r.json() if r.content else {}

    async def get(self, path: str) -> Obj:
        return await self._request("GET", path)

    async def get_text(self, path: str, params: Mapping[str, str] | None = None) -> str:
        """A non-JSON GET: a container's log, a pod's /metrics through the API proxy."""
        return (await self._send("GET", path, params=params)).text

    async def list(self, path: str, *, label_selector: str = "") -> tuple[list[Obj], str]:
        """Every item (paginated, 500 a page) and the list's resourceVersion."""
        items: list[Obj] = []
        params = {"limit": "500"}
        if label_selector:
            params["labelSelector"] = label_selector
        while True:
            body = await self._request("GET", path, params=params)
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            cont = meta.get("continue")
            if not cont:
                return items, str(meta.get("resourceVersion", ""))
            params = {**params, "continue": cont}

    async def watch(
        self, path: str, resource_version: str, *, label_selector: str = ""
    ) -> AsyncIterator[tuple[str, Obj]]:
        """(type, object) events, BOOKMARKs included; raises Gone on 410."""
        params = {
            "watch": "1",
            "resourceVersion": resource_version,
            "allowWatchBookmarks": "true",
            # Randomised so that many watches do not all reconnect at once (client-go does this).
            "timeoutSeconds": str(random.randint(240, 480)),
        }
        if label_selector:
            params["labelSelector"] = label_selector
        timeout = httpx.Timeout(10, read=600)
        async with self.http.stream("GET", path, params=params, timeout=timeout) as r:
            if r.status_code >= 400:
                await r.aread()
                raise _error(r, path)
            async for line in r.aiter_lines():
                if not line:
                    continue
                event = json.loads(line)
                etype = event.get("type", "")
                obj = event.get("object") or {}
                if etype == "ERROR":
                    code = int(obj.get("code", 500))
                    if code == 410:
                        raise Gone(410, obj.get("message", "Gone"), path=path)
                    raise ApiError(code, obj.get("message", ""), path=path)
                yield etype, obj

    async def apply(
        self,
        path: str,
        obj: Obj,
        *,
        force: bool = True,
        dry_run: bool = False,
        field_manager: str = FIELD_MANAGER,
    ) -> Obj:
        """Server-side apply under our field manager (or another of ours, e.g. wire-dns's)."""
        params = {"fieldManager": field_manager, "force": "true" if force else "false"}
        if dry_run:
            params["dryRun"] = "All"
        return await self._request(
            "PATCH",
            path,
            params=params,
            content=json.dumps(obj).encode(),
            headers={"Content-Type": "application/apply-patch+yaml"},
        )

    async def delete(self, path: str, *, uid: str = "") -> None:
        """Delete; an object already gone is no error. `uid`: only that object (a
        precondition), so that one made again under the name since is kept (409, no error)."""
        content = None
        if uid:
            options = {"apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}}
            content = json.dumps(options).encode()
        try:
            await self._request(
                "DELETE", path, content=content, headers={"Content-Type": "application/json"}
            )
        except ApiError as exc:
            if exc.status != 404 and not (uid and exc.status == 409):
                raise

    async def create(self, path: str, obj: Obj) -> Obj:
        return await self._request(
            "POST",
            path,
            content=json.dumps(obj).encode(),
            headers={"Content-Type": "application/json"},
        )

    async def replace(self, path: str, obj: Obj) -> Obj:
        return await self._request(
            "PUT",
            path,
            content=json.dumps(obj).encode(),
            headers={"Content-Type": "application/json"},
        )


def _error(r: httpx.Response, path: str) -> ApiError:
    try:
        message = r.json().get("message", r.text)
    except ValueError:
        message = r.text[:200]
    cls = Gone if r.status_code == 410 else ApiError
    return cls(r.status_code, message, path=path)


async def get_or_none(api: KubeApi, path: str) -> Obj | None:
    """The object at `path`, or None where there is none (404)."""
    try:
        return await api.get(path)
    except ApiError as exc:
        if exc.status == 404:
            return None
        raise
