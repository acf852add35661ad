"""Corefile edits for `clusterset wire-dns`: add, replace or remove our stub-zone block.

Pure text in, text out. A Corefile is a list of server blocks `KEYS { directives }`;
directives may open their own `{ }` sub-blocks. Our block is recognised by the
MARKER comment line right above it (the Corefile's equivalent of a label), never by
its zone name: a hand-written `clusterset.local` block is reported, not overwritten.

`loopback` rewrites a Corefile so that the real CoreDNS binary can run it on one
loopback port (the canary, and the tests' stand-in for the kubelet's volume sync):
listen ports become PORT and every block binds 127.0.0.1 only, the plugins that open their
own ports (health, ready, prometheus) are dropped, and the kubernetes plugin is given
the kubeconfig to watch the real cluster from outside it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

MARKER = "# clusterset wire-dns: forwards the clusterset zone to clusterset dns"
_OWN_PORTS = frozenset({"health", "ready", "prometheus"})


class CorefileError(ValueError):
    """A Corefile this module cannot edit safely (line number and problem)."""


@dataclass(frozen=True, slots=True)
class Block:
    """One server block: its keys and the [start, end] line indices (end: the closing '}')."""

    keys: tuple[str, ...]
    start: int
    end: int
    marked: bool  # preceded by MARKER

    @property
    def zones(self) -> tuple[str, ...]:
        return tuple(zone_of(k) for k in self.keys)


def zone_of(key: str) -> str:
    """'dns://cluster.local.:53' -> 'cluster.local'; '.:53' -> '.'."""
    k = re.sub(r"^[a-z]+://", "", key)
    k = k.rsplit(":", 1)[0] if re.search(r":\d+$", k) else k
    return k.rstrip(".").lower() or "."


def _code(line: str) -> str:
    """The line without its comment (Corefile comments start with '#')."""
    return line.split("#", 1)[0].strip()


def parse(text: str) -> list[Block]:
    """Server blocks with their line spans; raises CorefileError on unbalanced braces."""
    lines = text.splitlines()
    blocks: list[Block] = []
    depth = 0
    start = -1
    keys: tuple[str, ...] = ()
    for i, line in enumerate(lines):
        code = _code(line)
        if not code:
            continue
        if depth == 0:
            if code.split()[0] == "import":
                continue  # a top-level snippet import (k3s ships one); not a server block
            if not code.endswith("{"):
                raise CorefileError(f"line {i + 1}: expected 'ZONE:PORT {{', got {code!r}")
            keys = tuple(code[:-1].split())
            if not keys:
                raise CorefileError(f"line {i + 1}: server block without a zone")
            start = i
            depth = 1 + code[:-1].count("{") - code[:-1].count("}")
            continue
        depth += code.count("{") - code.count("}")
        if depth < 0:
            raise CorefileError(f"line {i + 1}: unbalanced '}}'")
        if depth == 0:
            prev = _previous_code_or_comment(lines, start)
            blocks.append(Block(keys, start, i, prev == MARKER))
    if depth != 0:
        raise CorefileError(f"line {len(lines)}: missing '}}' (server block {' '.join(keys)})")
    return blocks


def _previous_code_or_comment(lines: list[str], index: int) -> str:
    for j in range(index - 1, -1, -1):
        if lines[j].strip():
            return lines[j].strip()
    return ""


def directives(text: str, block: Block) -> list[tuple[int, int, str]]:
    """(first line, last line, name) of each directive of a block."""
    lines = text.splitlines()
    out: list[tuple[int, int, str]] = []
    i = block.start + 1
    while i < block.end:
        code = _code(lines[i])
        if not code:
            i += 1
            continue
        first = i
        depth = code.count("{") - code.count("}")
        while depth > 0 and i + 1 < block.end:
            i += 1
            depth += _code(lines[i]).count("{") - _code(lines[i]).count("}")
        out.append((first, i, code.split()[0]))
        i += 1
    return out


def forward_target(host: str, port: int) -> str:
    """A CoreDNS `forward` target: IP, IP:PORT, or [IPv6]:PORT (a bare v6:PORT is ambiguous)."""
    if port == 53:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def stanza(zone: str, server: str, *, ttl: int, bind: str = "") -> str:
    """Our block: the zone forwarded to clusterset dns (`bind` copied for NodeLocal DNSCache)."""
    body = ["    errors", f"    cache {ttl}"]
    if bind:
        body.append(f"    {bind}")
    body.append(f"    forward . {server}")
    return "\n".join([MARKER, f"{zone}:53 {{", *body, "}"]) + "\n"


def _without(text: str, block: Block) -> str:
    lines = text.splitlines()
    start = block.start
    if block.marked:
        start = max(j for j in range(block.start) if lines[j].strip() == MARKER)
    kept = lines[:start] + lines[block.end + 1 :]
    while kept and not kept[-1].strip():
        kept.pop()
    return "\n".join(kept) + "\n"


def has_kubernetes(text: str) -> bool:
    return any(name == "kubernetes" for b in parse(text) for _, _, name in directives(text, b))


def wire(
    text: str,
    *,
    zone: str,
    server: str,
    ttl: int = 5,
    nodelocal: bool = False,
    cluster_domain: str = "cluster.local",
) -> str:
    """The Corefile with our block for `zone` (replacing our previous one). Idempotent."""
    blocks = parse(text)
    for b in blocks:
        if zone in b.zones and not b.marked:
            raise CorefileError(
                f"line {b.start + 1}: a server block for {zone} that wire-dns did not write "
                "(a hand edit?); remove it first"
            )
    bind = ""
    if nodelocal:
        bind = _bind_line(text, blocks, cluster_domain)
    for b in reversed(blocks):
        if b.marked:
            text = _without(text, b)
    base = text.rstrip("\n") + "\n"
    return base + stanza(zone, server, ttl=ttl, bind=bind)


def _bind_line(text: str, blocks: list[Block], cluster_domain: str) -> str:
    lines = text.splitlines()
    for want in (cluster_domain, "."):
        for b in blocks:
            if want in b.zones:
                for first, _, name in directives(text, b):
                    if name == "bind":
                        return _code(lines[first])
    raise CorefileError(
        f"NodeLocal DNSCache Corefile without a 'bind' line in its {cluster_domain} block"
    )


def unwire(text: str) -> str:
    """The Corefile without our block(s)."""
    for b in reversed(parse(text)):
        if b.marked:
            text = _without(text, b)
    return text


def loopback(
    text: str,
    *,
    port: int,
    kubeconfig: str = "",
    context: str = "",
    substitute: Mapping[str, str] | None = None,
    forward: Mapping[str, str] | None = None,
    reload: str = "",
) -> str:
    """`text` made runnable on 127.0.0.1:`port` (see the module docstring).

    `substitute`: literal replacements (NodeLocal placeholders); `forward`: zone -> target
    replacing the `forward` of that zone's block; `reload`: arguments of `reload`.
    """
    for old, new in (substitute or {}).items():
        text = text.replace(old, new)
    lines = text.splitlines()
    drop: set[int] = set()
    replace: dict[int, str] = {}
    for b in parse(text):
        found = directives(text, b)
        replace[b.start] = " ".join(_on_port(k, port) for k in b.keys) + " {"
        if not any(name == "bind" for _, _, name in found):
            replace[b.start] += "\n    bind 127.0.0.1"  # else CoreDNS listens on every address
        for first, last, name in found:
            indent = lines[first][: len(lines[first]) - len(lines[first].lstrip())]
            if name in _OWN_PORTS:
                drop.update(range(first, last + 1))
            elif name == "bind":
                replace[first] = f"{indent}bind 127.0.0.1"
            elif name == "reload" and reload:
                drop.update(range(first + 1, last + 1))
                replace[first] = f"{indent}reload {reload}"
            elif name == "forward" and forward and b.zones[0] in forward:
                args = _code(lines[first]).split()
                opts = " {" if _code(lines[first]).endswith("{") else ""
                replace[first] = f"{indent}forward {args[1]} {forward[b.zones[0]]}{opts}"
            elif name == "kubernetes" and kubeconfig:
                code = _code(lines[first])
                extra = f"{indent}    kubeconfig {kubeconfig} {context}".rstrip()
                if code.endswith("{"):
                    replace[first] = lines[first] + "\n" + extra
                else:
                    replace[first] = f"{indent}{code} {{\n{extra}\n{indent}}}"
    out = [replace.get(i, line) for i, line in enumerate(lines) if i not in drop]
    return "\n".join(out) + "\n"


def _on_port(key: str, port: int) -> str:
    zone = zone_of(key)
    return f"{zone if zone == '.' else zone + '.'}:{port}"
