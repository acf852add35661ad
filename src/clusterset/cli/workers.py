"""`--workers N`: N server processes on one port (SO_REUSEPORT), supervised by this one.

Each worker is a whole server of its own: its own feed and its own compiled zone (memory
x N), so a worker that dies takes nothing from the others, and the kernel spreads queries
over the sockets still open. The supervisor starts this same command N times (the
worker's index in CLUSTERSET_WORKER), restarts a worker that dies, and forwards SIGTERM
and SIGINT.

With --metrics-listen the supervisor serves it, as one server: /metrics is every worker's
(scraped from the worker at scrape time, each sample labelled worker="i": server/scrape.py)
and its own, /ready is 200 while a worker serves (its heartbeats below: a worker beats
once it has joined the DNS port, which it does only with a loaded zone). Worker i serves
its own /metrics, /health and /ready on 127.0.0.1, the --metrics-listen port + 1 + i.

A worker that hangs (stopped, deadlocked) keeps its socket: the kernel goes on giving it
its share of the flows, which nobody answers. So each serving worker writes a heartbeat
byte into a pipe from its event loop every HEARTBEAT seconds; one silent for
HEARTBEAT_TIMEOUT is killed, and restarted like a worker that died.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType

from prometheus_client import CollectorRegistry

from clusterset.server.app import DnsOptions, parse_listen
from clusterset.server.http import OpsServer
from clusterset.server.scrape import WorkersCollector

log = logging.getLogger(__name__)
WORKER_ENV = "CLUSTERSET_WORKER"  # "INDEX:SUPERVISOR_PID:HEARTBEAT_FD"
HEARTBEAT = 0.5  # seconds between a serving worker's heartbeats
HEARTBEAT_TIMEOUT = 5.0  # a serving worker silent this long is hung: killed and restarted
SERVING_WITHIN = 4 * HEARTBEAT  # a worker that beat this recently serves (the supervisor's /ready)
RESTART_EVERY = 1.0  # seconds: a worker that keeps dying restarts at most this often
USAGE = 2  # a worker's exit status for bad flags or a busy port: restarting cannot help
INTERRUPTED = 130  # the exit status after SIGINT (shells', kubectl's), a worker's included


def worker_index() -> int | None:
    """This process's index when the supervisor started it, else None."""
    index, _, _ = os.environ.get(WORKER_ENV, "").partition(":")
    return int(index) if index.isdigit() else None


def follow_supervisor(every: float = 1.0) -> None:
    """In a worker: SIGTERM ourselves (a graceful exit) once the supervisor is gone, even
    when it was killed with SIGKILL and could not forward anything, and even before this
    worker got here (its pid comes from the environment, not from getppid() now)."""
    parent = int(os.environ[WORKER_ENV].split(":")[1] or 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(every)
        log.warning("workers: the supervisor (pid %d) is gone: stopping", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="follow-supervisor", daemon=True).start()


async def heartbeat(serving: asyncio.Event) -> None:
    """In a worker: a byte into the supervisor's pipe every HEARTBEAT seconds from when it
    is `serving` (the supervisor counts from the first beat). From the event loop, so a
    loop that stops turning stops the beats."""
    fields = os.environ.get(WORKER_ENV, "").split(":")
    if len(fields) < 3 or not fields[2].isdigit():
        return
    fd = int(fields[2])
    os.set_blocking(fd, False)
    await serving.wait()
    while True:
        # A full pipe (the supervisor busy) or a gone supervisor: nothing to tell.
        with contextlib.suppress(BlockingIOError, BrokenPipeError):
            os.write(fd, b".")
        await asyncio.sleep(HEARTBEAT)


def for_worker(options: DnsOptions, index: int) -> DnsOptions:
    """Share the DNS port with the other workers; /metrics on loopback, for the supervisor."""
    metrics = options.metrics_listen
    if metrics is not None:
        metrics = "{}:{}".format(*_worker_ops(metrics, index))
    return dataclasses.replace(options, reuse_port=True, metrics_listen=metrics)


def _worker_ops(metrics_listen: str, index: int) -> tuple[str, int]:
    """Where worker `index` serves /metrics: loopback only (the supervisor is the scrape
    target), on the port after the supervisor's + index."""
    return "127.0.0.1", parse_listen(metrics_listen, "--metrics-listen")[1] + 1 + index


def supervise(workers: int, metrics_listen: str | None) -> None:
    """Run `workers` copies of this command until SIGTERM/SIGINT, serving `metrics_listen`
    for them all; exit 2 if one exits 2."""
    supervisor = _Supervisor()
    ops = None if metrics_listen is None else supervisor.ops(workers, metrics_listen)
    signal.signal(signal.SIGTERM, supervisor.forward)
    signal.signal(signal.SIGINT, supervisor.forward)
    for i in range(workers):
        supervisor.start(i)
    if ops is not None:
        ops.start()
    while not supervisor.stopping:
        time.sleep(0.2)
        supervisor.tend()
    status = supervisor.reap()
    if ops is not None:
        ops.stop()
    if status:
        raise SystemExit(status)
    if supervisor.interrupted:
        raise SystemExit(INTERRUPTED)


@dataclasses.dataclass(slots=True)
class _Worker:
    proc: subprocess.Popen[bytes]
    started: float
    beats: int  # the read end of its heartbeat pipe
    beat_at: float | None = None  # its last heartbeat; None before its first


class _Supervisor:
    """The workers, and what the signals asked for."""

    def __init__(self) -> None:
        self.argv = [sys.executable, "-m", "clusterset", *sys.argv[1:]]
        self.workers: list[_Worker] = []
        self.stopping = False
        self.interrupted = False
        self.status = 0  # USAGE once a worker could not serve
        self.restarts: list[int] = []  # per slot

    def ops(self, workers: int, metrics_listen: str) -> OpsServer:
        """/metrics, /health and /ready for all the workers (bound, not started: a port
        in use is exit 2 before any worker starts)."""
        targets = [_worker_ops(metrics_listen, i) for i in range(workers)]
        registry = CollectorRegistry()
        registry.register(WorkersCollector(targets, self.restarts))
        listen = parse_listen(metrics_listen, "--metrics-listen")
        return OpsServer(listen, registry, ready=self.ready, about=self.about)

    def serving(self) -> int:
        """How many workers beat lately: each is on the DNS port with a loaded zone."""
        now = time.monotonic()
        return sum(w.beat_at is not None and now - w.beat_at < SERVING_WITHIN for w in self.workers)

    def ready(self) -> bool:
        """One serving worker answers every query; not ready once stopping (lameduck)."""
        return not self.stopping and self.serving() > 0

    def about(self) -> str:
        """/ready's second line (each worker's own /ready names the cluster ID)."""
        return f"workers serving: {self.serving()} of {len(self.workers)}"

    def start(self, i: int) -> None:
        """Start worker i, or restart it in its slot."""
        read, write = os.pipe()
        os.set_blocking(read, False)
        env = {**os.environ, WORKER_ENV: f"{i}:{os.getpid()}:{write}"}
        proc = subprocess.Popen(self.argv, env=env, pass_fds=(write,))
        os.close(write)
        log.info("workers: worker %d started (pid %d)", i, proc.pid)
        worker = _Worker(proc, time.monotonic(), read)
        if i < len(self.workers):
            os.close(self.workers[i].beats)
            self.workers[i] = worker
            self.restarts[i] += 1
        else:
            self.workers.append(worker)
            self.restarts.append(0)

    def forward(self, signum: int, _frame: FrameType | None) -> None:
        """Stop: pass the signal on to every worker still running."""
        self.stopping = True
        self.interrupted = self.interrupted or signum == signal.SIGINT
        for w in self.workers:
            if w.proc.poll() is None:
                w.proc.send_signal(signum)

    def tend(self) -> None:
        """Restart the workers that exited or hung; stop them all when one cannot serve."""
        for i, w in enumerate(self.workers):
            code = self._exit_code(i, w)
            if code is None or self.stopping:
                continue
            if code == USAGE:  # its one-line reason is on stderr already
                log.error("workers: worker %d cannot serve (exit 2): stopping all", i)
                self.status = USAGE
                self.forward(signal.SIGTERM, None)
                return
            log.warning(
                "workers: worker %d (pid %d) exited with %d: restarting", i, w.proc.pid, code
            )
            wait = w.started + RESTART_EVERY - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            self.start(i)

    def _exit_code(self, i: int, w: _Worker) -> int | None:
        """Worker i's exit status, once it is killed if it hung; None while it runs."""
        code = w.proc.poll()
        if code is None and not self.stopping and _hung(w):
            log.error(
                "workers: worker %d (pid %d) sent no heartbeat for %gs: killing it",
                i, w.proc.pid, HEARTBEAT_TIMEOUT,
            )  # fmt: skip
            w.proc.kill()
            code = w.proc.wait()
        return code

    def reap(self) -> int:
        """Wait for every worker; the exit status: 2 if one could not serve, 1 if one
        failed, else 0."""
        status = self.status
        for w in self.workers:
            code = w.proc.wait()
            if code not in (0, USAGE, INTERRUPTED) and status == 0:
                status = 1
        for w in self.workers:
            os.close(w.beats)
        return status


def _hung(w: _Worker) -> bool:
    """The worker beat before and has been silent for HEARTBEAT_TIMEOUT."""
    with contextlib.suppress(BlockingIOError):
        while os.read(w.beats, 4096):
            w.beat_at = time.monotonic()
    return w.beat_at is not None and time.monotonic() - w.beat_at > HEARTBEAT_TIMEOUT
