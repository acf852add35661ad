"""Leader election on a coordination.k8s.io Lease, so that two controllers never both write.

The rules of client-go's leaderelection, with its defaults (leaseDuration 15 s,
renewDeadline 10 s, retryPeriod 2 s):

- Take the Lease when it is free or expired, with a write conditioned on its
  resourceVersion (a 409 means someone else won); renew it every retry period.
- Expiry is judged by this process's own clock: when did *we* last see the Lease
  change (client-go's observedTime)? The holder's renewTime is never compared
  with our clock, so a holder whose clock is skewed is not taken over.
- A leader that has not renewed within the renew deadline stops leading, and
  `is_leading()` says so at once (the hub checks it before writing). The deadline
  is shorter than the lease, so it has stopped before any other replica can see
  the Lease unchanged for a whole lease duration and take over.

All durations are measured with the event loop's monotonic clock; the wall clock
is only written into the Lease for people to read.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import random
from collections.abc import Callable
from typing import Any

from clusterset.kube import api as k

log = logging.getLogger(__name__)

LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
JITTER = 1.2  # client-go's JitterFactor: retries wait up to 1.2 x the retry period


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def micro_time(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_timing(*, lease_duration: float, renew_deadline: float, retry_period: float) -> None:
    """client-go's rules; a ValueError names the flag that breaks them."""
    if retry_period <= 0:
        raise ValueError("--leader-elect-retry-period must be > 0")
    if renew_deadline <= JITTER * retry_period:
        raise ValueError(
            f"--leader-elect-renew-deadline ({renew_deadline:g}s) must be greater than "
            f"{JITTER} x --leader-elect-retry-period ({retry_period:g}s)"
        )
    if lease_duration <= renew_deadline:
        raise ValueError(
            f"--leader-elect-lease-duration ({lease_duration:g}s) must be greater than "
            f"--leader-elect-renew-deadline ({renew_deadline:g}s)"
        )


class LeaderElector:
    def __init__(
        self,
        api: k.KubeApi,
        *,
        namespace: str,
        name: str,
        identity: str,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
        wall_clock: Callable[[], dt.datetime] = _now,  # only written, never compared
    ) -> None:
        check_timing(
            lease_duration=lease_duration, renew_deadline=renew_deadline, retry_period=retry_period
        )
        self.api = api
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.wall_clock = wall_clock
        self.leading = asyncio.Event()
        # The Lease's spec as last seen, and when (loop time) it last changed.
        self._observed: dict[str, Any] | None = None
        self._observed_at = 0.0
        # When (loop time) the last successful acquire/renew was sent.
        self._renewed_at = float("-inf")

    def is_leading(self) -> bool:
        """True only while the last renewal is younger than the renew deadline: checked
        before every write, so a leader that was paused or cut off writes nothing more."""
        return (
            self.leading.is_set()
            and asyncio.get_running_loop().time() - self._renewed_at < self.renew_deadline
        )

    def _body(self, have: dict[str, Any] | None, transitions: int) -> dict[str, Any]:
        now = micro_time(self.wall_clock())
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": max(1, round(self.lease_duration)),
            "acquireTime": now,
            "renewTime": now,
            "leaseTransitions": transitions,
        }
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if have is not None:
            meta["resourceVersion"] = have["metadata"]["resourceVersion"]
            held = have.get("spec") or {}
            if held.get("holderIdentity") == self.identity and held.get("acquireTime"):
                spec["acquireTime"] = held["acquireTime"]
        return {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": spec,
        }

    def _observe(self, spec: dict[str, Any], at: float) -> None:
        if spec != self._observed:
            self._observed, self._observed_at = spec, at

    async def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease; True when we hold it now."""
        loop = asyncio.get_running_loop()
        path = k.LEASES.path(self.namespace, self.name)
        try:
            have: dict[str, Any] | None = await self.api.get(path)
        except k.ApiError as exc:
            if exc.status != 404:
                raise
            have = None
        if have is None:
            try:
                made = await self.api.create(k.LEASES.path(self.namespace), self._body(None, 0))
            except k.ApiError as exc:
                if exc.status == 409:
                    return False
                raise
            self._observe(made.get("spec") or {}, loop.time())
            return True
        spec = have.get("spec") or {}
        self._observe(spec, loop.time())
        holder = spec.get("holderIdentity")
        duration = float(spec.get("leaseDurationSeconds") or self.lease_duration)
        expired = loop.time() - self._observed_at > duration
        if holder not in (None, "", self.identity) and not expired:
            return False
        transitions = int(spec.get("leaseTransitions") or 0) + (holder != self.identity)
        try:
            written = await self.api.replace(path, self._body(have, transitions))
        except k.ApiError as exc:
            if exc.status == 409:
                return False
            raise
        self._observe(written.get("spec") or {}, loop.time())
        return True

    async def _attempt(self, within: float) -> bool:
        """try_acquire, bounded in time (a partitioned apiserver must not hold us up) and
        with transport errors counted as a failed attempt."""
        try:
            async with asyncio.timeout(max(0.0, within)):
                return await self.try_acquire()
        except TimeoutError:
            log.warning("leader election: no answer from the apiserver in %.1fs", within)
        except Exception as exc:
            log.warning("leader election: %s", exc)
        return False

    async def run(self) -> None:
        """Acquire, then renew; return when a renewal did not succeed within the deadline."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            if await self._attempt(self.renew_deadline):
                self._renewed_at = started
                break
            await asyncio.sleep(self.retry_period * random.uniform(1.0, JITTER))
        log.info(
            "leader election: %s is the leader (%s/%s)", self.identity, self.namespace, self.name
        )
        self.leading.set()
        while True:
            await asyncio.sleep(self.retry_period)
            # Retry until the deadline counted from the last success (client-go's renew loop).
            while True:
                remaining = self._renewed_at + self.renew_deadline - loop.time()
                if remaining <= 0:
                    self.leading.clear()
                    log.warning(  # the caller exits with the error line
                        "leader election: not renewed within %.1fs; stopped leading",
                        self.renew_deadline,
                    )
                    return
                started = loop.time()
                if await self._attempt(remaining):
                    self._renewed_at = started
                    break
                await asyncio.sleep(min(self.retry_period, max(0.0, remaining)))

    async def release(self) -> None:
        """Give the lease up on a clean shutdown, so a successor need not wait it out
        (client-go's ReleaseOnCancel)."""
        if not self.leading.is_set():
            return
        path = k.LEASES.path(self.namespace, self.name)
        try:
            have = await self.api.get(path)
            if (have.get("spec") or {}).get("holderIdentity") != self.identity:
                return
            body = self._body(have, int((have.get("spec") or {}).get("leaseTransitions") or 0))
            body["spec"]["holderIdentity"] = ""
            body["spec"]["leaseDurationSeconds"] = 1
            await self.api.replace(path, body)
            log.info("leader election: released %s/%s", self.namespace, self.name)
        except Exception as exc:  # best effort: the lease lapses anyway
            log.warning("leader election: release failed: %s", exc)
        finally:
            self.leading.clear()
