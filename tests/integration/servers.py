"""Real processes on loopback for integration tests: our server, and peers in front of it."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

ROOT = Path(__file__).resolve().parents[2]


# An error line of the text log format (klog's header: `E1207 12:20:00.123456 logger: ...`).
TEXT_ERROR = re.compile(r"E\d{4} \d\d:\d\d:\d\d\.\d{6} ")


def free_port(run: int = 1) -> int:
    """A port free for both UDP and TCP on 127.0.0.1, with the `run - 1` ports after it
    free for TCP too (--workers N: the supervisor's /metrics on base, worker i's on
    base + 1 + i)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port: int = u.getsockname()[1]
            if port + run > 65536:
                continue
            try:
                with contextlib.ExitStack() as held:
                    for p in range(port, port + run):
                        t = held.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                        t.bind(("127.0.0.1", p))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


def query(
    port: int, name: str, rdtype: str = "A", *, tcp: bool = False, timeout: float = 1.0
) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, use_edns=0)
    fn = dns.query.tcp if tcp else dns.query.udp
    return fn(q, "127.0.0.1", port=port, timeout=timeout)


def wait_answering(
    port: int,
    proc: subprocess.Popen[bytes] | None = None,
    *,
    zone: str = "clusterset.local",
    timeout: float = 15.0,
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {_stderr(proc)}")
        try:
            r = query(port, f"dns-version.{zone}", "TXT", timeout=0.3)
            if r.rcode() == dns.rcode.NOERROR and r.answer:
                return
        except (dns.exception.Timeout, OSError):
            pass
        time.sleep(0.05)
    raise TimeoutError(f"nothing answered on 127.0.0.1:{port}")


def _stderr(proc: subprocess.Popen[bytes]) -> str:
    log = getattr(proc, "log", None)
    if log is not None:
        log.seek(0)
        text: str = log.read().decode(errors="replace")
        return text[-3000:]
    try:
        out, err = proc.communicate(timeout=2)
    except subprocess.TimeoutExpired:
        return "(still running)"
    return ((out or b"") + (err or b"")).decode(errors="replace")[-3000:]


def server_log(proc: subprocess.Popen[bytes]) -> str:
    return _stderr(proc)


@contextmanager
def clusterset(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`clusterset ARGS --listen 127.0.0.1:PORT` running, answering; stopped with SIGTERM after."""
    port = free_port()
    cmd = [sys.executable, "-m", "clusterset", *args, "--listen", f"127.0.0.1:{port}"]
    log = tempfile.TemporaryFile()  # a pipe nobody reads would fill and block the server
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, env={**os.environ, **(env or {})}, cwd=cwd)
    proc.log = log  # type: ignore[attr-defined]
    try:
        wait_answering(port, proc)
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def need(binary: str) -> str:
    """Peers are installed by the test command; a missing one is a failure, not a skip."""
    path = shutil.which(binary) or next(
        (p for p in (f"/usr/sbin/{binary}", f"/sbin/{binary}") if os.path.exists(p)), None
    )
    if path is None:
        raise AssertionError(
            f"{binary} is not installed: run the README's test command (scripts/test)"
        )
    return path


@contextmanager
def unbound_in_front(
    upstream_port: int, zone: str = "clusterset.local", tmp: Path | None = None
) -> Iterator[int]:
    """A real recursive resolver stub-zoning the clusterset zone to our server (as CoreDNS would)."""
    with _unbound({zone: upstream_port}, tmp or Path(tempfile.mkdtemp())) as port:
        yield port


@contextmanager
def knotd_serving(zone: str, zone_text: str, tmp: Path) -> Iterator[int]:
    """knotd (a real authoritative server) serving `zone` on loopback: plays kube-dns."""
    binary = need("knotd")
    port = free_port()
    (tmp / f"{zone}.zone").write_text(zone_text)
    conf = tmp / "knot.conf"
    conf.write_text(f"""server:
    listen: 127.0.0.1@{port}
    rundir: "{tmp}"
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
database:
    storage: "{tmp}"
log:
  - target: stderr
    any: warning
template:
  - id: default
    storage: "{tmp}"
    semantic-checks: off
zone:
  - domain: {zone}
    file: "{zone}.zone"
""")
    proc = subprocess.Popen(
        [binary, "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"knotd exited: {_stderr(proc)}")
            try:
                if query(port, zone, "SOA", timeout=0.3).answer:
                    break
            except (dns.exception.Timeout, OSError):
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("knotd did not answer")
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=5)


def unbound_stub(zones: dict[str, int], tmp: Path) -> AbstractContextManager[int]:
    """unbound with one stub-zone per entry (zone -> port on 127.0.0.1)."""
    return _unbound(zones, tmp)


@contextmanager
def _unbound(zones: dict[str, int], tmp: Path) -> Iterator[int]:
    binary = need("unbound")
    port = free_port()
    conf = tmp / f"unbound-{port}.conf"
    stubs = "".join(
        f'stub-zone:\n    name: "{z}"\n    stub-addr: 127.0.0.1@{p}\n' for z, p in zones.items()
    )
    insecure = "".join(
        f'    domain-insecure: "{z}"\n    local-zone: "{z}." transparent\n' for z in zones
    )
    conf.write_text(f"""server:
    interface: 127.0.0.1
    port: {port}
    do-daemonize: no
    use-syslog: no
    logfile: ""
    username: ""
    chroot: ""
    directory: "{tmp}"
    pidfile: ""
    do-ip6: no
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
{insecure}    module-config: "iterator"
    num-threads: 1
    verbosity: 1
{stubs}""")
    proc = subprocess.Popen(
        [binary, "-d", "-c", str(conf)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"unbound exited: {_stderr(proc)}")
            try:
                query(port, next(iter(zones)), "SOA", timeout=0.3)
                break
            except (dns.exception.Timeout, OSError):
                time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=5)
