"""The answer of one service name as text lines, read from the bytes the server serves.

Used by the pre-flight check (`clusterset check` and the admission webhook) to say
whether a consumer's answer changes. It builds only that service's fragment with
`zone.build` (what the server compiles for it, at the cost of one service, not of the
fleet) and decodes the prebuilt answers, so it cannot drift from the server.
"""

from __future__ import annotations

import struct

import dns.rdata
import dns.rdatatype
import dns.wire

from clusterset.model.ids import ServiceKey
from clusterset.model.state import ImportedView
from clusterset.zone import build
from clusterset.zone.encode import AAAA, SRV, A, NameProblem, Prebuilt, labels_wire, name_from_text
from clusterset.zone.settings import ZoneSettings

_TYPES = (A, AAAA, SRV)
_QUESTION_TAIL = struct.Struct("!HH")  # qtype, class IN
_RR_HEAD = struct.Struct("!HHIH")
_DEFAULT = ZoneSettings()


def service_answer(
    view: ImportedView, key: ServiceKey, settings: ZoneSettings = _DEFAULT
) -> tuple[str, ...]:
    """`<svc>.<ns>.svc.<zone>` A, AAAA and SRV as sorted "TYPE rdata" lines, or NXDOMAIN."""
    built = build.service(view, key, settings)
    try:
        name = labels_wire([key.name, key.namespace, "svc"], name_from_text(settings.zone.lower()))
    except NameProblem:
        return ("NXDOMAIN",)  # cannot be named: the server has no such name either
    if built is None or name not in built[0].names:
        return ("NXDOMAIN",)
    answers = built[1]
    lines: list[str] = []
    for rdtype in _TYPES:
        got = answers.get(name + rdtype.to_bytes(2, "big"))
        if got is not None:
            # A round-robin answer: its first turn, the server's first reply.
            lines.extend(_lines(name, rdtype, got if isinstance(got, Prebuilt) else got.items[0]))
    return tuple(sorted(lines)) or ("NODATA",)


def _lines(qname: bytes, qtype: int, answer: Prebuilt) -> list[str]:
    """The answer section of the reply the server sends, one "TYPE rdata" line per RR."""
    head = bytes(2) + answer.headers[0] + qname + _QUESTION_TAIL.pack(qtype, 1)
    parser = dns.wire.Parser(head + answer.body, len(head))  # pointers are message offsets
    out = []
    for _ in range(answer.counts[0]):
        parser.get_name(None, True)  # the owner (compressed)
        rdtype, rdclass, _ttl, rdlen = parser.get_struct(_RR_HEAD.format)
        with parser.restrict_to(rdlen):
            rdata = dns.rdata.from_wire_parser(rdclass, rdtype, parser)
        out.append(f"{dns.rdatatype.to_text(rdtype)} {rdata.to_text()}")
    return out
