"""Wires the authorization service: Redis stores, key cache and its invalidation feed, the
control token verifier its own access control uses, servicers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Mapping

import grpc
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.authz.admin import KeyAdmin
from llmproxy.authz.authorizer import Authorizer
from llmproxy.authz.cache import CachedKeys, KeyCache
from llmproxy.authz.fallback import FallbackKeys
from llmproxy.authz.introspection import LocalTokenVerifier
from llmproxy.authz.keys import hasher_from_env
from llmproxy.authz.service import AuthorizationServicer, AuthzControlServicer
from llmproxy.authz.store import (
    INVALIDATION_CHANNEL,
    RedisControlTokenStore,
    RedisKeyStore,
)
from llmproxy.authz.token_admin import ControlTokenAdmin
from llmproxy.common.access_control import access_control
from llmproxy.common.credentials import secret_from_env
from llmproxy.common.redis import REDIS_CHECK_INTERVAL_S, connect_redis
from llmproxy.common.redis_feed import RedisChannelFeed
from llmproxy.common.server import RunningServer, start_server
from llmproxy.common.usage import RedisUsageStore
from llmproxy.config import StackConfig

log = logging.getLogger(__name__)

SERVICE_NAMES = (
    external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name,
    authz_pb2.DESCRIPTOR.services_by_name["AuthzService"].full_name,
)


async def serve(config: StackConfig, environ: Mapping[str, str] | None = None) -> RunningServer:
    """Start the authorization gRPC server; raises a ConfigError (SecretConfigError) without an
    HMAC secret or the service token, or with a bootstrap admin token that is too short.

    environ (default os.environ) holds the HMAC secret, the service token and the bootstrap
    admin token.
    """
    env = os.environ if environ is None else environ
    settings = config.services.authz
    hasher = hasher_from_env(env, settings.hmac_secret_env)
    admin_env = config.control.admin_token_env
    admin_token = secret_from_env(env, admin_env, required=False)
    if admin_token is None:
        log.warning(
            "no bootstrap admin token: only control tokens are accepted", extra={"unset": admin_env}
        )
    redis = connect_redis(config.redis)
    # authz answers for control tokens itself, from its store: asking itself over gRPC would
    # only add a round trip (and a way to fail).
    verifier = LocalTokenVerifier(RedisControlTokenStore(redis), hasher, admin_token)
    access = access_control(config, redis, service="authz", verifier=verifier, environ=env)
    store = RedisKeyStore(redis)
    # Checks read through a client of their own: tighter than the stack's settings and without
    # retries, so a slow Redis becomes a decision from last-known records, not a 503.
    lookup_redis = connect_redis(
        config.redis.model_copy(update={"socket_timeout_s": settings.redis_timeout_s, "retries": 0})
    )
    lookup_store = RedisKeyStore(lookup_redis)
    keys = CachedKeys(lookup_store, KeyCache(settings.cache_ttl_s, settings.cache_max_keys))
    follower = asyncio.create_task(
        keys.follow(RedisChannelFeed(config.redis, INVALIDATION_CHANNEL))
    )
    # Serving before the first subscription attempt ends would only mean uncached lookups;
    # waiting for it (connection refused is quick) makes the cache useful from the start.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(keys.first_attempt_done.wait(), 2 * config.redis.socket_timeout_s)
    # Known keys outlive a Redis outage for stale_grace_s (authz.fallback); the mode is the
    # `keys` component of this service's health: NOT_SERVING while decided from memory.
    running: RunningServer | None = None

    def keys_mode(degraded: bool) -> None:
        if running is not None:
            running.components.report("keys", not degraded)

    lookups = FallbackKeys(
        keys,
        RedisUsageStore(lookup_redis),
        ping=lookup_redis.ping,
        probe_timeout_s=settings.redis_timeout_s,
        stale_grace_s=settings.stale_grace_s,
        max_keys=settings.cache_max_keys,
        on_change=keys_mode,
    )
    check = AuthorizationServicer(Authorizer(lookups, hasher, lookups))
    control = AuthzControlServicer(
        KeyAdmin(store, hasher), ControlTokenAdmin(RedisControlTokenStore(redis), hasher), verifier
    )

    def register(server: grpc.aio.Server) -> tuple[str, ...]:
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(check, server)
        authz_pb2_grpc.add_AuthzServiceServicer_to_server(control, server)
        return SERVICE_NAMES

    async def stop_follower() -> None:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower

    running = await start_server(
        settings,
        register,
        closers=[stop_follower, lookups.aclose, lookup_redis.aclose, redis.aclose],
        service="authz",
        access=access,
        redis=redis,
    )
    await running.components.set("keys", True)
    # Reported only: known keys are still authorized while Redis is down.
    await running.components.watch(
        "redis", redis.ping, REDIS_CHECK_INTERVAL_S, config.redis.socket_timeout_s
    )
    return running
