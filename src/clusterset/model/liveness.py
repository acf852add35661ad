"""Per-source-cluster liveness Leases (KEP-1645 "Endpoint TTL"), without I/O: their names,
how the hub writes one, and how a reader (member DNS, `status`) reads one.

While the hub reaches a source cluster, it renews that source's Lease in every consumer
cluster every quarter of the Lease's duration (as the kubelet renews its 40 s node Lease
every 10 s). A consumer's DNS stops counting the source's endpoints once renewTime +
leaseDurationSeconds has passed: a hub cut off from the source stops renewing it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from clusterset.model.ids import ClusterId
from clusterset.model.labels import LABEL_OWNED, PREFIX

SOURCE_LABEL = PREFIX + "source-cluster"  # the source cluster the Lease vouches for
# The consumer the Lease lives in, by the ID the hub knows it by: a member DNS without
# --cluster or a ClusterProperty learns its own ID there (local-first needs it).
CONSUMER_LABEL = PREFIX + "consumer-cluster"
NAME_PREFIX = "clusterset-source-"  # + source ID; the chart's RBAC grants patch on these
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
    source: ClusterId, *, consumer: ClusterId, namespace: str, renewed: str, duration: int
) -> dict[str, Any]:
    """The Lease of `source` as the hub keeps it in `consumer` (renewed: a MicroTime)."""
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": NAME_PREFIX + source,
            "namespace": namespace,
            "labels": {SOURCE_LABEL: source, CONSUMER_LABEL: consumer, LABEL_OWNED: "true"},
        },
        "spec": {"holderIdentity": HOLDER, "leaseDurationSeconds": duration, "renewTime": renewed},
    }


@dataclass(frozen=True, slots=True)
class SourceLease:
    """What one liveness Lease says. Label values are as found (unchecked)."""

    source: str
    consumer: str
    renew_time: str  # spec.renewTime as written ("" when missing)
    renewed: float | None  # it in unix seconds; None when missing or unreadable
    duration: float | None  # leaseDurationSeconds, DEFAULT_DURATION when unset; None: unreadable

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
    labels = (lease.get("metadata") or {}).get("labels") or {}
    spec = lease.get("spec") or {}
    renew_time = str(spec.get("renewTime") or "")
    return SourceLease(
        source=str(labels.get(SOURCE_LABEL, "")),
        consumer=str(labels.get(CONSUMER_LABEL, "")),
        renew_time=renew_time,
        renewed=_unix(renew_time),
        duration=_duration(spec.get("leaseDurationSeconds")),
    )


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
