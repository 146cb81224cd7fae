"""The shared store with a local fallback: Redis down or slow never reaches Envoy as an error.

While Redis is up, every decision is Redis's: a call slower than the timeout is not abandoned
(its script may already have counted, or refused, what a local decision would then admit: the
limit would no longer be exact), it is waited for. Each timeout it stays unanswered counts as
one; three in a row, from one call or several, or a refused connection or an error, mean Redis
is down. Then this instance degrades: it says so in a log line and the
llmproxy_ratelimit_degraded metric, and decides with its own MemoryLimitStore without waiting
on Redis again, each limit divided by the live number of limiter instances
(common.live_count: the last count read from the instance registry, kept while Redis is down),
so that all of them together stay near the limit however many a platform runs. A call still
out when the instance degrades is decided locally too; what its script may have counted stays
counted until its window passes (strict, never over). A probe checks Redis every probe
interval; once it answers, decisions go back to Redis and the local counts are dropped. When to
switch is `common.fallback`'s; what goes where is here."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Sequence

from llmproxy.common.fallback import FallbackSwitch, bounded
from llmproxy.ratelimit import metrics
from llmproxy.ratelimit.errors import StoreError
from llmproxy.ratelimit.memory_store import MemoryLimitStore
from llmproxy.ratelimit.store import Adjust, LimitStore, Outcome, Take

log = logging.getLogger(__name__)
TIMEOUTS_TO_DEGRADE = 3


class FallbackLimitStore:
    """A LimitStore that falls back to local counters while the primary fails."""

    def __init__(
        self,
        primary: LimitStore,
        local: MemoryLimitStore,
        *,
        timeout_s: float,
        probe_interval_s: float,
        instances: Callable[[], int] = lambda: 1,
        on_change: Callable[[bool], None] = lambda degraded: None,
    ) -> None:
        self._primary = primary
        self._local = local
        self._timeout_s = timeout_s
        self._instances = instances
        self._on_change = on_change
        # The switch's mode, kept as a plain attribute: the decider reads it on every request.
        self.degraded = False
        self._switch = FallbackSwitch(
            log=log,
            degraded_message=(
                "redis unavailable: deciding with this instance's local limits until it is back"
            ),
            restored_message="redis is back: deciding with the shared limits again",
            unavailable=(StoreError,),
            probe_interval_s=probe_interval_s,
            probe=primary.ping,
            probe_timeout_s=max(timeout_s, 1.0),
            timeouts_to_degrade=TIMEOUTS_TO_DEGRADE,
            on_change=self._changed,
            on_return=local.clear,
        )
        metrics.DEGRADED.set(0)

    def _changed(self, degraded: bool) -> None:
        self.degraded = degraded
        metrics.DEGRADED.set(1 if degraded else 0)
        if degraded:
            metrics.DEGRADATIONS.inc()
        self._on_change(degraded)

    def _share(self, ops: Sequence[Take]) -> list[Take]:
        """Each limit divided by the instances now (rounded up: never below 1)."""
        instances = max(1, self._instances())
        if instances == 1:
            return list(ops)
        return [
            Take(o.key, o.algorithm, math.ceil(o.limit / instances), o.window_ms, o.hits)
            for o in ops
        ]

    def _wait_on(self) -> bool:
        """A primary call unanswered for another timeout: counted; waited for until degraded."""
        self._switch.timed_out(TimeoutError(f"redis: no answer within {self._timeout_s}s"))
        return not self._switch.degraded

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        """Decide on Redis, or locally while degraded (or once this call degrades it)."""
        switch = self._switch
        if switch.use_primary():
            try:
                outcomes = await bounded(
                    self._primary.take(ops), self._timeout_s, patience=self._wait_on
                )
            except (StoreError, TimeoutError) as exc:
                # A TimeoutError: given up on once _wait_on degraded the switch (a no-op then).
                switch.failed(exc)
            else:
                switch.succeeded()
                return outcomes
        return await self._local.take(self._share(ops))

    async def adjust(self, ops: Sequence[Adjust]) -> int:
        """Correct on Redis, or locally while degraded."""
        switch = self._switch
        if switch.use_primary():
            try:
                return await bounded(
                    self._primary.adjust(ops), self._timeout_s, patience=self._wait_on
                )
            except (StoreError, TimeoutError) as exc:
                switch.failed(exc)
        return await self._local.adjust(ops)

    async def reset(self, key: str, algorithm: str) -> bool:
        """Reset locally and, unless degraded, on Redis."""
        local = await self._local.reset(key, algorithm)
        if not self._switch.use_primary():
            return local
        try:
            async with asyncio.timeout(max(self._timeout_s, 1.0)):
                return await self._primary.reset(key, algorithm) or local
        except (StoreError, TimeoutError) as exc:
            self._switch.failed(exc)
            return local

    async def ping(self) -> None:
        """Answers while either store does: degraded is still serving."""

    async def aclose(self) -> None:
        """Stop probing and close the primary."""
        await self._switch.aclose()
        await self._primary.aclose()
