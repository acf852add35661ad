"""Step 3 of wire-dns: each new Corefile runs in the real CoreDNS binary on loopback and
must answer before anything is written to the cluster."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from clusterset.kube.coredns import NAMESPACE, WireError
from clusterset.wiredns import corefile as cf
from clusterset.wiredns.answers import answers

# Where the canary sends what it must not forward for real (nothing listens on port 9).
DISCARD = "127.0.0.1:9"


def find_coredns(explicit: str | None = None) -> Path:
    """The CoreDNS binary for the canary: --coredns, the peers cache, else $PATH."""
    if explicit:
        return Path(explicit)
    base = os.environ.get("CLUSTERSET_CACHE") or str(Path.home() / ".cache" / "clusterset")
    cached = Path(base) / "bin" / "coredns"
    if cached.is_file():
        return cached
    found = shutil.which("coredns")
    if found is None:
        raise WireError("the canary needs a CoreDNS binary: give --coredns PATH (nothing changed)")
    return Path(found)


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (CoreDNS listens on both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port: int = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise WireError("no free loopback port for the canary")


@contextlib.asynccontextmanager
async def coredns(
    binary: Path, text: str, *, port: int, workdir: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A real CoreDNS process running `text` (already made loopback) on 127.0.0.1:port."""
    conf = workdir / f"Corefile.{port}"
    conf.write_text(text)
    log_path = workdir / f"coredns.{port}.log"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            str(binary), "-conf", str(conf), stdout=out, stderr=asyncio.subprocess.STDOUT
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                async with asyncio.timeout(5):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


def _tail(path: Path, lines: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return ""


async def canary(
    *,
    binary: Path,
    corefiles: dict[str, str],
    nodelocal: set[str],
    kubeconfig: str,
    context: str,
    zone: str,
    server: str,
    cluster_domain: str = "cluster.local",
    within: float = 20.0,
) -> list[str]:
    """Run every new Corefile in a real CoreDNS; one line per one that fails (empty: ok).

    `server`: where the canary's clusterset zone is forwarded (clusterset dns as reachable
    from here). The `.` zone is forwarded nowhere (DISCARD): the canary asks no outside name.
    """
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="clusterset-canary-") as tmp:
        workdir = Path(tmp)
        core_port = free_port()
        order = sorted(corefiles, key=lambda n: n in nodelocal)  # CoreDNS first
        async with contextlib.AsyncExitStack() as stack:
            for name in order:
                port = core_port if name not in nodelocal else free_port()
                text = cf.loopback(
                    corefiles[name],
                    port=port,
                    kubeconfig=kubeconfig,
                    context=context,
                    substitute={
                        "__PILLAR__CLUSTER__DNS__": f"127.0.0.1:{core_port}",
                        "__PILLAR__UPSTREAM__SERVERS__": DISCARD,
                    },
                    forward={zone: server, ".": DISCARD},
                )
                proc = await stack.enter_async_context(
                    coredns(binary, text, port=port, workdir=workdir)
                )
                problem = await _until_answers(
                    proc,
                    ("127.0.0.1", port),
                    zone=zone,
                    cluster_domain=cluster_domain,
                    within=within,
                    log_path=workdir / f"coredns.{port}.log",
                )
                if problem:
                    problems.append(f"ConfigMap {NAMESPACE}/{name}: canary: {problem}")
                    break
    return problems


async def _until_answers(
    proc: asyncio.subprocess.Process,
    addr: tuple[str, int],
    *,
    zone: str,
    cluster_domain: str,
    within: float,
    log_path: Path,
) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    seen = ""
    while loop.time() < deadline:
        if proc.returncode is not None:
            return f"CoreDNS exited ({proc.returncode}): {_tail(log_path)}"
        local, clusterset, seen = await answers(addr, zone=zone, cluster_domain=cluster_domain)
        if local and clusterset:
            return ""
        await asyncio.sleep(0.3)
    return f"no good answers within {within:g}s ({seen}); CoreDNS says: {_tail(log_path)}"
