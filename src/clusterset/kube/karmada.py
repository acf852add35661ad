"""Karmada: the member list from cluster.karmada.io Cluster objects, each reached through
Karmada's cluster proxy, so a Karmada user needs one kubeconfig."""

from __future__ import annotations

from lightkube.config.kubeconfig import SingleConfig

from clusterset.kube import api as k


def proxy_path(cluster: str) -> str:
    return f"/apis/cluster.karmada.io/v1alpha1/clusters/{cluster}/proxy"


async def members(config: SingleConfig, *, only: list[str] | None = None) -> dict[str, k.KubeApi]:
    """One KubeApi per Karmada member (Ready or not: the informers retry)."""
    control = k.KubeApi.from_config("karmada", config)
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
