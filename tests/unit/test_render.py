"""reconcile.render of what the hub writes beside imports: ServiceExport status, Namespaces."""

from __future__ import annotations

from typing import Any

import pytest

from clusterset.model.conditions import Condition, ConditionType, Reason, Status
from clusterset.model.ids import ServiceKey
from clusterset.model.labels import LABEL_OWNED
from clusterset.reconcile import render

KEY = ServiceKey("ns", "svc")
NOW, THEN = "2026-11-02T10:00:00Z", "2026-11-01T10:00:00Z"
VALID = Condition(ConditionType.VALID, Status.TRUE, Reason.VALID.value, "ok")


def stored(status: str, since: str = THEN) -> dict[str, Any]:
    """A ServiceExport as the apiserver holds it, with a Valid condition of `status`."""
    cond = {"type": "Valid", "status": status, "lastTransitionTime": since}
    return {"status": {"conditions": [cond]}}


@pytest.mark.parametrize(
    ("have", "since"),
    [
        (None, NOW),  # first written
        (stored("True"), THEN),  # status unchanged: its transition time kept
        (stored("False"), NOW),  # status changed: now
        (stored("True", since=""), NOW),  # no time kept: now
        ({"status": {}}, NOW),
    ],
    ids=["new", "unchanged", "changed", "time missing", "no conditions"],
)
def test_export_status_keeps_the_transition_time_while_the_status_holds(
    have: dict[str, Any] | None, since: str
) -> None:
    got = render.service_export_status(KEY, (VALID,), have, NOW, "v1alpha1")
    assert got == {
        "apiVersion": "multicluster.x-k8s.io/v1alpha1",
        "kind": "ServiceExport",
        "metadata": {"name": "svc", "namespace": "ns"},
        "status": {
            "conditions": [
                {
                    "type": "Valid",
                    "status": "True",
                    "reason": "Valid",
                    "message": "ok",
                    "lastTransitionTime": since,
                }
            ]
        },
    }


def test_a_namespace_made_for_an_import_is_labelled_ours() -> None:
    assert render.namespace("team-a") == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "team-a", "labels": {LABEL_OWNED: "true"}},
    }
