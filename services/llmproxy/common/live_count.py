"""The live number of instances of a service, from the instance registry, kept while Redis is down.

A service that shares something among its instances while Redis is unreachable (the rate
limiter's fallback divides each limit among them) needs to know how many there are. The
configured `instances` is wrong once a platform scales the service (a Kubernetes HPA), so the
count is read from the registry (common.chaos.registry) every `REFRESH_S` while Redis answers.
When it does not, the last count read is kept: that is the fleet Redis last saw, and exactly
when the fallback needs it. Until the first read, the configured number stands.
"""

from __future__ import annotations

import asyncio
import logging

from redis.exceptions import RedisError

from llmproxy.common.chaos.registry import InstanceRegistry

log = logging.getLogger(__name__)

REFRESH_S = 2.0


class LiveCount:
    """How many instances of a service are live: `value`, refreshed by `run()`."""

    def __init__(
        self,
        registry: InstanceRegistry,
        service: str,
        initial: int,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self._registry = registry
        self._service = service
        self._refresh_s = refresh_s
        self.value = max(1, initial)

    def __call__(self) -> int:
        """The count now (at least 1: this instance)."""
        return self.value

    async def refresh(self) -> bool:
        """Read the count from the registry; False (the last count kept) if Redis does not
        answer within refresh_s. A count of 0 (this instance not registered yet, or its entry
        expired during an outage) is not news either."""
        try:
            async with asyncio.timeout(self._refresh_s):
                found = await self._registry.count(self._service)
        except (RedisError, OSError, TimeoutError) as exc:
            log.debug("instance count not refreshed", extra={"error": str(exc)})
            return False
        if found < 1:
            return False
        if found != self.value:
            log.info(
                "live instance count changed",
                extra={"service": self._service, "before": self.value, "instances": found},
            )
            self.value = found
        return True

    async def run(self) -> None:
        """Refresh every refresh_s until cancelled."""
        while True:
            await self.refresh()
            await asyncio.sleep(self._refresh_s)
