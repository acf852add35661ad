"""`clusterset gather`: a diagnostics bundle (kube.gather) from every reachable cluster,
written as one .tar.gz with an index (`summary.json`) of what was and was not collected."""

from __future__ import annotations

import asyncio
import io
import os
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
    each_cluster,
    member_apis,
)
from clusterset.kube import gather as g
from clusterset.kube.api import KubeApi
from clusterset.manifests.load import SourceError
from clusterset.model import liveness


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
    ] = liveness.NAMESPACE,
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
    if not output.parent.is_dir() or not os.access(output.parent, os.W_OK):
        raise UsageProblem(f"-o {output}: {output.parent} is not a writable folder")
    kubeconfig = kubeconfig or default_kubeconfig(karmada_kubeconfig)
    apis = member_apis(kubeconfig, context, all_contexts, karmada_kubeconfig)

    async def one(api: KubeApi) -> g.Bundle:
        await api.get("/version")  # reachable at all? (else every item fails alike)
        return await g.collect(
            api, namespace=namespace, lease_namespace=lease_namespace, log_lines=log_lines
        )

    bundles, unreachable = asyncio.run(each_cluster(apis, one))
    unreachable = {name: g.redact(why) for name, why in unreachable.items()}
    try:
        _write(output, bundles, unreachable)
    except OSError as exc:
        raise SourceError(f"-o {output}: {exc.strerror or exc}") from exc
    got = sum(len(b.files) for b in bundles.values())
    print(f"gather: {got} files from {len(bundles)} cluster(s) written to {output}")
    for problem in [p for b in bundles.values() for p in b.problems]:
        print(f"gather: not collected: {problem}")
    for name, why in unreachable.items():
        print(f"gather: {name}: unreachable: {why}")
    if not bundles:
        raise SystemExit(1)


def _write(path: Path, bundles: dict[str, g.Bundle], unreachable: dict[str, str]) -> None:
    """The archive, readable by its owner only (it holds logs and cluster state)."""
    files = {"summary.json": g.summary(bundles, unreachable).encode()}
    for b in bundles.values():
        files.update(b.files)
    now = int(time.time())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when the file was there before
    with os.fdopen(fd, "wb") as raw, tarfile.open(fileobj=raw, mode="w:gz") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(f"clusterset-gather/{name}")
            info.size, info.mtime, info.mode = len(data), now, 0o600
            tar.addfile(info, io.BytesIO(data))
