"""Pre-flight: what exporting one service from one cluster would change, before it happens.

Pure: the observed ClusterSetState, the proposed ServiceExport (and optionally the
Service it names) in, a Finding out. `clusterset check` and the admission webhook
both call `check`; neither re-implements a KEP rule. The comparison is between

- *before*: the clusterset as observed, with the proposed cluster NOT exporting the
  service (for a Service-only change: the clusterset as observed), and
- *after*: the same with the proposed export (and Service) in place,

each run through the same `aggregate` and `reconcile` as the controller, for that one
service: the cost of a check does not grow with the fleet. The DNS answers come from a
caller-supplied `answer(view, key)` (the zone layer is a sibling of this one, so it is
passed in, not imported). `ips` needs only the checked key's ClusterSetIPs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from clusterset.model.conditions import ConditionType, Status
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.objects import ImportType, Service, ServiceExport, ServicePort
from clusterset.model.state import ClusterSetState, ImportedView
from clusterset.reconcile import desired as rd
from clusterset.reconcile.aggregate import Aggregate, aggregate

# The answer of `<svc>.<ns>.svc.<zone>` as lines ("A 10.250.0.1", "NXDOMAIN"...).
AnswerFn = Callable[[ImportedView, ServiceKey], tuple[str, ...]]
# Shown instead of an address when the import would get a ClusterSetIP not allocated yet.
NEW_CLUSTERSET_IP = "A/AAAA <a new ClusterSetIP, allocated when exported>"


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """The merged ServiceImport's spec as a consumer sees it (what `check` compares)."""

    type: str
    ports: tuple[str, ...]
    ip_families: tuple[str, ...]
    session_affinity: str
    clusters: tuple[ClusterId, ...]


@dataclass(frozen=True, slots=True)
class ConflictFinding:
    """One export that would report Conflict=True, and the export whose values win."""

    cluster: ClusterId
    reasons: tuple[str, ...]
    message: str
    winner: ClusterId


@dataclass(frozen=True, slots=True)
class AnswerChange:
    """One consumer's answer for the service name, before and after."""

    consumer: ClusterId
    before: tuple[str, ...]
    after: tuple[str, ...]

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True, slots=True)
class Finding:
    key: ServiceKey
    cluster: ClusterId
    before: ImportSummary | None
    after: ImportSummary | None
    conflicts: tuple[ConflictFinding, ...]
    winner: ClusterId | None  # the oldest valid export after the change
    invalid: str  # why the proposed export would not be Valid ("" when it would be)
    answers: tuple[AnswerChange, ...]
    dropped_ports: tuple[str, ...] = ()  # ports of the proposed export left out of the merge

    @property
    def fails(self) -> bool:
        """Exit 1 of `check`: a Conflict somewhere, or the export itself invalid."""
        return bool(self.conflicts) or bool(self.invalid)

    def warnings(self) -> list[str]:
        """One line per problem, short enough for an admission warning (kubectl prints them)."""
        out: list[str] = []
        if self.invalid:
            out.append(
                f"clusterset: export {self.key} in {self.cluster} would be invalid: {self.invalid}"
            )
        if self.dropped_ports:
            out.append(
                f"clusterset: {self.key} ports {', '.join(self.dropped_ports)} of {self.cluster} "
                f"would not be in the merged ServiceImport"
            )
        out.extend(
            f"clusterset: {self.key} in {c.cluster} would report Conflict "
            f"({','.join(c.reasons)}); the oldest export, in {c.winner}, wins: {c.message}"
            for c in self.conflicts
        )
        if self.conflicts:
            out.extend(
                f"clusterset: answer of {self.key.name}.{self.key.namespace}.svc in "
                f"{a.consumer} changes: {'; '.join(a.before) or '-'} -> "
                f"{'; '.join(a.after) or '-'}"
                for a in self.answers
                if a.changed
            )
        return out


def port_text(p: ServicePort) -> str:
    return f"{p.name + ':' if p.name else ''}{p.port}/{p.protocol.value}"


def summary(agg: Aggregate) -> ImportSummary | None:
    if agg.type is None:
        return None
    return ImportSummary(
        type=agg.type.value,
        ports=tuple(port_text(p) for p in agg.ports),
        ip_families=tuple(f.value for f in agg.ip_families),
        session_affinity=agg.session_affinity,
        clusters=agg.clusters,
    )


def proposed_states(
    state: ClusterSetState,
    *,
    cluster: ClusterId,
    key: ServiceKey,
    export: ServiceExport | None,
    service: Service | None,
) -> tuple[ClusterSetState, ClusterSetState]:
    """(before, after). `export` None: a Service-only change, the observed export stays."""
    cs = state.clusters[cluster]
    exports = dict(cs.exports)
    services = dict(cs.services)
    if export is not None:
        exports.pop(key, None)
    before = replace(cs, exports=dict(exports))
    if export is not None:
        exports[key] = export
    if service is not None:
        services[key] = service
    after = replace(
        cs, exports=exports, services=services, namespaces=cs.namespaces | {key.namespace}
    )
    return (
        ClusterSetState({**state.clusters, cluster: before}),
        ClusterSetState({**state.clusters, cluster: after}),
    )


def _answers(
    state: ClusterSetState,
    agg: Aggregate,
    ips: Mapping[tuple[ClusterId, ServiceKey], tuple[str, ...]],
    answer: AnswerFn,
) -> dict[ClusterId, tuple[str, ...]]:
    """Each consumer's answer for `agg.key`, reconciling that one key only: a key's imports,
    slices and answers depend on its own exports, so the rest of the fleet is not needed
    (the webhook runs this at every `kubectl apply`)."""
    key = agg.key
    mine = {(cid, key): ips[(cid, key)] for cid in state.clusters if (cid, key) in ips}
    desired = rd.reconcile(state, ips=mine, aggregates={key: agg})
    out: dict[ClusterId, tuple[str, ...]] = {}
    for cid, cd in sorted(desired.clusters.items()):
        imp = cd.imports.get(key)
        if imp is not None and imp.type is ImportType.CLUSTER_SET_IP and not imp.ips:
            out[cid] = (NEW_CLUSTERSET_IP, *_srv_only(answer(desired.view(cid, state, 1), key)))
        else:
            out[cid] = answer(desired.view(cid, state, 1), key)
    return out


def _srv_only(lines: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(line for line in lines if line.startswith("SRV"))


def check(
    state: ClusterSetState,
    *,
    cluster: ClusterId,
    key: ServiceKey,
    export: ServiceExport | None,
    service: Service | None = None,
    ips: Mapping[tuple[ClusterId, ServiceKey], tuple[str, ...]],
    answer: AnswerFn,
) -> Finding:
    """What exporting `key` from `cluster` would change. `ips`: today's ClusterSetIPs."""
    before, after = proposed_states(state, cluster=cluster, key=key, export=export, service=service)
    agg_before = aggregate(before, key)
    agg_after = aggregate(after, key)
    winner = agg_after.contributions[0].cluster if agg_after.contributions else None
    conflicts: list[ConflictFinding] = []
    invalid = ""
    for cid, conds in sorted(agg_after.conditions.items()):
        for c in conds:
            if c.type is ConditionType.VALID and c.status is Status.FALSE and cid == cluster:
                invalid = f"{c.reason}: {c.message}"
            if c.type is ConditionType.CONFLICT and c.status is Status.TRUE and winner is not None:
                conflicts.append(
                    ConflictFinding(cid, tuple(c.reason.split(",")), c.message, winner)
                )
    mine = next((c for c in agg_after.contributions if c.cluster == cluster), None)
    dropped = (
        tuple(port_text(p) for p in mine.service.ports if p not in agg_after.ports)
        if mine is not None
        else ()
    )
    answers_before = _answers(before, agg_before, ips, answer)
    answers_after = _answers(after, agg_after, ips, answer)
    answers = tuple(
        AnswerChange(cid, answers_before.get(cid, ()), answers_after.get(cid, ()))
        for cid in sorted(set(answers_before) | set(answers_after))
    )
    return Finding(
        key=key,
        cluster=cluster,
        before=summary(agg_before),
        after=summary(agg_after),
        conflicts=tuple(conflicts),
        winner=winner,
        invalid=invalid,
        answers=answers,
        dropped_ports=dropped,
    )
