"""The documents PyYAML's SafeLoader would read from a text, ~3x faster, or None.

A cold fleet read spent most of its CPU in PyYAML (bench/README.md "Issue 23 item 2").
ryaml wraps serde_yaml, whose scanner and parser are a port of libyaml, the C library under
PyYAML's CSafeLoader. What differs is the rest: serde_yaml resolves plain scalars by YAML
1.2's core schema, PyYAML by YAML 1.1 (`yes`, `on`, `010`, `1_000`, `1:20` and dates are not
strings there); it reads tags its own way, expands aliases (with its own limit, not the
reader's allowance), has no merge keys and accepts a duplicate anchor; an empty stream is
one document, and a duplicate key is an error. So the fast result is used only when it
provably equals PyYAML's:

- the text has no byte order mark (libyaml skips one at any line's start, where a tag could
  hide), no tag (`!`), anchor (`&`) or alias (`*`) starting a token, no merge key (`<<`),
  directive (`%` at a line's start), `0o` integer (an int in 1.2, a string in 1.1) or YAML
  1.1 line break (NEL, LS, PS);
- no document is empty and nothing is a float (1.2 reads `1e5` as one, 1.1 does not);
- no node is nested deeper than the reader's MAX_DEPTH (serde_yaml allows 128);
- no string that PyYAML's own resolver table would read as another type, if written plain,
  while serde_yaml reads it as a string, appears in the text plain (a plain scalar is
  written as is, so an occurrence not right after a quote is one; a string holding
  whitespace may have been folded: never trusted). Looking for them costs a scan of the
  text per such string: past SCAN_BUDGET characters in all, the text goes to PyYAML.

Anything else, including any error, returns None and the caller reads the text with PyYAML:
its results and error lines are unchanged. Without aliases a document has fewer nodes than
characters, so the alias-bomb allowance cannot be reached on this path.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import ryaml
from yaml.resolver import Resolver

# The PyYAML tables CSafeLoader resolves plain scalars with (first character -> rules).
_IMPLICIT: dict[str | None, list[tuple[str, re.Pattern[str]]]] = Resolver.yaml_implicit_resolvers
_STR = "tag:yaml.org,2002:str"
_FIRST = frozenset(c for c in _IMPLICIT if c)  # "" (the empty string) is null in both
# A tag, anchor or alias starts a token (after a space, a flow indicator or a line's start);
# inside a word or right after a quote it is text, as in RBAC's `verbs: ["*"]`.
_RARE = ("%", "!", "&", "*", "<<", "0o", "\x85", "\u2028", "\u2029", "\ufeff")
_UNSUPPORTED = re.compile(r"^%|(?:^|[\s\[\]{},:?])[!&*]|<<|0o|[\x85\u2028\u2029\ufeff]", re.M)
# Characters scanned in all looking for plain occurrences of suspect strings: a few
# milliseconds. A text needing more (a long `kubectl get -o yaml` list, every quoted
# timestamp a suspect) is read by PyYAML rather than in time quadratic in its size.
SCAN_BUDGET = 4_000_000
# Suspect strings longer than this are checked without being remembered (no string a
# resolver reads as a bool, null, date or number of sane size is longer).
_CACHED_LENGTH = 64


def documents(text: str, max_depth: int) -> list[Any] | None:
    """PyYAML's `safe_load_all(text)`, when it provably equals serde_yaml's reading."""
    if any(c in text for c in _RARE) and _UNSUPPORTED.search(text):
        return None
    try:
        docs = ryaml.loads_all(text)
    except Exception:  # any refusal: PyYAML reads it and words the error
        return None
    if not isinstance(docs, list) or any(d is None for d in docs):
        return None
    strings = _strings(docs, max_depth)
    if strings is None:
        return None
    suspects = {v for v in strings if v[:1] in _FIRST and _suspect(v)}
    if len(suspects) * len(text) > SCAN_BUDGET:
        return None
    if any(_plain(text, value) for value in suspects):
        return None
    return docs


def _strings(docs: list[Any], max_depth: int) -> list[str] | None:
    """Every string key and value; None at a float, a key of another type or a node deeper
    than max_depth (a document's root is at depth 1, as the reader counts). A hot loop
    (every scalar of a cold read): kept flat."""
    strings: list[str] = []
    stack: list[tuple[Any, int]] = [(docs, 0)]  # the documents, then what they nest
    while stack:
        cur, depth = stack.pop()
        if cur and depth >= max_depth:
            return None  # what it holds is deeper than max_depth
        values = cur
        if type(cur) is dict:
            for key in cur:
                if type(key) is str:
                    strings.append(key)
                elif type(key) is not int and type(key) is not bool and key is not None:
                    return None
            values = cur.values()
        for value in values:
            kind = type(value)
            if kind is str:
                strings.append(value)
            elif kind is dict or kind is list:
                stack.append((value, depth + 1))
            elif kind is float:
                return None
    return strings


def _suspect(value: str) -> bool:
    """Does PyYAML read `value`, written plain, as another type while serde_yaml reads it
    as a string? (A string serde_yaml would not read plain, as `port: "80"`, came quoted.)"""
    return _suspect_cached(value) if len(value) <= _CACHED_LENGTH else _suspect_of(value)


def _suspect_of(value: str) -> bool:
    for tag, rule in _IMPLICIT[value[:1]]:
        if rule.match(value):
            return tag != _STR and _plain_is_str(value)
    return False


_suspect_cached = functools.lru_cache(maxsize=1 << 14)(_suspect_of)


def _plain_is_str(value: str) -> bool:
    try:
        return isinstance(ryaml.loads(value), str)
    except Exception:
        return True  # unknown: treat as a string, the stricter case


def _plain(text: str, value: str) -> bool:
    """Is `value` in `text` other than right after a quote, or may it have been written
    otherwise (not found as is, or folded from several lines: whitespace)?"""
    if not value.isprintable() or " " in value:
        return True
    at = text.find(value)
    if at < 0:
        return True  # written with escapes: do not guess
    while at >= 0:
        if at == 0 or text[at - 1] not in "\"'":
            return True
        at = text.find(value, at + 1)
    return False
