"""KEP-5939 cluster selection: `clusterSelectors` and `clusterSelectorsFallbackPolicy`.

A ServiceExport (and the ServiceImport reconciled from it) may carry an ordered list of
cluster selectors; each entry's `propertySelector` is a metav1.LabelSelector evaluated
against a cluster's ClusterProperty map, where the value `@SameAsImporter@` stands for the
importing cluster's own value of that key ("" when it has none). The first entry whose
clusters have an available endpoint is used (zone.policy); none: the fallback policy.

Parsing returns a problem string naming the field (`spec.clusterSelectors[1].propertySelector:
empty`), never raises: a bad selector is a ServiceExport condition, not a lost object.
The annotation `clusterset.io/cluster-selectors` carries the same two fields as JSON (or
YAML) where a member's CRDs (Karmada's v1alpha1) prune them from `spec`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import yaml

from clusterset.model import selector
from clusterset.model.labels import PREFIX

SAME_AS_IMPORTER = "@SameAsImporter@"
MAX_SELECTORS = 16  # +kubebuilder:validation:items:MaxItems
ALL_CLUSTERS = "AllClusters"
NONE = "None"
FALLBACK_POLICIES = (ALL_CLUSTERS, NONE)
ANNOTATION = PREFIX + "cluster-selectors"
SELECTORS = "clusterSelectors"
FALLBACK = "clusterSelectorsFallbackPolicy"
OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!exists"}
# What the annotation may expand to (aliases counted each time they are used): a bomb in a
# 256 KiB annotation must cost a bounded walk, as in manifests.load.
_MAX_NODES = 10_000


@dataclass(frozen=True, slots=True)
class LabelSelectorRequirement:
    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """metav1.LabelSelector; values may be `@SameAsImporter@`. Equal when the API objects
    are (matchLabels is a map: sorted; matchExpressions and values keep their order)."""

    match_labels: tuple[tuple[str, str], ...] = ()
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()


@dataclass(frozen=True, slots=True)
class ClusterSelector:
    """One entry of `clusterSelectors` (the KEP plans more criteria beside propertySelector)."""

    property_selector: LabelSelector


@dataclass(frozen=True, slots=True)
class PreparedSelector:
    """A ClusterSelector bound to one importing cluster: `@SameAsImporter@` substituted."""

    requirements: tuple[selector.Requirement, ...]

    def matches(self, properties: Mapping[str, str]) -> bool:
        """Kubernetes label-selector semantics: In needs the key; NotIn, DoesNotExist match
        a missing key."""
        return selector.matches(self.requirements, properties)

    def __str__(self) -> str:
        return ",".join(_requirement_text(r) for r in self.requirements)


class Parsed(NamedTuple):
    selectors: tuple[ClusterSelector, ...] = ()
    fallback: str = ALL_CLUSTERS
    problem: str = ""  # names the field; the values are then the defaults


def prepare(entry: ClusterSelector, importer: Mapping[str, str]) -> PreparedSelector:
    """`entry` as the importing cluster (its ClusterProperty map) evaluates it."""

    def value(key: str, v: str) -> str:
        return importer.get(key, "") if v == SAME_AS_IMPORTER else v

    return PreparedSelector(_requirements(entry, value))


def text(entry: ClusterSelector) -> str:
    """The entry as written (`@SameAsImporter@` kept), for condition messages."""
    return str(PreparedSelector(_requirements(entry, lambda _key, v: v)))


def _requirements(
    entry: ClusterSelector, value: Callable[[str, str], str]
) -> tuple[selector.Requirement, ...]:
    """matchLabels k: v as In [v], then matchExpressions; each value through `value`."""
    ps = entry.property_selector
    reqs = [selector.Requirement(k, "in", frozenset({value(k, v)})) for k, v in ps.match_labels]
    reqs.extend(
        selector.Requirement(
            e.key, OPERATORS[e.operator], frozenset(value(e.key, v) for v in e.values)
        )
        for e in ps.match_expressions
    )
    return tuple(reqs)


def _requirement_text(r: selector.Requirement) -> str:
    """kubectl's selector syntax (`k=v`, `k in (a,b)`, `k`, `!k`), as `-l` takes it."""
    values = sorted(r.values)
    if r.op == "exists":
        return r.key
    if r.op == "!exists":
        return "!" + r.key
    if len(values) == 1:
        return f"{r.key}{'=' if r.op == 'in' else '!='}{values[0]}"
    return f"{r.key} {r.op} ({','.join(values)})"


def parse(spec: Mapping[str, Any], where: str, annotation: str | None) -> Parsed:
    """The two fields of `spec` (at field path `where`, "" for the top level), or both of the
    annotation's when `spec` has no clusterSelectors: a schema that knows the fields defaults
    the fallback to AllClusters, which must not override the annotation's `None`."""
    bridge: Mapping[str, Any] = {}
    if annotation is not None and spec.get(SELECTORS) is None:
        bridge, problem = _annotation(annotation)
        if problem:
            return Parsed(problem=f"metadata.annotations[{ANNOTATION}]{problem}")

    def pick(name: str) -> tuple[object, str]:
        """The field's value and its path."""
        if bridge.get(SELECTORS) is not None:
            return bridge.get(name), f"metadata.annotations[{ANNOTATION}].{name}"
        return spec.get(name), f"{where}.{name}" if where else name

    try:
        return Parsed(_selectors(*pick(SELECTORS)), _fallback(*pick(FALLBACK)))
    except _Problem as exc:
        return Parsed(problem=str(exc))


class _Problem(ValueError):
    """A field that cannot be used: '<path>: <why>' (never leaves this module)."""


def _annotation(value: str) -> tuple[Mapping[str, Any], str]:
    """The annotation's object, or a problem (`: not JSON or YAML ...`)."""
    try:
        doc = json.loads(value)
    except RecursionError:  # nested deeper than the parser's stack: nobody's selectors
        return {}, ": nested too deeply"
    except ValueError:
        try:
            doc = _yaml(value)
        except (yaml.YAMLError, _Problem, RecursionError) as exc:
            return {}, f": not JSON or YAML ({_short(str(exc).splitlines()[0])})"
    if not isinstance(doc, Mapping):
        return {}, f": expected an object, got {type(doc).__name__}"
    unknown = sorted(str(k) for k in doc if k not in (SELECTORS, FALLBACK))
    if unknown:
        return {}, f": unknown field {_short(unknown[0])!r} ({SELECTORS}, {FALLBACK})"
    return doc, ""


def _yaml(value: str) -> Any:
    """safe_load, with aliases counted before any object is built (no alias bomb)."""
    loader = yaml.SafeLoader(value)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        stack, budget = [node], _MAX_NODES
        while stack:
            cur = stack.pop()
            budget -= 1
            if budget < 0:
                raise _Problem("expands to too many nodes")
            if isinstance(cur, yaml.SequenceNode):
                stack.extend(cur.value)
            elif isinstance(cur, yaml.MappingNode):
                stack.extend(n for pair in cur.value for n in pair)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _short(s: str, limit: int = 80) -> str:
    return s if len(s) <= limit else s[:limit] + "..."


def _fallback(raw: object, path: str) -> str:
    if raw is None:
        return ALL_CLUSTERS  # +kubebuilder:default
    if not isinstance(raw, str) or raw not in FALLBACK_POLICIES:
        raise _Problem(f"{path}: {_short(repr(raw))} is not AllClusters or None")
    return raw


def _selectors(raw: object, path: str) -> tuple[ClusterSelector, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise _Problem(f"{path}: expected a list, got {type(raw).__name__}")
    if len(raw) > MAX_SELECTORS:
        raise _Problem(f"{path}: {len(raw)} entries, at most {MAX_SELECTORS}")
    out = []
    for i, entry in enumerate(raw):
        where = f"{path}[{i}]"
        if not isinstance(entry, Mapping):
            raise _Problem(f"{where}: expected an object, got {type(entry).__name__}")
        other = sorted(str(k) for k in entry if k != "propertySelector")
        if other:
            # The KEP's future criteria (a CEL expression, ...): one per entry, none known here.
            raise _Problem(f"{where}.{_short(other[0])}: unknown field (only propertySelector)")
        out.append(ClusterSelector(_label_selector(entry.get("propertySelector"), where)))
    return tuple(out)


def _label_selector(raw: object, where: str) -> LabelSelector:
    path = f"{where}.propertySelector"
    if raw is None:
        raise _Problem(f"{path}: required")
    if not isinstance(raw, Mapping):
        raise _Problem(f"{path}: expected an object, got {type(raw).__name__}")
    other = sorted(str(k) for k in raw if k not in ("matchLabels", "matchExpressions"))
    if other:
        raise _Problem(f"{path}.{_short(other[0])}: unknown field")
    labels = raw.get("matchLabels") or {}
    if not isinstance(labels, Mapping):
        raise _Problem(f"{path}.matchLabels: expected an object, got {type(labels).__name__}")
    for k, v in labels.items():
        if not isinstance(k, str) or not k:
            raise _Problem(f"{path}.matchLabels: key {_short(repr(k))} is not a property name")
        if not isinstance(v, str):
            raise _Problem(
                f"{path}.matchLabels[{_short(k)}]: expected string, got {type(v).__name__}"
            )
    exprs = raw.get("matchExpressions") or []
    if not isinstance(exprs, list):
        raise _Problem(f"{path}.matchExpressions: expected a list, got {type(exprs).__name__}")
    requirements = tuple(
        _requirement(e, f"{path}.matchExpressions[{i}]") for i, e in enumerate(exprs)
    )
    if not labels and not requirements:
        raise _Problem(f"{path}: empty")  # would select every cluster: the KEP refuses it
    return LabelSelector(tuple(sorted(labels.items())), requirements)


def _requirement(raw: object, path: str) -> LabelSelectorRequirement:
    if not isinstance(raw, Mapping):
        raise _Problem(f"{path}: expected an object, got {type(raw).__name__}")
    key, op, values = raw.get("key"), raw.get("operator"), raw.get("values") or []
    if not isinstance(key, str) or not key:
        raise _Problem(f"{path}.key: required, a property name")
    if not isinstance(op, str) or op not in OPERATORS:
        raise _Problem(
            f"{path}.operator: {_short(repr(op))} is not In, NotIn, Exists or DoesNotExist"
        )
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise _Problem(f"{path}.values: expected a list of strings")
    if op in ("In", "NotIn") and not values:
        raise _Problem(f"{path}.values: required for {op}")
    if op in ("Exists", "DoesNotExist") and values:
        if SAME_AS_IMPORTER in values:
            raise _Problem(f"{path}.values: {SAME_AS_IMPORTER} needs In or NotIn, not {op}")
        raise _Problem(f"{path}.values: must be empty for {op}")
    return LabelSelectorRequirement(key, op, tuple(values))


def to_api(selectors: tuple[ClusterSelector, ...]) -> list[dict[str, Any]]:
    """`clusterSelectors` as the API (and the annotation) spells them."""
    out = []
    for entry in selectors:
        ps = entry.property_selector
        api: dict[str, Any] = {}
        if ps.match_labels:
            api["matchLabels"] = dict(ps.match_labels)
        if ps.match_expressions:
            api["matchExpressions"] = [
                {
                    "key": e.key,
                    "operator": e.operator,
                    **({"values": list(e.values)} if e.values else {}),
                }
                for e in ps.match_expressions
            ]
        out.append({"propertySelector": api})
    return out


def annotation(selectors: tuple[ClusterSelector, ...], fallback: str) -> str:
    """The annotation's value for these resolved fields (compact, stable JSON)."""
    return json.dumps(
        {SELECTORS: to_api(selectors), FALLBACK: fallback}, separators=(",", ":"), sort_keys=True
    )
