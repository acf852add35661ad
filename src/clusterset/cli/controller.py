"""`clusterset controller`: its flags made into the hub process's options
(controller/app.py), run with /metrics, /health and /ready until a signal stops it."""

from __future__ import annotations

import asyncio
import os
import socket
import threading
from pathlib import Path
from typing import Annotated

import typer

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
from clusterset.controller.admission import CertFiles
from clusterset.controller.app import ElectionOptions, HubOptions, HubProcess, WebhookOptions
from clusterset.kube.api import KubeApi, load_contexts
from clusterset.kube.karmada import Membership, proxied
from clusterset.kube.karmada import control_api as karmada_control_api
from clusterset.kube.lease import LEASE_DURATION, RENEW_DEADLINE, RETRY_PERIOD, check_timing
from clusterset.model import liveness
from clusterset.server.app import ListenError, parse_listen
from clusterset.server.http import OpsServer


@app.command()
def controller(
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    all_contexts: AllContextsOpt = False,
    karmada_kubeconfig: KarmadaOpt = None,
    karmada_control_plane: Annotated[
        Path | None,
        typer.Option(
            help="With --kubeconfig members that Karmada also manages: the karmada-apiserver's "
            "kubeconfig, where the controller installs the rule that keeps the spec.ips it "
            "writes into the ServiceImports Karmada propagates, reads where Karmada places "
            "them, and keeps its leader Lease. The members stay the --kubeconfig contexts."
        ),
    ] = None,
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
    _check_timing(
        leader_elect_lease_duration, leader_elect_renew_deadline, leader_elect_retry_period
    )
    kubeconfig = kubeconfig or default_kubeconfig(karmada_kubeconfig)
    karmada, membership = _karmada(karmada_kubeconfig, context, karmada_control_plane)
    apis = member_apis(kubeconfig, context, all_contexts, karmada_kubeconfig)
    if not apis and karmada_kubeconfig is None:  # Karmada's joins come while running
        raise UsageProblem("no member clusters")
    webhook = _webhook(webhook_listen, webhook_cert_dir, webhook_config, deny_conflicts)
    election = None
    if leader_elect:
        election = ElectionOptions(
            _lease_api(lease_context, apis, karmada),
            namespace=lease_namespace,
            name=lease_name,
            identity=identity or f"{socket.gethostname()}-{os.getpid()}",
            lease_duration=leader_elect_lease_duration,
            renew_deadline=leader_elect_renew_deadline,
            retry_period=leader_elect_retry_period,
        )
    options = HubOptions(
        apis,
        karmada=karmada,
        membership=membership,
        election=election,
        source_lease_namespace=source_lease_namespace,
        source_lease_duration=source_lease_duration,
        create_namespaces=create_namespaces,
        webhook=webhook,
    )
    _run(HubProcess(options), metrics_listen)


def _check_timing(lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    try:
        check_timing(
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
        )
    except ValueError as exc:
        raise UsageProblem(str(exc)) from exc


def _webhook(
    listen: str | None, cert_dir: Path | None, config: str | None, deny: bool
) -> WebhookOptions | None:
    if not listen:
        return None
    if cert_dir is None:
        raise UsageProblem("--webhook-listen needs --webhook-cert-dir (tls.crt, tls.key)")
    try:
        certs = CertFiles(cert_dir)
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise UsageProblem(f"--webhook-cert-dir {cert_dir}: {exc}") from exc
    host, port = parse_listen(listen)
    return WebhookOptions(host, port, certs, config=config, deny=deny)


def _karmada(
    kubeconfig: Path | None, contexts: list[str] | None, control_plane: Path | None
) -> tuple[KubeApi | None, Membership | None]:
    """With Karmada, the hub's own state (leader Lease, retention rules) lives in its
    control plane, and its ResourceBindings say which imports are Karmada's."""
    if control_plane is not None:
        if kubeconfig is not None:
            raise UsageProblem(
                "--karmada-control-plane is for --kubeconfig members; with "
                "--karmada-kubeconfig the controller reaches Karmada's control plane already"
            )
        flag = "--karmada-control-plane"
        config = next(iter(load_contexts(control_plane, None, flag=flag).values()))
        return karmada_control_api(config), None  # the members stay --kubeconfig's
    if kubeconfig is None:
        return None, None
    config = next(iter(load_contexts(kubeconfig, None, flag="--karmada-kubeconfig").values()))
    # The members then follow Karmada's Cluster objects (joins and unjoins while running).
    return karmada_control_api(config), proxied(config, only=frozenset(contexts or ()))


def _lease_api(context: str | None, apis: dict[str, KubeApi], karmada: KubeApi | None) -> KubeApi:
    """The cluster holding the leader Lease: --lease-context, else Karmada's control plane,
    else the first member."""
    api = (
        karmada
        if karmada is not None and context is None
        else apis.get(context or next(iter(apis)))
    )
    if api is None:
        raise UsageProblem(f"--lease-context {context!r}: not one of the members")
    return api


def _run(process: HubProcess, metrics_listen: str | None) -> None:
    """Run the hub process until SIGTERM or SIGINT, or until it stops itself: then exit 1,
    so that Kubernetes restarts it."""
    apis = process.options.apis
    log.info("controller: %d member cluster(s): %s", len(apis), ", ".join(apis))
    ended = threading.Event()  # the hub stopped (or is stopping): /ready answers 503
    ops = None
    if metrics_listen:
        ops = OpsServer(
            parse_listen(metrics_listen, "--metrics-listen"),
            process.registry,
            ready=lambda: not ended.is_set() and process.synced(),
        )
        ops.start()

    async def main() -> None:
        await _start(process)
        task = asyncio.create_task(process.run(), name="controller")
        sig = await until_signal(task)
        stopped_itself = sig is None
        ended.set()
        if stopped_itself:  # the hub never returns on its own: say why it stopped, once
            log.error("controller stopped, exiting: %s", why(task.exception()))
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)  # its failure is logged above
        await process.close()
        if ops is not None:
            ops.stop()
        if stopped_itself:
            raise SystemExit(1)
        exit_if_interrupted(sig)

    import uvloop

    uvloop.run(main())


async def _start(process: HubProcess) -> None:
    """A port in use is one error line (exit 2), before anything runs."""
    try:
        await process.start()
    except OSError as exc:
        webhook = process.options.webhook
        assert webhook is not None  # the only port `start` binds
        where = f"{webhook.host}:{webhook.port}"
        raise ListenError(f"--webhook-listen {where}: {exc.strerror or exc}") from exc
