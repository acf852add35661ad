"""The answer of one service name as text lines, from the zone the server would build.

Used by the pre-flight check to say whether a consumer's answer changes; it reads
the same `records.build` output the server compiles, so it cannot drift from it.
"""

from __future__ import annotations

import dns.name
import dns.rdatatype

from clusterset.model.ids import ServiceKey
from clusterset.model.state import ImportedView
from clusterset.zone import records

_TYPES = (dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.SRV)


def service_answer(
    view: ImportedView, key: ServiceKey, settings: records.ZoneSettings | None = None
) -> tuple[str, ...]:
    """`<svc>.<ns>.svc.<zone>` A, AAAA and SRV as sorted "TYPE rdata" lines, or NXDOMAIN."""
    settings = settings or records.ZoneSettings()
    recs = records.build(view, settings, serial=1)
    name = dns.name.from_text(f"{key.name}.{key.namespace}.svc", recs.origin)
    if name not in recs.names:
        return ("NXDOMAIN",)
    lines: list[str] = []
    for rdtype in _TYPES:
        got = recs.answers.get((name, rdtype))
        if got is not None:
            lines.extend(
                f"{dns.rdatatype.to_text(rdtype)} {rr.rdata.to_text()}" for rr in got.answer
            )
    return tuple(sorted(lines)) or ("NODATA",)
