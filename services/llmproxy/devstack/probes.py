"""Readiness probes: each answers True once a component serves, never raises."""

from __future__ import annotations

from typing import Any

import grpc
import httpx
import redis.asyncio as aioredis
from grpc_health.v1 import health_pb2, health_pb2_grpc


async def http_ok(url: str) -> bool:
    """True when GET url answers 200."""
    try:
        async with httpx.AsyncClient(timeout=1.0, trust_env=False) as client:
            return (await client.get(url)).status_code == 200
    except httpx.HTTPError:
        return False


async def grpc_serving(target: str, service: str = "") -> bool:
    """True when the gRPC health service at target reports service as SERVING."""
    async with grpc.aio.insecure_channel(target) as channel:
        # types-grpcio-health-checking declares HealthStub without its methods.
        stub: Any = health_pb2_grpc.HealthStub(channel)
        try:
            reply = await stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=1.0)
        except grpc.aio.AioRpcError:
            return False
        return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


async def redis_replica_linked(url: str) -> bool:
    """True when the Redis at url is a replica that has synced with its primary."""
    client = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        replication = await client.info("replication")
    except (aioredis.RedisError, OSError):
        return False
    finally:
        await client.aclose()
    return bool(replication.get("master_link_status") == "up")


async def redis_pong(url: str) -> bool:
    """True when the Redis at url answers PING."""
    client = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        return bool(await client.ping())
    except (aioredis.RedisError, OSError):
        return False
    finally:
        await client.aclose()


async def redis_persistence(url: str) -> str | None:
    """How the Redis at url persists: "append-only file", "snapshots", "nothing", or None when
    it cannot be asked (CONFIG may be disabled on a managed Redis)."""
    client = aioredis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
    try:
        aof = (await client.config_get("appendonly")).get("appendonly")
        save = (await client.config_get("save")).get("save")
    except (aioredis.RedisError, OSError):
        return None
    finally:
        await client.aclose()
    if aof == "yes":
        return "append-only file"
    return "snapshots" if save else "nothing"
