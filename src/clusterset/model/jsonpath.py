"""kubectl's `-o jsonpath=TEMPLATE`, the part scripts use: `{.a.b}`, `{.list[0]}`,
`{.list[*].name}`, `{.list[-1]}`, several `{…}` with text between, and `{"\\n"}`-style
literals. Each expression prints its values separated by spaces, as kubectl does;
`{range}`/`{end}`, filters and recursive descent are refused with one line."""

from __future__ import annotations

import json
import re
from typing import Any

_STEP = re.compile(r"\.([\w-]+)|\[(\*|-?\d+)\]")


class JsonPathError(ValueError):
    """A template this evaluator does not read (the message names the part)."""


def _values(data: Any, path: str) -> list[Any]:
    if not path.startswith(".") and not path.startswith("["):
        raise JsonPathError(f"{path!r}: expected a path starting with '.'")
    if path == ".":
        return [data]
    found, at = [data], 0
    for m in _STEP.finditer(path):
        if m.start() != at:
            break
        at = m.end()
        key, index = m.group(1), m.group(2)
        nxt: list[Any] = []
        for v in found:
            if key is not None and isinstance(v, dict) and key in v:
                nxt.append(v[key])
            elif index == "*" and isinstance(v, list):
                nxt.extend(v)
            elif index is not None and index != "*" and isinstance(v, list):
                i = int(index)
                if -len(v) <= i < len(v):
                    nxt.append(v[i])
        found = nxt
    if at != len(path):
        raise JsonPathError(f"{path[at:]!r}: not supported (fields, [n] and [*] are)")
    return found


def _text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


def render(template: str, data: Any) -> str:
    """`template` evaluated over `data`, as kubectl prints it."""
    out, pos = [], 0
    for m in re.finditer(r"\{([^{}]*)\}", template):
        out.append(template[pos : m.start()])
        expr = m.group(1).strip()
        if expr.startswith('"') and expr.endswith('"') and len(expr) >= 2:
            try:
                literal = json.loads(expr)  # a literal such as {"\n"}
            except ValueError as exc:
                raise JsonPathError(f"{{{expr}}}: not a string literal ({exc})") from exc
            if not isinstance(literal, str):
                raise JsonPathError(f"{{{expr}}}: not a string literal")
            out.append(literal)
        elif expr in ("end",) or expr.startswith(("range", "..", "@")) or "?(" in expr:
            raise JsonPathError(f"{{{expr}}}: not supported (fields, [n] and [*] are)")
        else:
            out.append(" ".join(_text(v) for v in _values(data, expr)))
        pos = m.end()
    out.append(template[pos:])
    return "".join(out)
