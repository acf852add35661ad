"""Steps 1 and 2 of wire-dns: the ConfigMaps to edit, their new Corefiles, and the diff a
dry run prints. Nothing here writes."""

from __future__ import annotations

import difflib

from clusterset.kube.api import KubeApi
from clusterset.kube.coredns import (
    NAMESPACE,
    Target,
    WireError,
    coredns_target,
    nodelocal_target,
)
from clusterset.wiredns import corefile as cf


async def discover(api: KubeApi) -> list[Target]:
    """The ConfigMaps to edit; WireError for a cluster DNS wire-dns cannot edit."""
    core = await coredns_target(api)
    try:
        if not cf.has_kubernetes(core.corefile):
            raise WireError(
                f"{api.name}: ConfigMap {NAMESPACE}/{core.name}: the Corefile has no kubernetes "
                "plugin; not a cluster DNS wire-dns knows. Nothing changed."
            )
    except cf.CorefileError as exc:
        raise WireError(f"{api.name}: ConfigMap {NAMESPACE}/{core.name}: Corefile {exc}") from exc
    node = await nodelocal_target(api)
    return [core] if node is None else [core, node]


def plan(targets: list[Target], *, zone: str, server: str, ttl: int) -> dict[str, str]:
    """ConfigMap name -> new Corefile, only for those that change."""
    out: dict[str, str] = {}
    for t in targets:
        try:
            new = cf.wire(t.corefile, zone=zone, server=server, ttl=ttl, nodelocal=t.nodelocal)
        except cf.CorefileError as exc:
            raise WireError(
                f"ConfigMap {NAMESPACE}/{t.name}: Corefile {exc}. Nothing changed."
            ) from exc
        if new != t.corefile:
            out[t.name] = new
    return out


def diff(targets: list[Target], new: dict[str, str]) -> str:
    """What a dry run prints: a unified diff per ConfigMap that changes."""
    parts: list[str] = []
    for t in targets:
        if t.name in new:
            parts.extend(
                difflib.unified_diff(
                    t.corefile.splitlines(keepends=True),
                    new[t.name].splitlines(keepends=True),
                    f"{NAMESPACE}/{t.name} (now)",
                    f"{NAMESPACE}/{t.name} (wired)",
                )
            )
    return "".join(parts)
