"""`clusterset controller`: the hub, with leader election, metrics and the admission webhook."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Annotated

import typer
from prometheus_client import CollectorRegistry

from clusterset.cli.common import (
    AllContextsOpt,
    ContextOpt,
    KarmadaOpt,
    KubeconfigOpt,
    MetricsOpt,
    SourceLeaseDurationOpt,
    UsageProblem,
    app,
    default_kubeconfig,
    exit_if_interrupted,
    log,
    member_apis,
    source_lease_grace,
    until_signal,
    why,
)
from clusterset.controller.hub import Hub
from clusterset.kube.api import load_contexts
from clusterset.kube.karmada import control_api as karmada_control_api
from clusterset.kube.karmada import proxied
from clusterset.kube.lease import (
    LEASE_DURATION,
    RENEW_DEADLINE,
    RETRY_PERIOD,
    LeaderElector,
    check_timing,
)
from clusterset.model import liveness
from clusterset.server.app import ListenError, parse_listen
from clusterset.server.http import HubCollector, HubStats, OpsServer, reconcile_histogram


@app.command()
def controller(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
    lease_context: Annotated[
        str | None,
        typer.Option(
            help="Cluster holding the leader Lease (default: the first member; with "
            "--karmada-kubeconfig, Karmada's control plane)."
        ),
    ] = None,
    lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the leader Lease.")
    ] = "kube-system",
    lease_name: Annotated[
        str, typer.Option(help="Name of the leader Lease.")
    ] = "clusterset-controller",
    identity: Annotated[
        str | None, typer.Option(help="This replica's identity (default: hostname+pid).")
    ] = None,
    leader_elect: Annotated[bool, typer.Option(help="Elect a leader before writing.")] = True,
    leader_elect_lease_duration: Annotated[
        float,
        typer.Option(help="Seconds a follower waits, from the last change it saw, to take over."),
    ] = LEASE_DURATION,
    leader_elect_renew_deadline: Annotated[
        float,
        typer.Option(help="Seconds within which the leader must renew, or it stops writing."),
    ] = RENEW_DEADLINE,
    leader_elect_retry_period: Annotated[
        float, typer.Option(help="Seconds between acquire/renew attempts.")
    ] = RETRY_PERIOD,
    source_lease_namespace: Annotated[
        str, typer.Option(help="Namespace of the per-source-cluster liveness Leases.")
    ] = liveness.NAMESPACE,
    source_lease_duration: SourceLeaseDurationOpt = liveness.DEFAULT_DURATION,
    create_namespaces: Annotated[
        bool,
        typer.Option(help="Create a service's namespace where it is missing (remote-only use)."),
    ] = False,
    metrics_listen: MetricsOpt = None,
    webhook_listen: Annotated[
        str | None,
        typer.Option(help="HOST:PORT of the validating admission webhook (HTTPS; off if unset)."),
    ] = None,
    webhook_cert_dir: Annotated[
        Path | None,
        typer.Option(help="Folder with the webhook's tls.crt, tls.key (and ca.crt)."),
    ] = None,
    webhook_config: Annotated[
        str | None,
        typer.Option(
            help="ValidatingWebhookConfiguration whose caBundle the hub keeps in every member."
        ),
    ] = None,
    deny_conflicts: Annotated[
        bool, typer.Option(help="Deny (not only warn about) exports that would conflict.")
    ] = False,
) -> None:
    """Hub mode: watch every member and write ServiceImports, derived Services, MCS
    EndpointSlices and ServiceExport conditions into each.

    \b
    Example: clusterset controller --kubeconfig members.yaml --context member1 --context member2
    """
    source_lease_grace(source_lease_duration, None)
    try:
        check_timing(
            lease_duration=leader_elect_lease_duration,
            renew_deadline=leader_elect_renew_deadline,
            retry_period=leader_elect_retry_period,
        )
    except ValueError as exc:
        raise UsageProblem(str(exc)) from exc
    kubeconfig = kubeconfig or default_kubeconfig(karmada_kubeconfig)
    apis = member_apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
    if not apis and karmada_kubeconfig is None:  # Karmada's joins come while running
        raise UsageProblem("no member clusters")
    webhook_args = None
    if webhook_listen:
        from clusterset.controller import admission

        if webhook_cert_dir is None:
            raise UsageProblem("--webhook-listen needs --webhook-cert-dir (tls.crt, tls.key)")
        try:
            certs = admission.CertFiles(webhook_cert_dir)
        except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
            raise UsageProblem(f"--webhook-cert-dir {webhook_cert_dir}: {exc}") from exc
        webhook_args = (*parse_listen(webhook_listen), certs)
    # With Karmada, the hub's own state (leader Lease, retention rules) lives in its
    # control plane, and its ResourceBindings say which imports are Karmada's.
    karmada = membership = None
    if karmada_kubeconfig is not None:
        config = next(
            iter(load_contexts(karmada_kubeconfig, None, flag="--karmada-kubeconfig").values())
        )
        karmada = karmada_control_api(config)
        # The members then follow Karmada's Cluster objects (joins and unjoins while running).
        membership = proxied(config, only=frozenset(context or ()))
    elector = None
    if leader_elect:
        lease_api = (
            karmada
            if karmada is not None and lease_context is None
            else apis.get(lease_context or next(iter(apis)))
        )
        if lease_api is None:
            raise UsageProblem(f"--lease-context {lease_context!r}: not one of the members")
        import os
        import socket

        elector = LeaderElector(
            lease_api,
            namespace=lease_namespace,
            name=lease_name,
            identity=identity or f"{socket.gethostname()}-{os.getpid()}",
            lease_duration=leader_elect_lease_duration,
            renew_deadline=leader_elect_renew_deadline,
            retry_period=leader_elect_retry_period,
        )
    registry = CollectorRegistry()
    ended = threading.Event()  # the hub stopped (or is stopping): /ready answers 503
    hub = Hub(
        apis,
        elector=elector,
        lease_namespace=source_lease_namespace,
        lease_duration=source_lease_duration,
        create_namespaces=create_namespaces,
        karmada=karmada,
        membership=membership,
        on_duration=reconcile_histogram(registry).observe,
    )
    registry.register(HubCollector(lambda: hub_stats(hub)))
    log.info("controller: %d member cluster(s): %s", len(apis), ", ".join(apis))
    ops = None
    if metrics_listen:
        ops = OpsServer(
            parse_listen(metrics_listen, "--metrics-listen"),
            registry,
            ready=lambda: not ended.is_set() and all(m.synced for m in hub.members.values()),
        )
        ops.start()

    async def main() -> None:
        webhook = None
        if webhook_args is not None:
            from clusterset.controller import admission

            host, port, certs = webhook_args
            webhook = admission.AdmissionServer(
                admission.HubViews(hub.observer), host=host, port=port, certs=certs,
                deny=deny_conflicts,
            )  # fmt: skip
            try:  # a port in use is one error line, before anything runs
                await webhook.start()
            except OSError as exc:
                raise ListenError(f"--webhook-listen {host}:{port}: {exc.strerror or exc}") from exc

        async def run() -> None:
            # One task: a webhook that fails stops the controller (and says why), as the
            # hub does; a hub running beside a dead webhook would fail its users silently.
            async with asyncio.TaskGroup() as tg:
                tg.create_task(hub.run(), name="hub")
                if webhook is not None:
                    tg.create_task(
                        admission.run(hub.observer, webhook, config_name=webhook_config),
                        name="admission",
                    )

        task = asyncio.create_task(run(), name="controller")
        sig = await until_signal(task)
        stopped_itself = sig is None
        ended.set()
        if stopped_itself:  # the hub never returns on its own: say why it stopped, once
            log.error("controller stopped, exiting: %s", why(task.exception()))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # its failure is logged above
        if elector is not None:
            await elector.release()
        # The members now (the hub closed those that left), and the control plane.
        for api in [m.api for m in hub.members.values()] + ([karmada] if karmada else []):
            await api.close()
        if ops is not None:
            ops.stop()
        if stopped_itself:
            raise SystemExit(1)
        exit_if_interrupted(sig)

    import uvloop

    uvloop.run(main())


def hub_stats(hub: Hub) -> HubStats:
    """The hub's numbers for its metrics, read at scrape time."""
    return HubStats(
        objects={
            (name, res): len(inf.store)
            for name, m in hub.members.items()
            for res, inf in m.informers.items()
        },
        restarts={
            (name, res): inf.restarts
            for name, m in hub.members.items()
            for res, inf in m.informers.items()
        },
        synced={name: m.synced for name, m in hub.members.items()},
        reachable={name: m.reachable for name, m in hub.members.items()},
        reconciles=hub.reconciles,
        errors=hub.errors,
        last_duration=hub.last_duration,
        leading=hub.elector is None or hub.elector.leading.is_set(),
    )
