"""Kubernetes label selectors as kubectl's `-l` takes them: `a=b`, `a==b`, `a!=b`, `a`, `!a`,
`a in (x,y)`, `a notin (x,y)`, comma-separated (all must hold)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_SET = re.compile(r"^([\w./-]+)\s+(in|notin)\s+\(([^()]*)\)$")
_CMP = re.compile(r"^([\w./-]+)\s*(==|!=|=)\s*([\w.-]*)$")
_KEY = re.compile(r"^(!?)\s*([\w./-]+)$")


class SelectorError(ValueError):
    """A selector this parser does not understand (the message names the term)."""


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    op: str  # in | notin | exists | !exists
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!exists":
            return self.key not in labels
        if self.op == "in":
            return labels.get(self.key) in self.values
        return labels.get(self.key) not in self.values  # notin: a missing key matches


def parse(text: str) -> tuple[Requirement, ...]:
    """The requirements of `text`; SelectorError for a term it cannot read."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += {"(": 1, ")": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    out = []
    for raw in terms:
        term = raw.strip()
        if m := _SET.match(term):
            values = frozenset(v.strip() for v in m.group(3).split(",") if v.strip())
            out.append(Requirement(m.group(1), m.group(2), values))
        elif m := _CMP.match(term):
            op = "notin" if m.group(2) == "!=" else "in"
            out.append(Requirement(m.group(1), op, frozenset({m.group(3)})))
        elif m := _KEY.match(term):
            out.append(Requirement(m.group(2), "!exists" if m.group(1) else "exists"))
        else:
            raise SelectorError(f"cannot read {term!r}")
    return tuple(out)


def matches(requirements: tuple[Requirement, ...], labels: Mapping[str, str]) -> bool:
    return all(r.matches(labels) for r in requirements)
