"""Every Redis we start is durable: killed with SIGKILL and restarted, it has every key back."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmproxy.authz.records import KeyRecord
from llmproxy.authz.store import RedisKeyStore
from llmproxy.common.audit import AuditEntry, AuditTrail
from llmproxy.common.redis import connect_redis
from llmproxy.common.settings import RedisSettings
from llmproxy.common.usage import Identity, RedisUsageStore, Usage
from llmproxy.devstack.probes import redis_persistence
from llmproxy.devstack.redis import redis_process
from tests.harness.ports import free_port
from tests.harness.redis_server import own_redis


async def test_keys_audit_and_usage_survive_a_kill_9(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    async with own_redis(tmp_path, request) as (url, redis):
        client = connect_redis(RedisSettings(url=url))
        try:
            store, usage = RedisKeyStore(client), RedisUsageStore(client)
            key = KeyRecord(
                key_id="00000000000000aa",
                key_hash="ab" * 32,
                tenant="acme",
                user="u",
                created_at=1.0,
                updated_at=1.0,
            )
            await store.create(key)
            entry = AuditEntry(
                time=1.0, method="CreateKey", actor="admin", peer="test", outcome="OK", key_id="aa"
            )
            await AuditTrail(client, max_records=1000).append(entry)
            who = Identity(tenant="acme", user="u", key_id=key.key_id)
            await usage.record(who, "gpt-4o-mini", Usage(10, 5, 0.25))
            # A crash, not a shutdown: nothing gets the chance to save on the way out.
            redis.kill()
            redis.start()  # the same port and data folder, as a supervisor restarts it
            await redis.wait_ready(15)
            await client.connection_pool.disconnect()  # type: ignore[union-attr]
            assert await store.get(key.key_id) == key
            assert [e.key_id for e in await store.audit_page(None, 10)] == ["aa"]
            assert await usage.spend_usd("key", key.key_id, "day") == 0.25
        finally:
            await client.aclose()
    assert list((tmp_path / "redis").glob("appendonlydir/*.aof")), "no append-only file"


async def test_the_banner_says_how_a_redis_it_did_not_start_persists(
    tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # make up reuses a Redis already answering (Debian's service, say): it cannot make that
    # one durable, so the banner must say when it is not.
    async with own_redis(tmp_path, request) as (url, _):
        assert await redis_persistence(url) == "append-only file"
    url = f"redis://127.0.0.1:{free_port()}/0"
    disposable = redis_process(url, tmp_path / "bare", tmp_path / "bare.log", durable=False)
    disposable.start()
    try:
        await disposable.wait_ready(15)
        assert await redis_persistence(url) == "nothing"
    finally:
        disposable.stop()
    assert await redis_persistence(url) is None  # gone: nothing to ask
