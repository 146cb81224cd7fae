"""A Redis pub/sub channel every instance of a service follows, and the loop that follows it.

Instances of a service keep local state (authz's key cache, the rate limiter's over-limit
cache) that a change made through any one of them must reach. The change is published on a
channel; each instance applies the messages, and resyncs after every (re)subscription, since
what was published while it was not subscribed is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from redis.exceptions import RedisError

from llmproxy.common.redis import connect_subscriber
from llmproxy.common.settings import RedisSettings

log = logging.getLogger(__name__)

# The event that means "anything may have changed": the feed (re)subscribed.
RESYNC = ""


class Feed(Protocol):
    """A source of events (messages, or RESYNC after each (re)subscription)."""

    def events(self) -> AsyncIterator[str]:
        """The events, until the connection fails (an exception)."""


class RedisChannelFeed:
    """One channel, read on a connection of its own (connect_subscriber)."""

    def __init__(self, settings: RedisSettings, channel: str) -> None:
        self._settings = settings
        self._channel = channel

    async def events(self) -> AsyncIterator[str]:
        """The channel's messages; RESYNC each time the subscription is (re)established.

        Raises a Redis or OS error when the connection is lost for good; callers reconnect.
        """
        # Idle subscriptions are PINGed each second, so a dead connection is noticed.
        client = connect_subscriber(self._settings)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(self._channel)
                while True:
                    message = await pubsub.get_message(timeout=1.0)
                    if message is None:
                        continue
                    if message["type"] == "subscribe":
                        # Also sent after redis-py reconnects and resubscribes by itself: what
                        # was published in between is lost, so the reader must resync.
                        yield RESYNC
                    elif message["type"] == "message":
                        yield _text(message["data"])
        finally:
            await client.aclose()


async def follow_feed(
    feed: Feed,
    apply: Callable[[str], None],
    lost: Callable[[], None],
    retry_min_s: float = 0.1,
    retry_max_s: float = 5.0,
) -> None:
    """Apply the feed's events forever; lost() each time it fails, then resubscribe with backoff."""
    delay = retry_min_s
    while True:
        try:
            async for event in feed.events():
                apply(event)
                delay = retry_min_s
        except (RedisError, OSError) as exc:
            log.warning(
                "pub/sub channel lost; resubscribing",
                extra={"error": type(exc).__name__, "retry_in_s": delay},
            )
        lost()
        await asyncio.sleep(delay)
        delay = min(delay * 2, retry_max_s)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
