"""Reference loops for dns_qps.py --floor: how much of the server's CPU per query is the
Python UDP loop itself, and how much is `respond`.

    python bench/_floor_server.py DIR PORT respond|memo|echo [thread]

respond: blocking recvfrom/respond/sendto on the same CompiledZone the server builds.
memo:    respond() behind a dict of replies keyed by the query bytes after the ID
         (a prototype of a reply cache; not what src/ does).
echo:    the same loop replying with the query bytes (no lookup at all).
thread:  run the loop in a non-main thread while the main thread idles (as the server does).
"""

from __future__ import annotations

import socket
import sys
import threading
import time
from pathlib import Path

from clusterset.controller.manifest import FolderFeed
from clusterset.server.app import compile_view
from clusterset.zone.settings import ZoneSettings
from clusterset.zone.wire import respond


def main() -> None:
    root, port, mode = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    zone = compile_view(FolderFeed(root).snapshot(), ZoneSettings())
    origin = zone.origin_wire
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind(("127.0.0.1", port))
    recvfrom, sendto = sock.recvfrom, sock.sendto

    def loop_respond() -> None:
        while True:
            q, addr = recvfrom(65535)
            r = respond(zone, origin, q)
            if r:
                sendto(r, addr)

    def loop_memo() -> None:
        # Prototype (not in src): replies memoised by everything after the query ID.
        memo: dict[bytes, bytes] = {}
        get = memo.get
        while True:
            q, addr = recvfrom(65535)
            tail = get(q[2:])
            if tail is None:
                r = respond(zone, origin, q)
                if not r:
                    continue
                if len(memo) < 100_000:
                    memo[q[2:]] = r[2:]
                sendto(r, addr)
            else:
                sendto(q[:2] + tail, addr)

    def loop_echo() -> None:
        while True:
            q, addr = recvfrom(65535)
            sendto(q, addr)

    loop = {"respond": loop_respond, "memo": loop_memo, "echo": loop_echo}[mode]
    if len(sys.argv) > 4 and sys.argv[4] == "thread":
        threading.Thread(target=loop, daemon=True).start()
        while True:
            time.sleep(3600)
    loop()


if __name__ == "__main__":
    main()
