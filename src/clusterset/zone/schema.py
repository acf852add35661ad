"""The qname grammar as a parser (for `resolve --explain` and tests); the zone build
(`zone.build`; tests/zone_records.py is its dnspython reference) is its generator. Both follow
docs/dns-schema.md."""

from __future__ import annotations

from dataclasses import dataclass

import dns.name

from clusterset.model.ids import ServiceKey
from clusterset.model.objects import ImportType
from clusterset.model.state import ImportedView
from clusterset.zone.build import ZoneState, endpoint_hostname
from clusterset.zone.policy import SelectedEndpoint


@dataclass(frozen=True, slots=True)
class Parsed:
    # apex|version|svc-root|pod-root|namespace|service|port|endpoint|reserved|invalid|outside
    form: str
    namespace: str = ""
    service: str = ""
    port: str = ""
    protocol: str = ""
    hostname: str = ""
    cluster: str = ""


def parse(name: str, zone: str) -> Parsed:
    """Classify `name` (any case) under `zone`."""
    qn = dns.name.from_text(name.lower())
    origin = dns.name.from_text(zone.lower())
    if not qn.is_subdomain(origin):
        return Parsed("outside")
    labels = [label.decode() for label in qn.relativize(origin).labels]
    if qn == origin:
        return Parsed("apex")
    if labels == ["dns-version"]:
        return Parsed("version")
    if labels[-1] not in ("svc", "pod"):
        return Parsed("invalid")
    if len(labels) == 1:
        return Parsed("svc-root" if labels[0] == "svc" else "pod-root")
    if labels[-1] == "pod":
        return Parsed("invalid")
    ns = labels[-2]
    if len(labels) == 2:
        return Parsed("namespace", namespace=ns)
    svc = labels[-3]
    rest = labels[:-3]
    if not rest:
        return Parsed("service", ns, svc)
    if len(rest) == 1:
        return Parsed("reserved", ns, svc, cluster=rest[0])
    if len(rest) == 2 and rest[1].startswith("_"):
        return Parsed("port", ns, svc, port=rest[0].lstrip("_"), protocol=rest[1][1:])
    if len(rest) == 2:
        return Parsed("endpoint", ns, svc, hostname=rest[0], cluster=rest[1])
    return Parsed("invalid", ns, svc)


def explain(
    view: ImportedView, state: ZoneState, name: str, *, unified_zone: str | None = None
) -> str:
    p = parse(name, state.zone)
    selections = state.explain
    lines = []
    if p.form == "outside" and unified_zone:
        p = parse(name, unified_zone)
        selections = state.explain_unified
        imp = view.imports.get(ServiceKey(p.namespace, p.service))
        if p.form == "service" and imp is not None:
            selected = imp.cluster_selectors and imp.type is not ImportType.HEADLESS
            how = "by its clusterSelectors" if selected else "local-first"
            lines.append(f"unified {unified_zone} name: answered {how} by clusterset")
        else:
            lines.append(
                f"{unified_zone} name of no imported service: clusterset forwards it upstream"
            )
            return "\n".join(lines)
    lines += [f"name form: {p.form}", f"asked as cluster: {view.cluster or '(any)'}"]
    if p.form == "reserved":
        lines.append(
            "<clusterid>.<svc>.<ns>.svc MUST NOT exist (MCS DNS spec 2.3.4/2.4.4): NXDOMAIN"
        )
        return "\n".join(lines)
    if p.service:
        key = ServiceKey(p.namespace, p.service)
        imp = view.imports.get(key)
        if imp is None:
            lines.append(f"no ServiceImport {key} in this cluster: NXDOMAIN")
        else:
            sel = selections.get(key)
            lines.append(f"ServiceImport {key}: type {imp.type.value}, ips {list(imp.ips) or '-'}")
            if sel is not None:
                lines.append(f"policy: {sel.policy} ({sel.reason})")
                lines.extend(
                    f"  candidate cluster {c.cluster or '(unlabelled)'}: "
                    f"{c.ready}/{c.total} endpoints ready, weight {c.weight}, tier {c.tier}, "
                    f"{'eligible' if c.eligible else 'not eligible'}"
                    + (f" ({c.note})" if c.note else "")
                    for c in sel.candidates
                )
                for (_k, cid), t in sel.tracks.items():
                    lines.append(
                        f"  health history of {cid}: {'healthy' if t.healthy else 'unhealthy'} "
                        f"since t={t.since:.0f}"
                    )
                if p.form == "endpoint":
                    lines.append(_endpoint_answer(p, imp.type, sel.endpoints))
                else:
                    if sel.addresses:
                        lines.append(f"answer addresses: {', '.join(sel.addresses)}")
                    if sel.endpoints:
                        lines.append(
                            "answer endpoints: "
                            + ", ".join(f"{e.address} ({e.cluster})" for e in sel.endpoints)
                        )
                lines.extend(f"note: {n}" for n in sel.notes)
    return "\n".join(lines)


def _endpoint_answer(p: Parsed, kind: ImportType, endpoints: tuple[SelectedEndpoint, ...]) -> str:
    """What <hostname>.<clusterid>.<svc> answers: that one endpoint, Headless only."""
    name = f"endpoint {p.hostname} of cluster {p.cluster}"
    if kind is not ImportType.HEADLESS:
        return f"{name}: endpoint names exist for Headless services only (SPEC 2.4.1): NXDOMAIN"
    found = [
        e.address
        for e in endpoints
        if e.cluster == p.cluster and endpoint_hostname(e.hostname, e.address) == p.hostname
    ]
    if not found:
        return f"{name}: no such ready endpoint: NXDOMAIN"
    return f"answer: {name}: {', '.join(found)}"
