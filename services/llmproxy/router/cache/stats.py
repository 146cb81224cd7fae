"""Cache statistics: counted in process per request, flushed to Redis in batches.

Counting locally keeps Redis off the hot path; the flush (about once a second, and before
GetCacheStats answers) makes the totals of every router instance add up in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from llmproxy.router.cache.metrics import CACHE_HIT_RATIO, CACHE_REQUESTS
from llmproxy.router.cache.store import ResponseCache

_RESULTS = {"hits": "hit", "misses": "miss", "bypasses": "bypass"}


class CacheStats:
    """Per-model counters of hits, misses, bypasses, bytes and savings."""

    def __init__(self) -> None:
        self._pending: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        self._lookups: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # hits, lookups

    def count(self, model: str, name: str, amount: float = 1) -> None:
        """Add amount to the model's counter name (hits, misses, bypasses, saved_tokens ...)."""
        self._pending[model][name] += amount
        if name in _RESULTS:
            CACHE_REQUESTS.labels(model, _RESULTS[name]).inc()
        if name in ("hits", "misses"):
            seen = self._lookups[model]
            seen[0] += name == "hits"
            seen[1] += 1
            CACHE_HIT_RATIO.labels(model).set(seen[0] / seen[1])

    async def flush(self, cache: ResponseCache) -> None:
        """Add the pending counts to Redis and start counting afresh."""
        pending, self._pending = self._pending, defaultdict(lambda: defaultdict(float))
        for model, counters in pending.items():
            await cache.add_stats(model, dict(counters))

    async def flush_forever(self, cache: ResponseCache, interval_s: float = 1.0) -> None:
        """Flush every interval_s until cancelled, then once more."""
        try:
            while True:
                await asyncio.sleep(interval_s)
                await self.flush(cache)
        finally:
            with contextlib.suppress(Exception):
                await self.flush(cache)
