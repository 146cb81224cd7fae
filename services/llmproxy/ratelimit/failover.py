"""The shared store with a local fallback: Redis down or slow never reaches Envoy as an error.

Every call to Redis is bounded by a timeout tighter than Envoy's. When Redis refuses the
connection or errs, or three calls in a row time out, this instance degrades: it says so in
a log line and the llmproxy_ratelimit_degraded metric, and decides with its own
MemoryLimitStore (limits divided among the instances) without waiting on Redis again. A
probe checks Redis every probe interval; once it answers, decisions go back to Redis and the
local counts are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from llmproxy.ratelimit import metrics
from llmproxy.ratelimit.errors import StoreError
from llmproxy.ratelimit.memory_store import MemoryLimitStore
from llmproxy.ratelimit.store import Adjust, LimitStore, Outcome, Take

log = logging.getLogger(__name__)
T = TypeVar("T")
_LATE_EXTENSIONS = 3
TIMEOUTS_TO_DEGRADE = 3


class FailoverStore:
    """A LimitStore that falls back to local counters while the primary fails."""

    def __init__(
        self,
        primary: LimitStore,
        fallback: MemoryLimitStore,
        *,
        timeout_s: float,
        probe_interval_s: float,
        instances: int = 1,
        on_change: Callable[[bool], None] = lambda degraded: None,
    ) -> None:
        self._primary = primary
        self._fallback = fallback
        self._timeout_s = timeout_s
        self._probe_interval_s = probe_interval_s
        self._instances = instances
        self._on_change = on_change
        self._probe: asyncio.Task[None] | None = None
        self.degraded = False
        self._timeouts = 0
        metrics.DEGRADED.set(0)

    def _timed_out(self, error: TimeoutError) -> None:
        # One slow call on a busy shared machine is not an outage: that batch is decided
        # locally, but only consecutive timeouts mean Redis is down.
        self._timeouts += 1
        if self._timeouts >= TIMEOUTS_TO_DEGRADE:
            self._degrade(error)

    def _degrade(self, error: BaseException) -> None:
        if self.degraded:
            return
        self.degraded = True
        metrics.DEGRADED.set(1)
        metrics.DEGRADATIONS.inc()
        log.warning(
            "redis unavailable: deciding with this instance's local limits until it is back",
            extra={"error": str(error) or type(error).__name__},
        )
        self._on_change(True)
        self._probe = asyncio.get_running_loop().create_task(self._wait_for_primary())

    async def _wait_for_primary(self) -> None:
        while True:
            await asyncio.sleep(self._probe_interval_s)
            try:
                async with asyncio.timeout(max(self._timeout_s, 1.0)):
                    await self._primary.ping()
            except (StoreError, TimeoutError):
                continue
            self._fallback.clear()
            self._timeouts = 0
            self.degraded = False
            metrics.DEGRADED.set(0)
            log.info("redis is back: deciding with the shared limits again")
            self._on_change(False)
            return

    async def _bounded(self, call: Awaitable[T]) -> T:
        """The primary's answer, or TimeoutError if Redis (not this process) is slow.

        A deadline that fires late means this process's own event loop was busy (the answer
        may be waiting in the socket): that is load, not a Redis outage, so the call gets
        more time, a few times, rather than degrading every instance under load.
        """
        loop = asyncio.get_running_loop()
        timeout_s = self._timeout_s
        extensions = _LATE_EXTENSIONS
        async with asyncio.timeout(None) as scope:

            def check(deadline: float) -> None:
                nonlocal extensions
                now = loop.time()
                if now - deadline >= timeout_s / 2 and extensions > 0:
                    extensions -= 1
                    timers.append(loop.call_at(now + timeout_s, check, now + timeout_s))
                else:
                    scope.reschedule(now)  # expire: Redis had its time

            deadline = loop.time() + timeout_s
            timers = [loop.call_at(deadline, check, deadline)]
            try:
                return await call
            finally:
                timers[-1].cancel()
        raise AssertionError("unreachable")  # pragma: no cover - the scope returns or raises

    def _share(self, ops: Sequence[Take]) -> list[Take]:
        if self._instances == 1:
            return list(ops)
        return [
            Take(o.key, o.algorithm, math.ceil(o.limit / self._instances), o.window_ms, o.hits)
            for o in ops
        ]

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        """Decide on Redis, or locally while degraded or when this call fails."""
        if not self.degraded:
            try:
                outcomes = await self._bounded(self._primary.take(ops))
            except StoreError as exc:
                self._degrade(exc)
            except TimeoutError as exc:
                self._timed_out(exc)
            else:
                self._timeouts = 0
                return outcomes
        return await self._fallback.take(self._share(ops))

    async def adjust(self, ops: Sequence[Adjust]) -> int:
        """Correct on Redis, or locally while degraded."""
        if not self.degraded:
            try:
                return await self._bounded(self._primary.adjust(ops))
            except StoreError as exc:
                self._degrade(exc)
            except TimeoutError as exc:
                self._timed_out(exc)
        return await self._fallback.adjust(ops)

    async def reset(self, key: str, algorithm: str) -> bool:
        """Reset locally and, unless degraded, on Redis."""
        local = await self._fallback.reset(key, algorithm)
        if self.degraded:
            return local
        try:
            async with asyncio.timeout(max(self._timeout_s, 1.0)):
                return await self._primary.reset(key, algorithm) or local
        except (StoreError, TimeoutError) as exc:
            self._degrade(exc)
            return local

    async def ping(self) -> None:
        """Answers while either store does: degraded is still serving."""

    async def aclose(self) -> None:
        """Stop probing and close the primary."""
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)
        await self._primary.aclose()
