"""RedisKeyStore and the invalidation feed on a real Redis."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy.authz.errors import ConflictError
from llmproxy.authz.records import AuditEntry, KeyRecord
from llmproxy.authz.store import RESYNC, RedisInvalidationFeed, RedisKeyStore, record_key
from llmproxy.common.settings import RedisSettings
from tests.harness.ports import free_port


def record(key_id: str, tenant: str = "acme", created_at: float = 1.0) -> KeyRecord:
    return KeyRecord(
        key_id=key_id,
        key_hash="ab" * 32,
        tenant=tenant,
        user="u",
        created_at=created_at,
        updated_at=created_at,
    )


async def test_create_get_and_no_overwrite(redis_client: aioredis.Redis) -> None:
    store = RedisKeyStore(redis_client)
    first = record("0000000000000001")
    await store.create(first)
    assert await store.get(first.key_id) == first
    assert await store.get("ffffffffffffffff") is None
    with pytest.raises(ConflictError):
        await store.create(dataclasses.replace(first, tenant="evil"))
    assert await store.get(first.key_id) == first
    raw = await redis_client.get(record_key(first.key_id))
    assert b'"key_hash"' in raw


async def test_replace_is_a_compare_and_set_on_the_version(redis_client: aioredis.Redis) -> None:
    store = RedisKeyStore(redis_client)
    first = record("0000000000000001")
    await store.create(first)
    revoked = first.changed(2.0, revoked=True)
    assert await store.replace(revoked)
    stale = first.changed(3.0, tier="gold")  # built from version 1, now 2
    assert not await store.replace(stale)
    assert await store.get(first.key_id) == revoked
    assert not await store.replace(record("0000000000000009").changed(1.0))


async def test_pages_follow_creation_order_per_tenant(redis_client: aioredis.Redis) -> None:
    store = RedisKeyStore(redis_client)
    records = [
        record(f"{i:016x}", tenant="a" if i % 2 else "b", created_at=100 + i) for i in range(5)
    ]
    for r in reversed(records):
        await store.create(r)
    page, cursor = await store.page(None, None, 2)
    assert page == records[:2]
    page, cursor = await store.page(None, cursor, 2)
    assert page == records[2:4]
    page, cursor = await store.page(None, cursor, 2)
    assert (page, cursor) == (records[4:], None)
    tenant_a, cursor = await store.page("a", None, 10)
    assert (tenant_a, cursor) == ([records[1], records[3]], None)


async def test_the_audit_stream_pages_newest_first_and_is_capped(
    redis_client: aioredis.Redis,
) -> None:
    store = RedisKeyStore(redis_client, audit_max_entries=100)
    ids = [
        await store.append_audit(
            AuditEntry(time=i, method="GetKey", actor="admin", peer="p", outcome="OK")
        )
        for i in range(300)
    ]
    newest = await store.audit_page(None, 3)
    assert [e.id for e in newest] == ids[-1:-4:-1]
    assert newest[0].time == 299
    older = await store.audit_page(newest[-1].id, 2)
    assert [e.time for e in older] == [296, 295]
    assert await redis_client.xlen("llmproxy:authz:audit") < 300


async def test_the_feed_resyncs_then_delivers_published_key_ids(
    redis_process: str, redis_client: aioredis.Redis
) -> None:
    store = RedisKeyStore(redis_client)
    events = RedisInvalidationFeed(RedisSettings(url=redis_process)).events()
    try:
        assert await asyncio.wait_for(anext(events), 5) == RESYNC
        await store.publish_invalidation("0000000000000001")
        assert await asyncio.wait_for(anext(events), 5) == "0000000000000001"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_the_feed_fails_when_redis_is_unreachable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    events = RedisInvalidationFeed(RedisSettings(url=url)).events()
    with pytest.raises(RedisConnectionError, match="Connect call failed"):
        await asyncio.wait_for(anext(events), 5)
