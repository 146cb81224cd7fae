"""The rate limit servicers: Envoy's ShouldRateLimit and the operators' control API.

Decisions are responses: an over-limit request is an OVER_LIMIT answer, and a Redis outage is
decided locally (fallback.py), so Envoy sees a gRPC error only for a malformed request
(INVALID_ARGUMENT: no descriptors, an entry without key, a foreign domain) or for one decided too
late for Envoy's timeout (DEADLINE_EXCEEDED, nothing counted), which fails as the limits file's
failure modes say (docs/ratelimit.md#failure-modes-and-overload).
"""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from redis.exceptions import RedisError

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2, ratelimit_pb2_grpc
from llmproxy.common.grpc_types import Context
from llmproxy.common.limits_file import LimitsConfigError
from llmproxy.common.metrics import UnaryRpcMetrics
from llmproxy.ratelimit import metrics
from llmproxy.ratelimit.decide import Decider, duration
from llmproxy.ratelimit.errors import DescriptorError, LateAnswerError, NoLimitError
from llmproxy.ratelimit.fallback import FallbackLimitStore
from llmproxy.ratelimit.overlimit import OverLimitCache
from llmproxy.ratelimit.reload import LimitsHolder
from llmproxy.ratelimit.resets import ResetBroadcast
from llmproxy.ratelimit.rules import LOG, Entries, Match, Rule
from llmproxy.ratelimit.store import Adjust, Take

log = logging.getLogger(__name__)

_UNITS = {
    "second": ratelimit_pb2.UNIT_SECOND,
    "minute": ratelimit_pb2.UNIT_MINUTE,
    "hour": ratelimit_pb2.UNIT_HOUR,
    "day": ratelimit_pb2.UNIT_DAY,
}


SHOULD_RATE_LIMIT = "/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"


class RateLimitServicer:
    """Envoy's rate limit decision, on the wire's bytes.

    Registered as a generic handler without (de)serializers: the decider remembers requests
    by their bytes and writes its answers as bytes. It counts its own per-RPC metrics (the
    same llmproxy_grpc_server_* series the interceptor keeps for every other RPC), without the
    interceptor's wrapper coroutine on the hottest path.
    """

    def __init__(self, decider: Decider, deadline_margin_s: float = 0.0) -> None:
        self._decide = decider.decide_bytes
        self._margin_s = deadline_margin_s
        self._rpc = UnaryRpcMetrics(SHOULD_RATE_LIMIT)

    def register(self, server: grpc.aio.Server) -> None:
        """Serve ShouldRateLimit on server."""
        service, method = SHOULD_RATE_LIMIT.strip("/").split("/")
        handler: grpc.RpcMethodHandler[bytes, bytes] = grpc.unary_unary_rpc_method_handler(
            self.should_rate_limit
        )
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {method: handler}),)
        )

    async def should_rate_limit(self, request: bytes, context: Context) -> bytes:
        """OK or OVER_LIMIT overall and for each descriptor, in the order Envoy sent them."""
        start = self._rpc.start()
        code = "UNKNOWN"
        # Envoy's timeout arrives as the call's deadline (grpc-timeout).
        remaining = context.time_remaining()
        deadline = None if remaining is None else time.monotonic() + remaining - self._margin_s
        try:
            response = await self._decide(request, deadline)
        except DescriptorError as exc:
            code = "INVALID_ARGUMENT"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise  # abort raises; this keeps type checkers sure nothing is returned
        except LateAnswerError as exc:
            code = "DEADLINE_EXCEEDED"
            await context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, str(exc))
            raise
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        else:
            code = "OK"
            return response
        finally:
            self._rpc.done(start, code)


def limit_message(rule: Rule) -> ratelimit_pb2.Limit:
    """A configured limit as the control API shows it."""
    return ratelimit_pb2.Limit(
        entries=[ratelimit_pb2.DescriptorEntry(key=k, value=v) for k, v in rule.entries],
        requests_per_unit=0 if rule.unlimited else rule.requests_per_unit,
        unit=ratelimit_pb2.UNIT_UNSPECIFIED if rule.unlimited else _UNITS[rule.unit],
        shadow_mode=rule.shadow_mode,
        unlimited=rule.unlimited,
        algorithm=(
            ratelimit_pb2.ALGORITHM_UNSPECIFIED
            if rule.unlimited
            else ratelimit_pb2.ALGORITHM_SLIDING_LOG
            if rule.algorithm == LOG
            else ratelimit_pb2.ALGORITHM_SLIDING_COUNTER
        ),
        name=rule.name,
    )


def _entries(descriptor: ratelimit_pb2.Descriptor) -> Entries:
    return tuple((e.key, e.value) for e in descriptor.entries)


class RateLimitControlServicer(ratelimit_pb2_grpc.RateLimitControlServiceServicer):
    """The rate limiter's control API: limits, usage, reset, reload, token reconciliation."""

    def __init__(
        self,
        holder: LimitsHolder,
        store: FallbackLimitStore,
        cache: OverLimitCache,
        resets: ResetBroadcast,
    ) -> None:
        self._holder = holder
        self._store = store
        self._cache = cache
        self._resets = resets

    def _match(self, descriptor: ratelimit_pb2.Descriptor) -> Match:
        entries = _entries(descriptor)
        match = self._holder.limits.match(entries)
        if match is None or match.rule.unlimited:
            what = ", ".join(f"{k}={v}" for k, v in entries)
            raise NoLimitError(f"no limit applies to the descriptor {what}")
        return match

    async def _abort(self, context: Context, exc: DescriptorError) -> None:
        code = (
            grpc.StatusCode.NOT_FOUND
            if isinstance(exc, NoLimitError)
            else grpc.StatusCode.INVALID_ARGUMENT
        )
        await context.abort(code, str(exc))

    async def GetLimits(
        self, request: ratelimit_pb2.GetLimitsRequest, context: Context
    ) -> ratelimit_pb2.GetLimitsResponse:
        """The limits in force, where they came from, and whether this instance is degraded."""
        holder = self._holder
        loaded_at = Timestamp()
        loaded_at.FromDatetime(holder.loaded_at)
        return ratelimit_pb2.GetLimitsResponse(
            domain=holder.domain,
            limits=[limit_message(rule) for rule in holder.limits.rules],
            config_sha256=holder.loaded.sha256,
            config_path=str(holder.path),
            loaded_at=loaded_at,
            degraded=self._store.degraded,
        )

    async def GetUsage(
        self, request: ratelimit_pb2.GetUsageRequest, context: Context
    ) -> ratelimit_pb2.GetUsageResponse:
        """The descriptor's count in its window now; counts no hit."""
        try:
            match = self._match(request.descriptor)
        except DescriptorError as exc:
            await self._abort(context, exc)
            raise
        rule = match.rule
        (outcome,) = await self._store.take(
            [Take(match.key, rule.algorithm, rule.requests_per_unit, rule.window_ms, 0)]
        )
        return ratelimit_pb2.GetUsageResponse(
            limit=limit_message(rule),
            used=max(0, outcome.used),
            remaining=outcome.remaining,
            reset_after=duration(0 if outcome.allowed else outcome.reset_ms),
        )

    async def ResetUsage(
        self, request: ratelimit_pb2.ResetUsageRequest, context: Context
    ) -> ratelimit_pb2.ResetUsageResponse:
        """Forget the descriptor's count, and every instance's cached refusal of it."""
        try:
            match = self._match(request.descriptor)
        except DescriptorError as exc:
            await self._abort(context, exc)
            raise
        self._cache.forget(match.key)
        existed = await self._store.reset(match.key, match.rule.algorithm)
        try:
            await self._resets.publish(match.key)
        except (RedisError, OSError) as exc:
            # The count is reset; the other instances may refuse the key from memory until
            # the refusal they remember runs out (or they lose the channel and forget it).
            log.warning("reset not broadcast", extra={"error": type(exc).__name__})
        return ratelimit_pb2.ResetUsageResponse(limit=limit_message(match.rule), existed=existed)

    async def ReloadConfig(
        self, request: ratelimit_pb2.ReloadConfigRequest, context: Context
    ) -> ratelimit_pb2.ReloadConfigResponse:
        """Read the limits file again; FAILED_PRECONDITION naming each problem if invalid."""
        try:
            reloaded = self._holder.reload()
        except LimitsConfigError as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            raise
        return ratelimit_pb2.ReloadConfigResponse(
            config_sha256=reloaded.sha256,
            changed=reloaded.changed,
            limit_count=reloaded.limit_count,
        )

    def _adjustments(self, request: ratelimit_pb2.ReconcileTokensRequest) -> list[Adjust]:
        """The corrections one reconciliation asks for; DescriptorError if it is malformed."""
        if not request.descriptors:
            raise DescriptorError("no descriptors to reconcile")
        delta = request.actual_tokens - request.reserved_tokens
        at_ms = (
            request.reserved_at.ToMilliseconds()
            if request.HasField("reserved_at")
            else time.time_ns() // 1_000_000
        )
        adjustments = []
        for descriptor in request.descriptors:
            match = self._holder.limits.match(_entries(descriptor))
            if match is None or match.rule.unlimited or not match.rule.tokens:
                continue  # nothing was reserved on it
            rule = match.rule
            adjustments.append(Adjust(match.key, rule.algorithm, rule.window_ms, delta, at_ms))
        return adjustments if delta != 0 else []

    async def _apply(self, items: list[list[Adjust]]) -> int:
        # One store call (one script call per Redis Cluster slot) for every item's corrections.
        adjustments = [adjustment for item in items for adjustment in item]
        if not adjustments:
            return 0
        adjusted = await self._store.adjust(adjustments)
        for item in items:
            if item:  # every correction of an item has the item's delta
                metrics.RECONCILIATIONS.labels("up" if item[0].delta > 0 else "down").inc()
        for adjustment in adjustments:
            if adjustment.delta < 0:
                # Tokens were given back: a cached refusal may no longer hold.
                self._cache.forget(adjustment.key)
        return adjusted

    async def ReconcileTokens(
        self, request: ratelimit_pb2.ReconcileTokensRequest, context: Context
    ) -> ratelimit_pb2.ReconcileTokensResponse:
        """Move each token limit's count from the reservation to the actual usage."""
        try:
            adjustments = self._adjustments(request)
        except DescriptorError as exc:
            await self._abort(context, exc)
            raise
        return ratelimit_pb2.ReconcileTokensResponse(adjusted=await self._apply([adjustments]))

    async def ReconcileTokensBatch(
        self, request: ratelimit_pb2.ReconcileTokensBatchRequest, context: Context
    ) -> ratelimit_pb2.ReconcileTokensBatchResponse:
        """Apply many reconciliations with one store call; one invalid item refuses them all."""
        items: list[list[Adjust]] = []
        for index, item in enumerate(request.items):
            try:
                item_adjustments = self._adjustments(item)
            except DescriptorError as exc:
                # Validated before anything is applied: a refused batch changed nothing.
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"items[{index}]: {exc}")
                raise
            items.append(item_adjustments)
        return ratelimit_pb2.ReconcileTokensBatchResponse(
            adjusted=await self._apply(items), applied_items=sum(1 for item in items if item)
        )
