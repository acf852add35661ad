"""A connection cancelled at shutdown ends quietly.

asyncio.run cancels what is left when the server stops; on Python 3.11 the callback of
start_server logs a cancelled handler as an error with a traceback (CI saw it from the
webhook: the cancel landed while the handler waited for its TLS close). Here the close
never completes, so the cancel lands exactly there, every time.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from clusterset.controller.admission import AdmissionServer
from clusterset.server.holder import ZoneHolder
from clusterset.server.http import OpsServer
from clusterset.server.tcp import TcpServer


async def _never(self: asyncio.StreamWriter) -> None:
    await asyncio.Event().wait()


async def _cancel_during_close(
    serve: Callable[[], Awaitable[asyncio.Server]],
) -> list[dict[str, Any]]:
    """Connect, hang up, and cancel the handler while it waits for its close to finish;
    what the loop's exception handler was given."""
    loop = asyncio.get_running_loop()
    logged: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: logged.append(context))
    before = asyncio.all_tasks()
    listening = await serve()
    port = listening.sockets[0].getsockname()[1]
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.close()  # EOF: the handler goes to its close, which never completes
    for _ in range(100):
        handlers = asyncio.all_tasks() - before - {asyncio.current_task()}
        if handlers:
            break
        await asyncio.sleep(0.01)
    assert handlers, "no handler started"
    await asyncio.sleep(0.1)  # in the close now
    for task in handlers:
        task.cancel()
    await asyncio.wait(handlers, timeout=2)
    await asyncio.sleep(0.05)  # the start_server callback runs after the task is done
    listening.close()
    await listening.wait_closed()
    return logged


def test_webhook_connection_cancelled_in_its_close_logs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio.StreamWriter, "wait_closed", _never)
    server = AdmissionServer(lambda: None, host="127.0.0.1", port=0, certs=None)  # type: ignore[arg-type, return-value]

    async def serve() -> asyncio.Server:
        # The handler itself, over plain TCP (the TLS layer is not what is under test).
        return await asyncio.start_server(server._serve, "127.0.0.1", 0)

    assert asyncio.run(_cancel_during_close(serve)) == []


def test_dns_tcp_connection_cancelled_in_its_close_logs_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(asyncio.StreamWriter, "wait_closed", _never)
    server = TcpServer(ZoneHolder(b"\x0aclusterset\x05local\x00"), io_timeout=30)

    async def serve() -> asyncio.Server:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        sock.setblocking(False)
        await server.start(sock)
        assert server._server is not None
        return server._server

    assert asyncio.run(_cancel_during_close(serve)) == []


def test_ops_http_connection_open_at_stop_logs_nothing() -> None:
    """stop() cancels the connections still waiting for their request."""
    server = OpsServer(("127.0.0.1", 0), CollectorRegistry(), ready=lambda: True)
    logged: list[dict[str, Any]] = []
    server._loop.set_exception_handler(lambda _loop, context: logged.append(context))
    server.start()
    with socket.create_connection(server.address, timeout=5):
        for _ in range(100):  # its handler is waiting for the request
            if server._tasks:
                break
            time.sleep(0.01)
        assert server._tasks, "no handler started"
        server.stop()
    assert logged == []
