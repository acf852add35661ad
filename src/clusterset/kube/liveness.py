"""The liveness Leases' reads and writes (what they hold: model.liveness)."""

from __future__ import annotations

from collections.abc import Mapping

from clusterset.kube import api as k
from clusterset.kube.cluster import MemberCluster
from clusterset.model import liveness
from clusterset.model.ids import ClusterId


async def renew(
    member: MemberCluster,
    consumer: ClusterId,
    sources: list[ClusterId],
    *,
    namespace: str,
    renewed: str,
    duration: int,
    properties: Mapping[ClusterId, Mapping[str, str]] | None = None,
) -> list[str]:
    """Renew, in `member` (cluster ID `consumer`), the Lease of every source cluster the hub
    can reach now, with each one's ClusterProperties; one line per failure."""
    errors = []
    for source in sources:
        obj = liveness.render(
            source,
            consumer=consumer,
            namespace=namespace,
            renewed=renewed,
            duration=duration,
            properties=(properties or {}).get(source),
        )
        try:
            await member.api.apply(k.LEASES.path(namespace, obj["metadata"]["name"]), obj)
        except k.ApiError as exc:
            errors.append(f"cluster {member.name}: renew lease of {source}: {exc}")
    return errors


async def listed(api: k.KubeApi) -> list[liveness.SourceLease]:
    """Every liveness Lease in the cluster, in any namespace (raises what the list raises)."""
    items, _ = await api.list(k.LEASES.path(None), label_selector=liveness.SOURCE_LABEL)
    return [liveness.parse(lease) for lease in items]
