"""A usage reset reaches every rate limiter instance, not only the one that was asked.

Each instance remembers refusals locally (OverLimitCache) until their reset; after ResetUsage,
the others would go on refusing the key from memory. The reset is published on a channel that
every instance follows; one that lost the channel cannot know what it missed, so it forgets
every remembered refusal (they are only a shortcut: Redis decides again).
"""

from __future__ import annotations

from llmproxy.common.redis import AnyRedis
from llmproxy.common.redis_feed import RESYNC
from llmproxy.ratelimit.overlimit import OverLimitCache

RESETS_CHANNEL = "llmproxy:ratelimit:resets"


class ResetBroadcast:
    """Publishes this instance's resets and applies every instance's to the local cache."""

    def __init__(self, redis: AnyRedis, cache: OverLimitCache) -> None:
        self._redis = redis
        self._cache = cache

    async def publish(self, key: str) -> None:
        """Tell every instance that key's usage was reset."""
        await self._redis.publish(RESETS_CHANNEL, key)

    def apply(self, event: str) -> None:
        """Forget the reset key's refusal, or every refusal after a resubscription."""
        if event == RESYNC:
            self._cache.clear()
        else:
            self._cache.forget(event)

    def lost(self) -> None:
        """The channel is down: resets may be missed, so nothing remembered is trusted."""
        self._cache.clear()
