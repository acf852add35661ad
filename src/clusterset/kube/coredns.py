"""The Kubernetes API calls of `clusterset wire-dns`: read the cluster DNS's ConfigMaps,
server-side apply a Corefile, find the kube-dns Service's ClusterIP. What to write and
whether it works is the `wiredns` package's."""

from __future__ import annotations

from dataclasses import dataclass

from clusterset.kube.api import KubeApi, Obj, get_or_none

NAMESPACE = "kube-system"
COREDNS = "coredns"
NODELOCAL = "node-local-dns"
KUBE_DNS = "kube-dns"
PREVIOUS_ANNOTATION = "clusterset.io/previous-corefile"
FIELD_MANAGER = "clusterset-wire-dns"
CONFIGMAPS = f"/api/v1/namespaces/{NAMESPACE}/configmaps"


class WireError(Exception):
    """wire-dns stopped; the message says why and what was (not) changed. Exit 1."""


@dataclass(frozen=True, slots=True)
class Target:
    """One ConfigMap holding a Corefile that wire-dns edits."""

    name: str
    corefile: str
    previous: str | None  # the annotation: the Corefile before the first wiring
    nodelocal: bool

    @property
    def path(self) -> str:
        return f"{CONFIGMAPS}/{self.name}"


async def coredns_target(api: KubeApi) -> Target:
    """CoreDNS's ConfigMap; WireError when the cluster runs kube-dns, or neither."""
    core = await get_or_none(api, f"{CONFIGMAPS}/{COREDNS}")
    if core is None:
        if await get_or_none(api, f"{CONFIGMAPS}/{KUBE_DNS}") is not None or await get_or_none(
            api, f"/apis/apps/v1/namespaces/{NAMESPACE}/deployments/{KUBE_DNS}"
        ):
            raise WireError(
                f"{api.name}: the cluster runs kube-dns (no ConfigMap {NAMESPACE}/{COREDNS}); "
                "wire-dns edits CoreDNS only: add the zone to kube-dns's stubDomains by hand. "
                "Nothing changed."
            )
        raise WireError(
            f"{api.name}: no ConfigMap {NAMESPACE}/{COREDNS}: not a CoreDNS cluster wire-dns "
            "knows. Nothing changed."
        )
    return _target(api, core, nodelocal=False)


async def nodelocal_target(api: KubeApi) -> Target | None:
    """NodeLocal DNSCache's ConfigMap, when the cluster runs it."""
    node = await get_or_none(api, f"{CONFIGMAPS}/{NODELOCAL}")
    return None if node is None else _target(api, node, nodelocal=True)


def _target(api: KubeApi, cm: Obj, *, nodelocal: bool) -> Target:
    name = cm["metadata"]["name"]
    text = (cm.get("data") or {}).get("Corefile")
    if not isinstance(text, str) or not text.strip():
        raise WireError(
            f"{api.name}: ConfigMap {NAMESPACE}/{name}: no data.Corefile. Nothing changed."
        )
    annotations = (cm.get("metadata") or {}).get("annotations") or {}
    return Target(name, text, annotations.get(PREVIOUS_ANNOTATION), nodelocal)


async def apply(api: KubeApi, target: Target, text: str, *, keep_previous: bool) -> None:
    """Server-side apply of data.Corefile (+ the previous Corefile annotation, or none)."""
    meta: dict[str, object] = {"name": target.name, "namespace": NAMESPACE}
    if keep_previous:
        previous = target.previous if target.previous is not None else target.corefile
        meta["annotations"] = {PREVIOUS_ANNOTATION: previous}
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"Corefile": text}}
    await api.apply(target.path, body, force=True, field_manager=FIELD_MANAGER)


async def probe_address(api: KubeApi) -> tuple[str, int]:
    """The kube-dns Service's ClusterIP (CoreDNS keeps that Service name)."""
    svc = await get_or_none(api, f"/api/v1/namespaces/{NAMESPACE}/services/{KUBE_DNS}")
    ip = ((svc or {}).get("spec") or {}).get("clusterIP")
    if not ip or ip == "None":
        raise WireError(
            f"{api.name}: no Service {NAMESPACE}/{KUBE_DNS} to watch after applying: "
            "give --probe IP"
        )
    return str(ip), 53
