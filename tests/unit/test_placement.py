"""Where Karmada places a template (reconcile.placement), rule by rule as Karmada v1.18.2's
detector and scheduler filters decide it."""

from __future__ import annotations

from typing import Any

import pytest

from clusterset.reconcile.placement import (
    MATCH_ALL,
    MATCH_LABELS,
    MATCH_NAME,
    MISMATCH,
    Placement,
    binding_name,
    cluster_matches,
    placement,
    placement_of,
    policy_for,
    selector_priority,
)

V1 = "multicluster.x-k8s.io/v1alpha1"
EXPORT: dict[str, Any] = {
    "apiVersion": V1,
    "kind": "ServiceExport",
    "metadata": {"namespace": "default", "name": "serve", "labels": {"team": "a"}},
}


def policy(
    name: str,
    selectors: list[dict[str, Any]],
    placement: dict[str, Any] | None = None,
    *,
    namespace: str | None = "default",
    priority: int | None = None,
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    spec: dict[str, Any] = {"resourceSelectors": selectors, "placement": placement or {}}
    if priority is not None:
        spec["priority"] = priority
    return {
        "kind": "PropagationPolicy" if namespace else "ClusterPropagationPolicy",
        "metadata": meta,
        "spec": spec,
    }


def sel(**fields: Any) -> dict[str, Any]:
    return {"apiVersion": V1, "kind": "ServiceExport", **fields}


def cluster(name: str, **spec: Any) -> dict[str, Any]:
    labels = spec.pop("labels", {})
    return {"metadata": {"name": name, "labels": labels}, "spec": spec}


CLUSTERS = {
    "member1": cluster("member1", labels={"env": "prod"}, provider="aws", region="eu"),
    "member2": cluster("member2", labels={"env": "dev"}, region="us", zones=["us-1"]),
    "member3": cluster(
        "member3",
        labels={"env": "prod"},
        taints=[{"key": "cluster.karmada.io/not-ready", "effect": "NoSchedule"}],
    ),
}


@pytest.mark.parametrize(
    ("selector", "expect"),
    [
        (sel(name="serve"), MATCH_NAME),
        (sel(name="other"), MISMATCH),
        # A name wins over a selector that would not match (Karmada: case 1, name only).
        (sel(name="serve", labelSelector={"matchLabels": {"team": "b"}}), MATCH_NAME),
        (sel(labelSelector={"matchLabels": {"team": "a"}}), MATCH_LABELS),
        (sel(labelSelector={"matchLabels": {"team": "b"}}), MISMATCH),
        (sel(labelSelector={}), MATCH_LABELS),
        (sel(), MATCH_ALL),
        (sel(namespace="other"), MISMATCH),
        (sel(namespace="default"), MATCH_ALL),
        ({**sel(), "apiVersion": "multicluster.x-k8s.io/v1beta1"}, MISMATCH),
        ({**sel(), "kind": "Service"}, MISMATCH),
        (
            sel(
                labelSelector={
                    "matchExpressions": [{"key": "team", "operator": "NotIn", "values": ["b"]}]
                }
            ),
            MATCH_LABELS,
        ),
        (
            sel(labelSelector={"matchExpressions": [{"key": "x", "operator": "Exists"}]}),
            MISMATCH,
        ),
    ],
)
def test_selector_priority(selector: dict[str, Any], expect: int) -> None:
    assert selector_priority(selector, EXPORT) == expect


@pytest.mark.parametrize(
    ("policies", "cluster_policies", "expect"),
    [
        ([], [], None),
        ([policy("all", [sel()]), policy("named", [sel(name="serve")])], [], "named"),
        # Explicit priority before implicit.
        ([policy("all", [sel()], priority=5), policy("named", [sel(name="serve")])], [], "all"),
        # Same priorities: the alphabetically first name.
        ([policy("b", [sel(name="serve")]), policy("a", [sel(name="serve")])], [], "a"),
        # Another namespace's policy never applies.
        ([policy("x", [sel(name="serve")], namespace="other")], [], None),
        # A PropagationPolicy before any ClusterPropagationPolicy, whatever its priority.
        (
            [policy("pp", [sel()])],
            [policy("cpp", [sel(name="serve")], namespace=None, priority=100)],
            "pp",
        ),
        ([], [policy("cpp", [sel(name="serve")], namespace=None)], "cpp"),
    ],
)
def test_policy_for(
    policies: list[dict[str, Any]], cluster_policies: list[dict[str, Any]], expect: str | None
) -> None:
    found = policy_for(EXPORT, policies, cluster_policies)
    assert (found and found["metadata"]["name"]) == expect


@pytest.mark.parametrize(
    ("affinity", "expect"),
    [
        ({}, ["member1", "member2", "member3"]),
        ({"clusterNames": ["member1", "member3"]}, ["member1", "member3"]),
        ({"exclude": ["member2"]}, ["member1", "member3"]),
        ({"labelSelector": {"matchLabels": {"env": "prod"}}}, ["member1", "member3"]),
        (
            {
                "labelSelector": {"matchLabels": {"env": "prod"}},
                "clusterNames": ["member1", "member2"],
            },
            ["member1"],
        ),
        (
            {
                "fieldSelector": {
                    "matchExpressions": [{"key": "provider", "operator": "In", "values": ["aws"]}]
                }
            },
            ["member1"],
        ),
        (
            {
                "fieldSelector": {
                    "matchExpressions": [{"key": "region", "operator": "NotIn", "values": ["eu"]}]
                }
            },
            ["member2", "member3"],
        ),
        (
            {
                "fieldSelector": {
                    "matchExpressions": [{"key": "zone", "operator": "In", "values": ["us-1"]}]
                }
            },
            ["member2"],
        ),
        (
            {"fieldSelector": {"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}},
            ["member1", "member3"],
        ),
    ],
)
def test_cluster_affinity(affinity: dict[str, Any], expect: list[str]) -> None:
    assert [n for n, c in CLUSTERS.items() if cluster_matches(affinity, c)] == expect


@pytest.mark.parametrize(
    ("where", "expect"),
    [
        # member3's NoSchedule taint (not ready) keeps it out unless tolerated.
        ({}, ("member1", "member2")),
        ({"clusterAffinity": {"labelSelector": {"matchLabels": {"env": "prod"}}}}, ("member1",)),
        (
            {"clusterTolerations": [{"key": "cluster.karmada.io/not-ready", "operator": "Exists"}]},
            ("member1", "member2", "member3"),
        ),
        ({"clusterTolerations": [{"operator": "Exists"}]}, ("member1", "member2", "member3")),
        (
            {
                "clusterTolerations": [
                    {
                        "key": "cluster.karmada.io/not-ready",
                        "effect": "NoExecute",
                        "operator": "Exists",
                    }
                ]
            },
            ("member1", "member2"),
        ),
    ],
)
def test_placement_of_filters_by_affinity_and_taints(
    where: dict[str, Any], expect: tuple[str, ...]
) -> None:
    got = placement_of(policy("p", [sel()], where), CLUSTERS)
    assert got == Placement(expect, "PropagationPolicy p")


@pytest.mark.parametrize(
    "where",
    [
        {"clusterAffinities": [{"affinityName": "a", "clusterNames": ["member1"]}]},
        {"spreadConstraints": [{"spreadByField": "cluster", "maxGroups": 1}]},
    ],
)
def test_what_the_scheduler_decides_later_is_not_guessed(where: dict[str, Any]) -> None:
    got = placement_of(policy("p", [sel()], where), CLUSTERS)
    assert got.members == () and got.unsure and got.policy == "PropagationPolicy p"


def test_a_binding_with_clusters_is_the_placement() -> None:
    binding = {
        "metadata": {"namespace": "default", "name": binding_name("ServiceExport", "serve")},
        "spec": {"clusters": [{"name": "member2"}]},
    }
    pols = [policy("p", [sel()], {"clusterAffinity": {"clusterNames": ["member1"]}})]
    got = placement(EXPORT, binding=binding, policies=pols, cluster_policies=[], clusters=CLUSTERS)
    assert got == Placement(("member2",), "ResourceBinding default/serve-serviceexport")
    unscheduled = {**binding, "spec": {}}
    got = placement(
        EXPORT, binding=unscheduled, policies=pols, cluster_policies=[], clusters=CLUSTERS
    )
    assert got == Placement(("member1",), "PropagationPolicy p")
    assert placement(
        EXPORT, binding=None, policies=[], cluster_policies=[], clusters=CLUSTERS
    ) == Placement(())


def test_binding_name_is_karmadas() -> None:
    assert binding_name("ServiceExport", "serve") == "serve-serviceexport"
    assert binding_name("ClusterRole", "system:Foo") == "system.foo-clusterrole"


def test_a_claimed_template_keeps_its_policy() -> None:
    """Karmada applies the policy named in the template's claim annotations first."""
    claim_ = {
        "propagationpolicy.karmada.io/name": "old",
        "propagationpolicy.karmada.io/namespace": "default",
    }
    claimed = {
        **EXPORT,
        "metadata": {
            **EXPORT["metadata"],
            "annotations": claim_,
            "labels": {"propagationpolicy.karmada.io/permanent-id": "uid-1"},
        },
    }
    pols = [policy("old", [sel()]), policy("named", [sel(name="serve")], priority=9)]
    found = policy_for(claimed, pols, [])
    assert found is not None and found["metadata"]["name"] == "old"
    # Without its permanent-id label it is no claim (Karmada needs both).
    unlabelled = {**EXPORT, "metadata": {**EXPORT["metadata"], "annotations": claim_}}
    found = policy_for(unlabelled, pols, [])
    assert found is not None and found["metadata"]["name"] == "named"
    # The claimed policy gone: matched again.
    found = policy_for(claimed, pols[1:], [])
    assert found is not None and found["metadata"]["name"] == "named"
    cpp = {
        **EXPORT,
        "metadata": {
            **EXPORT["metadata"],
            "annotations": {"clusterpropagationpolicy.karmada.io/name": "c"},
            "labels": {"clusterpropagationpolicy.karmada.io/permanent-id": "uid-2"},
        },
    }
    found = policy_for(cpp, pols, [policy("c", [sel()], namespace=None)])
    assert found is not None and found["metadata"]["name"] == "c"


def test_what_karmada_skips() -> None:
    deleting = policy("named", [sel(name="serve")])
    deleting["metadata"]["deletionTimestamp"] = "2026-12-08T00:00:00Z"
    assert policy_for(EXPORT, [deleting], []) is None
    leaving = {
        **CLUSTERS,
        "member2": {
            **CLUSTERS["member2"],
            "metadata": {**CLUSTERS["member2"]["metadata"], "deletionTimestamp": "x"},
        },
    }
    assert placement_of(policy("p", [sel()]), leaving).members == ("member1",)
    for ns in ("kube-system", "karmada-system", "karmada-es-member1"):
        template = {**EXPORT, "metadata": {**EXPORT["metadata"], "namespace": ns}}
        pols = [policy("p", [sel()], namespace=ns)]
        assert placement(
            template, binding=None, policies=pols, cluster_policies=[], clusters=CLUSTERS
        ) == Placement(())


@pytest.mark.parametrize(
    "expr",
    [
        {"key": "team", "operator": "NotIn", "values": []},  # rejected by Kubernetes
        {"key": "team", "operator": "In"},
        {"key": "team", "operator": "Gt", "values": ["1"]},  # a NodeSelector operator only
    ],
)
def test_a_selector_kubernetes_rejects_matches_nothing(expr: dict[str, Any]) -> None:
    assert selector_priority(sel(labelSelector={"matchExpressions": [expr]}), EXPORT) == MISMATCH


def test_malformed_policies_are_no_traceback() -> None:
    bad = policy("p", [sel()], {"clusterAffinity": {"exclude": 5, "clusterNames": "member1"}})
    assert placement_of(bad, CLUSTERS).members == ("member1", "member2")
    assert placement_of(policy("p", [sel()], {"clusterAffinity": "x"}), CLUSTERS).unsure
    weird = policy("p", ["not-a-selector", sel(labelSelector="x")])  # type: ignore[list-item]
    assert policy_for(EXPORT, [weird], []) is None
