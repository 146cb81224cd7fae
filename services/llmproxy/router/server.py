"""Wires the router: Redis, cache, provider clients (through Envoy's egress), servicers."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping

import grpc
import httpx
from redis.exceptions import RedisError

from llmproxy._gen.router.v1 import (
    anthropic_pb2,
    anthropic_pb2_grpc,
    chat_pb2,
    chat_pb2_grpc,
    openai_pb2,
    openai_pb2_grpc,
    router_pb2,
    router_pb2_grpc,
)
from llmproxy.common.access_control import access_control
from llmproxy.common.errors import ConfigError
from llmproxy.common.ratelimit_client import RateLimitClient
from llmproxy.common.redis import REDIS_CHECK_INTERVAL_S, AnyRedis, connect_redis
from llmproxy.common.server import RunningServer, cancelling, start_server
from llmproxy.common.usage import BufferedUsageStore, RedisUsageStore
from llmproxy.config import StackConfig
from llmproxy.router.anthropic_api import AnthropicServicer
from llmproxy.router.cache.stats import CacheStats
from llmproxy.router.cache.store import RedisResponseCache
from llmproxy.router.calls import Failover
from llmproxy.router.control import RouterControlServicer
from llmproxy.router.health_view import HealthView
from llmproxy.router.providers import Provider, ProviderClient, client_for
from llmproxy.router.providers.pool import LeanTransport
from llmproxy.router.reconcile_batch import ReconcileBatcher
from llmproxy.router.routing import Balancer, measured_targets
from llmproxy.router.service import OpenAIServicer
from llmproxy.router.stored_responses import RedisResponseStore
from llmproxy.router.typed import ChatServicer

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    openai_pb2.DESCRIPTOR.services_by_name["OpenAIService"].full_name,
    router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name,
    chat_pb2.DESCRIPTOR.services_by_name["ChatService"].full_name,
    anthropic_pb2.DESCRIPTOR.services_by_name["AnthropicService"].full_name,
)


def new_http_transport() -> httpx.AsyncBaseTransport:
    """The one pooled httpx transport every provider call goes through.

    aiohttp's pool under httpx's transport, which costs less CPU a call (providers/pool.py).
    No proxies from the environment, no redirects: a request never picks where it goes.
    """
    return LeanTransport(max_connections=1000)


def egress_url(config: StackConfig, provider: str) -> str:
    """Where the router reaches provider through Envoy's egress listener."""
    envoy = config.envoy
    return f"http://{envoy.host}:{envoy.egress_port}/{provider}"


async def refuse_shared_server(redis: AnyRedis, cache_redis: AnyRedis) -> None:
    """ConfigError when the cache's Redis is the stack's under another name (an alias, a
    proxy, a DNS name): its eviction policy would evict API keys and counters.

    The configuration compares URLs; only the servers' run ids show two URLs reach one server.
    A server that does not answer now cannot be compared, and is not held against startup.
    """
    if cache_redis is redis:
        return
    try:
        ids = [(await client.info("server"))["run_id"] for client in (redis, cache_redis)]
    except (RedisError, OSError, KeyError, TypeError) as exc:
        log.warning("cache Redis not compared with the stack's", extra={"error": str(exc)})
        return
    if ids[0] == ids[1]:
        raise ConfigError(
            "services.router.cache.redis_url: reaches the same Redis server as redis.url "
            f"(run_id {ids[0]}); its eviction settings would evict API keys and counters: give "
            "the cache a Redis server of its own"
        )


def health_view(config: StackConfig, service_token: str) -> HealthView | None:
    """The router's view of provider health, following the health service directly (not
    through Envoy: provider health must not depend on the data plane); None when disabled."""
    health = config.services.health
    if not health.client.enabled:
        return None
    return HealthView(health.grpc_target(), health.client, service_token=service_token)


def provider_clients(
    config: StackConfig, transport: httpx.AsyncBaseTransport, environ: Mapping[str, str]
) -> dict[str, ProviderClient]:
    """An adapter per provider requests may go to, by provider name."""
    via_egress = config.services.router.via_egress
    return {
        p.name: client_for(
            transport,
            Provider.from_settings(p, environ, egress_url(config, p.name) if via_egress else None),
        )
        for p in config.provider_endpoints(environ)
    }


async def serve(
    config: StackConfig, transport: httpx.AsyncBaseTransport | None = None
) -> RunningServer:
    """Start the router's gRPC server for config; returns the running server and its port."""
    environ = os.environ
    settings = config.services.router
    transport = transport or new_http_transport()
    redis = connect_redis(config.redis)
    # First: a missing service token stops startup before anything else is opened.
    access = access_control(config, redis, service="router")
    # The cache's own Redis when configured: cache pressure there evicts nothing authoritative.
    cache_redis = (
        connect_redis(config.redis.with_url(config.cache_redis_url))
        if config.cache_redis_url
        else redis
    )  # the stack's Redis otherwise, then with no eviction settings (StackConfig refuses them)
    cache = RedisResponseCache(cache_redis, settings.cache.redis_backoff_s)
    if settings.cache.enabled and (settings.cache.maxmemory_policy or settings.cache.maxmemory):
        await refuse_shared_server(redis, cache_redis)
        await cache.configure_eviction(settings.cache.maxmemory_policy, settings.cache.maxmemory)
    stats = CacheStats()
    usage = BufferedUsageStore(RedisUsageStore(redis))
    models = config.served_models(environ)
    clients = provider_clients(config, transport, environ)
    view = health_view(config, access.service_token)
    if view is not None:
        view.start()
    # Token reservations made by the rate limiter are corrected with actual usage.
    ratelimit = config.services.ratelimit
    limiter = RateLimitClient(ratelimit.grpc_target(), access.service_token)
    # Many requests' corrections per call, not one call each (reconcile_batch.py).
    reconciler = ReconcileBatcher(limiter.reconcile_batch)
    openai_api = OpenAIServicer(
        models,
        clients,
        settings,
        failover=Failover(
            clients,
            settings.failover,
            health=view,
            balancer=Balancer(settings.routing, health=view, measured=measured_targets(models)),
        ),
        cache=cache if settings.cache.enabled else None,
        usage=usage,
        stats=stats,
        reconciler=reconciler,
        # The stack's Redis: stored responses are clients' state, not evictable cache entries.
        responses=RedisResponseStore(redis),
    )
    control = RouterControlServicer(
        models, cache if settings.cache.enabled else None, stats, openai_api
    )
    flushers = [
        asyncio.create_task(stats.flush_forever(cache)),
        asyncio.create_task(usage.flush_forever()),
    ]

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        openai_pb2_grpc.add_OpenAIServiceServicer_to_server(openai_api, server)
        router_pb2_grpc.add_RouterServiceServicer_to_server(control, server)
        chat_pb2_grpc.add_ChatServiceServicer_to_server(ChatServicer(openai_api), server)
        anthropic_pb2_grpc.add_AnthropicServiceServicer_to_server(
            AnthropicServicer(openai_api), server
        )
        return SERVICE_NAMES

    # In order, each even if one before it failed (close_all).
    closers = [
        cancelling(flushers),
        *([view.aclose] if view is not None else []),
        reconciler.aclose,  # before the channel closes: no correction is lost
        limiter.aclose,
        transport.aclose,
        *([cache_redis.aclose] if cache_redis is not redis else []),
        redis.aclose,
    ]
    running = await start_server(
        settings,
        register,
        closers=closers,
        service="router",
        access=access,
        redis=redis,
    )
    # Without Redis the router still answers (no cache, usage kept in memory): reported only.
    await running.components.watch(
        "redis", redis.ping, REDIS_CHECK_INTERVAL_S, config.redis.socket_timeout_s
    )
    return running
