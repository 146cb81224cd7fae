"""Wires the rate limit service: limits, Redis with its fallback, batching, the servicers.

Health per component, as envoyproxy/ratelimit reports it: `llmproxy.ratelimit.config` (limits
loaded) and `llmproxy.ratelimit.redis` (NOT_SERVING while degraded). The overall status ("",
what Envoy's health check asks) stays SERVING while Redis is down, on purpose: a degraded
instance still decides with local limits, whereas NOT_SERVING on every instance at once would
leave Envoy no limiter to ask: every check would fail, refusing every request under closed
limits (or letting every one through unlimited under open ones).
"""

from __future__ import annotations

import asyncio
import logging

import grpc
from envoy.service.ratelimit.v3 import rls_pb2

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from llmproxy.common.access_control import access_control
from llmproxy.common.chaos.registry import InstanceRegistry
from llmproxy.common.live_count import LiveCount
from llmproxy.common.redis import connect_redis
from llmproxy.common.redis_feed import RedisChannelFeed, follow_feed
from llmproxy.common.server import RunningServer, cancelling, start_server
from llmproxy.config import StackConfig
from llmproxy.ratelimit.batcher import Batcher
from llmproxy.ratelimit.decide import Decider
from llmproxy.ratelimit.fallback import FallbackLimitStore
from llmproxy.ratelimit.memory_store import MemoryLimitStore
from llmproxy.ratelimit.overlimit import OverLimitCache
from llmproxy.ratelimit.redis_store import RedisLimitStore
from llmproxy.ratelimit.reload import LimitsHolder
from llmproxy.ratelimit.resets import RESETS_CHANNEL, ResetBroadcast
from llmproxy.ratelimit.service import RateLimitControlServicer, RateLimitServicer

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    rls_pb2.DESCRIPTOR.services_by_name["RateLimitService"].full_name,
    ratelimit_pb2.DESCRIPTOR.services_by_name["RateLimitControlService"].full_name,
)


async def serve(config: StackConfig) -> RunningServer:
    """Start the rate limit gRPC server; raises LimitsConfigError if the limits file is invalid."""
    settings = config.services.ratelimit
    cache = OverLimitCache(settings.local_cache_size)
    holder = LimitsHolder(settings.limits_file, settings.domain)
    # Tighter than the stack's Redis settings and without retries: a slow Redis must turn into
    # a local decision well within Envoy's own timeout.
    redis = connect_redis(
        config.redis.model_copy(update={"socket_timeout_s": settings.redis_timeout_s, "retries": 0})
    )
    # First: a missing service token stops startup before anything else is opened.
    access = access_control(config, redis, service="ratelimit")
    running: RunningServer | None = None

    def redis_health(degraded: bool) -> None:
        if running is not None:
            running.components.report("redis", not degraded)

    # The fallback divides each limit by the limiter instances live when Redis was last read:
    # an HPA may run more than `instances`.
    count = LiveCount(InstanceRegistry(redis), "ratelimit", settings.instances)
    counting = asyncio.create_task(count.run())
    store = FallbackLimitStore(
        RedisLimitStore(redis),
        MemoryLimitStore(max_keys=max(settings.local_cache_size, 1000)),
        timeout_s=settings.redis_timeout_s,
        probe_interval_s=settings.probe_interval_s,
        instances=count,
        on_change=redis_health,
    )
    batcher = Batcher(store, settings.max_batch, window_s=settings.batch_window_ms / 1000)
    decider = Decider(holder, store, batcher, cache)
    holder.on_change(decider.limits_changed)
    watcher = asyncio.create_task(holder.watch(settings.reload_interval_s))
    resets = ResetBroadcast(redis, cache)
    follower = asyncio.create_task(
        follow_feed(RedisChannelFeed(config.redis, RESETS_CHANNEL), resets.apply, resets.lost)
    )

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        RateLimitServicer(decider, settings.deadline_margin_ms / 1000).register(server)
        ratelimit_pb2_grpc.add_RateLimitControlServiceServicer_to_server(
            RateLimitControlServicer(holder, store, cache, resets), server
        )
        return SERVICE_NAMES

    closers = [cancelling([watcher, follower, counting]), batcher.aclose, store.aclose]
    running = await start_server(
        settings,
        register,
        closers=closers,
        service="ratelimit",
        required=("config",),
        access=access,
        redis=redis,
    )
    await running.components.set("config", True)  # loaded: an invalid file stopped startup
    await running.components.set("redis", not store.degraded)
    return running
