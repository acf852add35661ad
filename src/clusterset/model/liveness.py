"""Per-source-cluster liveness Leases (KEP-1645 "Endpoint TTL"), without I/O: their names,
how the hub writes one, and how a reader (member DNS, `status`) reads one.

While the hub reaches a source cluster, it renews that source's Lease in every consumer
cluster every quarter of the Lease's duration (as the kubelet renews its 40 s node Lease
every 10 s). A consumer's DNS stops counting the source's endpoints once renewTime +
leaseDurationSeconds has passed: a hub cut off from the source stops renewing it.

The Lease also carries the source's ClusterProperties (an annotation): a member DNS reads
only its own cluster, and cluster selection (KEP-5939) and region tiers match the sources'
properties, so it learns them where it already learns the sources' liveness.

The data path follows the Lease too: once a source's Lease has expired, the hub writes its
endpoints into every consumer's MCS EndpointSlices as neither ready nor serving
(out_of_service), so kube-proxy stops sending the ClusterSetIP's new connections there; the
slices stay, and the source's next observation, when it is reached again, restores them.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clusterset.model.ids import ClusterId
from clusterset.model.labels import LABEL_OWNED, PREFIX
from clusterset.model.objects import EndpointSlice
from clusterset.model.state import ClusterState

SOURCE_LABEL = PREFIX + "source-cluster"  # the source cluster the Lease vouches for
# The consumer the Lease lives in, by the ID the hub knows it by: a member DNS without
# --cluster or a ClusterProperty learns its own ID there (local-first needs it).
CONSUMER_LABEL = PREFIX + "consumer-cluster"
NAME_PREFIX = "clusterset-source-"  # + source ID; the chart's RBAC grants patch on these
# The source's ClusterProperty map as compact JSON (sorted keys: an unchanged map is an
# unchanged Lease body apart from renewTime).
PROPERTIES_ANNOTATION = PREFIX + "cluster-properties"
# A larger annotation is not read: anyone who may write a Lease may not make DNS parse much.
MAX_PROPERTIES_BYTES = 16 << 10
NAMESPACE = "kube-system"
HOLDER = "clusterset-controller"

# leaseDurationSeconds the hub writes (--source-lease-duration), and what a reader assumes
# of a Lease that has none: the one default, so that `status` and DNS agree.
DEFAULT_DURATION = 40
RENEW_FRACTION = 0.25


def renew_interval(duration: float) -> float:
    """How often the hub renews a liveness Lease of `duration` seconds."""
    return duration * RENEW_FRACTION


def render(
    source: ClusterId,
    *,
    consumer: ClusterId,
    namespace: str,
    renewed: str,
    duration: int,
    properties: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The Lease of `source` as the hub keeps it in `consumer` (renewed: a MicroTime), with
    the source's ClusterProperties when it has any."""
    meta: dict[str, Any] = {
        "name": NAME_PREFIX + source,
        "namespace": namespace,
        "labels": {SOURCE_LABEL: source, CONSUMER_LABEL: consumer, LABEL_OWNED: "true"},
    }
    text = json.dumps(dict(sorted((properties or {}).items())), separators=(",", ":"))
    # Above what readers read, nothing: a larger annotation would be dropped by every reader
    # anyway, and past the apiserver's 256 KiB limit the renewal itself would fail.
    if properties and len(text) <= MAX_PROPERTIES_BYTES:
        meta["annotations"] = {PROPERTIES_ANNOTATION: text}
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": meta,
        "spec": {"holderIdentity": HOLDER, "leaseDurationSeconds": duration, "renewTime": renewed},
    }


def out_of_service(cs: ClusterState) -> ClusterState:
    """`cs` as consumers should route to it once its Lease has expired: every endpoint of
    its slices neither ready nor serving (terminating as it was); nothing else changes, so
    its imports, ClusterSetIPs and slices stay (a source cut off may only be unreachable)."""

    def unready(s: EndpointSlice) -> EndpointSlice:
        eps = tuple(dataclasses.replace(e, ready=False, serving=False) for e in s.endpoints)
        return dataclasses.replace(s, endpoints=eps)

    slices = {key: tuple(unready(s) for s in group) for key, group in cs.slices.items()}
    return dataclasses.replace(cs, slices=slices)


@dataclass(frozen=True, slots=True)
class SourceLease:
    """What one liveness Lease says. Label values are as found (unchecked)."""

    source: str
    consumer: str
    renew_time: str  # spec.renewTime as written ("" when missing)
    renewed: float | None  # it in unix seconds; None when missing or unreadable
    duration: float | None  # leaseDurationSeconds, DEFAULT_DURATION when unset; None: unreadable
    properties: Mapping[str, str] = dataclasses.field(default_factory=dict)  # the source's

    def expires(self, grace: float | None = None) -> float | None:
        """renewTime + leaseDurationSeconds, as for node Leases (or + `grace`, when set);
        None when that is unknown: a reader then takes the Lease as absent."""
        valid = grace or self.duration
        return None if self.renewed is None or valid is None else self.renewed + valid

    def state(self, now: float) -> str:
        """fresh (within its duration), stale (within twice it), expired, or invalid."""
        if self.duration is None:
            return "invalid"
        age = self.age(now)
        return (
            "fresh" if age <= self.duration else "stale" if age <= 2 * self.duration else "expired"
        )

    def age(self, now: float) -> float:
        return now - self.renewed if self.renewed is not None else float("inf")


def parse(lease: Mapping[str, Any]) -> SourceLease:
    """Read a liveness Lease as an apiserver returns it: what is missing or unreadable in it
    shows as an empty or None field, never as an exception (anyone may write a Lease)."""
    meta = lease.get("metadata") or {}
    labels = meta.get("labels") or {}
    spec = lease.get("spec") or {}
    renew_time = str(spec.get("renewTime") or "")
    return SourceLease(
        source=str(labels.get(SOURCE_LABEL, "")),
        consumer=str(labels.get(CONSUMER_LABEL, "")),
        renew_time=renew_time,
        renewed=_unix(renew_time),
        duration=_duration(spec.get("leaseDurationSeconds")),
        properties=_properties((meta.get("annotations") or {}).get(PROPERTIES_ANNOTATION)),
    )


def _properties(raw: object) -> dict[str, str]:
    """The annotation's map; empty when missing, too large, or not a JSON object of strings
    (the endpoints still count: only what the properties select is lost)."""
    if not isinstance(raw, str) or not raw or len(raw) > MAX_PROPERTIES_BYTES:
        return {}
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than the stack
        return {}
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(v, str)}


def _unix(micro_time: str) -> float | None:
    try:
        return dt.datetime.fromisoformat(micro_time.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _duration(raw: object) -> float | None:
    if not raw:  # unset (or 0, which no apiserver accepts): the default
        return float(DEFAULT_DURATION)
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None
