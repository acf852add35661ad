"""Assemble the hub process: leader election, the hub, its metrics registry and the
admission webhook, run as one.

`clusterset controller` turns its flags into `HubOptions` and adds what this layer cannot
import: /metrics, /health and /ready (server.http.OpsServer: controller and server do
not import each other), the signals, and the exit codes.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass

from prometheus_client import CollectorRegistry

from clusterset.controller import admission
from clusterset.controller.hub import Hub
from clusterset.controller.metrics import HubCollector, hub_stats, reconcile_histogram
from clusterset.kube.api import KubeApi
from clusterset.kube.karmada import Membership
from clusterset.kube.lease import LeaderElector
from clusterset.model import liveness


@dataclass(frozen=True, slots=True)
class ElectionOptions:
    """Leader election: only the replica that holds the Lease writes."""

    api: KubeApi  # the cluster holding the Lease
    namespace: str
    name: str
    identity: str  # this replica's
    lease_duration: float
    renew_deadline: float
    retry_period: float


@dataclass(frozen=True, slots=True)
class WebhookOptions:
    """The validating admission webhook (HTTPS): the pre-flight check at `kubectl apply`."""

    host: str
    port: int
    certs: admission.CertFiles
    config: str | None  # the ValidatingWebhookConfiguration whose caBundle the hub keeps
    deny: bool  # deny conflicting exports, not only warn about them


@dataclass(frozen=True, slots=True)
class HubOptions:
    """The hub process's settings: the controller's flags, checked, and the clients they name."""

    apis: dict[str, KubeApi]  # the members at start
    # With Karmada: its control plane, where the hub's own state lives (leader Lease,
    # retention rules) and whose ResourceBindings say which imports are Karmada's, and
    # how the members follow its Cluster objects (joins and unjoins while running).
    karmada: KubeApi | None = None
    membership: Membership | None = None
    election: ElectionOptions | None = None  # None: write without electing a leader
    source_lease_namespace: str = liveness.NAMESPACE
    source_lease_duration: int = liveness.DEFAULT_DURATION
    create_namespaces: bool = False
    webhook: WebhookOptions | None = None


class HubProcess:
    """The hub and what runs beside it; `start` binds the webhook's port, `run` runs them,
    `close` gives the Lease up and closes the clients."""

    def __init__(self, options: HubOptions) -> None:
        self.options = options
        self.elector = _elector(options.election)
        self.registry = CollectorRegistry()
        self.hub = Hub(
            options.apis,
            elector=self.elector,
            lease_namespace=options.source_lease_namespace,
            lease_duration=options.source_lease_duration,
            create_namespaces=options.create_namespaces,
            karmada=options.karmada,
            membership=options.membership,
            on_duration=reconcile_histogram(self.registry).observe,
        )
        self.registry.register(HubCollector(lambda: hub_stats(self.hub)))
        w = options.webhook
        control = self.hub.karmada
        if w is not None and control is not None:
            control.watch_policies()  # the webhook places templates as Karmada will
        self.webhook = (
            None
            if w is None
            else admission.AdmissionServer(
                admission.HubViews(self.hub.observer),
                host=w.host,
                port=w.port,
                certs=w.certs,
                deny=w.deny,
                karmada=None
                if control is None
                else functools.partial(admission.karmada_view, control),
            )
        )

    def synced(self) -> bool:
        """Every member's caches have synced."""
        return all(m.synced for m in self.hub.members.values())

    async def start(self) -> None:
        """Bind the webhook's port, so that a port in use fails before anything runs
        (OSError)."""
        if self.webhook is not None:
            await self.webhook.start()

    async def run(self) -> None:
        """Hub and webhook until one of them fails: the hub never returns on its own."""
        w = self.options.webhook
        # One task: a webhook that fails stops the controller (and says why), as the
        # hub does; a hub running beside a dead webhook would fail its users silently.
        async with asyncio.TaskGroup() as tg:
            tg.create_task(self.hub.run(), name="hub")
            if w is not None and self.webhook is not None:  # the one is made from the other
                tg.create_task(
                    admission.run(self.hub.observer, self.webhook, config_name=w.config),
                    name="admission",
                )

    async def close(self) -> None:
        """Give the leader Lease up (a successor need not wait it out), close every client."""
        if self.elector is not None:
            await self.elector.release()
        # The members now (the hub closed those that left), and the control plane.
        karmada = self.options.karmada
        for api in [m.api for m in self.hub.members.values()] + ([karmada] if karmada else []):
            await api.close()


def _elector(options: ElectionOptions | None) -> LeaderElector | None:
    if options is None:
        return None
    return LeaderElector(
        options.api,
        namespace=options.namespace,
        name=options.name,
        identity=options.identity,
        lease_duration=options.lease_duration,
        renew_deadline=options.renew_deadline,
        retry_period=options.retry_period,
    )
