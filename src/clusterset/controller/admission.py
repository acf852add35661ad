"""Validating admission webhook served by the hub: the pre-flight check at `kubectl apply`.

Each member's ValidatingWebhookConfiguration calls `POST /validate/<member>` for
ServiceExports and Services (CREATE, UPDATE). The answer is `reconcile.preflight`'s
finding against the hub's current view of the whole clusterset, as admission
*warnings*; with `deny` (--deny-conflicts) a conflicting request is refused. Anything
unexpected (unknown member, unsynced caches, a bad object) is allowed with a warning:
the configuration's failurePolicy is Ignore, and so is this server's.

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
from clusterset.kube.webhook import CaBundle, ensure_ca_bundle
from clusterset.model import convert
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.state import ClusterSetState, ImportedView
from clusterset.reconcile import preflight
from clusterset.reconcile.aggregate import aggregate
from clusterset.zone import lookup

log = logging.getLogger(__name__)

MAX_BODY = 3 * 1024 * 1024  # the apiserver's own request size limit
REVIEW_THREADS = 4  # reviews at once; more wait on the loop (no thread each)
CERT, KEY, CA = "tls.crt", "tls.key", "ca.crt"
IPs = Mapping[tuple[ClusterId, ServiceKey], tuple[str, ...]]


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
    uid = str(request.get("uid", ""))
    allowed, warnings, message = decide(request, member, view, deny=deny, now=now)
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
    kind = (request.get("kind") or {}).get("kind", "")
    obj = request.get("object") or {}
    try:
        if kind == "ServiceExport":
            export = convert.service_export(obj)
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
    ) -> None:
        self.view = view
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
        log.info("admission webhook on https://%s:%d/validate/<member>", self.host, self.port)

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
        if method != "POST" or not path.startswith("/validate/"):
            await self._send(writer, 404, {"error": "POST /validate/<member>"}, close=not keep)
            return keep
        member = path.removeprefix("/validate/").strip("/")
        try:
            out = await self.answer(body, member)
        except (ValueError, AttributeError) as exc:
            await self._send(writer, 400, {"error": f"not an AdmissionReview: {exc}"}, close=True)
            return False
        resp = out["response"]
        log.log(
            logging.INFO if resp.get("warnings") or not resp["allowed"] else logging.DEBUG,
            "admission %s %s: allowed=%s warnings=%d",
            member,
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
    missing: set[str] = set()  # members already told they lack the configuration
    try:
        while True:
            if config_name:
                ca = server.certs.ca_bundle()
                for m in observer.members.values():
                    try:
                        found = await ensure_ca_bundle(m.api, config_name, ca)
                    except Exception as exc:  # one unreachable member must not stop the others
                        log.warning("%s: cannot update the webhook caBundle: %s", m.name, exc)
                        continue
                    if found is not CaBundle.MISSING:
                        missing.discard(m.name)
                    elif m.name not in missing:
                        log.warning(
                            "%s: no ValidatingWebhookConfiguration %s: the webhook is not "
                            "registered there",
                            m.name,
                            config_name,
                        )
                        missing.add(m.name)
            await asyncio.sleep(interval)
            try:
                if server.certs.reload():
                    log.info("admission webhook: certificate reloaded")
            except (OSError, ssl.SSLError) as exc:
                log.error("admission webhook: cannot reload the certificate: %s", exc)
    finally:
        await server.stop()
