"""ShouldRateLimit's decision: descriptors to limits, limits to checks, checks to an answer.

A request is refused when any descriptor whose limit is enforced (not shadow mode) refuses it.
Each check counts its hits only if they fit; when another descriptor refuses the request, the
hits its other descriptors counted are given back, so a refused request costs no budget (a
key hammering its own limit cannot drain its tenant's). Envoy turns the statuses into the
X-RateLimit-* headers; a refusal carries Retry-After and the message of the OpenAI error body.
"""

from __future__ import annotations

import math
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.duration_pb2 import Duration

from llmproxy.ratelimit import metrics
from llmproxy.ratelimit.batcher import Batcher
from llmproxy.ratelimit.descriptors import RESERVED_AT_HEADER, TOKENS_KEY
from llmproxy.ratelimit.errors import DescriptorError
from llmproxy.ratelimit.failover import FailoverStore
from llmproxy.ratelimit.overlimit import OverLimitCache
from llmproxy.ratelimit.reload import LimitsHolder
from llmproxy.ratelimit.rules import Entries, Match, Rule
from llmproxy.ratelimit.store import Adjust, Outcome, Take

Response = rls_pb2.RateLimitResponse
OK = Response.OK
OVER_LIMIT = Response.OVER_LIMIT
UNITS = {
    "second": Response.RateLimit.SECOND,
    "minute": Response.RateLimit.MINUTE,
    "hour": Response.RateLimit.HOUR,
    "day": Response.RateLimit.DAY,
}
_NO_LIMIT = Response.DescriptorStatus(code=OK)

# (match, hits, a cached refusal (ms until it ends, count) or None, index of its check, or
# -1 when not checked: refused from the cache, or skipped because another descriptor was)
_Plan = tuple[Match, int, tuple[int, int] | None, int]


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
        store: FailoverStore,
        batcher: Batcher,
        cache: OverLimitCache,
    ) -> None:
        self._holder = holder
        self._store = store
        self._batcher = batcher
        self._cache = cache
        self._limit_protos: dict[int, Any] = {}
        self._outcomes = {
            name: metrics.DECISIONS.labels(holder.domain, name)
            for name in ("ok", "over_limit", "shadow", "degraded")
        }

    def limits_changed(self) -> None:
        """Forget what was derived from the old limits."""
        self._limit_protos.clear()
        self._cache.clear()

    def _limit_proto(self, rule: Rule) -> Any:
        found = self._limit_protos.get(id(rule))
        if found is None:
            found = Response.RateLimit(
                name=rule.name, requests_per_unit=rule.requests_per_unit, unit=UNITS[rule.unit]
            )
            self._limit_protos[id(rule)] = found
        return found

    def _plan(self, request: rls_pb2.RateLimitRequest) -> tuple[list[_Plan | None], list[Take]]:
        if request.domain != self._holder.domain:
            raise DescriptorError(
                f"domain {request.domain!r} is not this service's domain {self._holder.domain!r}"
            )
        if not request.descriptors:
            raise DescriptorError("the request has no descriptors")
        limits, cache = self._holder.limits, self._cache
        default_hits = request.hits_addend or 1
        plans: list[_Plan | None] = []
        takes: list[Take] = []
        for descriptor in request.descriptors:
            match = limits.match(tuple([(e.key, e.value) for e in descriptor.entries]))
            if match is None or match.rule.unlimited:
                plans.append(None)
                continue
            rule = match.rule
            hits = (
                descriptor.hits_addend.value if descriptor.HasField("hits_addend") else default_hits
            )
            cached = cache.refused(match.key, hits) if not rule.shadow_mode else None
            if cached is not None:
                metrics.LOCAL_CACHE_HITS.inc()
                plans.append((match, hits, cached, -1))
                continue
            plans.append((match, hits, None, len(takes)))
            takes.append(
                Take(match.key, rule.algorithm, rule.requests_per_unit, rule.window_ms, hits)
            )
        if takes and any(plan is not None and plan[2] is not None for plan in plans):
            # Refused already (a cached refusal): counting its other descriptors would only
            # have to be given back. No Redis call at all, as for a hot key hammered in a loop.
            plans = [
                plan if plan is None or plan[2] is not None else (plan[0], plan[1], None, -1)
                for plan in plans
            ]
            takes = []
        return plans, takes

    async def decide(self, request: rls_pb2.RateLimitRequest) -> Any:
        """The answer to one RateLimitRequest; DescriptorError for a malformed one."""
        plans, takes = self._plan(request)
        outcomes: list[Outcome] = await self._batcher.take(takes) if takes else []
        response = Response(overall_code=OK)
        statuses = response.statuses
        shadow = False
        refusal: tuple[Match, int, int, int] | None = None  # match, hits, used, reset ms
        retry_ms = 0
        for plan in plans:
            if plan is None:
                statuses.append(_NO_LIMIT)
                continue
            match, hits, cached, index = plan
            rule = match.rule
            if index < 0 and cached is None:
                # Not checked: another descriptor's cached refusal decided the request.
                statuses.append(
                    Response.DescriptorStatus(code=OK, current_limit=self._limit_proto(rule))
                )
                continue
            if cached is not None:
                allowed, remaining = False, 0
                reset_ms, used = cached
            else:
                outcome = outcomes[index]
                allowed, used, remaining, reset_ms = (
                    outcome.allowed,
                    outcome.used,
                    outcome.remaining,
                    outcome.reset_ms,
                )
                # Local counts (while degraded) must not outlive the outage in the cache.
                if not allowed and not rule.shadow_mode and not self._store.degraded:
                    self._cache.remember(match.key, hits, reset_ms, used)
            code = OK
            if not allowed:
                if rule.shadow_mode:
                    shadow = True
                else:
                    code = OVER_LIMIT
                    if reset_ms >= retry_ms:
                        retry_ms, refusal = reset_ms, (match, hits, used, reset_ms)
            statuses.append(
                Response.DescriptorStatus(
                    code=code,
                    current_limit=self._limit_proto(rule),
                    limit_remaining=remaining,
                    duration_until_reset=duration(reset_ms),
                )
            )
        if refusal is not None:
            response.overall_code = OVER_LIMIT
            self._give_back(plans, outcomes)
            self._refuse(response, *refusal)
        else:
            self._mark_reservation(response, plans, outcomes)
        outcome_name = (
            "degraded"
            if self._store.degraded
            else "over_limit"
            if refusal is not None
            else "shadow"
            if shadow
            else "ok"
        )
        self._outcomes[outcome_name].inc()
        return response

    def _give_back(self, plans: list[_Plan | None], outcomes: list[Outcome]) -> None:
        # The request is refused: what its other descriptors counted must not stay counted.
        refunds = []
        for plan in plans:
            if plan is None or plan[3] < 0:
                continue
            match, hits, _, index = plan
            outcome = outcomes[index]
            if outcome.allowed and hits:
                rule = match.rule
                refunds.append(
                    Adjust(match.key, rule.algorithm, rule.window_ms, -hits, outcome.now_ms)
                )
        if refunds:
            self._batcher.adjust_soon(refunds)

    @staticmethod
    def _mark_reservation(
        response: Any, plans: list[_Plan | None], outcomes: list[Outcome]
    ) -> None:
        # Tell the router (through a request header Envoy adds) when tokens were reserved, so
        # its reconciliation corrects the same window.
        for plan in plans:
            if plan is not None and plan[3] >= 0 and plan[0].rule.tokens and plan[1]:
                response.request_headers_to_add.append(
                    base_pb2.HeaderValue(
                        key=RESERVED_AT_HEADER, value=str(outcomes[plan[3]].now_ms)
                    )
                )
                return

    @staticmethod
    def _refuse(response: Any, match: Match, hits: int, used: int, reset_ms: int) -> None:
        rule = match.rule
        seconds = max(1, math.ceil(reset_ms / 1000))
        what = "tokens" if rule.tokens else "requests"
        # The message of the OpenAI-style error body Envoy's local reply builds (listeners.py).
        response.raw_body = (
            f"Rate limit reached for {describe(match.entries)} on {what} per {rule.unit}: "
            f"limit {rule.requests_per_unit}, used {used}, requested {hits}. "
            f"Please try again in {seconds}s."
        ).encode()
        response.response_headers_to_add.append(
            base_pb2.HeaderValue(key="retry-after", value=str(seconds))
        )
