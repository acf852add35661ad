"""Where Karmada will place a resource template: its policy and that policy's clusters.

The pre-flight check of a ServiceExport applied to the karmada-apiserver runs in the members
Karmada propagates it to. Those are, in order of certainty: the ResourceBinding's clusters (the
scheduler already decided), else the clusters the matching PropagationPolicy (before any
ClusterPropagationPolicy) selects, as Karmada's detector and scheduler filters choose them
(pkg/detector/compare.go, pkg/util/selector.go, the TaintToleration plugin of v1.18.2). What the
scheduler decides with information a template does not carry (clusterAffinities tried in turn,
spreadConstraints, which depend on cluster resources) is not guessed: `Placement.unsure` says so.

Pure: objects are the API's dicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = Mapping[str, Any]

# ImplicitPriority of Karmada's ResourceSelectorPriority.
MISMATCH, MATCH_ALL, MATCH_LABELS, MATCH_NAME = 0, 1, 2, 3
# The annotations with which a policy claims a template (Karmada's well_known_constants.go).
CLAIMED_BY = "propagationpolicy.karmada.io/name"
CLAIMED_BY_NAMESPACE = "propagationpolicy.karmada.io/namespace"
CLAIMED_BY_CLUSTER_POLICY = "clusterpropagationpolicy.karmada.io/name"
CLAIMED_BY_ID = "propagationpolicy.karmada.io/permanent-id"
CLAIMED_BY_CLUSTER_POLICY_ID = "clusterpropagationpolicy.karmada.io/permanent-id"
CLAIMS = (CLAIMED_BY, CLAIMED_BY_NAMESPACE, CLAIMED_BY_CLUSTER_POLICY)
CLAIM_LABELS = (CLAIMED_BY_ID, CLAIMED_BY_CLUSTER_POLICY_ID)


@dataclass(frozen=True, slots=True)
class Placement:
    """The members a template goes to; `policy` names what decided it ("" if none did);
    `unsure` says why the members cannot be known before Karmada schedules (then empty)."""

    members: tuple[str, ...]
    policy: str = ""
    unsure: str = ""


def binding_name(kind: str, name: str) -> str:
    """Karmada's names.GenerateBindingName: the ResourceBinding of a namespaced template."""
    return f"{name.replace(':', '.')}-{kind}".lower()


def labels_match(selector: Obj | None, labels: Mapping[str, str]) -> bool:
    """metav1.LabelSelector semantics (nil selector: handled by callers; {}: everything)."""
    if selector is None:
        return True
    if not isinstance(selector, Mapping):
        return False
    for key, value in dict(selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    return all(
        _requirement(str(e.get("operator", "")), labels.get(str(e.get("key", ""))), e)
        for e in _dicts(selector.get("matchExpressions"))
    )


def _dicts(value: object) -> list[Obj]:
    """The mappings of a list field (anything else: none; the CRD schemas make it a list)."""
    return [v for v in value if isinstance(v, Mapping)] if isinstance(value, list) else []


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def _requirement(op: str, value: str | None, expr: Obj, *, numeric: bool = False) -> bool:
    """One requirement; Gt/Lt only where `numeric` (a NodeSelectorRequirement: Karmada's
    fieldSelector). One Kubernetes rejects (In/NotIn without values...) matches nothing, as
    Karmada's failed parse does."""
    values = _strings(expr.get("values"))
    if op in ("In", "NotIn"):
        if not values:
            return False
        if op == "In":
            return value is not None and value in values
        return value is None or value not in values
    if op == "Exists":
        return value is not None
    if op == "DoesNotExist":
        return value is None
    if numeric and op in ("Gt", "Lt") and value is not None and len(values) == 1:
        try:
            a, b = int(value), int(values[0])
        except ValueError:
            return False
        return a > b if op == "Gt" else a < b
    return False


def selector_priority(selector: Obj, template: Obj) -> int:
    """Karmada's ResourceSelectorPriority of one resourceSelector for `template`."""
    meta = template.get("metadata") or {}
    if (
        selector.get("apiVersion") != template.get("apiVersion")
        or selector.get("kind") != template.get("kind")
        or (selector.get("namespace") and selector.get("namespace") != meta.get("namespace"))
    ):
        return MISMATCH
    if selector.get("name"):
        return MATCH_NAME if selector["name"] == meta.get("name") else MISMATCH
    if selector.get("labelSelector") is None:
        return MATCH_ALL
    return (
        MATCH_LABELS
        if labels_match(selector["labelSelector"], meta.get("labels") or {})
        else MISMATCH
    )


def _highest(policies: Iterable[Obj], template: Obj) -> Obj | None:
    """getHighestPriorityPropagationPolicy: explicit priority, then implicit, then name."""
    best: tuple[int, int, str] | None = None
    chosen: Obj | None = None
    for policy in policies:
        spec = policy.get("spec") or {}
        if (policy.get("metadata") or {}).get("deletionTimestamp"):
            continue  # being deleted: Karmada's detector skips it
        implicit = max(
            (selector_priority(s, template) for s in _dicts(spec.get("resourceSelectors"))),
            default=MISMATCH,
        )
        if implicit == MISMATCH:
            continue
        name = str((policy.get("metadata") or {}).get("name", ""))
        priority = spec.get("priority")
        rank = (priority if isinstance(priority, int) else 0, implicit)
        if best is None or rank > best[:2] or (rank == best[:2] and name < best[2]):
            best, chosen = (*rank, name), policy
    return chosen


def policy_for(
    template: Obj, policies: Iterable[Obj], cluster_policies: Iterable[Obj]
) -> Obj | None:
    """The policy Karmada binds `template` to (detector/policy.go propagateResource): the
    one that claimed it already (its annotations), else a PropagationPolicy of its
    namespace, else a ClusterPropagationPolicy."""
    ns = (template.get("metadata") or {}).get("namespace")
    own = [p for p in policies if (p.get("metadata") or {}).get("namespace") == ns]
    claimed = claim(template)
    if claimed is not None:
        kind, name = claimed.split(" ", 1)
        found = next(
            (
                p
                for p in (own if kind == "PropagationPolicy" else cluster_policies)
                if (p.get("metadata") or {}).get("name") == name
            ),
            None,
        )
        if found is not None:
            return found
        # Gone: Karmada cleans the claim up and matches again.
    return _highest(own, template) or _highest(cluster_policies, template)


def claim(obj: Obj) -> str | None:
    """The policy (as `Placement.policy` names it) that claimed a template or whose
    ResourceBinding this is: Karmada's claim annotations with their permanent-id label."""
    meta = obj.get("metadata") or {}
    annotations, labels = meta.get("annotations") or {}, meta.get("labels") or {}
    if annotations.get(CLAIMED_BY) and labels.get(CLAIMED_BY_ID):
        return f"PropagationPolicy {annotations[CLAIMED_BY]}"
    if annotations.get(CLAIMED_BY_CLUSTER_POLICY) and labels.get(CLAIMED_BY_CLUSTER_POLICY_ID):
        return f"ClusterPropagationPolicy {annotations[CLAIMED_BY_CLUSTER_POLICY]}"
    return None


def skipped_namespace(namespace: str) -> bool:
    """Karmada propagates nothing from its own namespaces, nor (by default,
    --skipped-propagating-namespaces) from kube-*."""
    return namespace in ("karmada-system", "karmada-cluster") or namespace.startswith(
        ("karmada-es-", "kube-")
    )


def cluster_matches(affinity: Obj, cluster: Obj) -> bool:
    """Karmada's ClusterMatches of one clusterAffinity."""
    meta = cluster.get("metadata") or {}
    name = str(meta.get("name", ""))
    if name in _strings(affinity.get("exclude")):
        return False
    if affinity.get("labelSelector") is not None and not labels_match(
        affinity["labelSelector"], meta.get("labels") or {}
    ):
        return False
    spec = cluster.get("spec") or {}
    fields = {f: str(spec[f]) for f in ("provider", "region") if spec.get(f)}
    for expr in _dicts((affinity.get("fieldSelector") or {}).get("matchExpressions")):
        op, key = str(expr.get("operator", "")), str(expr.get("key", ""))
        if key == "zone":
            if not _zones_match(op, expr, _strings(spec.get("zones"))):
                return False
        elif not _requirement(op, fields.get(key), expr, numeric=True):
            return False
    names = _strings(affinity.get("clusterNames"))
    return not names or name in names


def _zones_match(op: str, expr: Obj, zones: Sequence[str]) -> bool:
    values = _strings(expr.get("values"))
    if op == "In":
        return any(z in values for z in zones)
    if op == "NotIn":
        return not any(z in values for z in zones)
    if op == "Exists":
        return bool(zones)
    if op == "DoesNotExist":
        return not zones
    return False


def _tolerated(taint: Obj, tolerations: Sequence[Obj]) -> bool:
    """corev1 Toleration.ToleratesTaint, without the Gt/Lt operators (as Karmada calls it)."""
    for t in tolerations:
        if t.get("effect") and t.get("effect") != taint.get("effect"):
            continue
        if t.get("key") and t.get("key") != taint.get("key"):
            continue
        op = t.get("operator") or "Equal"
        if op == "Exists" or (
            op == "Equal" and (t.get("value") or "") == (taint.get("value") or "")
        ):
            return True
    return False


def schedulable(cluster: Obj, placement: Obj) -> bool:
    """The TaintToleration filter: no NoSchedule/NoExecute taint left untolerated."""
    tolerations = _dicts(placement.get("clusterTolerations"))
    return all(
        _tolerated(t, tolerations)
        for t in _dicts((cluster.get("spec") or {}).get("taints"))
        if t.get("effect") in ("NoSchedule", "NoExecute")
    )


def placement_of(policy: Obj, clusters: Mapping[str, Obj]) -> Placement:
    """The members `policy` places a (replica-less) template in, or why it cannot be said."""
    meta = policy.get("metadata") or {}
    kind = "PropagationPolicy" if meta.get("namespace") else "ClusterPropagationPolicy"
    label = f"{kind} {meta.get('name', '')}"
    placement = (policy.get("spec") or {}).get("placement") or {}
    if not isinstance(placement, Mapping):
        return Placement((), label, "its placement is not an object")
    if placement.get("clusterAffinities"):
        return Placement((), label, "its clusterAffinities are tried in turn by the scheduler")
    if placement.get("spreadConstraints"):
        return Placement((), label, "its spreadConstraints pick among clusters by their resources")
    affinity = placement.get("clusterAffinity") or {}
    if not isinstance(affinity, Mapping):
        return Placement((), label, "its clusterAffinity is not an object")
    members = tuple(
        sorted(
            name
            for name, cluster in clusters.items()
            if not (cluster.get("metadata") or {}).get("deletionTimestamp")  # being unjoined
            and cluster_matches(affinity, cluster)
            and schedulable(cluster, placement)
        )
    )
    return Placement(members, label)


def placement(
    template: Obj,
    *,
    binding: Obj | None,
    policies: Iterable[Obj],
    cluster_policies: Iterable[Obj],
    clusters: Mapping[str, Obj],
) -> Placement:
    """Where `template` goes: the binding's clusters once scheduled, else its policy's."""
    if skipped_namespace(str((template.get("metadata") or {}).get("namespace", ""))):
        return Placement(())
    if binding is not None:
        targets = (binding.get("spec") or {}).get("clusters")
        if targets:
            members = tuple(sorted(str(t.get("name", "")) for t in _dicts(targets)))
            return Placement(members, f"ResourceBinding {binding_label(binding)}")
    policy = policy_for(template, policies, cluster_policies)
    if policy is None:
        return Placement(())
    return placement_of(policy, clusters)


def binding_label(binding: Obj) -> str:
    meta = binding.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"
