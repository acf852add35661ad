"""`clusterset wire-dns`: the steps of kube.wiredns in order, each reported on one line.

Exit 0: wired (or already wired, or undone, or a dry run); 1: stopped or rolled back
(the message says what is in the cluster now); 2: bad input.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from clusterset.kube import wiredns as w
from clusterset.kube.api import API_ERRORS, KubeApi


@dataclass(frozen=True, slots=True)
class Options:
    kubeconfig: str
    context: str
    server: str  # IP[:PORT] of clusterset dns as the cluster's DNS reaches it
    zone: str = "clusterset.local"
    ttl: int = 5
    dry_run: bool = False
    undo: bool = False
    canary_server: str = ""  # where the canary reaches clusterset dns ("" = server)
    probe: tuple[str, int] | None = None  # the cluster DNS to watch (None: kube-dns ClusterIP)
    grace: float = 120.0
    interval: float = 1.0
    coredns: str | None = None


def parse_address(value: str) -> tuple[str, int]:
    """IP, IP:PORT, IPv6 or [IPv6]:PORT; ValueError otherwise."""
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = rest.removeprefix(":") or "53"
    elif value.count(":") == 1:
        host, port = value.split(":")
    else:
        host, port = value, "53"
    ipaddress.ip_address(host)
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"bad port {port!r}")
    return host, int(port)


def forward_target(host: str, port: int) -> str:
    """A CoreDNS `forward` target: IP, IP:PORT, or [IPv6]:PORT (a bare v6:PORT is ambiguous)."""
    if port == 53:
        return host
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def say(line: str) -> None:
    print(f"wire-dns: {line}", flush=True)


async def run(api: KubeApi, opts: Options) -> int:
    try:
        return await _run(api, opts)
    except w.WireError as exc:
        say(str(exc))
        return 1
    except API_ERRORS as exc:
        say(f"{api.name}: the API call failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        await api.close()


async def _run(api: KubeApi, opts: Options) -> int:
    targets = await w.discover(api)
    say(
        "found "
        + ", ".join(
            f"ConfigMap {w.NAMESPACE}/{t.name}"
            + (" (NodeLocal DNSCache)" if t.nodelocal else " (CoreDNS)")
            for t in targets
        )
    )
    if opts.undo:
        return await _undo(api, targets, opts)
    new = w.plan(targets, zone=opts.zone, server=opts.server, ttl=opts.ttl)
    if not new:
        say(f"already wired: {opts.zone} goes to {opts.server}; nothing changed")
        return 0
    if opts.dry_run:
        print(w.diff(targets, new), end="")
        say("dry run: nothing changed")
        return 0
    binary = w.find_coredns(opts.coredns)
    say(f"canary: {binary} on loopback with the new Corefile(s)")
    problems = await w.canary(
        binary=binary,
        corefiles=new,
        nodelocal={t.name for t in targets if t.nodelocal},
        kubeconfig=opts.kubeconfig,
        context=opts.context,
        zone=opts.zone,
        server=opts.canary_server or opts.server,
    )
    if problems:
        for p in problems:
            say(p)
        say("canary failed: nothing changed")
        return 1
    say("canary: answers cluster.local and " + opts.zone)
    probe = opts.probe or await w.probe_address(api)
    changed = [t for t in targets if t.name in new]
    for t in changed:
        await w.apply(api, t, new[t.name], keep_previous=True)
        say(
            f"applied ConfigMap {w.NAMESPACE}/{t.name} (field manager {w.FIELD_MANAGER}; "
            f"previous Corefile in annotation {w.PREVIOUS_ANNOTATION})"
        )
    say(f"grace: watching {probe[0]}:{probe[1]} for {opts.grace:g}s")
    failure = await w.grace(probe, zone=opts.zone, seconds=opts.grace, interval=opts.interval)
    if not failure:
        say(f"wired: {opts.zone} answers at {probe[0]}:{probe[1]}")
        return 0
    say(f"grace failed: {failure}")
    for t in changed:
        try:
            await w.apply(api, t, t.corefile, keep_previous=t.previous is not None)
        except API_ERRORS as exc:
            say(
                f"ROLLBACK FAILED for ConfigMap {w.NAMESPACE}/{t.name} ({exc}): "
                "run wire-dns --undo, or restore it from the annotation by hand"
            )
            continue
        say(f"rolled back ConfigMap {w.NAMESPACE}/{t.name} to its previous Corefile")
    return 1


async def _undo(api: KubeApi, targets: list[w.Target], opts: Options) -> int:
    saved = [t for t in targets if t.previous is not None]
    if not saved:
        say(f"nothing to undo: no annotation {w.PREVIOUS_ANNOTATION}")
        return 0
    for t in saved:
        assert t.previous is not None
        if opts.dry_run:
            print(w.diff([t], {t.name: t.previous}), end="")
            continue
        await w.apply(api, t, t.previous, keep_previous=False)
        say(f"restored ConfigMap {w.NAMESPACE}/{t.name} from {w.PREVIOUS_ANNOTATION}")
    if opts.dry_run:
        say("dry run: nothing changed")
    return 0
