"""The read-only observer that `check`, `status`, the webhook and the hub share."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clusterset.controller.observer import Observer, observing
from clusterset.manifests.load import SourceError


class Silent:
    """An apiserver that never answers (a blackholed member)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.closed = False

    async def get(self, path: str) -> Any:
        await asyncio.Event().wait()

    async def close(self) -> None:
        self.closed = True


def test_a_late_member_is_one_error_naming_it_and_every_client_is_closed() -> None:
    apis = {"member1": Silent("member1"), "member2": Silent("member2")}

    async def look() -> None:
        async with observing(apis, within=0.05):  # type: ignore[arg-type]
            raise AssertionError("not synced: never entered")

    with pytest.raises(
        SourceError, match=r"^clusters not reachable within 0.05s: member1, member2$"
    ):
        asyncio.run(look())
    assert all(api.closed for api in apis.values())


def test_changes_count_every_event_and_membership_change() -> None:
    woken: list[int] = []
    observer = Observer({}, on_change=lambda: woken.append(1))
    observer.changed()
    observer.add("member1", Silent("member1"))  # type: ignore[arg-type]
    assert list(observer.members) == ["member1"]
    assert set(observer.observe().clusters) == {"member1"}
    assert observer.ids == {"member1": "member1"}
    observer.remove("member1")
    assert observer.members == {} and observer.ids == {}
    assert observer.changes == 3 and len(woken) == 3
    assert observer.observed.is_set()
