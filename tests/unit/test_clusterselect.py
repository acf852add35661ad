"""KEP-5939 cluster selectors in the model: parsing and validation (spec, the annotation
bridge, ServiceImports), @SameAsImporter@ and label-selector semantics, as tables."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clusterset.model import clusterselect, convert
from clusterset.model.clusterselect import ClusterSelector, prepare
from tests.factories import selector

ME = clusterselect.SAME_AS_IMPORTER
ANN = clusterselect.ANNOTATION
REGION = "region.topology.k8s.io"
OK = {"propertySelector": {"matchLabels": {REGION: ME}}}


def export(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> Any:
    return convert.service_export(
        {
            "apiVersion": "multicluster.x-k8s.io/v1beta1",
            "kind": "ServiceExport",
            "metadata": {"name": "api", "namespace": "ns", "annotations": annotations or {}},
            "spec": spec,
        }
    )


def expr(key: str, op: str, *values: str) -> dict[str, Any]:
    return {"propertySelector": {"matchExpressions": [{"key": key, "operator": op, "values": list(values)}]}}  # fmt: skip


P = "spec.clusterSelectors"
E = f"{P}[0].propertySelector.matchExpressions[0]"


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        pytest.param({}, "", id="unset"),
        pytest.param({"clusterSelectors": [], "clusterSelectorsFallbackPolicy": "None"}, "", id="empty-list"),
        pytest.param({"clusterSelectors": [OK] * 16}, "", id="sixteen"),
        pytest.param({"clusterSelectors": [OK] * 17}, f"{P}: 17 entries, at most 16", id="seventeen"),
        pytest.param({"clusterSelectors": "x"}, f"{P}: expected a list, got str", id="not-a-list"),
        pytest.param({"clusterSelectors": ["x"]}, f"{P}[0]: expected an object, got str", id="entry-not-object"),
        pytest.param({"clusterSelectors": [OK, {}]}, f"{P}[1].propertySelector: required", id="no-property-selector"),
        pytest.param({"clusterSelectors": [OK, {"propertySelector": {}}]}, f"{P}[1].propertySelector: empty", id="empty"),
        pytest.param(
            {"clusterSelectors": [{"propertySelector": {"matchLabels": {}, "matchExpressions": []}}]},
            f"{P}[0].propertySelector: empty",
            id="empty-lists",
        ),
        pytest.param(
            {"clusterSelectors": [{**OK, "expression": "self.x"}]},
            f"{P}[0].expression: unknown field (only propertySelector)",
            id="second-criterion",
        ),
        pytest.param(
            {"clusterSelectors": [{"propertySelector": {"matchLabels": {REGION: 3}}}]},
            f"{P}[0].propertySelector.matchLabels[{REGION}]: expected string, got int",
            id="label-value-not-string",
        ),
        pytest.param(
            {"clusterSelectors": [expr(REGION, "Gt", "1")]},
            f"{E}.operator: 'Gt' is not In, NotIn, Exists or DoesNotExist",
            id="unknown-operator",
        ),
        pytest.param(
            {"clusterSelectors": [expr(REGION, "Exists", ME)]},
            f"{E}.values: @SameAsImporter@ needs In or NotIn, not Exists",
            id="same-as-importer-with-exists",
        ),
        pytest.param(
            {"clusterSelectors": [expr(REGION, "DoesNotExist", ME)]},
            f"{E}.values: @SameAsImporter@ needs In or NotIn, not DoesNotExist",
            id="same-as-importer-with-does-not-exist",
        ),
        pytest.param(
            {"clusterSelectors": [expr(REGION, "Exists", "eu")]},
            f"{E}.values: must be empty for Exists",
            id="values-with-exists",
        ),
        pytest.param({"clusterSelectors": [expr(REGION, "In")]}, f"{E}.values: required for In", id="in-without-values"),
        pytest.param(
            {"clusterSelectors": [{"propertySelector": {"matchExpressions": [{"operator": "Exists"}]}}]},
            f"{E}.key: required, a property name",
            id="no-key",
        ),
        pytest.param(
            {"clusterSelectorsFallbackPolicy": "Nowhere"},
            "spec.clusterSelectorsFallbackPolicy: 'Nowhere' is not AllClusters or None",
            id="bad-fallback",
        ),
    ],
)  # fmt: skip
def test_spec_validation_names_the_field(spec: dict[str, Any], problem: str) -> None:
    got = export(spec)
    assert got.cluster_selectors_problem == problem
    if problem:  # unusable: the defaults, and the export is Valid=False (test_cluster_selection)
        assert (got.cluster_selectors, got.cluster_selectors_fallback_policy) == ((), "AllClusters")


def test_spec_fields_are_read_in_order() -> None:
    got = export(
        {
            "clusterSelectors": [
                expr("cluster.clusterset.k8s.io", "In", ME),
                {"propertySelector": {"matchLabels": {"b": "2", "a": "1"}}},
            ],
            "clusterSelectorsFallbackPolicy": "None",
        }
    )
    assert got.cluster_selectors == (
        selector(exprs=(("cluster.clusterset.k8s.io", "In", (ME,)),)),
        selector(labels=(("a", "1"), ("b", "2"))),
    )
    assert got.cluster_selectors_fallback_policy == "None"
    assert clusterselect.text(got.cluster_selectors[1]) == "a=1,b=2"


BRIDGE = {"clusterSelectors": [OK], "clusterSelectorsFallbackPolicy": "None"}
A = f"metadata.annotations[{ANN}]"


@pytest.mark.parametrize(
    ("spec", "annotation", "selectors", "fallback", "problem"),
    [
        pytest.param({}, json.dumps(BRIDGE), 1, "None", "", id="json"),
        pytest.param(
            {},
            "clusterSelectors:\n- propertySelector:\n    matchLabels: {region.topology.k8s.io: '@SameAsImporter@'}\n",
            1, "AllClusters", "", id="yaml",
        ),
        # With clusterSelectors in spec, spec wins whole (its fallback, defaulted or not).
        pytest.param({"clusterSelectors": [OK, OK]}, json.dumps(BRIDGE), 2, "AllClusters", "", id="spec-selectors-win-whole"),
        # Without them, both fields are the annotation's: the schema's default AllClusters
        # must not turn the annotation's None (data sovereignty) into AllClusters.
        pytest.param({"clusterSelectorsFallbackPolicy": "AllClusters"}, json.dumps(BRIDGE), 1, "None", "", id="a-defaulted-fallback-does-not-override"),
        pytest.param({}, '{"clusterSelectors": [' * 3000, 0, "AllClusters", f"{A}: nested too deeply", id="nested-too-deeply"),
        pytest.param({}, json.dumps({"clusterSelectors": [{"propertySelector": {"matchExpressions": [{"key": "k", "operator": ["In"]}]}}]}), 0, "AllClusters", f"{A}.clusterSelectors[0]", id="unhashable-operator"),
        pytest.param(
            {"clusterSelectors": [OK], "clusterSelectorsFallbackPolicy": "None"}, "{", 1, "None", "",
            id="spec-has-both-annotation-ignored",
        ),
        pytest.param({}, "{", 0, "AllClusters", f"{A}: not JSON or YAML", id="unreadable"),
        pytest.param({}, "[1]", 0, "AllClusters", f"{A}: expected an object, got list", id="not-an-object"),
        pytest.param({}, '{"clusterSelector": []}', 0, "AllClusters", f"{A}: unknown field 'clusterSelector'", id="typo"),
        pytest.param(
            {}, '{"clusterSelectors": [{"propertySelector": {}}]}', 0, "AllClusters",
            f"{A}.clusterSelectors[0].propertySelector: empty", id="bad-entry",
        ),
        pytest.param(
            {}, "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
                f"{n}: &{n} [*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p},*{p}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ), 0, "AllClusters", f"{A}: not JSON or YAML (expands to too many nodes)", id="alias-bomb",
        ),
    ],
)  # fmt: skip
def test_the_annotation_bridges_pruned_spec_fields(
    spec: dict[str, Any], annotation: str, selectors: int, fallback: str, problem: str
) -> None:
    got = export(spec, {ANN: annotation})
    assert got.cluster_selectors_problem.startswith(problem)
    assert bool(got.cluster_selectors_problem) == bool(problem)
    assert len(got.cluster_selectors) == selectors
    assert got.cluster_selectors_fallback_policy == fallback


def test_the_written_annotation_reads_back_the_same() -> None:
    selectors = (
        selector(exprs=(("cluster.clusterset.k8s.io", "In", (ME,)), ("gpu", "Exists", ()))),
        selector(labels=((REGION, ME),)),
    )
    text = clusterselect.annotation(selectors, "None")
    got = export({}, {ANN: text})
    assert (got.cluster_selectors, got.cluster_selectors_fallback_policy) == (selectors, "None")


def service_import(spec: dict[str, Any], annotations: dict[str, str] | None = None) -> Any:
    return convert.service_import(
        {
            "apiVersion": "multicluster.x-k8s.io/v1alpha1",
            "kind": "ServiceImport",
            "metadata": {"name": "api", "namespace": "ns", "annotations": annotations or {}},
            "spec": {"type": "ClusterSetIP", "ports": [{"port": 80}], **spec},
        }
    )


def test_service_imports_carry_them_from_spec_or_the_annotation() -> None:
    imp = service_import(BRIDGE)
    assert (len(imp.cluster_selectors), imp.cluster_selectors_fallback_policy) == (1, "None")
    imp = service_import({}, {ANN: json.dumps(BRIDGE)})  # v1alpha1: the spec fields pruned
    assert (len(imp.cluster_selectors), imp.cluster_selectors_fallback_policy) == (1, "None")
    with pytest.raises(
        convert.ObjectError, match=r"spec\.clusterSelectors\[0\]\.propertySelector: empty"
    ):
        service_import({"clusterSelectors": [{"propertySelector": {}}]})  # fmt: skip


@pytest.mark.parametrize(
    ("entry", "importer", "cluster", "match"),
    [
        # matchLabels k: v is In [v]; @SameAsImporter@ is the importer's value of that key.
        pytest.param(selector(labels=((REGION, ME),)), {REGION: "eu"}, {REGION: "eu"}, True, id="same-region"),
        pytest.param(selector(labels=((REGION, ME),)), {REGION: "eu"}, {REGION: "us"}, False, id="other-region"),
        pytest.param(selector(labels=((REGION, ME),)), {REGION: "eu"}, {}, False, id="cluster-lacks-key"),
        # The importer lacks the key: "" (In still needs the key present).
        pytest.param(selector(labels=((REGION, ME),)), {}, {}, False, id="importer-lacks-key-cluster-too"),
        pytest.param(selector(labels=((REGION, ME),)), {}, {REGION: "eu"}, False, id="importer-lacks-key"),
        pytest.param(selector(labels=((REGION, ME),)), {}, {REGION: ""}, True, id="importer-lacks-key-empty-value"),
        pytest.param(selector(exprs=((REGION, "In", ("eu", "us")),)), {}, {REGION: "us"}, True, id="in"),
        pytest.param(selector(exprs=((REGION, "NotIn", (ME,)),)), {REGION: "eu"}, {REGION: "us"}, True, id="notin"),
        pytest.param(selector(exprs=((REGION, "NotIn", (ME,)),)), {REGION: "eu"}, {REGION: "eu"}, False, id="notin-same"),
        pytest.param(selector(exprs=((REGION, "NotIn", (ME,)),)), {REGION: "eu"}, {}, True, id="notin-missing-key"),
        pytest.param(selector(exprs=(("gpu", "Exists", ()),)), {}, {"gpu": ""}, True, id="exists"),
        pytest.param(selector(exprs=(("gpu", "Exists", ()),)), {}, {}, False, id="exists-missing"),
        pytest.param(selector(exprs=(("gpu", "DoesNotExist", ()),)), {}, {}, True, id="does-not-exist"),
        pytest.param(selector(exprs=(("gpu", "DoesNotExist", ()),)), {}, {"gpu": "x"}, False, id="does-not-exist-present"),
        pytest.param(  # every requirement must hold
            selector(labels=((REGION, ME),), exprs=(("gpu", "Exists", ()),)),
            {REGION: "eu"}, {REGION: "eu"}, False, id="and",
        ),
    ],
)  # fmt: skip
def test_prepare_and_match(
    entry: ClusterSelector, importer: dict[str, str], cluster: dict[str, str], match: bool
) -> None:
    assert prepare(entry, importer).matches(cluster) is match


def test_a_prepared_selector_reads_as_kubectl_writes_it() -> None:
    entry = selector(
        labels=((REGION, ME),),
        exprs=(("gpu", "In", ("low", "high")), ("tier", "NotIn", (ME,)), ("a", "Exists", ())),
    )
    got = str(prepare(entry, {REGION: "eu-west", "tier": "gold"}))
    assert got == f"{REGION}=eu-west,gpu in (high,low),tier!=gold,a"
    assert clusterselect.text(entry) == f"{REGION}={ME},gpu in (high,low),tier!={ME},a"
