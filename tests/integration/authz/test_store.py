"""The key and control token stores, the audit stream and the invalidation feed on real Redis."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from llmproxy.authz.errors import ConflictError
from llmproxy.authz.records import ControlTokenRecord, KeyRecord
from llmproxy.authz.store import (
    INVALIDATION_CHANNEL,
    RedisControlTokenStore,
    RedisKeyStore,
    record_key,
    token_key,
)
from llmproxy.common.audit import AuditEntry, AuditTrail
from llmproxy.common.redis_feed import RESYNC, RedisChannelFeed
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
    store, trail = RedisKeyStore(redis_client), AuditTrail(redis_client, max_records=100)
    ids = [
        await trail.append(
            AuditEntry(
                time=i, method="GetKey", actor="bootstrap-admin", peer="p", outcome="OK",
                service="router" if i % 2 else "authz", role="admin", arguments="{}",
                token_id="0123456789abcdef",  # noqa: S106 - an id, not a secret
            )
        )
        for i in range(300)
    ]  # fmt: skip
    newest = await store.audit_page(None, 3)
    assert [e.id for e in newest] == ids[-1:-4:-1]
    assert newest[0].time == 299
    assert (newest[0].service, newest[0].role, newest[0].token_id) == (
        "router",
        "admin",
        "0123456789abcdef",
    )
    older = await store.audit_page(newest[-1].id, 2)
    assert [e.time for e in older] == [296, 295]
    assert await redis_client.xlen("llmproxy:authz:audit") < 300


def token(token_id: str, created_at: float = 1.0) -> ControlTokenRecord:
    return ControlTokenRecord(
        token_id=token_id,
        token_hash="cd" * 32,
        name="alice",
        role="operator",
        created_at=created_at,
    )


async def test_control_tokens_are_created_once_and_read_back(
    redis_client: aioredis.Redis,
) -> None:
    store = RedisControlTokenStore(redis_client)
    first = token("00000000000000a1", created_at=1.5)
    await store.create(first)
    assert await store.get(first.token_id) == first
    assert await store.get("ffffffffffffffff") is None
    with pytest.raises(ConflictError, match="token_id 00000000000000a1 exists already"):
        await store.create(dataclasses.replace(first, role="admin"))
    assert await store.get(first.token_id) == first
    # The layout store.py documents: the record under its hash-tagged key, and the index.
    assert token_key(first.token_id) == "llmproxy:authz:token:{00000000000000a1}"
    assert b'"token_hash"' in await redis_client.get(token_key(first.token_id))
    assert await redis_client.zrange("llmproxy:authz:tokens", 0, -1) == [
        b"000000000001500:00000000000000a1"
    ]
    # Keys and tokens never mix, though their ids look alike.
    assert await RedisKeyStore(redis_client).get(first.token_id) is None


async def test_a_token_replace_is_a_compare_and_set_on_the_version(
    redis_client: aioredis.Redis,
) -> None:
    store = RedisControlTokenStore(redis_client)
    first = token("00000000000000a1")
    await store.create(first)
    revoked = first.changed(revoked=True, revoked_at=2.0, revoke_reason="left")
    assert await store.replace(revoked)
    stale = first.changed(token_hash="ef" * 32)  # built from version 1, now 2
    assert not await store.replace(stale)
    assert await store.get(first.token_id) == revoked
    assert not await store.replace(token("00000000000000a9").changed())


async def test_token_pages_follow_creation_order(redis_client: aioredis.Redis) -> None:
    store = RedisControlTokenStore(redis_client)
    records = [token(f"{i:016x}", created_at=100 + i) for i in range(5)]
    for r in reversed(records):
        await store.create(r)
    page, cursor = await store.page(None, 2)
    assert page == records[:2]
    page, cursor = await store.page(cursor, 2)
    assert page == records[2:4]
    page, cursor = await store.page(cursor, 2)
    assert (page, cursor) == (records[4:], None)


async def test_the_feed_resyncs_then_delivers_published_key_ids(
    redis_process: str, redis_client: aioredis.Redis
) -> None:
    store = RedisKeyStore(redis_client)
    events = RedisChannelFeed(RedisSettings(url=redis_process), INVALIDATION_CHANNEL).events()
    try:
        assert await asyncio.wait_for(anext(events), 5) == RESYNC
        await store.publish_invalidation("0000000000000001")
        assert await asyncio.wait_for(anext(events), 5) == "0000000000000001"
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def test_the_feed_fails_when_redis_is_unreachable() -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    events = RedisChannelFeed(RedisSettings(url=url), INVALIDATION_CHANNEL).events()
    with pytest.raises(RedisConnectionError, match="Connect call failed"):
        await asyncio.wait_for(anext(events), 5)
