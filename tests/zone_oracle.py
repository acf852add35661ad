"""The oracle for zone.build: the same zone rendered with dnspython's objects and renderer.

tests/zone_records.py builds every record as dnspython rdata (the reference model of the
grammar); `render` lays each answer out with dnspython's Renderer exactly as the
server did before zone.encode packed the bytes itself. Tests compare every answer of
zone.build with this one, byte for byte. `service_answer` is the pre-flight check's
answer text as it was read from the whole dnspython zone, before zone.lookup read one
service's fragment of zone.build.
"""

from __future__ import annotations

from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.renderer
import dns.rrset

from clusterset.model.ids import ServiceKey
from clusterset.model.state import ImportedView
from clusterset.zone.encode import Prebuilt, Rotation, headers
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import NOERROR
from tests import zone_records as records


@dataclass(frozen=True)
class Rendered:
    names: frozenset[bytes]
    answers: dict[bytes, Prebuilt | Rotation]
    soa_tail: tuple[int, bytes]
    recs: records.ZoneRecords


def name_wire(name: dns.name.Name) -> bytes:
    wire = name.to_wire()
    assert wire is not None
    return wire


def prebuild(
    name: dns.name.Name, rdtype: int, answer: list[records.RR], additional: list[records.RR]
) -> Prebuilt:
    r = dns.renderer.Renderer(id=0, flags=0, max_size=65535)
    r.add_question(name, rdtype)
    start = r.output.tell()
    ends: list[tuple[int, int]] = []
    counts = {dns.renderer.ANSWER: 0, dns.renderer.ADDITIONAL: 0}
    for section, rrs in ((dns.renderer.ANSWER, answer), (dns.renderer.ADDITIONAL, additional)):
        if section == dns.renderer.ADDITIONAL:
            # Glue owners must be byte for byte the SRV/NS targets (lowercase, as CoreDNS
            # writes them), not pointers into the question, which echoes the client's case.
            for suffix in [k for k, at in r.compress.items() if at < start]:
                del r.compress[suffix]
        for rr in rrs:
            rrset = dns.rrset.RRset(rr.name, dns.rdataclass.IN, rr.rdata.rdtype)
            rrset.update_ttl(rr.ttl)
            rrset.add(rr.rdata)
            try:
                r.add_rrset(section, rrset)
            except dns.exception.TooBig:
                break
            counts[section] += 1
            ends.append((r.output.tell() - start, 1 if section == dns.renderer.ANSWER else 3))
        else:
            continue
        break
    r.write_header()
    wire = r.get_wire()
    an, ar = counts[dns.renderer.ANSWER], counts[dns.renderer.ADDITIONAL]
    return Prebuilt(headers(NOERROR, an, 0, ar), wire[start:], tuple(ends), (an, 0, ar))


def render(view: ImportedView, settings: ZoneSettings, *, serial: int) -> Rendered:
    recs = records.build(view, settings, serial=serial)
    answers: dict[bytes, Prebuilt | Rotation] = {}
    for (name, rdtype), ans in recs.answers.items():
        key = name_wire(name) + rdtype.to_bytes(2, "big")
        orders = recs.rotations.get((name, rdtype))
        if orders:
            answers[key] = Rotation([prebuild(name, rdtype, o, ans.additional) for o in orders])
        else:
            answers[key] = prebuild(name, rdtype, ans.answer, ans.additional)
    soa_rr = recs.answers[(recs.origin, records.SOA)].answer[0]
    soa = recs.soa()
    fixed = (
        soa.serial.to_bytes(4, "big")
        + soa.refresh.to_bytes(4, "big")
        + soa.retry.to_bytes(4, "big")
        + soa.expire.to_bytes(4, "big")
        + soa.minimum.to_bytes(4, "big")
    )
    return Rendered(frozenset(name_wire(n) for n in recs.names), answers, (soa_rr.ttl, fixed), recs)


def service_answer(view: ImportedView, key: ServiceKey, settings: ZoneSettings) -> tuple[str, ...]:
    """`<svc>.<ns>.svc.<zone>` A, AAAA and SRV as sorted "TYPE rdata" lines, or NXDOMAIN."""
    recs = records.build(view, settings, serial=1)
    name = dns.name.from_text(f"{key.name}.{key.namespace}.svc", recs.origin)
    if name not in recs.names:
        return ("NXDOMAIN",)
    lines: list[str] = []
    for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV):
        got = recs.answers.get((name, rdtype))
        if got is not None:
            # What the server serves first: a round-robin answer's first turn.
            rrs = (recs.rotations.get((name, rdtype)) or [got.answer])[0]
            lines.extend(f"{dns.rdatatype.to_text(rdtype)} {rr.rdata.to_text()}" for rr in rrs)
    return tuple(sorted(lines)) or ("NODATA",)
