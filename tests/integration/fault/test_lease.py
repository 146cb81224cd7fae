"""The leader lease against a real redis-server: fencing, renewal, takeover, deposed writers,
and the slices of CLIENT PAUSE that keep the lease alive while Redis is paused."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from llmproxy.fault.errors import NotLeaderError
from llmproxy.fault.lease import Holder, Lease, experiments_key
from llmproxy.fault.redis_pause import RedisPauser
from tests.harness.redis_server import own_redis
from tests.harness.waiting import eventually

PREFIX = "test:fault"


class FrozenClock:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def lease(
    redis: aioredis.Redis, holder: str, lease_s: float = 5.0, clock: FrozenClock | None = None
) -> Lease:
    if clock is None:
        return Lease(redis, PREFIX, holder=holder, address=f"{holder}:1", lease_s=lease_s)
    return Lease(redis, PREFIX, holder=holder, address=f"{holder}:1", lease_s=lease_s, clock=clock)


async def test_one_holder_at_a_time_and_every_term_has_a_larger_token(
    redis_client: aioredis.Redis,
) -> None:
    a, b = lease(redis_client, "a"), lease(redis_client, "b")
    assert await a.acquire()
    assert not await b.acquire()
    assert b.last_seen == a.term
    first = a.token
    assert first is not None
    await a.release()
    assert await redis_client.exists(a.key) == 0
    assert await b.acquire()
    second = b.token
    assert second is not None
    assert second > first
    assert await a.current() == Holder(second, "b", "b:1")
    await b.release()
    assert await a.acquire()
    assert a.token is not None
    assert a.token > second


async def test_renewal_extends_the_lease_and_a_lost_term_is_not_renewed(
    redis_client: aioredis.Redis,
) -> None:
    a = lease(redis_client, "a", lease_s=1.0)
    assert await a.acquire()
    await asyncio.sleep(0.6)
    assert await a.renew()
    assert 600 < await redis_client.pttl(a.key) <= 1000
    # Someone else's term (the key expired and was taken): the compare-and-set refuses.
    await redis_client.set(a.key, "99 b b:1", px=5000)
    assert not await a.renew()
    assert a.term is None
    assert not a.held
    assert await redis_client.get(a.key) == b"99 b b:1"  # untouched


async def test_a_follower_takes_over_once_the_leader_stops_renewing(
    redis_client: aioredis.Redis,
) -> None:
    a, b = lease(redis_client, "a", lease_s=1.0), lease(redis_client, "b", lease_s=1.0)
    assert await a.acquire()
    started = time.monotonic()
    assert not await b.acquire()
    await eventually(b.acquire, bool, what="b took the lease over", timeout_s=3)
    took = time.monotonic() - started
    assert 0.8 <= took <= 1.8  # once the lease ran out, not before
    assert not a.held  # a's own clock ended its term no later than Redis did


async def test_a_deposed_leader_cannot_write(redis_client: aioredis.Redis) -> None:
    clock = FrozenClock()
    a = lease(redis_client, "a", lease_s=1.0, clock=clock)
    b = lease(redis_client, "b", lease_s=5.0)
    key = experiments_key(PREFIX)
    assert await a.acquire()
    await a.fenced_hset(key, "x", b"from a")
    # a is paused (its clock stands still, so it still believes it leads) while its lease
    # runs out in Redis and b takes over.
    await eventually(b.acquire, bool, what="b took the lease over", timeout_s=3)
    assert a.held
    await b.fenced_hset(key, "x", b"from b")
    with pytest.raises(NotLeaderError, match="fenced write refused"):
        await a.fenced_hset(key, "x", b"late write from a")
    with pytest.raises(NotLeaderError):
        await a.fenced_set(f"{key}:running", b"late")
    assert await redis_client.hget(key, "x") == b"from b"
    assert await redis_client.get(f"{key}:running") is None
    assert a.term is None  # the refusal ended a's term


async def test_the_local_deadline_ends_a_term_without_redis(redis_client: aioredis.Redis) -> None:
    clock = FrozenClock()
    a = lease(redis_client, "a", lease_s=2.0, clock=clock)
    assert await a.acquire()
    clock.now += 1.9
    assert a.held
    clock.now += 0.2
    assert not a.held
    with pytest.raises(NotLeaderError, match="lease ran out"):
        await a.fenced_hset(experiments_key(PREFIX), "x", b"y")


@pytest.fixture
async def paused_redis(
    tmp_path: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[aioredis.Redis, aioredis.Redis, aioredis.Redis]]:
    """A Redis of the test's own (it gets paused): two long-timeout clients and a 0.5 s one."""
    async with own_redis(tmp_path, request) as (url, _process):
        clients = (
            aioredis.Redis.from_url(url, socket_timeout=10),
            aioredis.Redis.from_url(url, socket_timeout=10),
            aioredis.Redis.from_url(url, socket_timeout=0.5),
        )
        yield clients
        for client in clients:
            await client.aclose()


async def test_client_pause_holds_even_its_issuer_and_unpause(
    paused_redis: tuple[aioredis.Redis, aioredis.Redis, aioredis.Redis],
) -> None:
    """What redis_pause.py relies on, as redis-server 7 does it."""
    issuer, other, _ = paused_redis
    await issuer.set("k", "v", px=300)
    started = time.monotonic()
    await issuer.execute_command("CLIENT", "PAUSE", "1000", "ALL")
    await issuer.ping()  # the issuing connection is held as well
    assert time.monotonic() - started >= 0.9
    started = time.monotonic()
    await issuer.execute_command("CLIENT", "PAUSE", "1000", "ALL")
    await other.execute_command("CLIENT", "UNPAUSE")  # so is UNPAUSE, from anyone
    assert time.monotonic() - started >= 0.9
    # Expiry is suspended while paused, but a deadline that passed meanwhile applies at once.
    assert await issuer.get("k") is None


async def test_pause_slices_keep_the_lease_and_stop_within_a_slice(
    paused_redis: tuple[aioredis.Redis, aioredis.Redis, aioredis.Redis],
) -> None:
    patient, _, hasty = paused_redis
    leader = lease(patient, "leader", lease_s=2.0)
    rival = lease(hasty, "rival", lease_s=2.0)
    assert await leader.acquire()
    pauser = RedisPauser(patient, leader, pause_slice_s=0.4)
    pauser.start("outage", time.time() + 4.0)
    await eventually(lambda: pauser.slices, lambda n: n >= 1, timeout_s=2)
    refused = 0
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        try:
            await hasty.ping()
        except (TimeoutError, aioredis.ConnectionError, aioredis.TimeoutError):
            refused += 1
        try:
            await rival.acquire()
        except Exception:  # the rival's Redis is paused too: its attempt times out
            refused += 1
        assert leader.held, "the leader's lease lapsed during the pause"
        assert rival.term is None
    assert refused >= 4  # Redis did not answer the other clients
    assert pauser.slices >= 5  # kept pausing, slice after slice, for the whole time
    stopped = time.monotonic()
    await pauser.stop()
    await hasty.ping()
    assert time.monotonic() - stopped < 1.5  # answering again within a slice or so
    assert await leader.renew()
    assert (await leader.current()) == leader.term


async def test_a_restarted_instance_takes_its_dead_predecessors_term_at_once(
    redis_client: aioredis.Redis,
) -> None:
    dead = lease(redis_client, "dead")
    assert await dead.acquire()
    old = dead.token
    assert old is not None
    # Same address, another process: with reclaim_own_address only (an IP's one socket).
    shy = Lease(redis_client, PREFIX, holder="shy", address="dead:1", lease_s=5.0)
    assert not await shy.acquire()
    elsewhere = Lease(
        redis_client, PREFIX, holder="far", address="far:1", lease_s=5.0, reclaim_own_address=True
    )
    assert not await elsewhere.acquire()
    reborn = Lease(
        redis_client,
        PREFIX,
        holder="reborn",
        address="dead:1",
        lease_s=5.0,
        reclaim_own_address=True,
    )
    assert await reborn.acquire()
    assert reborn.token is not None
    assert reborn.token > old
    with pytest.raises(NotLeaderError, match="fenced write refused"):
        await dead.fenced_hset(experiments_key(PREFIX), "x", b"from the dead")
