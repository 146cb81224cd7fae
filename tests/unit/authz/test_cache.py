"""The key cache: TTL, size bound, invalidations, and no trust while the feed is down."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator

import pytest

from llmproxy.authz.cache import CachedKeys, KeyCache
from llmproxy.authz.records import KeyRecord
from llmproxy.common.redis_feed import RESYNC
from tests.harness.waiting import eventually
from tests.unit.authz.fakes import Clock, FakeFeed, FakeKeyStore


def record(key_id: str = "0123456789abcdef", **fields: object) -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        key_hash="h",
        tenant="t",
        user="u",
        created_at=0,
        updated_at=0,
        **fields,  # type: ignore[arg-type]
    )


def live_keys(ttl_s: float = 5.0, max_entries: int = 100) -> tuple[CachedKeys, FakeKeyStore, Clock]:
    clock = Clock(0)
    store = FakeKeyStore()
    keys = CachedKeys(store, KeyCache(ttl_s, max_entries, clock))
    keys.apply(RESYNC)
    return keys, store, clock


async def test_lookups_are_cached_for_the_ttl() -> None:
    keys, store, clock = live_keys(ttl_s=5)
    store.records["a"] = record("a")
    assert await keys.get("a") == record("a")
    assert await keys.get("a") == record("a")
    assert store.gets == 1
    clock.now += 5
    await keys.get("a")
    assert store.gets == 2


async def test_misses_are_cached_too() -> None:
    keys, store, _ = live_keys()
    assert await keys.get("nope") is None
    assert await keys.get("nope") is None
    assert store.gets == 1


async def test_an_invalidation_evicts_at_once() -> None:
    keys, store, _ = live_keys()
    store.records["a"] = record("a")
    await keys.get("a")
    store.records["a"] = record("a", revoked=True)
    assert (await keys.get("a")).revoked is False  # type: ignore[union-attr]  # still cached
    keys.apply("a")
    assert (await keys.get("a")).revoked is True  # type: ignore[union-attr]


async def test_the_least_recently_used_entry_goes_first() -> None:
    keys, store, _ = live_keys(max_entries=2)
    for name in "abc":
        store.records[name] = record(name)
    await keys.get("a")
    await keys.get("b")
    await keys.get("a")
    await keys.get("c")  # evicts b
    gets = store.gets
    await keys.get("a")
    await keys.get("c")
    assert store.gets == gets
    await keys.get("b")
    assert store.gets == gets + 1


async def test_nothing_is_cached_while_the_feed_is_not_live() -> None:
    store = FakeKeyStore()
    keys = CachedKeys(store, KeyCache(5, 10, Clock(0)))
    await keys.get("a")
    await keys.get("a")
    assert store.gets == 2


class SlowStore(FakeKeyStore):
    """A store whose get lets an invalidation happen in the middle."""

    def __init__(self, keys: list[CachedKeys]) -> None:
        super().__init__()
        self.keys = keys

    async def get(self, key_id: str) -> KeyRecord | None:
        found = await super().get(key_id)
        self.keys[0].apply(key_id)  # the record changes while this read is in flight
        return found


async def test_a_read_that_raced_an_invalidation_is_not_cached() -> None:
    holder: list[CachedKeys] = []
    store = SlowStore(holder)
    keys = CachedKeys(store, KeyCache(5, 10, Clock(0)))
    holder.append(keys)
    keys.apply(RESYNC)
    store.records["a"] = record("a")
    await keys.get("a")
    await keys.get("a")
    assert store.gets == 2


class GatedStore(FakeKeyStore):
    """A store whose reads wait until the test opens the gate (or fail, if it says so)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = asyncio.Event()
        self.error: Exception | None = None

    async def get(self, key_id: str) -> KeyRecord | None:
        found = await super().get(key_id)
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return found


async def test_concurrent_lookups_of_a_new_key_share_one_read() -> None:
    store = GatedStore()
    keys = CachedKeys(store, KeyCache(5, 10, Clock(0)))
    keys.apply(RESYNC)
    store.records["a"] = record("a")
    lookups = [asyncio.create_task(keys.get("a")) for _ in range(50)]
    await eventually(lambda: store.gets, lambda gets: gets >= 1, what="the first read")
    lookups[0].cancel()  # one check given up on: the others still get the record
    store.gate.set()
    found = await asyncio.gather(*lookups[1:])
    assert found == [record("a")] * 49
    assert store.gets == 1


async def test_a_lookup_after_an_eviction_does_not_share_the_older_read() -> None:
    store = GatedStore()
    keys = CachedKeys(store, KeyCache(5, 10, Clock(0)))
    keys.apply(RESYNC)
    store.records["a"] = record("a")
    before = asyncio.create_task(keys.get("a"))
    await eventually(lambda: store.gets, lambda gets: gets == 1, what="the first read")
    store.records["a"] = record("a", revoked=True)
    keys.apply("a")  # revoked while the first read is out
    after = asyncio.create_task(keys.get("a"))
    await eventually(lambda: store.gets, lambda gets: gets == 2, what="a read of its own")
    store.gate.set()
    assert (await after).revoked is True  # type: ignore[union-attr]
    await before


async def test_a_failed_shared_read_fails_every_lookup_and_is_not_kept() -> None:
    store = GatedStore()
    keys = CachedKeys(store, KeyCache(5, 10, Clock(0)))
    keys.apply(RESYNC)
    store.error = OSError("redis gone")
    lookups = [asyncio.create_task(keys.get("a")) for _ in range(3)]
    store.gate.set()
    results = await asyncio.gather(*lookups, return_exceptions=True)
    assert [type(r) for r in results] == [OSError] * 3
    store.error = None
    store.records["a"] = record("a")
    assert await keys.get("a") == record("a")  # a new read, not the failed one
    assert store.gets == 2


async def test_follow_resubscribes_after_a_lost_connection() -> None:
    store = FakeKeyStore()
    store.records["a"] = record("a")
    keys = CachedKeys(store, KeyCache(5, 10, Clock(0)), retry_min_s=0.01)
    feed = FakeFeed([RESYNC], [RESYNC, "a"])
    task = asyncio.create_task(keys.follow(feed))
    try:
        await eventually(
            lambda: (feed.connections, keys.live),
            lambda found: found == (2, True),
            what="(connections, live) after a reconnect",
        )
        await keys.get("a")
        await keys.get("a")
        assert store.gets == 1  # live again: cached
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


class BreakableFeed:
    """Subscribes, then fails when the test says so."""

    def __init__(self) -> None:
        self.lose = asyncio.Event()

    async def events(self) -> AsyncIterator[str]:
        yield RESYNC
        await self.lose.wait()
        raise OSError("connection lost")


async def test_a_lost_feed_clears_the_cache_and_stops_trusting_it() -> None:
    store = FakeKeyStore()
    store.records["a"] = record("a")
    keys = CachedKeys(store, KeyCache(5, 10, Clock(0)), retry_min_s=60)
    feed = BreakableFeed()
    task = asyncio.create_task(keys.follow(feed))
    try:
        await eventually(lambda: keys.live, what="live")
        await keys.get("a")
        await keys.get("a")
        assert store.gets == 1
        feed.lose.set()
        await eventually(lambda: not keys.live, what="not live")
        await keys.get("a")
        await keys.get("a")
        assert store.gets == 3  # every lookup goes to the store until the feed is back
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_first_attempt_done_is_set_even_when_redis_refuses() -> None:
    keys = CachedKeys(FakeKeyStore(), KeyCache(5, 10, Clock(0)), retry_min_s=60)
    task = asyncio.create_task(keys.follow(FakeFeed()))
    try:
        await asyncio.wait_for(keys.first_attempt_done.wait(), 5)
        assert keys.live is False
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def test_a_record_comes_back_as_it_was_cached() -> None:
    cache = KeyCache(5, 10, Clock(0))
    cached = record("a", labels={"team": "search"}, allowed_models=("gpt-*",), expires_at=9.5)
    cache.put("a", cached)
    cache.put("b", None)
    assert cache.get("a") == cached
    assert cache.get("b") is None


# Its first collection may finalize what earlier tests left (they are caught where they run:
# tests/conftest.py collects after every integration and e2e module); this test counts objects.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_cached_records_leave_nothing_for_the_garbage_collector() -> None:
    # A full collection visits every tracked object, and its pause stalls every check: with
    # 100,000 keys cached, records kept as objects made each one about 70 ms.
    cache = KeyCache(5, 2000, Clock(0))
    cache.put("warm", record("warm"))
    gc.collect()
    before = len(gc.get_objects())
    for i in range(1000):
        cache.put(f"k{i}", record(f"k{i}", labels={"team": f"t{i}"}))
    # A tuple is untracked once what it holds is: one level per collection at worst, and an
    # entry nests four (entry, record, labels, label).
    for _ in range(4):
        gc.collect()
    assert len(gc.get_objects()) - before < 50  # as objects, two or more per record
