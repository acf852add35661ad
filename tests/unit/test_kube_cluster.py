"""A member cluster's informer caches turned into the model: what reaches the converter."""

from __future__ import annotations

import logging

import pytest

from clusterset.kube import api as k
from clusterset.kube.cluster import MEMBER, SOURCE_LEASE_LABEL, MemberCluster
from clusterset.model.ids import ClusterId


def _lease(source: str) -> dict[str, object]:
    return {
        "metadata": {
            "name": f"clusterset-source-{source}",
            "namespace": "kube-system",
            "resourceVersion": "7",
            "labels": {SOURCE_LEASE_LABEL: source},
        },
        "spec": {"renewTime": "2026-11-29T17:00:00.000000Z", "leaseDurationSeconds": 40},
    }


def test_source_leases_never_reach_the_object_converter(caplog: pytest.LogCaptureFixture) -> None:
    """Issue 11 item 18: member DNS logged `unknown kind coordination.k8s.io/v1/Lease` for
    every source Lease of a healthy clusterset."""
    api = k.KubeApi("member2", None)  # type: ignore[arg-type]  # never contacted here
    member = MemberCluster("member2", api, mode=MEMBER, on_change=lambda: None)
    member.informers["leases"].store = {
        f"kube-system/clusterset-source-{c}": _lease(c) for c in ("member1", "member2")
    }
    with caplog.at_level(logging.ERROR):
        _, errors = member.objects()
        view = member.imported_view(ClusterId("member2"), 1)
    assert errors == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert set(view.leases) == {"member1", "member2"}  # still read, by the lease path
