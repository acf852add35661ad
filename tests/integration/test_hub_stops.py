"""A hub controller that dies must not leave a server answering from a stale zone
(issue 11 item 3): one error line saying why, /ready fails, and the process exits 1 so that
Kubernetes restarts it. In-process, with the real DNS server on loopback."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from clusterset.cli import common
from clusterset.cli import run as cli
from clusterset.model.ids import ClusterId
from clusterset.model.state import ImportedView
from clusterset.server.app import DnsOptions, DnsServer

pytestmark = pytest.mark.integration


class DyingHub:
    """Stand-in for controller.hub.Hub whose run() fails, as a bug in it would."""

    def __init__(self, apis: Any, *, on_reconciled: Callable[..., None]) -> None:
        self.on_reconciled = on_reconciled

    async def run(self) -> None:
        await asyncio.sleep(0.2)
        raise RuntimeError("informer bug")


def test_hub_views_end_with_the_reason_when_the_hub_dies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(cli, "Hub", DyingHub)

    async def consume() -> None:
        async for _ in cli._hub_views({}, ClusterId("member2")):
            pass

    with pytest.raises(cli.HubStopped, match="RuntimeError: informer bug"):
        asyncio.run(asyncio.wait_for(consume(), 5))


def test_a_failed_feed_is_logged_once_goes_not_ready_and_exits_1(
    caplog: pytest.LogCaptureFixture,
) -> None:
    options = DnsOptions(
        common.zone_settings("clusterset.local", 5, "kep"), "127.0.0.1:0", lameduck=1.0
    )
    server = DnsServer(options)
    fail = asyncio.Event()

    async def views() -> AsyncIterator[ImportedView]:
        yield ImportedView(ClusterId("member2"), {}, {}, frozenset({"default"}), generation=1)
        await fail.wait()
        raise cli.HubStopped("RuntimeError: informer bug")

    async def scenario() -> None:
        serving = asyncio.create_task(common.serve_until_stopped(server, views()))
        for _ in range(100):
            if server.ready():
                break
            await asyncio.sleep(0.05)
        assert server.ready()
        fail.set()
        await asyncio.sleep(0.3)
        assert not serving.done() and not server.ready(), "lameduck: still up, not ready"
        await serving

    # SystemExit from a task leaves the loop at once (asyncio re-raises it), as under uvloop.run.
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_:
        asyncio.run(scenario())
    assert exit_.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "informer bug" in errors[0], errors
