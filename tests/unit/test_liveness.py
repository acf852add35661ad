"""The liveness Leases: how the hub writes one, how readers read one, and the one default
duration that `status`, the member DNS and both commands' flags share."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import inspect
import time
from typing import Any

import pytest

from clusterset.cli import status as status_cli
from clusterset.cli.controller import controller
from clusterset.cli.dns import dns
from clusterset.controller.observer import Observer
from clusterset.kube import api as k
from clusterset.kube.cluster import MEMBER, MemberCluster
from clusterset.model import liveness
from clusterset.model.ids import ClusterId, ServiceKey
from clusterset.model.labels import LABEL_OWNED
from clusterset.model.objects import Endpoint, EndpointSlice
from clusterset.model.state import ClusterState

RENEW_TIME = "2026-11-29T17:00:00.000000Z"
RENEWED = dt.datetime(2026, 11, 29, 17, 0, tzinfo=dt.UTC).timestamp()
DEFAULT = float(liveness.DEFAULT_DURATION)


def _lease(spec: dict[str, Any], labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta = {"name": "clusterset-source-member1", "namespace": "kube-system"}
    return {"metadata": {**meta, "labels": labels or {}}, "spec": spec}


BOTH = {liveness.SOURCE_LABEL: "member1", liveness.CONSUMER_LABEL: "member2"}


@pytest.mark.parametrize(
    ("lease", "want"),
    [
        pytest.param(
            _lease({"renewTime": RENEW_TIME, "leaseDurationSeconds": 4}, BOTH),
            liveness.SourceLease("member1", "member2", RENEW_TIME, RENEWED, 4.0),
            id="as-the-hub-writes-it",
        ),
        pytest.param(
            _lease({"renewTime": RENEW_TIME}, BOTH),
            liveness.SourceLease("member1", "member2", RENEW_TIME, RENEWED, DEFAULT),
            id="no-duration-the-default",
        ),
        pytest.param(
            _lease({"renewTime": RENEW_TIME, "leaseDurationSeconds": 0}),
            liveness.SourceLease("", "", RENEW_TIME, RENEWED, DEFAULT),
            id="zero-duration-the-default-no-labels",
        ),
        pytest.param(
            _lease({"renewTime": RENEW_TIME, "leaseDurationSeconds": "15"}, BOTH),
            liveness.SourceLease("member1", "member2", RENEW_TIME, RENEWED, 15.0),
            id="duration-as-text",
        ),
        pytest.param(
            _lease({"renewTime": RENEW_TIME, "leaseDurationSeconds": "soon"}, BOTH),
            liveness.SourceLease("member1", "member2", RENEW_TIME, RENEWED, None),
            id="unreadable-duration",
        ),
        pytest.param(
            _lease({"renewTime": RENEW_TIME, "leaseDurationSeconds": -5}, BOTH),
            liveness.SourceLease("member1", "member2", RENEW_TIME, RENEWED, None),
            id="negative-duration",
        ),
        pytest.param(
            _lease({"leaseDurationSeconds": 40}, BOTH),
            liveness.SourceLease("member1", "member2", "", None, 40.0),
            id="never-renewed",
        ),
        pytest.param(
            _lease({"renewTime": "yesterday"}, BOTH),
            liveness.SourceLease("member1", "member2", "yesterday", None, DEFAULT),
            id="unreadable-renew-time",
        ),
        pytest.param(
            {"metadata": None, "spec": None},
            liveness.SourceLease("", "", "", None, DEFAULT),
            id="empty",
        ),
    ],
)
def test_parse(lease: dict[str, Any], want: liveness.SourceLease) -> None:
    assert liveness.parse(lease) == want


def test_render_is_what_parse_reads_back() -> None:
    obj = liveness.render(
        ClusterId("member1"),
        consumer=ClusterId("member2"),
        namespace="ns",
        renewed=RENEW_TIME,
        duration=12,
    )
    assert obj["metadata"]["name"] == "clusterset-source-member1"
    assert obj["metadata"]["namespace"] == "ns"
    assert obj["metadata"]["labels"][LABEL_OWNED] == "true"  # prune and RBAC know it as ours
    assert liveness.parse(obj) == liveness.SourceLease(
        "member1", "member2", RENEW_TIME, RENEWED, 12.0
    )


@pytest.mark.parametrize(
    ("duration", "grace", "expires"),
    [
        pytest.param(40.0, None, RENEWED + 40, id="its-duration"),
        pytest.param(40.0, 15.0, RENEWED + 15, id="grace-overrides"),
        pytest.param(None, 15.0, RENEWED + 15, id="grace-needs-no-duration"),
        pytest.param(None, None, None, id="unreadable-duration-no-expiry"),
    ],
)
def test_expires(duration: float | None, grace: float | None, expires: float | None) -> None:
    lease = liveness.SourceLease("member1", "member2", RENEW_TIME, RENEWED, duration)
    assert lease.expires(grace) == expires


def test_never_renewed_has_no_expiry() -> None:
    assert liveness.SourceLease("member1", "", "", None, 40.0).expires() is None


@pytest.mark.parametrize(
    ("age", "duration", "state"),
    [
        pytest.param(0.0, 40.0, "fresh", id="just-renewed"),
        pytest.param(40.0, 40.0, "fresh", id="at-its-duration"),
        pytest.param(41.0, 40.0, "stale", id="past-its-duration"),
        pytest.param(80.0, 40.0, "stale", id="at-twice"),
        pytest.param(81.0, 40.0, "expired", id="past-twice"),
        pytest.param(0.0, None, "invalid", id="unreadable-duration"),
    ],
)
def test_state(age: float, duration: float | None, state: str) -> None:
    lease = liveness.SourceLease("member1", "member2", RENEW_TIME, RENEWED, duration)
    assert lease.state(RENEWED + age) == state


def test_never_renewed_is_expired() -> None:
    lease = liveness.SourceLease("member1", "member2", "", None, 40.0)
    assert lease.age(RENEWED) == float("inf")
    assert lease.state(RENEWED) == "expired"


def test_the_hub_renews_every_quarter_of_the_duration() -> None:
    assert liveness.renew_interval(liveness.DEFAULT_DURATION) == 10.0


class LeaseLister:
    """A member apiserver that only answers the list of liveness Leases."""

    def __init__(self, items: list[dict[str, Any]]) -> None:
        self.name = "member2"
        self.items = items
        self.selectors: list[str] = []

    async def list(self, path: str, *, label_selector: str = "") -> tuple[list[Any], str]:
        assert path == k.LEASES.path(None)
        self.selectors.append(label_selector)
        return self.items, "1"


def test_status_and_member_dns_share_the_one_default() -> None:
    """A Lease without leaseDurationSeconds, renewed between 30 s and 40 s ago: `status`
    once judged it by 30 s (stale) while DNS counted it for 40 s. Both now use
    liveness.DEFAULT_DURATION, the default of --source-lease-duration on both commands."""
    for command in (controller, dns):
        flag = inspect.signature(command).parameters["source_lease_duration"]
        assert flag.default == liveness.DEFAULT_DURATION, command.__name__
    age = liveness.DEFAULT_DURATION - 5  # past the old 30 s, within the default
    renewed = dt.datetime.fromtimestamp(time.time() - age, dt.UTC)
    lease = _lease({"renewTime": renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")}, BOTH)
    api = LeaseLister([lease])

    member = MemberCluster("member2", api, mode=MEMBER, on_change=lambda: None)  # type: ignore[arg-type]
    member.informers["leases"].store = {"kube-system/clusterset-source-member1": lease}
    expires = member.source_leases()[0][ClusterId("member1")]
    assert expires == pytest.approx(renewed.timestamp() + liveness.DEFAULT_DURATION)

    async def look() -> list[dict[str, object]]:
        observer = Observer({"member2": api})  # type: ignore[dict-item]
        _, leases = await status_cli._snapshot(observer)
        return leases

    (shown,) = asyncio.run(look())
    assert api.selectors == [liveness.SOURCE_LABEL]
    assert shown["state"] == "fresh"
    assert shown["source"] == "member1"
    assert isinstance(shown["age"], float)
    assert age - 1 < shown["age"] < age + 5


def test_the_lease_carries_the_source_properties_a_member_dns_cannot_read() -> None:
    """A member DNS reads only its own cluster; cluster selection (KEP-5939) and region tiers
    match the sources' ClusterProperties, which the hub writes on each source's Lease."""
    props = {"region.clusterset.io": "eu", "gpu-tier.mycompany.com": "high"}
    obj = liveness.render(
        ClusterId("member1"),
        consumer=ClusterId("member2"),
        namespace="kube-system",
        renewed=RENEW_TIME,
        duration=40,
        properties=props,
    )
    text = obj["metadata"]["annotations"][liveness.PROPERTIES_ANNOTATION]
    assert text == '{"gpu-tier.mycompany.com":"high","region.clusterset.io":"eu"}'  # sorted
    assert liveness.parse(obj).properties == props
    bare = liveness.render(
        ClusterId("member1"), consumer=ClusterId("member2"), namespace="kube-system",
        renewed=RENEW_TIME, duration=40,
    )  # fmt: skip
    assert "annotations" not in bare["metadata"]  # no properties: the Lease as before

    member = MemberCluster("member2", LeaseLister([]), mode=MEMBER, on_change=lambda: None)  # type: ignore[arg-type]
    member.informers["leases"].store = {"kube-system/clusterset-source-member1": obj}
    expiry, learned = member.source_leases()
    assert learned == {ClusterId("member1"): props}
    assert expiry == {ClusterId("member1"): RENEWED + 40}
    view = member.imported_view(ClusterId("member2"), 1)
    assert view.properties == {ClusterId("member1"): props}


@pytest.mark.parametrize(
    ("annotation", "want"),
    [
        pytest.param(None, {}, id="missing"),
        pytest.param("", {}, id="empty"),
        pytest.param("{not json", {}, id="not-json"),
        pytest.param('["a", "b"]', {}, id="not-an-object"),
        pytest.param('{"a": "x", "b": 1, "c": null}', {"a": "x"}, id="non-strings-dropped"),
        pytest.param(
            '{"a": "' + "x" * liveness.MAX_PROPERTIES_BYTES + '"}', {}, id="too-large-unread"
        ),
        pytest.param("[" * 2000, {}, id="nested-deeper-than-the-stack"),
    ],
)
def test_a_bad_properties_annotation_reads_as_none(annotation: str | None, want: object) -> None:
    lease = _lease({"renewTime": RENEW_TIME}, BOTH)
    if annotation is not None:
        lease["metadata"]["annotations"] = {liveness.PROPERTIES_ANNOTATION: annotation}
    read = liveness.parse(lease)
    assert read.properties == want
    assert read.renewed == RENEWED  # the liveness itself still counts


def test_properties_too_large_to_be_read_are_not_written() -> None:
    """Readers drop a map over MAX_PROPERTIES_BYTES, and past the apiserver's annotation limit
    the renewal itself would fail (and the source's endpoints expire everywhere): the hub
    leaves such a map out, and the Lease still vouches for the source."""
    big = {"a": "x" * liveness.MAX_PROPERTIES_BYTES}
    obj = liveness.render(
        ClusterId("member1"), consumer=ClusterId("member2"), namespace="kube-system",
        renewed=RENEW_TIME, duration=40, properties=big,
    )  # fmt: skip
    assert "annotations" not in obj["metadata"]
    assert liveness.parse(obj).renewed == RENEWED


@pytest.mark.parametrize(
    ("endpoint", "want"),
    [
        (Endpoint(("10.0.0.1",), ready=True, serving=True), (False, False, None)),
        (Endpoint(("10.0.0.1",)), (False, False, None)),  # unknown: taken as ready
        (
            Endpoint(("10.0.0.1",), ready=False, serving=True, terminating=True),
            (False, False, True),
        ),
        (Endpoint(("10.0.0.1",), ready=False, serving=False), (False, False, None)),
    ],
)
def test_an_expired_source_is_out_of_service(endpoint: Endpoint, want: tuple[object, ...]) -> None:
    key = ServiceKey("default", "serve")
    s = EndpointSlice("default", "serve-abc", "serve", endpoints=(endpoint, endpoint))
    cs = ClusterState(
        ClusterId("member1"), slices={key: (s,)}, exports={}, namespaces=frozenset({"default"})
    )
    out = liveness.out_of_service(cs)
    (got,) = out.slices[key]
    assert [(e.ready, e.serving, e.terminating) for e in got.endpoints] == [want, want]
    assert got.endpoints[0].addresses == endpoint.addresses
    # Nothing else changes: its imports, ClusterSetIPs and slices stay.
    assert dataclasses.replace(out, slices=cs.slices) == cs


def test_the_observer_keeps_one_out_of_service_slices_while_the_source_is_unchanged() -> None:
    """The member builds a new ClusterState each pass but keeps its slices mapping while
    nothing changed: the out-of-service slices are then the same object pass after pass
    (changed_keys sees no change, nothing is rebuilt), new ones when the source's slices
    change, and the source's own once it is reached again."""
    obs = Observer({"member1": object()})  # type: ignore[dict-item]
    key = ServiceKey("default", "serve")
    ep = Endpoint(("10.0.0.1",), ready=True)
    same = {key: (EndpointSlice("default", "serve-abc", "serve", endpoints=(ep,)),)}
    moved = {key: (EndpointSlice("default", "serve-abc", "serve", endpoints=(ep, ep)),)}
    states = iter(ClusterState(ClusterId("member1"), slices=s) for s in (same, same, moved, moved))
    obs.members["member1"].cluster_state = lambda: next(states)  # type: ignore[method-assign]
    expired = frozenset({ClusterId("member1")})
    one = obs.observe(expired).clusters[ClusterId("member1")].slices
    assert [e.ready for e in one[key][0].endpoints] == [False]
    assert obs.observe(expired).clusters[ClusterId("member1")].slices is one
    two = obs.observe(expired).clusters[ClusterId("member1")].slices
    assert two is not one and [e.ready for e in two[key][0].endpoints] == [False, False]
    assert obs.observe().clusters[ClusterId("member1")].slices is moved
