"""KEP-1645 aggregation: the ServiceExports of every cluster -> one ServiceImport + conditions.

Rules (KEP-1645 "Constraints and Conflict Resolution"; mcs-api conformance):
- an export is Valid when its Service exists and is not ExternalName, its
  clusterSelectors (KEP-5939) are readable and not on a headless Service, and its
  clusterset.io/export-to is readable;
- precedence is the oldest ServiceExport creationTimestamp, ties broken by cluster ID;
- ports are the union, merged by name then by (protocol, port); a name or
  (protocol, port) already taken by an older export is dropped; PortConflict
  when the exports' port sets differ at all (conformance expects it even
  when the union merges cleanly);
- type (headlessness), session affinity (+config), internalTrafficPolicy,
  trafficDistribution, IP families, exported labels/annotations, clusterSelectors (the
  whole ordered list) and clusterSelectorsFallbackPolicy: the oldest wins (IP
  families: not the intersection, so that a later export cannot take a family and its
  ClusterSetIP away from clients; the same set in another order is no conflict);
- the clusters it is exported to (clusterset.io/export-to, enhancements#6329): a set, the
  oldest's wins; the exporting clusters import it too ("the service is also imported by
  its local cluster"), so the consumers are that set and every valid exporter;
- each conflict's message names the field and both values (the first disagreeing
  export's and the oldest's);
- Conflict=True (reasons comma-joined) on every valid export of a conflicted service;
- the ServiceImport exists while at least one valid export does.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from clusterset.model import clusterselect, exportto, labels
from clusterset.model.conditions import Condition, ConditionType, Reason, Status
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import (
    ImportType,
    IPFamily,
    Service,
    ServiceExport,
    ServicePort,
    ServiceType,
    family_of,
)
from clusterset.model.state import ClusterSetState


@dataclass(frozen=True, slots=True)
class Contribution:
    """One valid export: the cluster, its ServiceExport and Service."""

    cluster: ClusterId
    export: ServiceExport
    service: Service


@dataclass(frozen=True, slots=True)
class Aggregate:
    """The desired ServiceImport spec (without IPs) and every export's conditions."""

    key: ServiceKey
    type: ImportType | None  # None: no valid export, no ServiceImport
    ports: tuple[ServicePort, ...]
    ip_families: tuple[IPFamily, ...]
    session_affinity: str
    session_affinity_timeout: int | None
    internal_traffic_policy: str
    traffic_distribution: str
    exported_labels: tuple[tuple[str, str], ...]
    exported_annotations: tuple[tuple[str, str], ...]
    annotations: tuple[tuple[str, str], ...]
    contributions: tuple[Contribution, ...]  # oldest first
    conditions: dict[ClusterId, tuple[Condition, ...]]
    clusters: tuple[ClusterId, ...] = ()  # the exporting clusters, sorted (computed once)
    cluster_selectors: tuple[clusterselect.ClusterSelector, ...] = ()
    cluster_selectors_fallback_policy: str = clusterselect.ALL_CLUSTERS
    # The clusters that import it: the export-to set and the exporting clusters; None:
    # every cluster of the clusterset (no export-to).
    consumers: frozenset[ClusterId] | None = None

    def consumes(self, cluster: ClusterId) -> bool:
        """Whether `cluster` is meant to hold the ServiceImport (namespaces aside)."""
        return self.consumers is None or cluster in self.consumers


def _families(svc: Service) -> tuple[IPFamily, ...]:
    if svc.ip_families:
        return svc.ip_families
    if svc.cluster_ips:
        return tuple(dict.fromkeys(family_of(ip) for ip in svc.cluster_ips))
    return (IPFamily.IPV4,)


def merge_ports(port_sets: list[tuple[ServicePort, ...]]) -> tuple[ServicePort, ...]:
    """Union by name, then by (protocol, port); older sets first win every collision."""
    by_name: dict[str, ServicePort] = {}
    by_number: dict[tuple[str, int], ServicePort] = {}
    merged: list[ServicePort] = []
    for ports in port_sets:
        for p in ports:
            number = (p.protocol.value, p.port)
            if p.name and p.name in by_name:
                continue  # same name: identical, or a conflict the older export wins
            if number in by_number:
                continue
            if p.name:
                by_name[p.name] = p
            by_number[number] = p
            merged.append(p)
    return tuple(merged)


def _port_set(svc: Service) -> frozenset[tuple[str, str, int]]:
    return frozenset((p.name, p.protocol.value, p.port) for p in svc.ports)


_CHECKS: tuple[tuple[Reason, str, Callable[[Contribution], Hashable]], ...] = (
    (Reason.TYPE_CONFLICT, "type", lambda c: c.service.headless),
    (Reason.PORT_CONFLICT, "ports", lambda c: _port_set(c.service)),
    (Reason.SESSION_AFFINITY_CONFLICT, "sessionAffinity", lambda c: c.service.session_affinity),
    (
        Reason.SESSION_AFFINITY_CONFIG_CONFLICT,
        "sessionAffinityConfig",
        lambda c: (
            c.service.session_affinity_timeout if c.service.session_affinity == "ClientIP" else None
        ),
    ),
    (
        Reason.INTERNAL_TRAFFIC_POLICY_CONFLICT,
        "internalTrafficPolicy",
        lambda c: c.service.internal_traffic_policy or "Cluster",
    ),
    (
        Reason.TRAFFIC_DISTRIBUTION_CONFLICT,
        "trafficDistribution",
        lambda c: c.service.traffic_distribution,
    ),
    (Reason.IP_FAMILY_CONFLICT, "ipFamilies", lambda c: frozenset(_families(c.service))),
    (Reason.LABELS_CONFLICT, "exportedLabels", lambda c: c.export.exported_labels),
    (Reason.ANNOTATIONS_CONFLICT, "exportedAnnotations", lambda c: c.export.exported_annotations),
    (Reason.CLUSTER_SELECTORS_CONFLICT, "clusterSelectors", lambda c: c.export.cluster_selectors),
    (
        Reason.CLUSTER_SELECTORS_FALLBACK_POLICY_CONFLICT,
        "clusterSelectorsFallbackPolicy",
        lambda c: c.export.cluster_selectors_fallback_policy,
    ),
    (Reason.EXPORT_TO_CONFLICT, exportto.ANNOTATION, lambda c: c.export.export_to),
)


def _port_text(p: ServicePort) -> str:
    return f"{p.name + ':' if p.name else ''}{p.port}/{p.protocol.value}"


def _port_difference(c: Contribution, oldest: Contribution) -> str:
    """The first port of `c` that the oldest export does not have as is, and the oldest's
    port it collides with (same name, else same protocol and number); or the first of the
    oldest's ports that `c` lacks."""
    theirs = oldest.service.ports
    have = _port_set(oldest.service)
    for p in c.service.ports:
        if (p.name, p.protocol.value, p.port) in have:
            continue
        clash = next((q for q in theirs if p.name and q.name == p.name), None) or next(
            (q for q in theirs if (q.protocol, q.port) == (p.protocol, p.port)), None
        )
        if clash is None:
            return (
                f"port {_port_text(p)} of {c.cluster} is not among the oldest export's "
                f"({oldest.cluster}: {', '.join(map(_port_text, theirs)) or 'none'})"
            )
        return (
            f"port {_port_text(p)} of {c.cluster} differs from the oldest export's "
            f"({oldest.cluster}, {_port_text(clash)}); using the oldest's"
        )
    mine = _port_set(c.service)
    lost = next(q for q in theirs if (q.name, q.protocol.value, q.port) not in mine)
    return (
        f"the oldest export's port {_port_text(lost)} ({oldest.cluster}) is missing in {c.cluster}"
    )


def _pairs_difference(kind: str, mine: tuple[tuple[str, str], ...], theirs: dict[str, str]) -> str:
    """`kind` k=v of the first key whose value differs (or that only one side has)."""
    ours = dict(mine)
    key = next(k for k in sorted(ours.keys() | theirs.keys()) if ours.get(k) != theirs.get(k))
    return f"{kind} {key}={ours.get(key, '(unset)')}"


def _selectors_difference(c: Contribution, oldest: Contribution) -> str:
    """The first entry (by index) where `c`'s list differs from the oldest's, both sides."""
    mine, theirs = c.export.cluster_selectors, oldest.export.cluster_selectors
    i = next(i for i, (a, b) in enumerate(itertools.zip_longest(mine, theirs)) if a != b)

    def entry(selectors: tuple[clusterselect.ClusterSelector, ...]) -> str:
        return clusterselect.text(selectors[i]) if i < len(selectors) else "(unset)"

    return (
        f"clusterSelectors[{i}] {entry(mine)} of {c.cluster} differs from the oldest export's "
        f"({oldest.cluster}, clusterSelectors[{i}] {entry(theirs)}); using the oldest's"
    )


def _value_text(reason: Reason, c: Contribution) -> str:
    """`c`'s value of the field `reason` compares, as a condition message names it."""
    svc = c.service
    if reason is Reason.TYPE_CONFLICT:
        return "Headless" if svc.headless else "ClusterSetIP"
    if reason is Reason.SESSION_AFFINITY_CONFLICT:
        return svc.session_affinity
    if reason is Reason.SESSION_AFFINITY_CONFIG_CONFLICT:
        timeout = svc.session_affinity_timeout if svc.session_affinity == "ClientIP" else None
        return f"timeoutSeconds {timeout}" if timeout is not None else "none"
    if reason is Reason.INTERNAL_TRAFFIC_POLICY_CONFLICT:
        return svc.internal_traffic_policy or "Cluster"
    if reason is Reason.TRAFFIC_DISTRIBUTION_CONFLICT:
        return svc.traffic_distribution or "(unset)"
    if reason is Reason.IP_FAMILY_CONFLICT:
        return ",".join(f.value for f in _families(svc))
    if reason is Reason.CLUSTER_SELECTORS_FALLBACK_POLICY_CONFLICT:
        return c.export.cluster_selectors_fallback_policy
    if reason is Reason.EXPORT_TO_CONFLICT:
        return exportto.text(c.export.export_to)
    raise AssertionError(reason)


def _difference(reason: Reason, c: Contribution, oldest: Contribution) -> str:
    """How disagreeing export `c` differs from the oldest, naming both values."""
    if reason is Reason.PORT_CONFLICT:
        return _port_difference(c, oldest)
    if reason is Reason.CLUSTER_SELECTORS_CONFLICT:
        return _selectors_difference(c, oldest)
    if reason in (Reason.LABELS_CONFLICT, Reason.ANNOTATIONS_CONFLICT):
        kind = "label" if reason is Reason.LABELS_CONFLICT else "annotation"
        mine, theirs = (
            (c.export.exported_labels, oldest.export.exported_labels)
            if reason is Reason.LABELS_CONFLICT
            else (c.export.exported_annotations, oldest.export.exported_annotations)
        )
        return (
            f"{_pairs_difference(kind, mine, dict(theirs))} of {c.cluster} differs from the "
            f"oldest export's ({oldest.cluster}, {_pairs_difference(kind, theirs, dict(mine))}); "
            "using the oldest's"
        )
    return (
        f"{_value_text(reason, c)} of {c.cluster} differs from the oldest export's "
        f"({oldest.cluster}, {_value_text(reason, oldest)}); using the oldest's"
    )


# Our annotations that are read from the oldest export, not carried to the import.
_INPUTS = frozenset({clusterselect.ANNOTATION, exportto.ANNOTATION})


def aggregate(state: ClusterSetState, key: ServiceKey) -> Aggregate:
    """Level-based: a function of the whole state for one service key, nothing else."""
    conditions: dict[ClusterId, tuple[Condition, ...]] = {}
    valid: list[Contribution] = []
    for cid in sorted(state.clusters):
        cs = state.clusters[cid]
        export = cs.exports.get(key)
        if export is None:
            continue
        svc = cs.services.get(key)
        if svc is None:
            conditions[cid] = _invalid(Reason.NO_SERVICE, f"Service {key} not found")
        elif svc.type is ServiceType.EXTERNAL_NAME:
            conditions[cid] = _invalid(
                Reason.INVALID_SERVICE_TYPE, "ExternalName Services cannot be exported"
            )
        elif export.cluster_selectors_problem:
            conditions[cid] = _invalid(
                Reason.INVALID_CLUSTER_SELECTOR, export.cluster_selectors_problem
            )
        elif export.export_to_problem:
            conditions[cid] = _invalid(Reason.INVALID_EXPORT_TO, export.export_to_problem)
        elif svc.headless and export.cluster_selectors:
            # KEP-5939: a headless import answers pod IPs of every cluster; no selection.
            conditions[cid] = _invalid(
                Reason.INVALID_SERVICE_TYPE,
                "spec.clusterSelectors: cluster selection applies to ClusterIP Services only, "
                "not to a headless one",
            )
        else:
            valid.append(Contribution(cid, export, svc))
    valid.sort(key=lambda c: (c.export.created, c.cluster))
    if not valid:
        return Aggregate(key, None, (), (), "None", None, "", "", (), (), (), (), conditions)
    oldest = valid[0]
    reasons: list[str] = []
    messages: list[str] = []
    for reason, field, value in _CHECKS:
        want = value(oldest)
        disagree = [c for c in valid if value(c) != want]
        if disagree:
            reasons.append(reason.value)
            messages.append(
                f"Conflicting {field}: {_difference(reason, disagree[0], oldest)}. "
                f"{len(disagree)}/{len(valid)} clusters disagree."
            )
    if reasons:
        conflict = Condition(
            ConditionType.CONFLICT, Status.TRUE, ",".join(reasons), " ".join(messages)
        )
    else:
        conflict = Condition(ConditionType.CONFLICT, Status.FALSE, Reason.NO_CONFLICTS.value)
    for c in valid:
        conditions[c.cluster] = (
            Condition(ConditionType.VALID, Status.TRUE, Reason.VALID.value),
            Condition(
                ConditionType.READY,
                Status.TRUE,
                Reason.EXPORTED.value,
                f"exported; ServiceImport has {len(valid)} cluster(s)",
            ),
            conflict,
        )
    svc = oldest.service
    exporters = tuple(sorted(c.cluster for c in valid))
    export_to = oldest.export.export_to
    return Aggregate(
        key=key,
        type=ImportType.HEADLESS if svc.headless else ImportType.CLUSTER_SET_IP,
        ports=merge_ports([c.service.ports for c in valid]),
        ip_families=_families(svc),
        session_affinity=svc.session_affinity,
        session_affinity_timeout=svc.session_affinity_timeout
        if svc.session_affinity == "ClientIP"
        else None,
        internal_traffic_policy=svc.internal_traffic_policy,
        traffic_distribution=svc.traffic_distribution,
        exported_labels=oldest.export.exported_labels,
        exported_annotations=oldest.export.exported_annotations,
        annotations=tuple(
            (k, v)
            for k, v in oldest.export.annotations
            # inputs, not policies: the import gets the resolved selectors; export-to
            # decides who imports
            if k.startswith(labels.PREFIX) and k not in _INPUTS
        ),
        contributions=tuple(valid),
        conditions=conditions,
        clusters=exporters,
        cluster_selectors=oldest.export.cluster_selectors,
        cluster_selectors_fallback_policy=oldest.export.cluster_selectors_fallback_policy,
        consumers=None if export_to is None else export_to | frozenset(exporters),
    )


def _invalid(reason: Reason, message: str) -> tuple[Condition, ...]:
    return (
        Condition(ConditionType.VALID, Status.FALSE, reason.value, message),
        Condition(
            ConditionType.READY, Status.FALSE, Reason.FAILED.value, "not exported: " + message
        ),
    )
