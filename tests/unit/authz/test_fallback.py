"""Known keys while Redis is down: last-known records within the grace; unknown keys fail closed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy.authz.errors import KeyStoreUnavailableError
from llmproxy.authz.fallback import FallbackKeys, LastKnown
from llmproxy.authz.records import KeyRecord
from llmproxy.common.usage import Period
from tests.harness.waiting import eventually

KEY = KeyRecord(
    key_id="00000000000000aa",
    key_hash="ab" * 32,
    tenant="acme",
    user="u",
    created_at=1.0,
    updated_at=1.0,
)


class Redis:
    """The store and usage behind FallbackKeys, which can go down and come back."""

    def __init__(self) -> None:
        self.up = True
        self.records = {KEY.key_id: KEY}
        self.spent = 1.5

    def _answer(self) -> None:
        if not self.up:
            raise RedisConnectionError("Connection refused")

    async def get(self, key_id: str) -> KeyRecord | None:
        self._answer()
        return self.records.get(key_id)

    async def spend_usd(self, subject: str, name: str, period: Period) -> float:
        self._answer()
        return self.spent

    async def ping(self) -> bool:
        self._answer()
        return True


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def degraded(keys: FallbackKeys) -> Callable[[], Awaitable[bool]]:
    async def probe() -> bool:
        return keys.degraded

    return probe


def fallback(redis: Redis, clock: Clock, grace_s: float = 300) -> tuple[FallbackKeys, list[bool]]:
    changes: list[bool] = []
    keys = FallbackKeys(
        redis,
        redis,
        ping=redis.ping,
        probe_timeout_s=1,
        stale_grace_s=grace_s,
        max_keys=10,
        probe_interval_s=0.01,
        on_change=changes.append,
        clock=clock,
    )
    return keys, changes


async def test_a_known_key_is_served_from_memory_while_redis_is_down() -> None:
    redis, clock = Redis(), Clock()
    keys, changes = fallback(redis, clock)
    assert await keys.get(KEY.key_id) == KEY
    assert await keys.spend_usd("key", KEY.key_id, "day") == 1.5
    redis.up = False
    assert await keys.get(KEY.key_id) == KEY
    assert await keys.spend_usd("key", KEY.key_id, "day") == 1.5
    assert keys.degraded
    assert changes == [True]
    await keys.aclose()


async def test_an_unknown_key_fails_closed_while_redis_is_down() -> None:
    redis, clock = Redis(), Clock()
    keys, _ = fallback(redis, clock)
    redis.up = False
    with pytest.raises(KeyStoreUnavailableError, match="unknown here"):
        await keys.get("00000000000000bb")
    with pytest.raises(KeyStoreUnavailableError, match="no spend known"):
        await keys.spend_usd("key", KEY.key_id, "month")
    await keys.aclose()


async def test_the_grace_runs_from_the_moment_redis_was_lost() -> None:
    redis, clock = Redis(), Clock()
    keys, _ = fallback(redis, clock, grace_s=300)
    await keys.get(KEY.key_id)
    redis.up = False
    await keys.get(KEY.key_id)  # lost now
    clock.now += 300
    assert await keys.get(KEY.key_id) == KEY
    clock.now += 1
    with pytest.raises(KeyStoreUnavailableError, match="past the 300 s grace"):
        await keys.get(KEY.key_id)
    await keys.aclose()


async def test_redis_is_read_again_once_it_answers() -> None:
    redis, clock = Redis(), Clock()
    keys, changes = fallback(redis, clock)
    await keys.get(KEY.key_id)
    redis.up = False
    await keys.get(KEY.key_id)
    revoked = KEY.changed(2.0, revoked=True)
    redis.records[KEY.key_id] = revoked
    redis.up = True
    await eventually(
        degraded(keys), lambda state: state is False, what="the switch back to Redis", timeout_s=5
    )  # the probe notices
    assert changes == [True, False]
    assert await keys.get(KEY.key_id) == revoked
    await keys.aclose()


async def test_a_key_found_missing_is_forgotten() -> None:
    redis, clock = Redis(), Clock()
    keys, _ = fallback(redis, clock)
    await keys.get(KEY.key_id)
    del redis.records[KEY.key_id]
    assert await keys.get(KEY.key_id) is None
    redis.up = False
    with pytest.raises(KeyStoreUnavailableError):
        await keys.get(KEY.key_id)
    await keys.aclose()


def test_last_known_is_bounded_and_keeps_the_most_recent() -> None:
    memory = LastKnown(max_keys=2)
    for index in range(3):
        memory.remember(f"{index:016x}", KEY)
    assert memory.record(f"{0:016x}") is None
    assert memory.record(f"{2:016x}") == KEY
