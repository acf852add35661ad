"""Validating admission webhook served by the hub: the pre-flight check at `kubectl apply`.

Each member's ValidatingWebhookConfiguration calls `POST /validate/<member>` for
ServiceExports and Services (CREATE, UPDATE); the karmada-apiserver's calls
`POST /validate-karmada` for their templates and the policies that place ServiceExports,
checked in the members Karmada places them in (`reconcile.placement`). The answer is
`reconcile.preflight`'s finding against the hub's current view of the whole clusterset, as
admission *warnings*; with `deny` (--deny-conflicts) a conflicting request is refused.
Anything unexpected (unknown member, unsynced caches, a bad object) is allowed with a
warning: the configuration's failurePolicy is Ignore, and so is this server's.

HTTP/1.1 over TLS on asyncio streams (the apiserver keeps connections alive). The
certificate files are re-read when they change (cert-manager or a Secret rotates them).

A review costs one service, not the fleet (`preflight.check` reconciles and builds the
DNS answers of the reviewed key only), and it runs in a worker thread, at most
`REVIEW_THREADS` at a time: the event loop also renews the leader Lease, and a burst of
`kubectl apply` must not hold it up.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterset.controller.observer import Observer
from clusterset.kube.api import ApiError
from clusterset.kube.karmada import KarmadaControl
from clusterset.kube.webhook import CaBundle, ensure_ca_bundle
from clusterset.model import convert
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.state import ClusterSetState, ImportedView
from clusterset.reconcile import placement, preflight
from clusterset.reconcile.aggregate import aggregate
from clusterset.zone import lookup

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # the apiserver's own request size limit
REVIEW_THREADS = 4  # reviews at once; more wait on the loop (no thread each)
CERT, KEY, CA = "tls.crt", "tls.key", "ca.crt"
IPs = Mapping[tuple[ClusterId, ServiceKey], tuple[str, ...]]
Obj = dict[str, Any]
POLICY_KINDS = ("PropagationPolicy", "ClusterPropagationPolicy")
KARMADA_PATH = "/validate-karmada"  # the karmada-apiserver's configuration calls it


@dataclass(frozen=True, slots=True)
class View:
    """What a decision needs from the hub: state, member name -> cluster ID, and one
    service's ClusterSetIPs in every member (looked up only when a check runs: most
    Services are not exported)."""

    state: ClusterSetState
    ids: Mapping[str, ClusterId]
    synced: bool
    ips: Callable[[ServiceKey], IPs]


def observe_view(observer: Observer) -> View:
    """Observe now. On the event loop: observe() reads and updates the informers' caches."""
    state = observer.observe()
    return View(
        state,
        dict(observer.ids),
        observer.synced,
        functools.partial(_service_ips, observer, state),
    )


def _service_ips(observer: Observer, state: ClusterSetState, key: ServiceKey) -> IPs:
    """`key`'s ClusterSetIPs. Called in the review's thread: it only looks single objects up
    in the informers' stores (dict reads, atomic under the GIL), never iterates them."""
    return observer.clusterset_ips(state, {key: aggregate(state, key)})


class HubViews:
    """The hub's view for reviews, observed again only after a watch event: an observation
    copies every member's objects (O(fleet)), and a burst of reviews can share one."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self._view: View | None = None
        self._changes = -1

    def __call__(self) -> View:
        synced = self.observer.synced
        view = self._view
        if view is None or self._changes != self.observer.changes or view.synced != synced:
            self._changes = self.observer.changes
            view = self._view = observe_view(self.observer)
        return view


def _answer(view: ImportedView, key: ServiceKey) -> tuple[str, ...]:
    return lookup.service_answer(view, key)


def review(
    body: Mapping[str, Any], member: str, view: View, *, deny: bool, now: float
) -> dict[str, Any]:
    """AdmissionReview in -> AdmissionReview out. Pure given `view` and `now`; thread-safe
    (the server runs it off the event loop)."""
    request = body.get("request") or {}
    return _reviewed(body, decide(request, member, view, deny=deny, now=now))


def _reviewed(body: Mapping[str, Any], decision: tuple[bool, list[str], str]) -> dict[str, Any]:
    """The AdmissionReview answering `body` with `decision`."""
    allowed, warnings, message = decision
    uid = str((body.get("request") or {}).get("uid", ""))
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if warnings:
        response["warnings"] = warnings
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": message}
    return {
        "apiVersion": body.get("apiVersion", "admission.k8s.io/v1"),
        "kind": "AdmissionReview",
        "response": response,
    }


def decide(
    request: Mapping[str, Any], member: str, view: View, *, deny: bool, now: float
) -> tuple[bool, list[str], str]:
    """(allowed, warnings, denial message)."""
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return True, [], ""
    cid = view.ids.get(member)
    if cid is None or cid not in view.state.clusters:
        return True, [f"clusterset: unknown member {member!r}: no pre-flight check"], ""
    if not view.synced:
        return (
            True,
            ["clusterset: the hub has not synced every member yet: no pre-flight check"],
            "",
        )
    return _check(
        (request.get("kind") or {}).get("kind", ""),
        request.get("object") or {},
        cid,
        view,
        deny=deny,
        now=now,
    )


def _check(
    kind: str,
    obj: Mapping[str, Any],
    cid: ClusterId,
    view: View,
    *,
    deny: bool,
    now: float,
    created: float | None = None,
) -> tuple[bool, list[str], str]:
    """`obj` (a ServiceExport or Service) checked as if applied in member `cid`; `created`
    overrides the export's timestamp (a Karmada template's is not the member object's)."""
    try:
        if kind == "ServiceExport":
            export = convert.service_export(obj)
            if created is not None:
                export = dataclasses.replace(export, created=created)
            if export.created == 0.0:  # not set yet on CREATE in some paths: the youngest
                export = dataclasses.replace(export, created=now)
            key, service = export.key, None
        elif kind == "Service":
            key = ServiceKey(*convert.metadata(obj))
            if key not in view.state.clusters[cid].exports:
                return True, [], ""  # not exported: nothing to check (nor to convert)
            export, service = None, convert.service(obj)
        else:
            return True, [], ""
    except convert.ObjectError as exc:
        return True, [f"clusterset: no pre-flight check: {exc}"], ""
    finding = preflight.check(
        view.state,
        cluster=cid,
        key=key,
        export=export,
        service=service,
        ips=view.ips(key),
        answer=_answer,
    )
    warnings = finding.warnings()
    if deny and finding.conflicts:
        return False, warnings, "clusterset: --deny-conflicts: " + "; ".join(warnings)
    return True, warnings, ""


@dataclass(frozen=True, slots=True)
class KarmadaView:
    """What a review of a template applied to the karmada-apiserver needs: Karmada's
    policies and clusters (copied on the loop) and its ResourceBindings (the informer's
    store: the thread only looks one key up)."""

    policies: tuple[Obj, ...]
    cluster_policies: tuple[Obj, ...]
    clusters: Mapping[str, Obj]
    bindings: Mapping[str, Obj]
    synced: bool = True  # every one of them listed once


def karmada_view(control: KarmadaControl) -> KarmadaView:
    """Observe Karmada's policies now. On the event loop (the informers write the stores)."""
    informers = (control.policies, control.cluster_policies, control.clusters, control.bindings)
    return KarmadaView(
        tuple(control.policies.store.values()),
        tuple(control.cluster_policies.store.values()),
        dict(control.clusters.store),
        control.bindings.store,
        synced=all(i.synced.is_set() for i in informers),
    )


def review_karmada(
    body: Mapping[str, Any], view: View, karmada: KarmadaView, *, deny: bool, now: float
) -> dict[str, Any]:
    """`review` of a request to the karmada-apiserver: checked in the members Karmada
    places the object in."""
    request = body.get("request") or {}
    try:
        decision = decide_karmada(request, view, karmada, deny=deny, now=now)
    except Exception as exc:  # a shape the API's schemas should have refused: say, admit
        log.error("admission karmada %s: %s: %s", request.get("uid"), type(exc).__name__, exc)
        decision = (True, [f"clusterset: no pre-flight check: {type(exc).__name__}: {exc}"], "")
    return _reviewed(body, decision)


def decide_karmada(
    request: Mapping[str, Any], view: View, karmada: KarmadaView, *, deny: bool, now: float
) -> tuple[bool, list[str], str]:
    """(allowed, warnings, denial message) of a ServiceExport or Service template, or of a
    policy that places ServiceExports by name."""
    if request.get("operation") not in ("CREATE", "UPDATE"):
        return True, [], ""
    kind = (request.get("kind") or {}).get("kind", "")
    if kind not in (*POLICY_KINDS, "ServiceExport", "Service"):
        return True, [], ""
    if not view.synced or not karmada.synced:
        what = "every member" if not view.synced else "Karmada's policies and clusters"
        return True, [f"clusterset: the hub has not synced {what} yet: no pre-flight check"], ""
    obj = request.get("object") or {}
    meta = obj.get("metadata") or {}
    ns = str(meta.get("namespace") or request.get("namespace") or "")
    if kind in POLICY_KINDS:
        return _policy_review(obj, ns, view, karmada, deny=deny, now=now)
    name = str(meta.get("name") or request.get("name") or "")
    template = {**obj, "metadata": {**meta, "namespace": ns, "name": name}}
    where = placement.placement(
        template,
        binding=karmada.bindings.get(f"{ns}/{placement.binding_name(kind, name)}"),
        policies=karmada.policies,
        cluster_policies=karmada.cluster_policies,
        clusters=karmada.clusters,
    )
    what = f"{kind} {ns}/{name}"
    if placement.skipped_namespace(ns):
        return True, [], ""  # Karmada propagates nothing from here: no member gets it
    if where.unsure:
        return True, [_unsure(what, where)], ""
    if not where.policy:
        if kind != "ServiceExport":
            return True, [], ""  # a Service no policy propagates is no export's business
        return (
            True,
            [
                f"clusterset: no PropagationPolicy or ClusterPropagationPolicy selects {what} "
                "yet, so Karmada does not propagate it; the pre-flight check runs when a policy "
                "naming it is applied"
            ],
            "",
        )
    if not where.members:
        return True, [f"clusterset: {where.policy} places {what} in no cluster"], ""
    return _in_members(kind, template, where, view, deny=deny, now=now)


def _unsure(what: str, where: placement.Placement) -> str:
    return (
        f"clusterset: where Karmada places {what} is not known before it schedules "
        f"({where.policy}: {where.unsure}): no pre-flight check"
    )


def _policy_review(
    policy: Mapping[str, Any], ns: str, view: View, karmada: KarmadaView, *, deny: bool, now: float
) -> tuple[bool, list[str], str]:
    """A policy checked for the ServiceExports it names: applying it is what exports them
    (the guide applies the export first, its policy after)."""
    namespaced = policy.get("kind") == "PropagationPolicy"
    meta = policy.get("metadata") or {}
    if namespaced:
        policy = {**policy, "metadata": {**meta, "namespace": ns}}
    named: list[dict[str, Any]] = []
    unnamed = False
    for sel in (policy.get("spec") or {}).get("resourceSelectors") or []:
        version = str(sel.get("apiVersion", ""))
        if sel.get("kind") != "ServiceExport" or not version.startswith(f"{convert.MCS_GROUP}/"):
            continue
        where_ns = ns if namespaced else str(sel.get("namespace") or "")
        if not sel.get("name") or not where_ns:
            unnamed = True
            continue
        named.append(
            {
                "apiVersion": version,
                "kind": "ServiceExport",
                "metadata": {"namespace": where_ns, "name": str(sel["name"])},
            }
        )
    label = f"{policy.get('kind', '')} {meta.get('name', '')}"
    warnings = (
        [
            f"clusterset: {label} selects ServiceExports by label or namespace: each is "
            "checked when it is applied, not with the policy"
        ]
        if unnamed
        else []
    )
    # The policy as it will be, among the others: it decides only where it wins (priority),
    # or where Karmada bound the export to it already (claimed exports stay with their policy).
    others = karmada.policies if namespaced else karmada.cluster_policies
    ranked = [
        p
        for p in others
        if (p.get("metadata") or {}).get("name") != meta.get("name")
        or (p.get("metadata") or {}).get("namespace") != (ns if namespaced else None)
    ] + [policy]
    allowed, message = True, ""
    for template in named:
        tmeta = template["metadata"]
        what = f"ServiceExport {tmeta['namespace']}/{tmeta['name']}"
        binding = karmada.bindings.get(
            f"{tmeta['namespace']}/{placement.binding_name('ServiceExport', tmeta['name'])}"
        )
        if binding is not None and placement.claim(binding) == label:
            # Bound to this very policy: Karmada schedules it again by the new placement.
            where = placement.placement_of(policy, karmada.clusters)
        elif binding is not None:
            continue  # bound to another policy: this one does not move it
        else:
            where = placement.placement(
                template,
                binding=None,
                policies=ranked if namespaced else karmada.policies,
                cluster_policies=karmada.cluster_policies if namespaced else ranked,
                clusters=karmada.clusters,
            )
        if where.policy != label:
            continue  # another policy decides: not this one
        if where.unsure:
            warnings.append(_unsure(what, where))
            continue
        ok, found, why = _in_members("ServiceExport", template, where, view, deny=deny, now=now)
        warnings += found
        allowed, message = allowed and ok, message or why
    return allowed, warnings, message


def _in_members(
    kind: str,
    template: Mapping[str, Any],
    where: placement.Placement,
    view: View,
    *,
    deny: bool,
    now: float,
) -> tuple[bool, list[str], str]:
    """`template` checked in each member Karmada places it in."""
    meta = template["metadata"]
    key = ServiceKey(meta["namespace"], meta["name"])
    allowed, warnings, messages = True, [], []
    for member in where.members:
        cid = view.ids.get(member)
        if cid is None or cid not in view.state.clusters:
            warnings.append(
                f"clusterset: {where.policy} places {kind} {key} in {member}, which the hub "
                "does not follow: not checked there"
            )
            continue
        # The member's export keeps its own age; a new one is created when Karmada places it.
        existing = view.state.clusters[cid].exports.get(key)
        ok, found, message = _check(
            kind,
            template,
            cid,
            view,
            deny=deny,
            now=now,
            created=now if existing is None else existing.created,
        )
        allowed = allowed and ok
        warnings += found
        if message:
            messages.append(message)
    return allowed, warnings, "; ".join(messages)


def _review_karmada_bytes(
    body: bytes, view: View, karmada: KarmadaView, *, deny: bool, now: float
) -> dict[str, Any]:
    return review_karmada(json.loads(body), view, karmada, deny=deny, now=now)


def _review_bytes(
    body: bytes, member: str, view: View, *, deny: bool, now: float
) -> dict[str, Any]:
    """`review` of a raw body (up to 3 MiB of JSON: parsed off the loop too)."""
    return review(json.loads(body), member, view, deny=deny, now=now)


class CertFiles:
    """A server SSLContext over tls.crt/tls.key in `directory`, reloaded when they change."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.set_alpn_protocols(["http/1.1"])
        self._stamp: tuple[float, float] | None = None
        self.reload()

    def _mtimes(self) -> tuple[float, float]:
        return (
            (self.directory / CERT).stat().st_mtime,
            (self.directory / KEY).stat().st_mtime,
        )

    def reload(self) -> bool:
        """Load the pair if it changed; True when (re)loaded."""
        stamp = self._mtimes()
        if stamp == self._stamp:
            return False
        self.context.load_cert_chain(self.directory / CERT, self.directory / KEY)
        self._stamp = stamp
        return True

    def ca_bundle(self) -> bytes:
        """ca.crt when present (cert-manager, the chart's Secret), else the certificate."""
        ca = self.directory / CA
        return (ca if ca.is_file() else self.directory / CERT).read_bytes()


class AdmissionServer:
    def __init__(
        self,
        view: Callable[[], View],
        *,
        host: str,
        port: int,
        certs: CertFiles,
        deny: bool = False,
        karmada: Callable[[], KarmadaView] | None = None,
    ) -> None:
        self.view = view
        self.karmada = karmada  # with Karmada's control plane: KARMADA_PATH is served
        self.host = host
        self.port = port
        self.certs = certs
        self.deny = deny
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self._threads = asyncio.Semaphore(REVIEW_THREADS)

    async def start(self) -> None:
        self.server = await asyncio.start_server(
            self._serve, self.host, self.port, ssl=self.certs.context
        )
        self.port = self.server.sockets[0].getsockname()[1]
        log.info(
            "admission webhook on https://%s:%d/validate/<member>%s",
            self.host,
            self.port,
            f" and {KARMADA_PATH}" if self.karmada is not None else "",
        )

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):  # kept-alive connections: wait_closed waits for them
                w.close()
            with contextlib.suppress(Exception):
                await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, ValueError):
            pass
        except asyncio.CancelledError:
            # Shutdown cancels kept-alive connections; asyncio's start_server callback (3.11)
            # would log the cancellation as an error with a traceback. The connection just ends.
            pass
        finally:
            self.writers.discard(writer)
            writer.close()
            # The cancel may also land here, while the TLS close is under way (CI saw it).
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """One request on a kept-alive connection; False when the connection ends."""
        line = await reader.readline()
        if not line:
            return False
        method, target, _ = line.decode("latin-1").split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            h = await reader.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_BODY:
            await self._send(writer, 413, {"error": "request too large"}, close=True)
            return False
        body = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0]
        keep = headers.get("connection", "").lower() != "close"
        karmada = path.rstrip("/") == KARMADA_PATH and self.karmada is not None
        if method != "POST" or not (path.startswith("/validate/") or karmada):
            await self._send(writer, 404, {"error": "POST /validate/<member>"}, close=not keep)
            return keep
        member = "" if karmada else path.removeprefix("/validate/").strip("/")
        try:
            out = await (self.answer_karmada(body) if karmada else self.answer(body, member))
        except (ValueError, AttributeError) as exc:
            await self._send(writer, 400, {"error": f"not an AdmissionReview: {exc}"}, close=True)
            return False
        resp = out["response"]
        log.log(
            logging.INFO if resp.get("warnings") or not resp["allowed"] else logging.DEBUG,
            "admission %s %s: allowed=%s warnings=%d",
            member or "karmada",
            resp.get("uid"),
            resp["allowed"],
            len(resp.get("warnings", ())),
        )
        await self._send(writer, 200, out, close=not keep)
        return keep

    async def answer(self, body: bytes, member: str) -> dict[str, Any]:
        """The AdmissionReview answering `body`: parsed and decided in a worker thread, with
        the view observed here, on the loop. Raises ValueError for a body that is not one."""
        view = self.view()
        async with self._threads:
            return await asyncio.to_thread(
                _review_bytes, body, member, view, deny=self.deny, now=time.time()
            )

    async def answer_karmada(self, body: bytes) -> dict[str, Any]:
        """`answer` for the karmada-apiserver: Karmada's policies observed here too."""
        assert self.karmada is not None  # routed here only then
        view, karmada = self.view(), self.karmada()
        async with self._threads:
            return await asyncio.to_thread(
                _review_karmada_bytes, body, view, karmada, deny=self.deny, now=time.time()
            )

    async def _send(
        self, writer: asyncio.StreamWriter, status: int, obj: object, *, close: bool
    ) -> None:
        data = json.dumps(obj).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 413: "Too Large"}[status]
        head = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
        )
        writer.write(head.encode() + data)
        await writer.drain()


async def run(
    observer: Observer,
    server: AdmissionServer,
    *,
    config_name: str | None,
    interval: float = 30.0,
) -> None:
    """Serve the started webhook until cancelled; keep certificates and members' caBundles
    fresh."""
    missing: set[str] = set()  # clusters told they lack the configuration
    forbidden: set[str] = set()  # clusters told we may not read it
    try:
        while True:
            if config_name:
                ca = server.certs.ca_bundle()
                apis = [(m.name, m.api) for m in observer.members.values()]
                if observer.karmada is not None and server.karmada is not None:
                    # ServiceExports applied to the karmada-apiserver: its own configuration.
                    apis.append(("karmada-apiserver", observer.karmada.api))
                for name, api in apis:
                    try:
                        found = await ensure_ca_bundle(api, config_name, ca)
                    except Exception as exc:  # one unreachable member must not stop the others
                        # A refusal is said once (RBAC changes rarely); trouble every time.
                        refused = isinstance(exc, ApiError) and exc.status == 403
                        if not refused or name not in forbidden:
                            log.warning("%s: cannot update the webhook caBundle: %s", name, exc)
                        if refused:
                            forbidden.add(name)
                        continue
                    forbidden.discard(name)
                    if found is not CaBundle.MISSING:
                        missing.discard(name)
                    elif name not in missing:
                        log.warning(
                            "%s: no ValidatingWebhookConfiguration %s: the webhook is not "
                            "registered there",
                            name,
                            config_name,
                        )
                        missing.add(name)
            await asyncio.sleep(interval)
            try:
                if server.certs.reload():
                    log.info("admission webhook: certificate reloaded")
            except (OSError, ssl.SSLError) as exc:
                log.error("admission webhook: cannot reload the certificate: %s", exc)
    finally:
        await server.stop()
