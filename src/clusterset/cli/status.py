"""`clusterset status`: every ServiceExport with its conditions and every ServiceImport, from
a manifest folder or read from the clusters (never written to), once or on every change."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

import typer

from clusterset.cli import output
from clusterset.cli.common import (
    DEFAULT_CIDR,
    DEFAULT_CIDR_V6,
    AllContextsOpt,
    CidrOpt,
    CidrV6Opt,
    ContextOpt,
    KarmadaOpt,
    KubeconfigOpt,
    ManifestsOpt,
    StateFileOpt,
    UsageProblem,
    app,
    default_kubeconfig,
    exit_if_interrupted,
    manifest_feed,
    member_apis,
    until_signal,
)
from clusterset.controller.manifest import ClusterSetFeed, Observed
from clusterset.controller.observer import Observer, observing
from clusterset.kube import liveness as kube_liveness
from clusterset.kube.api import API_ERRORS, KubeApi
from clusterset.manifests.watch import changes
from clusterset.model import jsonpath
from clusterset.model.selector import SelectorError
from clusterset.model.selector import parse as parse_selector
from clusterset.reconcile import desired as rd

log = logging.getLogger(__name__)


@app.command()
def status(
    manifests: ManifestsOpt = None,
    output_format: Annotated[
        str,
        typer.Option(
            "-o", "--output", help="table|wide|matrix|html|name|json|yaml|jsonpath=TEMPLATE"
        ),
    ] = "table",
    namespace: Annotated[
        str | None,
        typer.Option("-n", "--namespace", help="Only this namespace (default: every one)."),
    ] = None,
    all_namespaces: Annotated[
        bool, typer.Option("-A", "--all-namespaces", help="Every namespace (the default).")
    ] = False,
    watch: Annotated[
        bool,
        typer.Option("-w", "--watch", help="Print again on every change, until Ctrl-C."),
    ] = False,
    selector: Annotated[
        str | None,
        typer.Option(
            "-l",
            "--selector",
            help="Only services whose exported labels (spec.exportedLabels) match (kubectl -l).",
        ),
    ] = None,
    state_file: StateFileOpt = None,
    clusterset_cidr: CidrOpt = DEFAULT_CIDR,
    clusterset_cidr_v6: CidrV6Opt = DEFAULT_CIDR_V6,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
) -> None:
    """Every ServiceExport with its conditions and every ServiceImport, kubectl-style;
    on real clusters also the per-source-cluster liveness Leases (fresh/stale/expired).
    Exit 1 when there are findings (an unreadable manifest, an invalid export, a
    conflict), which are logged on stderr: usable as a lint in CI.

    \b
    Examples:
      clusterset status --manifests examples/clusters -o wide
      clusterset status --kubeconfig members.yaml --all-contexts -o json
    """
    formats = ("table", "wide", "matrix", "html", "name", "json", "yaml", "jsonpath=TEMPLATE")
    if output_format.startswith("jsonpath="):
        try:  # the template's faults before any cluster is asked
            jsonpath.render(output_format.removeprefix("jsonpath="), {})
        except jsonpath.JsonPathError as exc:
            raise UsageProblem(f"-o {output_format!r}: {exc}") from exc
    elif output_format not in formats:
        raise UsageProblem(f"-o {output_format!r}: expected {', '.join(formats)}")
    if namespace is not None and all_namespaces:
        raise UsageProblem("-n and -A are exclusive")
    try:
        requirements = parse_selector(selector) if selector else ()
    except SelectorError as exc:
        raise UsageProblem(f"-l {selector!r}: {exc}") from exc
    kubeconfig = kubeconfig or default_kubeconfig(manifests, karmada_kubeconfig)

    def show(observed: Observed, leases: list[dict[str, object]] | None = None) -> int:
        return output.status(
            observed, output_format, leases=leases, namespace=namespace, selector=requirements
        )

    if kubeconfig is not None or karmada_kubeconfig is not None:
        apis = member_apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
        found = asyncio.run(_observe_clusters(apis, show, watch=watch))
    else:
        feed = manifest_feed(manifests, state_file, clusterset_cidr, clusterset_cidr_v6)
        found = asyncio.run(_watch_folder(feed, show)) if watch else show(feed.observe(quiet=True))
    if found:
        raise SystemExit(1)


Show = Callable[[Observed, "list[dict[str, object]] | None"], int]


def _changed(show: Show, observed: Observed, leases: list[dict[str, object]] | None,
             last: list[str]) -> None:  # fmt: skip
    """Print what `show` prints when it differs from the last print (watch mode)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        show(observed, leases)
    if buf.getvalue() != (last[0] if last else None):
        if last:
            print()
        print(buf.getvalue(), end="", flush=True)
        last[:] = [buf.getvalue()]


async def _until_stopped(looks: Callable[[asyncio.Event], Coroutine[Any, Any, None]]) -> int:
    """--watch: `looks` until SIGINT (exit 130) or SIGTERM (0); `stop` is set first, so that
    the folder watcher's thread ends at once rather than at its next timeout."""
    stop = asyncio.Event()
    task = asyncio.create_task(looks(stop), name="watch")
    sig = await until_signal(task)
    stop.set()
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    if sig is None:
        task.result()  # it ended by itself: a failure, raised
    exit_if_interrupted(sig)
    return 0


async def _watch_folder(feed: ClusterSetFeed, show: Show) -> int:
    """Manifest mode --watch: a look at every change of the folders the watcher reports."""

    async def looks(stop: asyncio.Event) -> None:
        last: list[str] = []
        async for changed in changes([feed.root], stop=stop):
            _changed(show, feed.observe(quiet=True, changed=changed), None, last)

    return await _until_stopped(looks)


async def _observe_clusters(apis: dict[str, KubeApi], show: Show, *, watch: bool = False) -> int:
    """One read of every member (no writes): what the hub would compute, and the leases,
    shown; with `watch`, again every 2 s while the informers keep the caches current."""
    async with observing(apis) as observer:
        if not watch:
            return show(*await _snapshot(observer))

        async def looks(stop: asyncio.Event) -> None:
            last: list[str] = []
            while not stop.is_set():  # without the Leases' age: every look would be a change
                _changed(show, *await _snapshot(observer, ages=False), last)
                await asyncio.sleep(2)

        return await _until_stopped(looks)


async def _snapshot(
    observer: Observer, *, ages: bool = True
) -> tuple[Observed, list[dict[str, object]]]:
    """What the hub would compute now, and every member's liveness Leases: their state, and
    with `ages` their age and renewTime (which change at every renewal; watch leaves them
    out). A member whose Leases cannot be listed is said on stderr, not fatal."""
    state = observer.observe()
    aggregates = rd.aggregate_all(state)
    ips = observer.clusterset_ips(state, aggregates)
    desired = rd.reconcile(state, ips=ips, aggregates=aggregates)
    leases: list[dict[str, object]] = []
    now = time.time()
    for name, m in observer.members.items():
        try:
            found = await kube_liveness.listed(m.api)
        except API_ERRORS as exc:
            log.warning("cluster %s: cannot list the liveness Leases: %s", name, exc)
            continue
        leases.extend(
            {"consumer": name, "consumerCluster": observer.ids.get(name, name),
             "source": lease.source or "?",
             "renewed": lease.renew_time if ages else None,
             "age": round(lease.age(now), 1) if ages else None, "state": lease.state(now)}
            for lease in found
        )  # fmt: skip
    return Observed(state, desired, []), leases
