"""--log-queries: one line per query, in the shape of CoreDNS's `log` plugin
(`CLIENT:PORT - ID "TYPE IN NAME PROTO SIZE" RCODE SIZE`), on both transports. It costs far
more than answering: the native UDP loop is off while it is on."""

from __future__ import annotations

import logging

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype

log = logging.getLogger("clusterset.queries")


def log_query(peer: object, proto: str, query: bytes, reply: bytes) -> None:
    """Log one answered query; `peer` is the socket address (host, port, ...)."""
    client = _client(peer)
    try:
        q = dns.message.from_wire(query, question_only=True)
        question = q.question[0]
        what = f"{dns.rdatatype.to_text(question.rdtype)} IN {question.name}"
        qid = q.id
    except (dns.exception.DNSException, IndexError, ValueError):
        what, qid = "(malformed)", int.from_bytes(query[:2] or b"\0\0", "big")
    rcode = dns.rcode.to_text(dns.rcode.Rcode(reply[3] & 0x0F)) if len(reply) > 3 else "-"
    log.info('%s - %d "%s %s %d" %s %d', client, qid, what, proto, len(query), rcode, len(reply))


def _client(peer: object) -> str:
    """'10.0.0.1:5353' or '[fd00::1]:5353', whatever the socket layer handed over."""
    if isinstance(peer, tuple) and len(peer) >= 2:
        host, port = str(peer[0]), peer[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(peer)
