"""TCP: length-prefixed messages (RFC 7766), pipelined, with an idle timeout and a
bound on connections so that no client can make us hold memory without limit."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from clusterset.server.forward import Forwarder
from clusterset.server.holder import ZoneHolder
from clusterset.zone.wire import respond

log = logging.getLogger(__name__)


class TcpServer:
    def __init__(
        self,
        holder: ZoneHolder,
        *,
        idle_timeout: float = 10.0,
        max_connections: int = 256,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.holder = holder
        self.forwarder = forwarder
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self._active = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._client, sock=sock)

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._active >= self.max_connections:
            writer.close()
            return
        self._active += 1
        self._writers.add(writer)
        holder = self.holder
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), self.idle_timeout)
                    (length,) = struct.unpack("!H", head)
                    query = await asyncio.wait_for(reader.readexactly(length), self.idle_timeout)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                holder.counters.queries_tcp += 1
                try:
                    reply = respond(
                        holder.zone,
                        holder.origin,
                        query,
                        tcp=True,
                        forward=self.forwarder is not None,
                    )
                    if reply is not None and not reply and self.forwarder is not None:
                        peer = writer.get_extra_info("peername") or ("",)
                        reply = await self.forwarder.forward_tcp(query, str(peer[0]))
                except Exception:
                    log.exception("dns: internal error answering a TCP query")
                    return
                if reply is None:
                    return  # RFC 7766: close on an unanswerable message
                holder.counters.rcodes[reply[3] & 0x0F] += 1
                writer.write(struct.pack("!H", len(reply)) + reply)
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self._active -= 1
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            await self._server.wait_closed()
