"""ShouldRateLimit's decision: descriptors to limits, limits to checks, checks to an answer.

A request is refused when any descriptor whose limit is enforced (not shadow mode) refuses it.
Each check counts its hits only if they fit; when another descriptor refuses the request, the
hits its other descriptors counted are given back, so a refused request costs no budget (a
key hammering its own limit cannot drain its tenant's). Envoy turns the statuses into the
X-RateLimit-* headers; a refusal carries Retry-After and the message of the OpenAI error body.

Envoy sends the same descriptor sets again and again (each key's requests), so what a request's
bytes mean (its limits, counter keys, hits) is remembered by those bytes, and the answer is
written as bytes (wire.py): the per-request Python is the counting itself.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import DecodeError

from llmproxy.common.contract import RESERVED_AT_HEADER
from llmproxy.common.ratelimit_descriptors import TOKENS_KEY
from llmproxy.ratelimit import metrics, wire
from llmproxy.ratelimit.batcher import Batcher
from llmproxy.ratelimit.errors import DescriptorError, LateAnswerError
from llmproxy.ratelimit.fallback import FallbackLimitStore
from llmproxy.ratelimit.overlimit import OverLimitCache
from llmproxy.ratelimit.reload import LimitsHolder
from llmproxy.ratelimit.rules import Entries, Limits, Rule
from llmproxy.ratelimit.store import Adjust, Outcome, Take, give_back

Response = rls_pb2.RateLimitResponse
OK = Response.OK
OVER_LIMIT = Response.OVER_LIMIT
UNITS = {
    "second": Response.RateLimit.SECOND,
    "minute": Response.RateLimit.MINUTE,
    "hour": Response.RateLimit.HOUR,
    "day": Response.RateLimit.DAY,
}
# Distinct request bodies remembered; more are parsed again (the counters are the truth).
MAX_REMEMBERED_REQUESTS = 50_000
_RESERVED_AT = wire.header_key(RESERVED_AT_HEADER)


@dataclass(frozen=True, slots=True)
class _Limit:
    """A configured limit with its answers' statuses, prepared once per version of the limits."""

    rule: Rule
    statuses: wire.LimitStatuses


# One descriptor of a request with a limit to check, what its bytes mean: (counter key, hits,
# index of its _Limit, enforced, reserves tokens, entries). Enforced: not shadow mode, so a
# refusal refuses the request (and may be cached). Reserves tokens: a token limit with hits,
# whose check is the reservation. Plain values only: the garbage collector stops tracking
# tuples of str, int and bool, so tens of thousands of remembered plans add nothing to its full
# collections (as objects they made its pauses longer than Envoy's timeout under load).
_Check = tuple[str, int, int, bool, bool, Entries]
# Per descriptor: None (no limit applies, or unlimited) or its check.
_Plan = tuple[_Check | None, ...]


def _take(limits: list[_Limit], check: _Check) -> Take:
    """What the store is asked for one check."""
    key, hits, index, _, _, _ = check
    rule = limits[index].rule
    return Take(key, rule.algorithm, rule.requests_per_unit, rule.window_ms, hits)


def duration(ms: int) -> Duration:
    """A protobuf Duration of ms milliseconds."""
    return Duration(seconds=ms // 1000, nanos=(ms % 1000) * 1_000_000)


def describe(entries: Entries) -> str:
    """A descriptor for people: tenant=acme, key_id=k1 (the tokens marker left out)."""
    return ", ".join(f"{k}={v}" for k, v in entries if k != TOKENS_KEY) or "route"


class Decider:
    """Answers Envoy's RateLimitRequests from the limits in force and the counters."""

    def __init__(
        self,
        holder: LimitsHolder,
        store: FallbackLimitStore,
        batcher: Batcher,
        cache: OverLimitCache,
    ) -> None:
        self._holder = holder
        self._store = store
        self._batcher = batcher
        self._cache = cache
        self._prepared: tuple[Limits | None, list[_Limit]] = (None, [])
        self._plans: dict[bytes, _Plan] = {}
        self._outcomes = {
            name: metrics.DECISIONS.labels(holder.domain, name)
            for name in ("ok", "over_limit", "shadow", "degraded", "late")
        }

    def limits_changed(self) -> None:
        """Forget what was derived from the old limits."""
        self._plans.clear()
        self._cache.clear()

    def _limits(self) -> list[_Limit]:
        """The limits in force, prepared, by their index in Limits.rules."""
        limits = self._holder.limits
        owner, prepared = self._prepared
        if owner is not limits:
            prepared = [
                _Limit(
                    rule,
                    wire.LimitStatuses(
                        Response.RateLimit(
                            name=rule.name,
                            requests_per_unit=rule.requests_per_unit,
                            # An unlimited rule's statuses are never sent (it is never checked).
                            unit=UNITS.get(rule.unit, Response.RateLimit.UNKNOWN),
                        )
                    ),
                )
                for rule in limits.rules
            ]
            self._prepared = (limits, prepared)
        return prepared

    def _plan(self, data: bytes) -> _Plan:
        try:
            request = rls_pb2.RateLimitRequest.FromString(data)
        except DecodeError as exc:
            raise DescriptorError(f"the request is not a RateLimitRequest: {exc}") from exc
        if request.domain != self._holder.domain:
            raise DescriptorError(
                f"domain {request.domain!r} is not this service's domain {self._holder.domain!r}"
            )
        if not request.descriptors:
            raise DescriptorError("the request has no descriptors")
        limits = self._holder.limits
        default_hits = request.hits_addend or 1
        checks: list[_Check | None] = []
        for descriptor in request.descriptors:
            entries = tuple([(e.key, e.value) for e in descriptor.entries])
            found = limits.locate(entries)
            if found is None or limits.rules[found[0]].unlimited:
                checks.append(None)
                continue
            index, key = found
            rule = limits.rules[index]
            hits = (
                descriptor.hits_addend.value if descriptor.HasField("hits_addend") else default_hits
            )
            reserves_tokens = rule.tokens and hits > 0
            checks.append((key, hits, index, not rule.shadow_mode, reserves_tokens, entries))
        plan = tuple(checks)
        if len(self._plans) >= MAX_REMEMBERED_REQUESTS:
            self._plans.clear()  # cheaper than LRU bookkeeping on every request
        self._plans[data] = plan
        return plan

    async def decide(self, request: rls_pb2.RateLimitRequest) -> Any:
        """The answer to one RateLimitRequest message (decide_bytes for the wire)."""
        return Response.FromString(await self.decide_bytes(request.SerializeToString()))

    async def decide_bytes(self, data: bytes, deadline: float | None = None) -> bytes:
        """The serialized answer to one serialized RateLimitRequest; DescriptorError if bad.

        deadline (time.monotonic()) is when the answer is too late to be used: one not ready by
        then counts nothing (its hits are given back) and raises LateAnswerError instead, as
        does a request still undecided then. Envoy refuses or admits such a request without
        our answer, so a hit it counted would be budget spent on nothing.
        """
        plan = self._plans.get(data)
        if plan is None:
            plan = self._plan(data)
        # Taken with the plan, before any wait: a reload meanwhile must not renumber its limits.
        limits = self._limits()
        # A cached refusal per check (ms until it ends, count), or None.
        cache = self._cache
        refusals: list[tuple[int, int] | None] = []
        any_cached = False
        for check in plan:
            cached = None
            if check is not None:
                key, hits, _, enforced, _, _ = check
                cached = cache.refused(key, hits) if enforced else None
                if cached is not None:
                    metrics.LOCAL_CACHE_HITS.inc()
                    any_cached = True
            refusals.append(cached)
        if any_cached:
            # Refused already (a cached refusal): counting its other descriptors would only
            # have to be given back. No Redis call at all, as for a hot key hammered in a loop.
            return self._answer_from_cache(plan, limits, refusals)
        if deadline is not None and time.monotonic() >= deadline:
            self._outcomes["late"].inc()
            raise LateAnswerError("the deadline passed before the request was decided")
        takes = [_take(limits, check) for check in plan if check is not None]
        try:
            outcomes: list[Outcome] = await self._batcher.take(takes) if takes else []
        except asyncio.CancelledError:
            self._outcomes["late"].inc()  # Envoy gave up; the batcher gives its hits back
            raise
        if deadline is not None and time.monotonic() >= deadline:
            self._batcher.adjust_soon(give_back(takes, outcomes))
            self._outcomes["late"].inc()
            raise LateAnswerError("decided too close to the deadline; nothing stays counted")
        return self._answer(plan, limits, outcomes)

    def _answer_from_cache(
        self, plan: _Plan, limits: list[_Limit], refusals: list[tuple[int, int] | None]
    ) -> bytes:
        parts = [wire.OVERALL_OVER_LIMIT]
        refusal: tuple[_Check, int, int] | None = None  # check, used, reset ms
        for check, cached in zip(plan, refusals, strict=True):
            if check is None:
                parts.append(wire.NO_LIMIT_STATUS)
                continue
            statuses = limits[check[2]].statuses
            if cached is None:
                # Not checked: another descriptor's cached refusal decided the request.
                parts.append(statuses.unchecked)
            else:
                reset_ms, used = cached
                parts.append(statuses.status(True, 0, reset_ms))
                if refusal is None or reset_ms >= refusal[2]:
                    refusal = (check, used, reset_ms)
        self._outcomes["degraded" if self._store.degraded else "over_limit"].inc()
        if refusal is not None:  # always: at least one check was refused from the cache
            parts.append(self._refusal(limits, *refusal))
        return b"".join(parts)

    def _answer(self, plan: _Plan, limits: list[_Limit], outcomes: list[Outcome]) -> bytes:
        parts: list[bytes] = []
        shadow = False
        refusal: tuple[_Check, int, int] | None = None  # check, used, reset ms
        reserved_at = None
        degraded = self._store.degraded
        index = 0
        for check in plan:
            if check is None:
                parts.append(wire.NO_LIMIT_STATUS)
                continue
            key, hits, limit_index, enforced, reserves_tokens, _ = check
            outcome = outcomes[index]
            index += 1
            if reserved_at is None and reserves_tokens:
                reserved_at = outcome.now_ms
            over = False
            if not outcome.allowed:
                if not enforced:
                    shadow = True
                else:
                    over = True
                    # Local counts (while degraded) must not outlive the outage in the cache.
                    if not degraded:
                        self._cache.remember(key, hits, outcome.reset_ms, outcome.used)
                    if refusal is None or outcome.reset_ms >= refusal[2]:
                        refusal = (check, outcome.used, outcome.reset_ms)
            statuses = limits[limit_index].statuses
            parts.append(statuses.status(over, outcome.remaining, outcome.reset_ms))
        if refusal is not None:
            self._give_back(plan, limits, outcomes)
            parts.insert(0, wire.OVERALL_OVER_LIMIT)
            parts.append(self._refusal(limits, *refusal))
        else:
            parts.insert(0, wire.OVERALL_OK)
            if reserved_at is not None:
                # Tell the router (through a request header Envoy adds) when tokens were
                # reserved, so its reconciliation corrects the same window.
                parts.append(wire.request_header(_RESERVED_AT, str(reserved_at)))
        outcome_name = (
            "degraded"
            if degraded
            else "over_limit"
            if refusal is not None
            else "shadow"
            if shadow
            else "ok"
        )
        self._outcomes[outcome_name].inc()
        return b"".join(parts)

    def _give_back(self, plan: _Plan, limits: list[_Limit], outcomes: list[Outcome]) -> None:
        # The request is refused: what its other descriptors counted must not stay counted.
        refunds = []
        checks = [check for check in plan if check is not None]
        for (key, hits, index, _, _, _), outcome in zip(checks, outcomes, strict=True):
            if outcome.allowed and hits:
                rule = limits[index].rule
                refunds.append(Adjust(key, rule.algorithm, rule.window_ms, -hits, outcome.now_ms))
        if refunds:
            self._batcher.adjust_soon(refunds)

    @staticmethod
    def _refusal(limits: list[_Limit], check: _Check, used: int, reset_ms: int) -> bytes:
        # The rare parts of a refusal as a message; its bytes merge into the answer's.
        _, hits, index, _, _, entries = check
        rule = limits[index].rule
        seconds = max(1, math.ceil(reset_ms / 1000))
        what = "tokens" if rule.tokens else "requests"
        extra = Response(
            # The message of the OpenAI-style error body Envoy's local reply builds
            # (listeners.py).
            raw_body=(
                f"Rate limit reached for {describe(entries)} on {what} per {rule.unit}: "
                f"limit {rule.requests_per_unit}, used {used}, requested {hits}. "
                f"Please try again in {seconds}s."
            ).encode(),
            response_headers_to_add=[base_pb2.HeaderValue(key="retry-after", value=str(seconds))],
        )
        return bytes(extra.SerializeToString())
