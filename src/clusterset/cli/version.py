"""`clusterset version`: this CLI's version, and the clusterset Deployments (hub controller,
member DNS) running in every cluster it can reach, with their versions and images, as
`kubectl version` and `cilium version` report client and server."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer

from clusterset import __version__
from clusterset.cli.common import (
    AllContextsOpt,
    ContextOpt,
    KarmadaOpt,
    KubeconfigOpt,
    UsageProblem,
    app,
    default_kubeconfig,
    each_cluster,
    member_apis,
)
from clusterset.cli.output import table
from clusterset.kube.api import KubeApi

DEPLOYMENTS = "/apis/apps/v1/deployments"
PART_OF = "app.kubernetes.io/part-of=clusterset"


@app.command()
def version(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
    output_format: Annotated[str, typer.Option("-o", "--output", help="text|json")] = "text",
    client: Annotated[bool, typer.Option("--client", help="Only this CLI's version.")] = False,
) -> None:
    """This CLI's version, and the version of every clusterset Deployment (the chart's hub
    controller and member DNS) in each reachable cluster.

    \b
    Example: clusterset version --kubeconfig members.yaml --all-contexts
    """
    if output_format not in ("text", "json"):
        raise UsageProblem(f"-o {output_format!r}: expected text or json")
    kubeconfig = kubeconfig or default_kubeconfig(karmada_kubeconfig)
    servers: list[dict[str, Any]] = []
    unreachable: dict[str, str] = {}
    if not client and (kubeconfig is not None or karmada_kubeconfig is not None):
        apis = member_apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
        servers, unreachable = asyncio.run(_deployments(apis))
    if output_format == "json":
        print(json.dumps({"client": __version__, "servers": servers,
                          "unreachable": unreachable}, indent=2))  # fmt: skip
        return
    print(f"Client: clusterset {__version__}")
    if servers:
        rows = [[s["cluster"], s["deployment"], s["component"], s["version"],
                 f"{s['ready']}/{s['replicas']}", s["image"]] for s in servers]  # fmt: skip
        print(table(["CLUSTER", "DEPLOYMENT", "COMPONENT", "VERSION", "READY", "IMAGE"], rows),
              end="")  # fmt: skip
    for name, why in unreachable.items():
        print(f"{name}: unreachable: {why}")


async def _deployments(apis: dict[str, KubeApi]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    async def one(api: KubeApi) -> list[dict[str, Any]]:
        items, _ = await api.list(DEPLOYMENTS, label_selector=PART_OF)
        out = []
        for d in items:
            meta, spec = d.get("metadata") or {}, d.get("spec") or {}
            labels = meta.get("labels") or {}
            containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
            out.append({
                "cluster": api.name,
                "deployment": f"{meta.get('namespace')}/{meta.get('name')}",
                "component": labels.get("app.kubernetes.io/component", "-"),
                "version": labels.get("app.kubernetes.io/version", "-"),
                "image": ",".join(c.get("image", "") for c in containers) or "-",
                "replicas": spec.get("replicas", 1),
                "ready": (d.get("status") or {}).get("readyReplicas", 0),
            })  # fmt: skip
        return out

    found, unreachable = await each_cluster(apis, one)
    return [s for name in apis if name in found for s in found[name]], unreachable
