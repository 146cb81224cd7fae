"""Two authz instances on one Redis: a change made on one reaches the other's cache at once.

The instances cache keys for 60 s here, so only the pub/sub invalidation can explain a
revocation seen within the test's deadline. The measured propagation time is printed (run
with -s to see it); the deadline only makes a lost revocation fail the test.
"""

from __future__ import annotations

import time

import redis.asyncio as aioredis
from google.rpc import code_pb2

from llmproxy._gen.authz.v1 import authz_pb2
from llmproxy.authz.store import RedisKeyStore
from tests.harness.waiting import eventually
from tests.integration.authz.conftest import Instance, StartAuthz

DEADLINE_S = 5.0


async def poll_until(instance: Instance, key: str, code: int) -> float:
    """Seconds until instance answers a check of key with code; fails after the deadline."""
    start = time.perf_counter()

    async def answer() -> int:
        return int((await instance.check(key)).status.code)

    # Polled often: the printed propagation time should not be mostly the polling interval.
    await eventually(
        answer,
        lambda found: found == code,
        what=f"status {code}",
        timeout_s=DEADLINE_S,
        interval_s=0.002,
    )
    return time.perf_counter() - start


async def cached_everywhere(key: str, *instances: Instance) -> None:
    for instance in instances:
        assert (await instance.check(key)).status.code == code_pb2.OK


async def test_a_revocation_on_one_instance_reaches_the_other(start_authz: StartAuthz) -> None:
    a, b = await start_authz(cache_ttl_s="60"), await start_authz(cache_ttl_s="60")
    created = await a.admin.CreateKey(authz_pb2.CreateKeyRequest(tenant="acme"))
    await cached_everywhere(created.secret, a, b)
    await a.admin.RevokeKey(authz_pb2.RevokeKeyRequest(key_id=created.key.key_id))
    seconds = await poll_until(b, created.secret, code_pb2.PERMISSION_DENIED)
    print(f"\nrevocation reached the other instance in {seconds * 1000:.1f} ms")
    assert (await a.check(created.secret)).status.code == code_pb2.PERMISSION_DENIED


async def test_rotation_and_updates_reach_the_other_instance_too(start_authz: StartAuthz) -> None:
    a, b = await start_authz(cache_ttl_s="60"), await start_authz(cache_ttl_s="60")
    created = await a.admin.CreateKey(authz_pb2.CreateKeyRequest(tenant="acme"))
    await cached_everywhere(created.secret, a, b)
    rotated = await a.admin.RotateKey(authz_pb2.RotateKeyRequest(key_id=created.key.key_id))
    await poll_until(b, created.secret, code_pb2.UNAUTHENTICATED)
    assert (await b.check(rotated.secret)).status.code == code_pb2.OK
    update = authz_pb2.UpdateKeyRequest(
        key=authz_pb2.ApiKey(key_id=created.key.key_id, allowed_models=["llama*"])
    )
    update.update_mask.paths.append("allowed_models")
    await a.admin.UpdateKey(update)
    await poll_until(b, rotated.secret, code_pb2.PERMISSION_DENIED)
    llama = await b.check(rotated.secret, b'{"model": "llama-3.1-8b", "messages": []}')
    assert llama.status.code == code_pb2.OK


async def test_without_pub_sub_the_ttl_still_bounds_staleness(
    start_authz: StartAuthz, redis_client: aioredis.Redis
) -> None:
    """A short TTL alone also lets a change through (the fallback if a message is lost)."""
    a = await start_authz(cache_ttl_s="0.2")
    created = await a.admin.CreateKey(authz_pb2.CreateKeyRequest(tenant="acme"))
    await cached_everywhere(created.secret, a)
    # Revoke behind the service's back: straight into Redis, nothing published.
    store = RedisKeyStore(redis_client)
    record = await store.get(created.key.key_id)
    assert record is not None
    assert await store.replace(record.changed(time.time(), revoked=True))
    await poll_until(a, created.secret, code_pb2.PERMISSION_DENIED)
