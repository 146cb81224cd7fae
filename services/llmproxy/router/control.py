"""The router's control API: models, cache invalidation, statistics and warming."""

from __future__ import annotations

import json
from collections.abc import Sequence

import grpc

from llmproxy._gen.router.v1 import router_pb2, router_pb2_grpc
from llmproxy.common.contract import TENANT_PATTERN, TENANT_RULE
from llmproxy.common.grpc_types import Context
from llmproxy.router.cache.stats import CacheStats
from llmproxy.router.cache.store import ResponseCache
from llmproxy.router.errors import RouterError
from llmproxy.router.service import OpenAIServicer
from llmproxy.router.settings import ModelSettings

MAX_WARM_LINES = 10_000


class RouterControlServicer(router_pb2_grpc.RouterServiceServicer):
    """Operators' view of the routing table and the cache."""

    def __init__(
        self,
        models: Sequence[ModelSettings],
        cache: ResponseCache | None,
        stats: CacheStats,
        openai_api: OpenAIServicer,
    ) -> None:
        self._models = models
        self._cache = cache
        self._stats = stats
        self._openai = openai_api

    async def ListModels(
        self, request: router_pb2.ListModelsRequest, context: Context
    ) -> router_pb2.ListModelsResponse:
        """Every served model, its aliases and its targets."""
        return router_pb2.ListModelsResponse(
            models=[
                router_pb2.Model(
                    name=m.name,
                    aliases=m.aliases,
                    targets=[
                        router_pb2.ModelTarget(provider=t.provider, upstream_model=t.model)
                        for t in m.targets
                    ],
                )
                for m in self._models
            ]
        )

    async def _require_cache(self, context: Context) -> ResponseCache:
        if self._cache is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "the cache is disabled")
        return self._cache

    async def InvalidateCache(
        self, request: router_pb2.InvalidateCacheRequest, context: Context
    ) -> router_pb2.InvalidateCacheResponse:
        """Remove entries by key, model, tag, tenant or all; at least one selector is required."""
        cache = await self._require_cache(context)
        if not (request.keys or request.models or request.tags or request.tenants or request.all):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "name keys, models, tags, tenants, or set all: true",
            )
        bad = [
            k for k in request.keys if len(k) != 64 or not all(c in "0123456789abcdef" for c in k)
        ]
        if bad:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"keys are 64 lowercase hex digits: {bad[:3]}"
            )
        removed = await cache.invalidate(
            request.keys, request.models, request.tags, request.all, request.tenants
        )
        return router_pb2.InvalidateCacheResponse(removed=removed)

    async def GetCacheStats(
        self, request: router_pb2.GetCacheStatsRequest, context: Context
    ) -> router_pb2.GetCacheStatsResponse:
        """The counters of every model, summed over every router instance."""
        cache = await self._require_cache(context)
        await self._stats.flush(cache)
        reply = router_pb2.GetCacheStatsResponse()
        for model, counters in sorted((await cache.read_stats()).items()):
            hits, misses = counters.get("hits", 0), counters.get("misses", 0)
            reply.models.append(
                router_pb2.ModelCacheStats(
                    model=model,
                    hits=int(hits),
                    misses=int(misses),
                    bypasses=int(counters.get("bypasses", 0)),
                    hit_ratio=hits / (hits + misses) if hits + misses else 0.0,
                    bytes_served=int(counters.get("bytes_served", 0)),
                    saved_tokens=int(counters.get("saved_tokens", 0)),
                    saved_usd=counters.get("saved_usd", 0.0),
                )
            )
        return reply

    async def WarmCache(
        self, request: router_pb2.WarmCacheRequest, context: Context
    ) -> router_pb2.WarmCacheResponse:
        """Answer and cache each JSONL line; a bad line is reported, not fatal."""
        await self._require_cache(context)
        tenant = self._openai.cache_tenant(request.tenant)
        if tenant == "":
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "tenant is required: cache.scope is tenant, so entries are cached per tenant",
            )
        if tenant is not None and not TENANT_PATTERN.match(tenant):
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"tenant: {tenant[:70]!r} must be {TENANT_RULE}"
            )
        lines = request.jsonl.splitlines()
        if len(lines) > MAX_WARM_LINES:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, f"at most {MAX_WARM_LINES} lines per call"
            )
        reply = router_pb2.WarmCacheResponse()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                if await self._warm_line(line, tenant):
                    reply.cached += 1
                else:
                    reply.already_cached += 1
            except (RouterError, ValueError) as exc:
                reason = exc.message if isinstance(exc, RouterError) else f"not JSON: {exc}"
                reply.failures.append(router_pb2.WarmCacheFailure(line=number, reason=reason))
        return reply

    async def _warm_line(self, line: str, tenant: str | None) -> bool:
        body = json.loads(line)
        kind = body.pop("endpoint", "chat") if isinstance(body, dict) else "chat"
        if kind not in ("chat", "embeddings"):
            raise RouterError(f"endpoint must be 'chat' or 'embeddings', not {kind!r}")
        return await self._openai.warm(kind, json.dumps(body).encode(), tenant)
