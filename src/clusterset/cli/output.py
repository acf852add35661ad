"""Human (kubectl-style tables, a matrix, an HTML page) and machine (JSON/YAML/jsonpath)
output of status, render, resolve and corefile."""

from __future__ import annotations

import html
import json
import shlex
import sys
from typing import Any

import dns.message
import dns.rcode
import dns.rdatatype
import yaml

from clusterset.controller.manifest import Observed
from clusterset.model import jsonpath
from clusterset.model.ids import ClusterId
from clusterset.model.selector import Requirement, matches
from clusterset.model.state import ImportedView
from clusterset.reconcile import render as rendering
from clusterset.wiredns.corefile import MARKER
from clusterset.zone import schema
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import FORWARD, CompiledZone, respond


def table(header: list[str], rows: list[list[str]]) -> str:
    """kubectl's table: columns padded to their widest cell and 3 spaces apart, nothing
    wrapped and no trailing blanks, whatever the terminal (grep, awk and cut keep working)."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return "".join(
        "   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() + "\n"
        for r in [header, *rows]
    )


def status_data(
    observed: Observed,
    namespace: str | None = None,
    selector: tuple[Requirement, ...] = (),
) -> dict[str, Any]:
    """Exports and imports, of `namespace` only if given, and only those whose exported labels
    (spec.exportedLabels, which the ServiceImport carries) match `selector`."""
    exports = []
    for (cid, key), conds in sorted(
        observed.desired.conditions.items(), key=lambda kv: (str(kv[0][1]), kv[0][0])
    ):
        if namespace is not None and key.namespace != namespace:
            continue
        export = observed.state.clusters[cid].exports.get(key) if selector else None
        if selector and not matches(selector, dict(export.exported_labels if export else ())):
            continue
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
            if namespace is not None and key.namespace != namespace:
                continue
            if selector and not matches(selector, dict(imp.labels)):
                continue
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
                    # The Service kube-proxy routes the ClusterSetIP by: Karmada's derived-<svc>
                    # keeps a lost source's endpoints in its slices.
                    "dataPath": None
                    if key not in cd.derived
                    else {
                        "service": cd.derived[key],
                        "owner": "karmada" if key in cd.foreign_derived else "clusterset",
                    },
                }
            )
    return {"exports": exports, "imports": imports, "errors": observed.errors}


def findings(data: dict[str, Any]) -> int:
    """Errors, invalid exports and conflicts in `data`: what makes `status` exit 1."""
    bad = {("Valid", "False"), ("Conflict", "True")}
    return len(data["errors"]) + sum(
        1 for e in data["exports"] if any((c["type"], c["status"]) in bad for c in e["conditions"])
    )


def status(
    observed: Observed,
    fmt: str,
    *,
    leases: list[dict[str, Any]] | None = None,
    namespace: str | None = None,
    selector: tuple[Requirement, ...] = (),
) -> int:
    """Print the status; the number of findings (errors, invalid exports, conflicts). Every
    error is said once on stderr, here (the manifest source is read quietly for status; on
    clusters, errors are logged by the member that found them, and are not in `observed`)."""
    data = status_data(observed, namespace, selector)
    if leases is not None:
        data["sourceLeases"] = leases
    if fmt == "json":
        print(json.dumps(data, indent=2))
    elif fmt == "yaml":
        print(yaml.safe_dump(data, sort_keys=False), end="")
    elif fmt.startswith("jsonpath="):
        print(jsonpath.render(fmt.removeprefix("jsonpath="), data), end="")
    elif fmt == "matrix":
        clusters, rows = matrix(data)
        print(table(["SERVICE", *[c.upper() for c in clusters]],
                    [[svc, *(", ".join(cell) or "-" for cell in cells)] for svc, cells in rows]),
              end="")  # fmt: skip
    elif fmt == "html":
        print(html_page(data), end="")
    elif fmt == "name":
        for e in data["exports"]:
            print(f"{e['cluster']}/serviceexport/{e['namespace']}/{e['name']}")
        for i in data["imports"]:
            print(f"{i['cluster']}/serviceimport/{i['namespace']}/{i['name']}")
    else:
        _status_tables(data, wide=fmt == "wide", leases=leases)
    for err in data["errors"]:
        print(f"error: {err}", file=sys.stderr)
    return findings(data)


def matrix(data: dict[str, Any]) -> tuple[list[str], list[tuple[str, list[list[str]]]]]:
    """The fleet as service x cluster: each cell the states of that service in that cluster
    (exported, conflict, invalid, not ready, imported), in that order."""
    clusters = sorted(
        {e["cluster"] for e in data["exports"]} | {i["cluster"] for i in data["imports"]}
    )
    cells: dict[str, dict[str, list[str]]] = {}
    for e in data["exports"]:
        conds = {c["type"]: c["status"] for c in e["conditions"]}
        states = cells.setdefault(f"{e['namespace']}/{e['name']}", {}).setdefault(e["cluster"], [])
        if conds.get("Valid") == "False":
            states.append("invalid")
        elif conds.get("Conflict") == "True":
            states.append("conflict")
        elif conds.get("Ready") == "False":
            states.append("not ready")
        else:
            states.append("exported")
    for i in data["imports"]:
        cells.setdefault(f"{i['namespace']}/{i['name']}", {}).setdefault(i["cluster"], []).append(
            "imported"
        )
    rows = [(svc, [per.get(c, []) for c in clusters]) for svc, per in sorted(cells.items())]
    return clusters, rows


_CSS = """body{font:14px system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
th,td{border:1px solid #ccc;padding:.3em .6em;text-align:left}
th{background:#f3f3f3}.exported{background:#d8f0d8}.imported{background:#dde8f8}
.exported.imported{background:linear-gradient(90deg,#d8f0d8 50%,#dde8f8 50%)}
.conflict{background:#ffe1b3}.invalid,.not-ready{background:#f8c8c8}.none{color:#999}
.legend span{display:inline-block;padding:.2em .6em;margin-right:.5em;border:1px solid #ccc}
ul.errors{color:#a00}"""


def html_page(data: dict[str, Any]) -> str:
    """A self-contained page (inline style, no script, nothing fetched): the matrix, then the
    exports and imports, then the errors."""
    esc = html.escape
    clusters, rows = matrix(data)
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           "<title>clusterset status</title>", f"<style>{_CSS}</style></head><body>",
           "<h1>clusterset status</h1>", '<p class="legend">',
           *(f'<span class="{s.replace(" ", "-")}">{s}</span>' for s in
             ("exported", "imported", "conflict", "invalid", "not ready")),
           "</p>", '<table id="matrix"><tr><th>service</th>',
           *(f"<th>{esc(c)}</th>" for c in clusters), "</tr>"]  # fmt: skip
    for svc, cells in rows:
        out.append(f'<tr><th scope="row">{esc(svc)}</th>')
        for cluster, cell in zip(clusters, cells, strict=True):
            cls = " ".join(s.replace(" ", "-") for s in cell) or "none"
            label = ", ".join(cell) or "-"
            out.append(f'<td class="{cls}" data-cluster="{esc(cluster)}">{esc(label)}</td>')
        out.append("</tr>")
    out.append("</table>")
    out.append('<h2>ServiceExports</h2><table id="exports"><tr><th>cluster</th><th>service</th>'
               "<th>conditions</th></tr>")  # fmt: skip
    for e in data["exports"]:
        conds = "; ".join(f"{c['type']}={c['status']} ({c['reason']})" for c in e["conditions"])
        out.append(f"<tr><td>{esc(e['cluster'])}</td><td>{esc(e['namespace'])}/{esc(e['name'])}"
                   f"</td><td>{esc(conds)}</td></tr>")  # fmt: skip
    out.append("</table>")
    out.append('<h2>ServiceImports</h2><table id="imports"><tr><th>cluster</th><th>service</th>'
               "<th>type</th><th>IP</th><th>ports</th><th>clusters</th></tr>")  # fmt: skip
    for i in data["imports"]:
        row = (
            i["cluster"], f"{i['namespace']}/{i['name']}", i["type"], ",".join(i["ips"]) or "-",
            ",".join(i["ports"]) or "-", ",".join(i["clusters"]),
        )  # fmt: skip
        out.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>")
    out.append("</table>")
    if data["errors"]:
        out.append('<h2>Errors</h2><ul class="errors">')
        out.extend(f"<li>{esc(e)}</li>" for e in data["errors"])
        out.append("</ul>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def _status_tables(
    data: dict[str, Any], *, wide: bool, leases: list[dict[str, Any]] | None
) -> None:
    rows = []
    for e in data["exports"]:
        by = {c["type"]: c for c in e["conditions"]}

        def cell(kind: str, by: dict[str, Any] = by) -> str:
            c = by.get(kind)
            return f"{c['status']}({c['reason']})" if c else "-"

        row = [e["cluster"], e["namespace"], e["name"], cell("Valid"), cell("Ready"),
               cell("Conflict")]  # fmt: skip
        if wide:
            row.append("; ".join(c["message"] for c in e["conditions"] if c["message"]) or "-")
        rows.append(row)
    header = ["CLUSTER", "NAMESPACE", "SERVICEEXPORT", "VALID", "READY", "CONFLICT"]
    print(table(header + (["MESSAGE"] if wide else []), rows), end="")
    rows = []
    for i in data["imports"]:
        row = [i["cluster"], i["namespace"], i["name"], i["type"], ",".join(i["ips"]) or "-",
               ",".join(i["ports"]) or "-", ",".join(i["clusters"]) or "-"]  # fmt: skip
        if wide:
            path = i["dataPath"]
            row += [
                str(i["endpointSlices"]),
                f"{path['service']} ({path['owner']})" if path else "-",
            ]
        rows.append(row)
    header = ["CLUSTER", "NAMESPACE", "SERVICEIMPORT", "TYPE", "IP", "PORTS", "CLUSTERS"]
    print()
    print(table(header + (["SLICES", "DATA-PATH"] if wide else []), rows), end="")
    if leases is not None:
        rows = [[lease["consumer"], lease["source"], lease["state"],
                 "-" if lease["age"] is None else f"{lease['age']}s", lease["renewed"] or "-"]
                for lease in leases]  # fmt: skip
        print()
        print(table(["CONSUMER", "SOURCE-LEASE", "STATE", "AGE", "RENEWED"], rows), end="")
        for note in _karmada_keeps(data["imports"], leases):
            print(note)


def _karmada_keeps(imports: list[dict[str, Any]], leases: list[dict[str, Any]]) -> list[str]:
    """What the Leases cannot do on Karmada's data path, said where it matters now."""
    expired = {
        (lease.get("consumerCluster", lease["consumer"]), lease["source"])
        for lease in leases
        if lease["state"] == "expired"
    }
    return [
        f"note: {i['cluster']}'s {i['namespace']}/{i['name']}: {source}'s Lease expired, so its "
        f"endpoints left DNS answers; the ClusterSetIP goes through Karmada's "
        f"{i['dataPath']['service']}, whose slices Karmada keeps (clusterset does not rewrite them)"
        for i in imports
        if i["dataPath"] and i["dataPath"]["owner"] == "karmada"
        for source in i["clusters"]
        if (i["cluster"], source) in expired
    ]


def render(observed: Observed, cluster: ClusterId, fmt: str = "yaml") -> None:
    objs = rendering.cluster_objects(observed.desired.clusters[cluster])
    if fmt == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}, indent=2))
    else:
        print(yaml.safe_dump_all(objs, sort_keys=False), end="")


def resolve(
    view: ImportedView,
    zone: CompiledZone,
    settings: ZoneSettings,
    name: str,
    qtype: str,
    *,
    explain: bool,
    form: str = "text",
) -> None:
    """Answer with `zone` (compiled as the server compiles it) through the server's `respond`:
    dig's text (`text`), dig +short (`short`) or JSON (`json`)."""
    try:
        rdtype = dns.rdatatype.from_text(qtype)
    except dns.rdatatype.UnknownRdatatype:
        print(f"clusterset: error: unknown record type {qtype!r}", file=sys.stderr)
        raise SystemExit(2) from None
    query = dns.message.make_query(name, rdtype, use_edns=0)
    unified = settings.unified_zone is not None
    reply = respond(zone, zone.origin_wire, query.to_wire(), tcp=True, forward=unified)
    why = (
        schema.explain(view, zone.state, name, unified_zone=settings.unified_zone)
        if explain
        else None
    )
    if reply == FORWARD:
        _forwarded(name, qtype, form, why)
        return
    assert reply is not None
    msg = dns.message.from_wire(reply)
    if form == "json":
        out = _reply_data(msg, name, qtype)
        if why is not None:
            out["explain"] = why.splitlines()
        print(json.dumps(out, indent=2))
        return
    if form == "short":
        for rrset in msg.answer:
            for rd in rrset:
                print(rd.to_text())
    else:
        print(msg.to_text())
    if why is not None:
        print()
        print(why)


def _forwarded(name: str, qtype: str, form: str, why: str | None) -> None:
    """A name clusterset does not answer (unified mode): it says so, as JSON or a comment."""
    if form == "json":
        fwd: dict[str, Any] = {"name": name, "type": qtype.upper(), "forwarded": True}
        if why is not None:
            fwd["explain"] = why.splitlines()
        print(json.dumps(fwd, indent=2))
        return
    print(f";; {name} {qtype}: not answered by clusterset; forwarded to the upstream "
          "cluster DNS")  # fmt: skip
    if why is not None:
        print()
        print(why)


def _reply_data(msg: dns.message.Message, name: str, qtype: str) -> dict[str, Any]:
    """The reply as `resolve -o json` prints it: its rcode, and each section's records."""
    out: dict[str, Any] = {"name": name, "type": qtype.upper(),
                           "rcode": dns.rcode.to_text(msg.rcode())}  # fmt: skip
    for section, rrsets in (("answer", msg.answer), ("authority", msg.authority),
                            ("additional", msg.additional)):  # fmt: skip
        out[section] = [
            {"name": rrset.name.to_text(), "ttl": rrset.ttl,
             "type": dns.rdatatype.to_text(rrset.rdtype), "data": rd.to_text()}
            for rrset in rrsets for rd in rrset
        ]  # fmt: skip
    return out


def corefile(block: str, namespace: str, configmap: str, context: str | None) -> None:
    """The stanza, and a kubectl one-liner that appends it unless its marker line is there."""
    kubectl = "kubectl" + (f" --context {shlex.quote(context)}" if context else "")
    kubectl += f" -n {shlex.quote(namespace)}"
    print("# Add this server block to the Corefile (CoreDNS forwards the zone; no rebuild):")
    print(block)
    print("# Or patch the ConfigMap in place, once (CoreDNS's reload plugin picks it up):")
    print(
        f"{kubectl} get configmap {configmap} -o jsonpath='{{.data.Corefile}}' > /tmp/Corefile "
        f"&& {{ grep -qxF {shlex.quote(MARKER)} /tmp/Corefile || "
        f"printf '\\n%s' {shlex.quote(block)} >> /tmp/Corefile; }} && "
        f"{kubectl} create configmap {configmap} --from-file=Corefile=/tmp/Corefile "
        f"--dry-run=client -o yaml | {kubectl} apply -f -"
    )
