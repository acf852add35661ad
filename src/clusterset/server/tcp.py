"""TCP: length-prefixed messages (RFC 7766), pipelined, with timeouts and a bound on
connections so that no client can make us hold memory without limit.

Slots are shared fairly, as knot and unbound do. A connection waiting on its client
(for its next query, or for the rest of one) can be closed to make room for a
newcomer (RFC 7766 6.2.3 lets a server close connections under pressure): the one
that never got an answer goes first, then the one waiting the longest, so neither
idle clients nor clients holding half a message can lock others out. Only a
connection we are answering is never closed. One source holds at most
`max_per_source` slots: past that its newcomers take the place of its own waiting
connections, and the other clients keep the rest.

Timeouts: a new connection has `io_timeout` to deliver its whole first query (a
client connects to ask); between queries it may idle for `idle_timeout`; once a
message has started (its first length byte), the rest of it, and the write of each
reply, must complete within `io_timeout` (a client dribbling a byte at a time, or
never reading, loses its slot).
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
    source: str
    waiting_since: float | None  # loop time since it waits on its client; None while answered
    answered: bool = False  # has had a reply: closed after those that never had one


class TcpServer:
    def __init__(
        self,
        holder: ZoneHolder,
        *,
        idle_timeout: float = 10.0,
        io_timeout: float = 3.0,
        max_connections: int = 256,
        max_per_source: int = 64,
        forwarder: Forwarder | None = None,
        log_queries: bool = False,
    ) -> None:
        self.holder = holder
        self.log_queries = log_queries
        self.forwarder = forwarder
        self.idle_timeout = idle_timeout
        self.io_timeout = io_timeout
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self._server: asyncio.Server | None = None
        self._conns: dict[asyncio.StreamWriter, _Conn] = {}
        self._per_source: dict[str, int] = {}

    async def start(self, sock: socket.socket) -> None:
        self._server = await asyncio.start_server(self._client, sock=sock)

    def _admit(self, source: str) -> bool:
        """Make room for one more connection from `source` (its own slots first, so a
        busy source competes with itself); False when every candidate is being answered."""
        if self._per_source.get(source, 0) >= self.max_per_source:
            return self._evict(source)
        return len(self._conns) < self.max_connections or self._evict(None)

    def _evict(self, source: str | None) -> bool:
        """Close a connection waiting on its client (of `source` only, if given): first
        those that never had an answer, then the longest waiting."""
        waiting = [
            c
            for c in self._conns.values()
            if c.waiting_since is not None and (source is None or c.source == source)
        ]
        if not waiting:
            return False
        victim = min(waiting, key=lambda c: (c.answered, c.waiting_since or 0.0))
        self._release(victim)
        self.holder.counters.tcp_evicted += 1
        victim.writer.close()  # its pending read ends (EOF) and its task returns
        return True

    def _release(self, conn: _Conn) -> None:
        if self._conns.pop(conn.writer, None) is None:
            return  # already evicted
        left = self._per_source[conn.source] - 1
        if left:
            self._per_source[conn.source] = left
        else:
            del self._per_source[conn.source]

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername") or ("",)
        source = str(peer[0])
        if not self._admit(source):
            self.holder.counters.tcp_rejected += 1
            writer.close()
            return
        loop = asyncio.get_running_loop()
        conn = _Conn(writer, source, loop.time())
        self._conns[writer] = conn
        self._per_source[source] = self._per_source.get(source, 0) + 1
        holder = self.holder
        forwarding = self.forwarder is not None
        try:
            while True:
                conn.waiting_since = now = loop.time()
                # The first query must be whole within io_timeout of the connect; a later
                # one may start after idle_timeout, then must be whole within io_timeout.
                deadline = now + (self.idle_timeout if conn.answered else self.io_timeout)
                try:
                    async with asyncio.timeout_at(deadline):
                        head = await reader.readexactly(1)
                    if conn.answered:
                        deadline = loop.time() + self.io_timeout
                    async with asyncio.timeout_at(deadline):
                        head += await reader.readexactly(1)
                        (length,) = struct.unpack("!H", head)
                        query = await reader.readexactly(length)
                except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
                    return
                conn.waiting_since = None
                holder.counters.queries_tcp += 1
                try:
                    reply = respond(holder.zone, holder.origin, query, tcp=True, forward=forwarding)
                    if reply is not None and not reply and self.forwarder is not None:
                        reply = await self.forwarder.forward_tcp(query, source)
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
                conn.answered = True
        except (ConnectionError, asyncio.CancelledError):
            # A cancel is shutdown: asyncio's start_server callback (3.11) would log it
            # with a traceback. The connection just ends.
            pass
        finally:
            self._release(conn)
            writer.close()
            try:
                async with asyncio.timeout(self.io_timeout):
                    await writer.wait_closed()
            except (Exception, asyncio.CancelledError):
                writer.transport.abort()  # unsent replies to a client that does not read

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._conns):
                w.close()
            await self._server.wait_closed()
