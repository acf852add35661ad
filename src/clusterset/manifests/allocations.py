"""The ClusterSetIP allocation file of manifest mode: read what can be read, never lose it.

A file that is not valid JSON (truncated by a full disk, edited by hand) is not
replaced by `{}`, which would move every ClusterSetIP on restart: its readable
entries are recovered, the file is kept aside as `<name>.corrupt-<unix-time>`,
and one line says so. Each writer writes its own temporary file, fsyncs it and
renames it over the state file, so two processes never interleave one `.tmp`.
An address outside the configured ClusterSetIP ranges is dropped with one line.
Which service gets which address: reconcile.clustersetips.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from clusterset.model.ids import ClusterId, InvalidName, ServiceKey, cluster_id
from clusterset.model.objects import IPFamily, family_of
from clusterset.reconcile.allocate import Network
from clusterset.reconcile.clustersetips import Allocations

# A cluster heading `"member1": {` or one entry `"ns/name": ["10.250.0.7", ...]`, in file order.
_TOKEN = re.compile(r'"([^"\\]*)"\s*:\s*(?:(\{)|\[([^\]\[{}]*)\])', re.DOTALL)


def load(
    path: Path, *, keep_aside: bool = True, cidrs: Mapping[IPFamily, Network] | None = None
) -> tuple[Allocations, list[str]]:
    """The allocations in `path` and one line per problem; bad parts are dropped, not fatal.

    `keep_aside`: rename a file with problems to `.corrupt-<ts>` (writers do; read-only
    commands must not touch it). `cidrs`: the ranges now configured; addresses outside
    them (the range was changed) are dropped with one line, without keeping the file aside.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, []
    except (OSError, UnicodeDecodeError) as exc:
        return {}, [f"state file {path}: unreadable ({exc}); starting without allocations"]
    problems: list[str] = []
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise TypeError(f"expected an object, got {type(raw).__name__}")
        entries = [
            (c, k, v)
            for c, by_key in raw.items()
            for k, v in (by_key.items() if isinstance(by_key, dict) else [(None, by_key)])
        ]
    except (ValueError, TypeError) as exc:
        entries = _salvage(text)
        problems.append(f"state file {path}: corrupt ({_first_line(exc)})")
    allocations: Allocations = {}
    for c, k, v in entries:
        problem = _add(allocations, c, k, v)
        if problem:
            problems.append(f"state file {path}: {problem}")
    problems.extend(f"state file {path}: {p}" for p in _dedupe(allocations))
    if problems:
        aside = path.with_name(f"{path.name}.corrupt-{int(time.time())}")
        if keep_aside:
            try:
                path.replace(aside)
                problems.append(f"state file {path}: kept aside as {aside.name}")
            except OSError as exc:
                problems.append(f"state file {path}: cannot keep aside ({exc})")
        count = sum(len(v) for v in allocations.values())
        problems.append(f"state file {path}: {count} allocation(s) kept")
    if cidrs is not None:
        problems.extend(f"state file {path}: {p}" for p in _outside(allocations, cidrs))
    return allocations, problems


# Addresses named in the line about addresses outside the ranges; the rest are counted.
MAX_NAMED = 5


def _outside(allocations: Allocations, cidrs: Mapping[IPFamily, Network]) -> list[str]:
    """Drop addresses outside `cidrs` (the allocator would silently replace them): one line."""
    dropped: list[str] = []
    for cid, by_key in sorted(allocations.items()):
        for key, ips in sorted(by_key.items()):
            bad = [ip for ip in ips if not _within(ip, cidrs)]
            if not bad:
                continue
            dropped.extend(f"{cid} {key} {ip}" for ip in bad)
            kept = tuple(ip for ip in ips if ip not in bad)
            if kept:
                by_key[key] = kept
            else:
                del by_key[key]
    if not dropped:
        return []
    ranges = ", ".join(str(net) for _fam, net in sorted(cidrs.items()))
    more = f" and {len(dropped) - MAX_NAMED} more" if len(dropped) > MAX_NAMED else ""
    return [
        f"{len(dropped)} ClusterSetIP(s) outside the configured range(s) ({ranges or 'none'}) "
        f"dropped; those services get new addresses: {'; '.join(dropped[:MAX_NAMED])}{more}"
    ]


def _within(ip: str, cidrs: Mapping[IPFamily, Network]) -> bool:
    net = cidrs.get(family_of(ip))
    return net is not None and ipaddress.ip_address(ip) in net


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _salvage(text: str) -> list[tuple[Any, Any, Any]]:
    """Entries readable from a damaged file (the layout `save` writes), in file order."""
    out: list[tuple[Any, Any, Any]] = []
    cluster: str | None = None
    for m in _TOKEN.finditer(text):
        name, brace, items = m.group(1), m.group(2), m.group(3)
        if brace:
            cluster = name
        elif cluster is not None:
            ips = re.findall(r'"([^"\\]*)"', items)
            if ips or not items.strip():
                out.append((cluster, name, ips))
    return out


def _add(allocations: Allocations, c: Any, k: Any, v: Any) -> str | None:
    """Validate one entry into `allocations`; the problem, if any, as one line."""
    try:
        cid = cluster_id(str(c))
    except InvalidName as exc:
        return f"{c!r}: {exc}; entry dropped"
    ns, sep, name = str(k).partition("/")
    if not isinstance(k, str) or not sep or not ns or not name:
        return f"{cid}: {k!r} is not <namespace>/<name>; entry dropped"
    if not isinstance(v, list) or not all(isinstance(ip, str) for ip in v):
        return f"{cid} {k}: expected a list of IP addresses; entry dropped"
    try:
        ips = tuple(str(ipaddress.ip_address(ip)) for ip in v)
    except ValueError:
        return f"{cid} {k}: {v!r} holds something that is not an IP address; entry dropped"
    allocations.setdefault(cid, {})[ServiceKey(ns, name)] = ips
    return None


def _dedupe(allocations: Allocations) -> list[str]:
    """One IP given to two services of a cluster: the first by namespace/name keeps it."""
    problems = []
    for cid, by_key in sorted(allocations.items()):
        owner: dict[str, ServiceKey] = {}
        for key in sorted(by_key):
            for ip in by_key[key]:
                if ip in owner:
                    problems.append(
                        f"{cid}: {ip} is allocated to both {owner[ip]} and {key}; "
                        f"{owner[ip]} keeps it, {key} gets a new address"
                    )
                    by_key[key] = ()
                    break
                owner[ip] = key
        for key in [k for k, ips in by_key.items() if not ips]:
            del by_key[key]
    return problems


def save(path: Path, allocations: Mapping[ClusterId, Mapping[ServiceKey, tuple[str, ...]]]) -> None:
    """Write atomically through this writer's own temporary file; raises OSError."""
    raw = {
        c: {str(k): list(v) for k, v in sorted(by_key.items())}
        for c, by_key in sorted(allocations.items())
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o644)  # as a plain write would leave it (mkstemp makes it 0600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(raw, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
