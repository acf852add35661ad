"""A member cluster's informer caches turned into the model: what reaches the converter."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import pytest

from clusterset.kube import api as k
from clusterset.kube.cluster import HUB, MEMBER, MemberCluster
from clusterset.model import liveness
from clusterset.model.ids import ClusterId


def _lease(source: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": f"clusterset-source-{source}",
            "namespace": "kube-system",
            "resourceVersion": "7",
            "labels": {liveness.SOURCE_LABEL: source},
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


def _member(grace: float | None = None) -> MemberCluster:
    api = k.KubeApi("member2", None)  # type: ignore[arg-type]  # never contacted here
    return MemberCluster("member2", api, mode=MEMBER, on_change=lambda: None, lease_grace=grace)


RENEWED = dt.datetime(2026, 11, 29, 17, 0, tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("duration", "grace", "expires"),
    [
        pytest.param(40, None, RENEWED + 40, id="the-leases-own-duration"),
        pytest.param(4, None, RENEWED + 4, id="short-lease"),
        pytest.param(None, None, RENEWED + liveness.DEFAULT_DURATION, id="no-duration-default"),
        pytest.param(40, 15.0, RENEWED + 15, id="lease-grace-overrides"),
    ],
)
def test_a_source_expires_at_renew_time_plus_lease_duration(
    duration: int | None, grace: float | None, expires: float
) -> None:
    """Issue 11 item 19: expiry is the Lease's own renewTime + leaseDurationSeconds (as for
    node Leases), not a fixed grace after the last renewal."""
    member = _member(grace)
    lease = _lease("member1")
    lease["spec"] = {"renewTime": "2026-11-29T17:00:00.000000Z"}
    if duration is not None:
        lease["spec"]["leaseDurationSeconds"] = duration
    member.informers["leases"].store = {"kube-system/clusterset-source-member1": lease}
    assert member.source_leases()[0] == {ClusterId("member1"): expires}


def _raw(rng: Any, kind: str, name: str, rv: int) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "ns", "resourceVersion": str(rv)}
    if kind == "Service":
        return {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"clusterIP": f"10.96.0.{rng.randrange(1, 9)}", "ports": [{"port": 80}]},
        }
    if kind == "ServiceExport":
        return {"apiVersion": "multicluster.x-k8s.io/v1alpha1", "kind": kind, "metadata": meta}
    meta["labels"] = {"kubernetes.io/service-name": name.split("-")[0]}
    if rng.random() < 0.1:
        meta["labels"]["endpointslice.kubernetes.io/managed-by"] = "x"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": "IPv4",
        "endpoints": [
            {"addresses": [f"10.1.0.{rng.randrange(1, 250)}" if rng.random() < 0.95 else "bad"]}
        ],
    }


def test_objects_converts_what_changed_and_equals_a_full_conversion() -> None:
    """The informers' change sets drive objects(); after random watch events (and a relist
    now and then) it equals a member that converts every stored object."""
    import random

    rng = random.Random(4)
    api = k.KubeApi("member1", None)  # type: ignore[arg-type]  # never contacted here
    member = MemberCluster("member1", api, mode=HUB, on_change=lambda: None)
    kinds = {
        "services": "Service",
        "serviceexports": "ServiceExport",
        "endpointslices": "EndpointSlice",
    }

    for step in range(600):
        resource = rng.choice(sorted(kinds))
        informer = member.informers[resource]
        name = f"s{rng.randrange(6)}" + ("-x" if resource == "endpointslices" else "")
        rv = step + 1
        if rng.random() < 0.2:
            informer.apply_event("DELETED", {"metadata": {"name": name, "namespace": "ns"}})
        else:
            informer.apply_event("MODIFIED", _raw(rng, kinds[resource], name, rv))
        if rng.random() < 0.02:
            informer.store = dict(informer.store)
            informer._changes = None  # what a relist does
        got = member.objects()
        fresh = MemberCluster("member1", api, mode=HUB, on_change=lambda: None)
        for res, inf in member.informers.items():
            fresh.informers[res].store = dict(inf.store)
        assert got == fresh.objects(), step
