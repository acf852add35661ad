"""group_slices with the last grouping equals grouping from scratch."""

from __future__ import annotations

import random

from clusterset.model.bag import group_slices
from clusterset.model.objects import Endpoint, EndpointSlice


def test_regrouping_what_changed_equals_grouping_everything() -> None:
    rng = random.Random(7)
    slices: dict[str, EndpointSlice] = {}
    grouped = group_slices(slices)
    for step in range(3000):
        now = dict(slices)
        for _ in range(rng.choice([1, 1, 3])):
            name = f"s{rng.randrange(12)}"
            service = f"svc{rng.randrange(4)}"  # a slice may move to another service
            now[f"ns/{name}"] = EndpointSlice(
                "ns", name, service, endpoints=(Endpoint((f"10.0.0.{step % 250}",)),)
            )
        if rng.random() < 0.2 and now:
            del now[rng.choice(sorted(now))]
        got = group_slices(now, (slices, grouped))
        assert dict(got) == dict(group_slices(now)), step
        slices, grouped = now, got
    assert group_slices(slices, (slices, grouped)) is grouped  # nothing changed: the same
