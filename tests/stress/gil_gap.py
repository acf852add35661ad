"""How long a UDP responder thread goes unanswered while this process runs something.

The client runs in another process, so that only the responder waits for this one's GIL:
the longest gap between its replies is the longest time the GIL was held from it (the
switch interval, 5 ms, while pure Python runs; a long C call or a full GC holds it longer).
`python -m tests.stress.gil_gap [KiB ...]` prints it for hostile manifest files and for
small Services, under the server's GC policy and switch interval.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

_CLIENT = r"""
import socket, sys, time
import select
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.settimeout(2.0)
to = ("127.0.0.1", int(sys.argv[1]))
gaps = []
print("ready", flush=True)
sys.stdin.readline()
last = time.perf_counter()
while True:
    if select.select([sys.stdin], [], [], 0)[0]:
        break
    sock.sendto(b"q", to)
    sock.recvfrom(16)
    now = time.perf_counter()
    gaps.append(now - last)
    last = now
    time.sleep(0.0002)
print(max(gaps), flush=True)
"""


def longest_gap(work: Callable[[], object]) -> float:
    """Seconds: the longest time the responder went unanswered while `work` ran."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))

    def respond() -> None:
        while True:
            data, addr = srv.recvfrom(16)
            if data == b"stop":
                return
            srv.sendto(data, addr)

    responder = threading.Thread(target=respond, daemon=True)
    responder.start()
    with subprocess.Popen(
        [sys.executable, "-c", _CLIENT, str(srv.getsockname()[1])],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as client:
        assert client.stdin is not None and client.stdout is not None
        try:
            client.stdout.readline()  # ready
            client.stdin.write("go\n")
            client.stdin.flush()
            threading.Event().wait(0.05)
            work()
            threading.Event().wait(0.05)
            client.stdin.write("stop\n")
            client.stdin.flush()
            return float(client.stdout.readline())
        finally:
            client.stdin.close()
            client.wait(10)
            srv.sendto(b"stop", srv.getsockname())
            responder.join(5)
            srv.close()


def one_scalar(size: int) -> str:
    """A Service whose one annotation is `size` characters (libyaml scans it in one call)."""
    return (
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: big\n  namespace: default\n"
        "  annotations: {note: " + "a" * size + "}\n"
        "spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}\n"
    )


def small_keys(size: int) -> str:
    """A Service with `size` characters of labels (hundreds of thousands of YAML nodes)."""
    lines = ["apiVersion: v1", "kind: Service", "metadata:", "  name: big", "  labels:"]
    total, i = 0, 0
    while total < size:
        line = f"    k{i}: v{i}"
        lines.append(line)
        total, i = total + len(line) + 1, i + 1
    lines += ["  namespace: default", "spec: {clusterIP: 10.0.0.1, ports: [{port: 80}]}"]
    return "\n".join(lines) + "\n"


def many_services(size: int) -> str:
    """`size` characters of small Services, one document each (what a real big file holds)."""
    docs, total, i = [], 0, 0
    while total < size:
        doc = (
            f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: default}}\n"
            f"spec: {{clusterIP: 10.0.{i // 250 % 250}.{i % 250 + 1}, ports: [{{port: 80}}]}}\n"
        )
        docs.append(doc)
        total, i = total + len(doc) + 4, i + 1
    return "---\n".join(docs)


SHAPES: dict[str, Callable[[int], str]] = {
    "one scalar": one_scalar,
    "small keys": small_keys,
    "services": many_services,
}


def main(sizes: list[int]) -> None:
    from clusterset.manifests.load import FolderReader
    from clusterset.server import gcpolicy
    from clusterset.server.app import SWITCH_INTERVAL

    gcpolicy.configure()  # as the server runs
    sys.setswitchinterval(SWITCH_INTERVAL)

    with tempfile.TemporaryDirectory() as tmp:
        for kib in sizes:
            for name, make in SHAPES.items():
                folder = Path(tmp) / f"{name.replace(' ', '-')}-{kib}"
                folder.mkdir()
                (folder / "big.yaml").write_text(make(kib * 1024 - 200))
                gap = longest_gap(FolderReader(folder).read)
                print(f"{name:10} {kib:5} KiB: longest UDP gap {gap * 1000:6.1f} ms", flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [64, 1024, 3072])
