"""`clusterset gather`: a diagnostics bundle (kube.gather) from every reachable cluster,
written as one .tar.gz with an index (`summary.json`) of what was and was not collected."""

from __future__ import annotations

import asyncio
import io
import tarfile
import time
from pathlib import Path
from typing import Annotated

import typer

from clusterset.cli.common import (
    AllContextsOpt,
    ContextOpt,
    KarmadaOpt,
    KubeconfigOpt,
    UsageProblem,
    app,
    default_kubeconfig,
    member_apis,
)
from clusterset.kube import gather as g
from clusterset.kube.api import KubeApi


@app.command()
def gather(
    output: Annotated[
        Path, typer.Option("-o", "--output", help="The bundle to write (.tar.gz).")
    ] = Path("clusterset-gather.tar.gz"),
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
    namespace: Annotated[
        str, typer.Option("--namespace", help="Namespace of clusterset's pods (the chart's).")
    ] = "clusterset",
    lease_namespace: Annotated[
        str, typer.Option("--lease-namespace", help="Namespace of the liveness Leases.")
    ] = "kube-system",
    log_lines: Annotated[
        int, typer.Option("--log-lines", help="Last lines of each container's log.")
    ] = 2000,
) -> None:
    """Collect, from every reachable cluster, what support needs: clusterset's objects,
    ServiceExports/ServiceImports, MCS EndpointSlices, Leases, ClusterProperties, the
    CoreDNS ConfigMap, and the clusterset pods' recent logs and /metrics. Secrets are never
    read; tokens and passwords are redacted. Exit 1 when no cluster could be reached.

    \b
    Example: clusterset gather --kubeconfig members.yaml --all-contexts -o support.tar.gz
    """
    if log_lines < 0:
        raise UsageProblem("--log-lines must be >= 0")
    kubeconfig = kubeconfig or default_kubeconfig(karmada_kubeconfig)
    apis = member_apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
    bundles, unreachable = asyncio.run(
        _collect_all(apis, namespace=namespace, lease_namespace=lease_namespace, lines=log_lines)
    )
    _write(output, bundles, unreachable)
    got = sum(len(b.files) for b in bundles.values())
    print(f"gather: {got} files from {len(bundles)} cluster(s) written to {output}")
    for problem in [p for b in bundles.values() for p in b.problems]:
        print(f"gather: not collected: {problem}")
    for name, why in unreachable.items():
        print(f"gather: {name}: unreachable: {why}")
    if not bundles:
        raise SystemExit(1)


async def _collect_all(
    apis: dict[str, KubeApi], *, namespace: str, lease_namespace: str, lines: int
) -> tuple[dict[str, g.Bundle], dict[str, str]]:
    async def one(api: KubeApi) -> g.Bundle:
        try:
            await api.get("/version")  # reachable at all? (else every item fails alike)
            return await g.collect(
                api, namespace=namespace, lease_namespace=lease_namespace, log_lines=lines
            )
        finally:
            await api.close()

    results = await asyncio.gather(*(one(a) for a in apis.values()), return_exceptions=True)
    bundles: dict[str, g.Bundle] = {}
    unreachable: dict[str, str] = {}
    for name, r in zip(apis, results, strict=True):
        if isinstance(r, g.Bundle):
            bundles[name] = r
        else:
            unreachable[name] = f"{type(r).__name__}: {r}"
    return bundles, unreachable


def _write(path: Path, bundles: dict[str, g.Bundle], unreachable: dict[str, str]) -> None:
    files = {"summary.json": g.summary(bundles, unreachable).encode()}
    for b in bundles.values():
        files.update(b.files)
    now = time.time()
    with tarfile.open(path, "w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"clusterset-gather/{name}")
            info.size, info.mtime, info.mode = len(data), int(now), 0o600
            tar.addfile(info, io.BytesIO(data))
