"""The health instances share their Envoys through Redis (fakeredis here); alone without it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable

import fakeredis
import pytest

from llmproxy.health import metrics
from llmproxy.health.fleet import Fleet, Members, Peer
from llmproxy.health.fleet_store import FleetStore, decode, encode
from llmproxy.health.fleet_sync import share_fleet
from tests.harness.waiting import eventually

PREFIX = "test:health"
INTERVAL_S = 0.05

Share = Callable[[Fleet, FleetStore], Awaitable[None]]


@pytest.fixture
async def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
async def store(server: fakeredis.FakeServer) -> AsyncIterator[FleetStore]:
    client = fakeredis.FakeAsyncRedis(server=server)
    yield FleetStore(client, PREFIX)
    await client.aclose()


@pytest.fixture
async def share() -> AsyncIterator[Share]:
    """Start share_fleet loops (short rounds); all cancelled after the test."""
    tasks: list[asyncio.Task[None]] = []

    async def start(fleet: Fleet, store: FleetStore) -> None:
        tasks.append(asyncio.create_task(share_fleet(fleet, store, INTERVAL_S, ttl_s=1.0)))

    yield start
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_an_entry_reads_back_and_a_foreign_one_is_refused() -> None:
    members: Members = {"envoy-a": Peer("10.0.0.1", 5), "envoy-b": None}
    assert decode(encode(members)) == members
    for raw, why in (
        ("[]", "not an object"),
        ('{"a": "10.0.0.1"}', "not \\[address, port\\]"),
        ('{"a": ["10.0.0.1", "5"]}', "not \\[address, port\\]"),
        ("not json", "Expecting value"),
    ):
        with pytest.raises(ValueError, match=why):
            decode(raw)


async def test_every_instance_serves_the_envoys_of_every_instance(
    store: FleetStore, share: Share
) -> None:
    first, second = Fleet("health-1"), Fleet("health-2")
    await share(first, store)
    await share(second, store)
    changed = first.event()
    first.join("envoy-a", 1, Peer("10.0.0.1", 1))
    second.join("envoy-b", 1, Peer("10.0.0.2", 1))
    both = {"envoy-a": Peer("10.0.0.1", 1), "envoy-b": Peer("10.0.0.2", 1)}
    for fleet in (first, second):
        await eventually(fleet.members, lambda m: m == both, what="both Envoys", timeout_s=5)
    assert changed.is_set()  # the streams of the first were told of the second's Envoy
    assert metrics.ENVOY_REPLICAS_SHARED._value.get() == 1
    # An Envoy that leaves one instance leaves every instance's list.
    second.leave("envoy-b", 1)
    only_a = {"envoy-a": Peer("10.0.0.1", 1)}
    await eventually(first.members, lambda m: m == only_a, what="envoy-b gone", timeout_s=5)


async def test_a_dead_instances_envoys_expire_and_a_moved_envoy_counts_once(
    store: FleetStore, share: Share
) -> None:
    alive = Fleet("health-2")
    alive.join("envoy-b", 1, Peer("10.0.0.2", 1))
    # health-1 published its Envoys once and died: no goodbye, only its entry's expiry.
    await store.exchange("health-1", {"envoy-a": Peer("10.0.0.1", 1)}, ttl_s=0.5)
    await share(alive, store)
    await eventually(alive.members, lambda m: len(m) == 2, what="envoy-a listed", timeout_s=5)
    # envoy-a reconnects to the live instance before the dead one's entry expires: one member.
    alive.join("envoy-a", 2, Peer("10.0.0.1", 7))
    assert list(alive.members()) == ["envoy-a", "envoy-b"]
    await eventually(
        alive.members,
        lambda m: m["envoy-a"] == Peer("10.0.0.1", 7),
        what="the dead instance's entry expired",
        timeout_s=5,
    )
    alive.leave("envoy-a", 2)
    assert list(alive.members()) == ["envoy-b"]


async def test_without_redis_an_instance_serves_its_own_envoys_and_says_so(
    server: fakeredis.FakeServer, store: FleetStore, share: Share, caplog: pytest.LogCaptureFixture
) -> None:
    first = Fleet("health-1")
    first.join("envoy-a", 1, None)
    await store.exchange("health-2", {"envoy-b": None}, ttl_s=60)
    await share(first, store)
    await eventually(first.members, lambda m: len(m) == 2, what="envoy-b listed", timeout_s=5)
    server.connected = False
    await eventually(
        first.members, lambda m: list(m) == ["envoy-a"], what="envoy-a alone", timeout_s=5
    )
    assert metrics.ENVOY_REPLICAS_SHARED._value.get() == 0
    assert "envoy_replicas lists the Envoys connected to this health instance only" in caplog.text
    server.connected = True
    await eventually(first.members, lambda m: len(m) == 2, what="envoy-b again", timeout_s=5)
    assert metrics.ENVOY_REPLICAS_SHARED._value.get() == 1
    assert metrics.ENVOY_REPLICAS.labels("served")._value.get() == 2
    assert metrics.ENVOY_REPLICAS.labels("connected")._value.get() == 1


async def test_a_stopped_instance_leaves_the_list_at_once(store: FleetStore) -> None:
    fleet = Fleet("health-1")
    fleet.join("envoy-a", 1, None)
    task = asyncio.create_task(share_fleet(fleet, store, INTERVAL_S, ttl_s=60))
    await eventually(
        lambda: store.exchange("health-2", {}, 60), lambda v: "health-1" in v, timeout_s=5
    )
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert list(await store.exchange("health-2", {}, 60)) == ["health-2"]
