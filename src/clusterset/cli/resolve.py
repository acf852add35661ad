"""`clusterset resolve`: one name answered as the DNS server would answer it for a member
cluster, from a manifest folder, without starting a server; optionally explained."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Annotated

import typer

from clusterset.cli import output
from clusterset.cli.common import (
    DEFAULT_CIDR,
    DEFAULT_CIDR_V6,
    CidrOpt,
    CidrV6Opt,
    ManifestsOpt,
    PolicyOpt,
    StateFileOpt,
    TtlOpt,
    UnifiedOpt,
    UsageProblem,
    ZoneOpt,
    app,
    cluster_arg,
    manifest_feed,
    zone_settings,
)
from clusterset.manifests.load import SourceError
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.state import ImportedView
from clusterset.server import probe
from clusterset.server.app import compile_view
from clusterset.zone import policy


@app.command()
def resolve(
    name: Annotated[str, typer.Argument(help="The name to look up.")],
    qtype: Annotated[str, typer.Argument(help="Record type.")] = "A",
    manifests: ManifestsOpt = None,
    cluster: Annotated[str, typer.Option(help="Ask as this member cluster.")] = "",
    explain: Annotated[bool, typer.Option(help="Say why: policy, candidates.")] = False,
    zone: ZoneOpt = "clusterset.local",
    ttl: TtlOpt = 5,
    default_policy: PolicyOpt = policy.KEP,
    state_file: StateFileOpt = None,
    clusterset_cidr: CidrOpt = DEFAULT_CIDR,
    clusterset_cidr_v6: CidrV6Opt = DEFAULT_CIDR_V6,
    unified: UnifiedOpt = False,
    short: Annotated[
        bool, typer.Option("--short", help="Only the answer's data, one per line (dig +short).")
    ] = False,
    output_format: Annotated[str, typer.Option("-o", "--output", help="text|json")] = "text",
) -> None:
    """Answer NAME as the DNS server would for --cluster, and optionally explain it.

    \b
    Examples:
      clusterset resolve serve.default.svc.clusterset.local --manifests ROOT --cluster member2
      clusterset resolve _http._tcp.web.default.svc.clusterset.local SRV --cluster member2 --short
    """
    if output_format not in ("text", "json"):
        raise UsageProblem(f"-o {output_format!r}: expected text or json")
    if short and output_format == "json":
        raise UsageProblem("--short and -o json are exclusive")
    if not cluster:
        raise UsageProblem("--cluster NAME is required")
    cid = cluster_arg(cluster)
    settings = zone_settings(zone, ttl, default_policy, unified=unified)
    feed = manifest_feed(manifests, state_file, clusterset_cidr, clusterset_cidr_v6)
    observed = feed.observe()
    if cid not in observed.state.clusters:
        raise SourceError(f"--cluster {cid}: no such cluster under {manifests}")
    view = feed.view(observed, cid)
    # As the server's first compile of this view: the clock now, and one round of probes.
    failed = asyncio.run(_probe_once(view))
    view = dataclasses.replace(view, now=time.time(), probe_failed=failed)
    output.resolve(
        view, compile_view(view, settings), settings, name, qtype,
        explain=explain, form="short" if short else output_format,
    )  # fmt: skip


async def _probe_once(view: ImportedView) -> frozenset[tuple[ServiceKey, ClusterId]]:
    """The verdict of the server's first probe round: a cluster none of whose probed
    endpoints accepts a connection fails."""
    rounds = probe.targets(view)
    results = await asyncio.gather(
        *(asyncio.gather(*(probe.tcp_ok(a, p, t.timeout) for a, p in t.addresses)) for t in rounds)
    )
    return frozenset(
        (t.key, t.cluster)
        for t, rs in zip(rounds, results, strict=True)
        if not any(ok for ok, _ in rs)
    )
