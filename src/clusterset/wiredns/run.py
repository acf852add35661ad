"""The wire-dns driver: the steps in order, each reported on one line, or `--undo`.

Returns the exit code: 0 wired (or already wired, or undone, or a dry run); 1 stopped or
rolled back (the message says what is in the cluster now).
"""

from __future__ import annotations

from dataclasses import dataclass

from clusterset.kube.api import API_ERRORS, KubeApi
from clusterset.kube.coredns import (
    FIELD_MANAGER,
    NAMESPACE,
    PREVIOUS_ANNOTATION,
    Target,
    WireError,
    apply,
    probe_address,
)
from clusterset.wiredns.canary import canary, find_coredns
from clusterset.wiredns.grace import grace
from clusterset.wiredns.plan import diff, discover, plan


@dataclass(frozen=True, slots=True)
class Options:
    """The flags of `clusterset wire-dns`, checked by the CLI."""

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


def say(line: str) -> None:
    """One line per step, flushed: each shows as it happens, before a long canary or grace."""
    print(f"wire-dns: {line}", flush=True)


async def run(api: KubeApi, opts: Options) -> int:
    try:
        return await _run(api, opts)
    except WireError as exc:
        say(str(exc))
        return 1
    except API_ERRORS as exc:
        say(f"{api.name}: the API call failed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        await api.close()


async def _run(api: KubeApi, opts: Options) -> int:
    targets = await discover(api)
    say(
        "found "
        + ", ".join(
            f"ConfigMap {NAMESPACE}/{t.name}"
            + (" (NodeLocal DNSCache)" if t.nodelocal else " (CoreDNS)")
            for t in targets
        )
    )
    if opts.undo:
        return await _undo(api, targets, opts)
    new = plan(targets, zone=opts.zone, server=opts.server, ttl=opts.ttl)
    if not new:
        say(f"already wired: {opts.zone} goes to {opts.server}; nothing changed")
        return 0
    if opts.dry_run:
        print(diff(targets, new), end="")
        say("dry run: nothing changed")
        return 0
    binary = find_coredns(opts.coredns)
    say(f"canary: {binary} on loopback with the new Corefile(s)")
    problems = await canary(
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
    probe = opts.probe or await probe_address(api)
    changed = [t for t in targets if t.name in new]
    for t in changed:
        await apply(api, t, new[t.name], keep_previous=True)
        say(
            f"applied ConfigMap {NAMESPACE}/{t.name} (field manager {FIELD_MANAGER}; "
            f"previous Corefile in annotation {PREVIOUS_ANNOTATION})"
        )
    say(f"grace: watching {probe[0]}:{probe[1]} for {opts.grace:g}s")
    failure = await grace(probe, zone=opts.zone, seconds=opts.grace, interval=opts.interval)
    if not failure:
        say(f"wired: {opts.zone} answers at {probe[0]}:{probe[1]}")
        return 0
    say(f"grace failed: {failure}")
    for t in changed:
        try:
            await apply(api, t, t.corefile, keep_previous=t.previous is not None)
        except API_ERRORS as exc:
            say(
                f"ROLLBACK FAILED for ConfigMap {NAMESPACE}/{t.name} ({exc}): "
                "run wire-dns --undo, or restore it from the annotation by hand"
            )
            continue
        say(f"rolled back ConfigMap {NAMESPACE}/{t.name} to its previous Corefile")
    return 1


async def _undo(api: KubeApi, targets: list[Target], opts: Options) -> int:
    saved = [t for t in targets if t.previous is not None]
    if not saved:
        say(f"nothing to undo: no annotation {PREVIOUS_ANNOTATION}")
        return 0
    for t in saved:
        assert t.previous is not None
        if opts.dry_run:
            print(diff([t], {t.name: t.previous}), end="")
            continue
        await apply(api, t, t.previous, keep_previous=False)
        say(f"restored ConfigMap {NAMESPACE}/{t.name} from {PREVIOUS_ANNOTATION}")
    if opts.dry_run:
        say("dry run: nothing changed")
    return 0
