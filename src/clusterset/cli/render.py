"""`clusterset render`: the objects the controller would apply to one cluster, computed from
a manifest folder (read-only: the allocation state is never written)."""

from __future__ import annotations

from typing import Annotated

import typer

from clusterset.cli import output
from clusterset.cli.common import (
    DEFAULT_CIDR,
    DEFAULT_CIDR_V6,
    CidrOpt,
    CidrV6Opt,
    ManifestsOpt,
    StateFileOpt,
    UsageProblem,
    app,
    cluster_arg,
    manifest_feed,
)
from clusterset.manifests.load import SourceError


@app.command()
def render(
    manifests: ManifestsOpt = None,
    cluster: Annotated[str, typer.Option(help="The consuming cluster.")] = "",
    state_file: StateFileOpt = None,
    clusterset_cidr: CidrOpt = DEFAULT_CIDR,
    clusterset_cidr_v6: CidrV6Opt = DEFAULT_CIDR_V6,
    output_format: Annotated[str, typer.Option("-o", "--output", help="yaml|json")] = "yaml",
) -> None:
    """Print the objects the controller would apply to one cluster: YAML documents, or a
    kubectl List in JSON."""
    if output_format not in ("yaml", "json"):
        raise UsageProblem(f"-o {output_format!r}: expected yaml or json")
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    cid = cluster_arg(cluster)
    observed = manifest_feed(manifests, state_file, clusterset_cidr, clusterset_cidr_v6).observe()
    if cid not in observed.desired.clusters:
        raise SourceError(f"--cluster {cid}: no such cluster under {manifests}")
    output.render(observed, cid, output_format)
