"""The store the service uses: Redis, and this instance's memory while Redis is down.

A Redis outage must not take provider health down with it: probes and circuits carry on
locally (every instance then probes for itself), seeded with the last state read from Redis.
Changes that only make sense fleet-wide (maintenance) are refused meanwhile, with UNAVAILABLE,
rather than applied to one instance silently. Redis is tried again every retry_s. When to switch
is `common.fallback`'s; what goes where is here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from llmproxy.common.fallback import FallbackSwitch
from llmproxy.health.errors import StoreUnavailableError
from llmproxy.health.memory_store import MemoryHealthStore
from llmproxy.health.records import CircuitRecord, Outcome, ProbeResult, Transition
from llmproxy.health.store import HealthStore, Loaded

log = logging.getLogger(__name__)


class FallbackHealthStore:
    """HealthStore that falls back from primary (Redis) to local (memory) and back."""

    def __init__(
        self,
        primary: HealthStore,
        local: MemoryHealthStore,
        retry_s: float = 1.0,
        on_change: Callable[[bool], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._local = local
        # No background probe: once retry_s has passed, the next call tries Redis again.
        self._switch = FallbackSwitch(
            log=log,
            degraded_message="redis unreachable: provider health is kept locally",
            restored_message="redis reachable again: provider health is shared",
            unavailable=(StoreUnavailableError,),
            probe_interval_s=retry_s,
            on_change=on_change,
            clock=clock,
        )

    @property
    def degraded(self) -> bool:
        """True while this instance's memory serves instead of Redis."""
        return self._switch.degraded

    async def try_lock_probe(self, provider: str, ttl_s: float, owner: str) -> bool:
        return await self._switch.call(
            lambda: self._primary.try_lock_probe(provider, ttl_s, owner),
            lambda: self._local.try_lock_probe(provider, ttl_s, owner),
        )

    async def add_probe(self, provider: str, result: ProbeResult, keep: int, ttl_s: float) -> None:
        await self._switch.call(
            lambda: self._primary.add_probe(provider, result, keep, ttl_s),
            lambda: self._local.add_probe(provider, result, keep, ttl_s),
        )

    async def record_outcomes(
        self, provider: str, outcomes: Sequence[Outcome], now: float
    ) -> tuple[CircuitRecord, list[Transition]]:
        return await self._switch.call(
            lambda: self._primary.record_outcomes(provider, outcomes, now),
            lambda: self._local.record_outcomes(provider, outcomes, now),
        )

    async def load(self, providers: Sequence[str], now: float) -> Loaded:
        async def primary() -> Loaded:
            loaded = await self._primary.load(providers, now)
            for name, (shared, _) in loaded.items():
                self._local.seed(name, shared)
            return loaded

        return await self._switch.call(primary, lambda: self._local.load(providers, now))

    async def set_maintenance(self, provider: str, maintenance: bool, reason: str) -> None:
        try:
            await self._primary.set_maintenance(provider, maintenance, reason)
        except StoreUnavailableError as exc:
            raise StoreUnavailableError(
                "maintenance must reach every health instance, and Redis is unreachable: "
                f"try again when it is back ({exc})"
            ) from exc
        await self._local.set_maintenance(provider, maintenance, reason)

    async def set_disabled(self, provider: str, reason: str) -> None:
        await self._switch.call(
            lambda: self._primary.set_disabled(provider, reason),
            lambda: self._local.set_disabled(provider, reason),
        )

    async def ping(self) -> None:
        await self._primary.ping()

    async def aclose(self) -> None:
        await self._switch.aclose()
        await self._primary.aclose()
        await self._local.aclose()
