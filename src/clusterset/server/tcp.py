"""TCP: length-prefixed messages (RFC 7766), pipelined, with timeouts and a bound on
connections so that no client can make us hold memory without limit.

Slots are shared fairly, as knot and unbound do: a connection waiting for its next
query may sit idle for `idle_timeout`, but when every slot is taken the one idle the
longest is closed to make room for the newcomer (RFC 7766 6.2.3 lets a server close
idle connections under pressure), so idle clients cannot lock others out. Once a
message has started, the rest of it, and the write of each reply, must complete
within `io_timeout` (a client dribbling a byte at a time, or never reading, loses
its slot).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from dataclasses import dataclass

from clusterset.server.forward import Forwarder
from clusterset.server.holder import ZoneHolder
from clusterset.server.querylog import log_query
from clusterset.zone.wire import respond

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Conn:
    writer: asyncio.StreamWriter
    idle_since: float | None  # loop time since waiting for a query; None while busy


class TcpServer:
    def __init__(
        self,
        holder: ZoneHolder,
        *,
        idle_timeout: float = 10.0,
        io_timeout: float = 3.0,
        max_connections: int = 256,
        forwarder: Forwarder | None = None,
        log_queries: bool = False,
    ) -> None:
        self.holder = holder
        self.log_queries = log_queries
        self.forwarder = forwarder
        self.idle_timeout = idle_timeout
        self.io_timeout = io_timeout
        self.max_connections = max_connections
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.StreamWriter, _Conn] = {}

    @property
    def active(self) -> int:
        return len(self._conns)

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._client, sock=sock)

    def _make_room(self) -> bool:
        """Close the longest-idle connection; False when every slot is mid-query."""
        idle = [c for c in self._conns.values() if c.idle_since is not None]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c.idle_since or 0.0)
        del self._conns[oldest.writer]
        self.holder.counters.tcp_evicted += 1
        oldest.writer.close()  # its pending read ends (EOF) and its task returns
        return True

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._conns) >= self.max_connections and not self._make_room():
            self.holder.counters.tcp_rejected += 1
            writer.close()
            return
        loop = asyncio.get_running_loop()
        conn = _Conn(writer, loop.time())
        self._conns[writer] = conn
        holder = self.holder
        forwarding = self.forwarder is not None
        try:
            while True:
                conn.idle_since = loop.time()
                try:
                    async with asyncio.timeout(self.idle_timeout):
                        head = await reader.readexactly(2)
                    conn.idle_since = None
                    (length,) = struct.unpack("!H", head)
                    async with asyncio.timeout(self.io_timeout):
                        query = await reader.readexactly(length)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                holder.counters.queries_tcp += 1
                try:
                    reply = respond(holder.zone, holder.origin, query, tcp=True, forward=forwarding)
                    if reply is not None and not reply and self.forwarder is not None:
                        peer = writer.get_extra_info("peername") or ("",)
                        reply = await self.forwarder.forward_tcp(query, str(peer[0]))
                except Exception:
                    log.exception("dns: internal error answering a TCP query")
                    return
                if reply is None:
                    return  # RFC 7766: close on an unanswerable message
                holder.counters.rcodes[reply[3] & 0x0F] += 1
                if self.log_queries:
                    log_query(writer.get_extra_info("peername"), "tcp", query, reply)
                writer.write(struct.pack("!H", len(reply)) + reply)
                try:
                    async with asyncio.timeout(self.io_timeout):
                        await writer.drain()
                except TimeoutError:
                    return  # a client that does not read its replies
        except ConnectionError:
            pass
        finally:
            if self._conns.get(writer) is conn:
                del self._conns[writer]
            writer.close()
            try:
                async with asyncio.timeout(self.io_timeout):
                    await writer.wait_closed()
            except Exception:
                writer.transport.abort()  # unsent replies to a client that does not read

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            await self._server.wait_closed()
