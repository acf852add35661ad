"""Human (rich tables) and machine (JSON/YAML) output of status, render and resolve."""

from __future__ import annotations

import json
import shlex
import sys
from typing import Any

import dns.message
import dns.rdatatype
import yaml
from rich.console import Console
from rich.table import Table

from clusterset.controller.manifest import Observed
from clusterset.model.ids import ClusterId
from clusterset.model.state import ImportedView
from clusterset.reconcile import render as rendering
from clusterset.zone import records, schema
from clusterset.zone.wire import FORWARD, CompiledZone, respond


def _console() -> Console:
    return Console(file=sys.stdout, width=200 if not sys.stdout.isatty() else None)


def status_data(observed: Observed) -> dict[str, Any]:
    exports = []
    for (cid, key), conds in sorted(
        observed.desired.conditions.items(), key=lambda kv: (str(kv[0][1]), kv[0][0])
    ):
        exports.append(
            {
                "cluster": cid,
                "namespace": key.namespace,
                "name": key.name,
                "conditions": [
                    {
                        "type": c.type.value,
                        "status": c.status.value,
                        "reason": c.reason,
                        "message": c.message,
                    }
                    for c in conds
                ],
            }
        )
    imports = []
    for cid, cd in sorted(observed.desired.clusters.items()):
        for key, imp in sorted(cd.imports.items()):
            imports.append(
                {
                    "cluster": cid,
                    "namespace": key.namespace,
                    "name": key.name,
                    "type": imp.type.value,
                    "ips": list(imp.ips),
                    "ports": [
                        f"{p.name + ':' if p.name else ''}{p.port}/{p.protocol.value}"
                        for p in imp.ports
                    ],
                    "clusters": list(imp.clusters),
                    "endpointSlices": len(cd.slices.get(key, ())),
                }
            )
    return {"exports": exports, "imports": imports, "errors": observed.errors}


def status(observed: Observed, fmt: str, *, leases: list[dict[str, Any]] | None = None) -> None:
    data = status_data(observed)
    if leases is not None:
        data["sourceLeases"] = leases
    if fmt == "json":
        print(json.dumps(data, indent=2))
        return
    if fmt == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
        return
    con = _console()
    wide = fmt == "wide"
    t = Table(title="ServiceExports", box=None, header_style="bold")
    for col in ("CLUSTER", "NAMESPACE", "NAME", "VALID", "READY", "CONFLICT") + (
        ("MESSAGE",) if wide else ()
    ):
        t.add_column(col)
    for e in data["exports"]:
        by = {c["type"]: c for c in e["conditions"]}

        def cell(kind: str, by: dict[str, Any] = by) -> str:
            c = by.get(kind)
            return f"{c['status']} ({c['reason']})" if c else "-"

        row = [
            e["cluster"],
            e["namespace"],
            e["name"],
            cell("Valid"),
            cell("Ready"),
            cell("Conflict"),
        ]
        if wide:
            row.append("; ".join(c["message"] for c in e["conditions"] if c["message"]))
        t.add_row(*row)
    con.print(t)
    t = Table(title="ServiceImports", box=None, header_style="bold")
    for col in ("CLUSTER", "NAMESPACE", "NAME", "TYPE", "IP", "PORTS", "CLUSTERS") + (
        ("SLICES",) if wide else ()
    ):
        t.add_column(col)
    for i in data["imports"]:
        row = [
            i["cluster"],
            i["namespace"],
            i["name"],
            i["type"],
            ",".join(i["ips"]) or "-",
            ",".join(i["ports"]) or "-",
            ",".join(i["clusters"]),
        ]
        if wide:
            row.append(str(i["endpointSlices"]))
        t.add_row(*row)
    con.print(t)
    if leases is not None:
        t = Table(title="Source-cluster liveness Leases", box=None, header_style="bold")
        for col in ("CONSUMER", "SOURCE", "STATE", "AGE", "RENEWED"):
            t.add_column(col)
        for lease in leases:
            t.add_row(
                lease["consumer"],
                lease["source"],
                lease["state"],
                f"{lease['age']}s",
                lease["renewed"],
            )
        con.print(t)
    for err in data["errors"]:
        print(f"error: {err}", file=sys.stderr)


def render(observed: Observed, cluster: ClusterId) -> None:
    objs = rendering.cluster_objects(observed.desired.clusters[cluster])
    print(yaml.safe_dump_all(objs, sort_keys=False), end="")


def resolve(
    view: ImportedView,
    zone: CompiledZone,
    settings: records.ZoneSettings,
    name: str,
    qtype: str,
    *,
    explain: bool,
) -> None:
    """Answer with `zone` (compiled as the server compiles it) through the server's `respond`."""
    try:
        rdtype = dns.rdatatype.from_text(qtype)
    except dns.rdatatype.UnknownRdatatype:
        print(f"clusterset: error: unknown record type {qtype!r}", file=sys.stderr)
        raise SystemExit(2) from None
    query = dns.message.make_query(name, rdtype, use_edns=0)
    unified = settings.unified_zone is not None
    reply = respond(zone, zone.origin_wire, query.to_wire(), tcp=True, forward=unified)
    if reply == FORWARD:
        print(
            f";; {name} {qtype}: not answered by clusterset; forwarded to the upstream cluster DNS"
        )
    else:
        assert reply is not None
        print(dns.message.from_wire(reply).to_text())
    if explain:
        print()
        print(schema.explain(view, zone.state, name, unified_zone=settings.unified_zone))


def corefile(zone: str, server: str, ttl: int, namespace: str, configmap: str) -> None:
    stanza = f"{zone}:53 {{\n    errors\n    cache {ttl}\n    forward . {server}\n}}\n"
    print("# Add this server block to the Corefile (CoreDNS forwards the zone; no rebuild):")
    print(stanza)
    print("# Or patch the ConfigMap in place (CoreDNS's reload plugin picks it up):")
    print(
        f"kubectl -n {namespace} get configmap {configmap} -o jsonpath='{{.data.Corefile}}' "
        f"> /tmp/Corefile && printf '%s' {shlex.quote(stanza)} >> /tmp/Corefile && "
        f"kubectl -n {namespace} create configmap {configmap} --from-file=Corefile=/tmp/Corefile "
        f"--dry-run=client -o yaml | kubectl -n {namespace} apply -f -"
    )
