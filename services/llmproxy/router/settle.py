"""Settling an answered request: usage and spend, metrics, the rate limiter's token
reconciliation, and the answer's cache entry (or, for a cache hit, what it saved)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from prometheus_client import Counter

from llmproxy.common.usage import Usage, UsageStore
from llmproxy.router import accounting
from llmproxy.router.cache.flights import Flight
from llmproxy.router.cache.metrics import CACHE_BYTES_SERVED, CACHE_SAVED_TOKENS, CACHE_SAVED_USD
from llmproxy.router.cache.stats import CacheStats
from llmproxy.router.cache.store import CachedAnswer, ResponseCache
from llmproxy.router.prepared import JSON, SSE, PreparedRequest
from llmproxy.router.pricing import NO_TOKENS
from llmproxy.router.usage_metrics import USAGE_METRICS

log = logging.getLogger(__name__)

USAGE_ERRORS = Counter(
    "llmproxy_usage_record_errors_total", "Calls whose usage could not be recorded."
)


class TokenReconciler(Protocol):
    """The rate limiter's reconciliation of token reservations (router.reconcile_batch)."""

    def reconcile_soon(self, headers: Mapping[str, str], actual_tokens: int) -> None:
        """Replace the request's reserved token estimate with the tokens it used, soon."""


class Settler:
    """Settles each answered request with the stores, counters and cache it is given."""

    def __init__(
        self,
        stats: CacheStats,
        cache: ResponseCache | None,
        usage: UsageStore | None,
        reconciler: TokenReconciler | None,
        max_entry_bytes: int,
    ) -> None:
        self._stats = stats
        self._cache = cache
        self._usage = usage
        self._reconciler = reconciler
        self._max_entry_bytes = max_entry_bytes

    async def settle(
        self, call: PreparedRequest, flight: Flight, provider: str, seconds: float
    ) -> None:
        """Account for a finished flight, then cache its answer if the request may be."""
        tokens = (
            accounting.stream_usage(flight.chunks)
            if call.stream
            else accounting.answer_usage(flight.chunks[0])
        ) or NO_TOKENS
        # One price for spend, budgets, metrics and the cache's savings: the answering target's.
        cost = call.model.prices(provider).cost_usd(tokens)
        log.info(
            "answered",
            extra={
                "model": call.model.name,
                "provider": provider,
                "stream": call.stream,
                "prompt_tokens": tokens.prompt,
                "cached_tokens": tokens.cached,
                "completion_tokens": tokens.completion,
                "cost_usd": cost,
                "seconds": round(seconds, 4),
            },
        )
        USAGE_METRICS.observe(
            call.identity.tenant,
            call.model.name,
            tokens.prompt,
            tokens.completion,
            cost,
            cached_tokens=tokens.cached,
        )
        if self._usage is not None:
            try:
                usage = Usage(tokens.prompt, tokens.completion, cost)
                await self._usage.record(call.identity, call.model.name, usage)
            except Exception as exc:  # accounting trouble must not fail the answer
                USAGE_ERRORS.inc()
                log.warning("usage not recorded", extra={"error": type(exc).__name__})
        self.reconcile(call, tokens.total)
        if self._cache is None or not call.decision.store:
            return
        body = b"".join(flight.chunks)  # joined only for an answer the cache may keep
        if len(body) <= self._max_entry_bytes:
            answer = CachedAnswer(
                SSE if call.stream else JSON,
                body,
                call.model.name,
                tokens.prompt,
                tokens.completion,
                cost,
                tenant=call.cache_tenant or "",
            )
            await self._cache.put(call.digest, answer, call.decision.ttl_s, call.decision.tags)

    def reconcile(self, call: PreparedRequest, actual_tokens: int) -> None:
        """Correct the rate limiter's token reservation, in the next batch (never raises)."""
        if self._reconciler is not None:
            self._reconciler.reconcile_soon(call.headers, actual_tokens)

    def count_hit(self, call: PreparedRequest, hit: CachedAnswer) -> None:
        """Count a cache hit and what it saved."""
        name = call.model.name
        self._stats.count(name, "hits")
        self._stats.count(name, "bytes_served", len(hit.body))
        self._stats.count(name, "saved_tokens", hit.saved_tokens)
        self._stats.count(name, "saved_usd", hit.cost_usd)
        CACHE_BYTES_SERVED.labels(name).inc(len(hit.body))
        CACHE_SAVED_TOKENS.labels(name).inc(hit.saved_tokens)
        CACHE_SAVED_USD.labels(name).inc(hit.cost_usd)
