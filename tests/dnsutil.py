"""Helpers to ask the pure answer path (no sockets) and read replies with dnspython."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from clusterset.model.state import ImportedView
from clusterset.zone import build
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import CompiledZone, respond


def compile_view(view: ImportedView, **settings: object) -> CompiledZone:
    return CompiledZone(build.build(view, ZoneSettings(**settings), serial=42))  # type: ignore[arg-type]


def ask(
    zone: CompiledZone | None,
    name: str,
    rdtype: str = "A",
    *,
    edns: int | None = 0,
    payload: int = 1232,
    tcp: bool = False,
    origin: bytes = b"\x0aclusterset\x05local\x00",
) -> dns.message.Message:
    if edns is None:
        q = dns.message.make_query(name, rdtype)
    else:
        q = dns.message.make_query(name, rdtype, use_edns=edns, payload=payload)
    wire = respond(zone, origin, q.to_wire(), tcp=tcp)
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == q.id
    return reply


def rrs(section: list[dns.rrset.RRset]) -> set[str]:
    return {
        f"{r.name.to_text().lower()} {r.ttl} {dns.rdatatype.to_text(r.rdtype)} {rd.to_text()}"
        for r in section
        for rd in r
    }


def rcode(msg: dns.message.Message) -> str:
    return dns.rcode.to_text(msg.rcode())
