"""Provider calls with failover: targets in order, bounded retries, jittered backoff.

On a connect error, 408, 429 or 5xx a target is retried (respecting Retry-After up to a cap)
and then the next target is tried; a provider's 4xx about the request itself ends the search,
since every target would say the same. A target whose API lacks what the request needs
(UnsupportedError) is skipped for the next; if none has it, the client's 400 names the feature
and every target's provider and kind.

The model's routing (router/routing.py) puts its targets in order first; with a health gate
(the router's view of the health service), targets it says are unavailable are then skipped
without a call, unless every target is: then all are tried in that order, as without it. Each
attempt's outcome is reported to the gate, and counted in the balancer's load (calls in flight,
latency) for the routings that order by it.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from llmproxy.router.errors import (
    ProviderError,
    RouterError,
    UnsupportedFeatureError,
    UpstreamRejection,
)
from llmproxy.router.health_view import CallGate
from llmproxy.router.providers import ProviderCallError, ProviderClient
from llmproxy.router.providers.base import UnsupportedError
from llmproxy.router.routing import Balancer, TargetKey, TargetLoad, target_key
from llmproxy.router.settings import FailoverSettings, ModelTarget, Routing, RoutingSettings

log = logging.getLogger(__name__)

T = TypeVar("T")
Call = Callable[[ProviderClient, dict[str, Any]], Awaitable[T]]
Sleep = Callable[[float], Awaitable[None]]
Hold = Callable[[T, Callable[[], None]], T]
"""Wraps a call's result so that the release it is given runs when the result is used up."""


def backoff_s(settings: FailoverSettings, attempt: int) -> float:
    """Jittered exponential backoff before retry number attempt (0-based), capped."""
    ceiling = min(settings.backoff_max_s, settings.backoff_base_s * 2**attempt)
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not secrecy


class Failover:
    """Runs one call against a model's targets until one answers."""

    def __init__(
        self,
        clients: Mapping[str, ProviderClient],
        settings: FailoverSettings,
        sleep: Sleep = asyncio.sleep,
        health: CallGate | None = None,
        balancer: Balancer | None = None,
    ) -> None:
        self._clients = clients
        self._settings = settings
        self._sleep = sleep
        self._health = health
        self._balancer = balancer or Balancer(RoutingSettings())
        self._load = self._balancer.load

    def _candidates(self, targets: Sequence[ModelTarget]) -> Iterator[ModelTarget]:
        """targets in order, less those the gate holds back; all of them if it holds back all.

        Lazy, so a half-open provider's trial call is taken only when it is about to be tried.
        """
        if self._health is None:
            yield from targets
            return
        admitted = False
        for target in targets:
            if self._health.admit(target.provider):
                admitted = True
                yield target
        if not admitted:
            yield from targets  # every target is unavailable: trying beats failing outright

    async def run(
        self,
        targets: Sequence[ModelTarget],
        body: dict[str, Any],
        call: Call[T],
        routing: Routing = "ordered",
        hold: Hold[T] | None = None,
    ) -> tuple[str, T]:
        """(provider name, result) of the first target that answers, or a RouterError.

        routing orders the targets; hold, when given, keeps the answering call counted in
        flight until the result it wraps is used up (a stream, until its end).
        """
        failures: list[tuple[str, str, ProviderCallError]] = []  # provider, kind, error
        ordered = targets if routing == "ordered" else self._balancer.order(routing, targets)
        for target in self._candidates(ordered):
            client = self._clients.get(target.provider)
            if client is None:
                continue
            key = target_key(target)
            load = self._load if self._balancer.measures(key) else None
            for attempt in range(self._settings.retries_per_target + 1):
                started = time.perf_counter()
                if load is not None:
                    load.start(key)
                try:
                    result = await call(client, {**body, "model": target.model})
                except ProviderCallError as err:
                    self._record(key, err, started, load)
                    failures.append((target.provider, client.provider.kind, err))
                    log.warning(
                        "provider call failed",
                        extra={
                            "provider": target.provider,
                            "status": err.status,
                            "attempt": attempt,
                            "reason": str(err),
                        },
                    )
                    if not err.retryable:
                        raise UpstreamRejection(str(err), err.status, err.body) from err
                    if not await self._wait_before_retry(err, attempt):
                        break
                except BaseException:
                    if load is not None:
                        load.end(key)  # cancelled, or a bug: the call is over all the same
                    raise
                else:
                    self._record(key, None, started, load)
                    if load is None:
                        return target.provider, result
                    if hold is None:
                        load.end(key)
                        return target.provider, result
                    return target.provider, hold(result, functools.partial(load.end, key))
        raise _exhausted(failures)

    def _record(
        self,
        key: TargetKey,
        err: ProviderCallError | None,
        started: float,
        load: TargetLoad | None,
    ) -> None:
        seconds = time.perf_counter() - started
        if load is not None:
            if err is not None:
                load.end(key)
            load.observe(key, seconds, ok=err is None)
        if self._health is not None:
            self._health.record(key[0], err, seconds)

    async def _wait_before_retry(self, err: ProviderCallError, attempt: int) -> bool:
        """Sleep before retrying the same target; False to move to the next target now."""
        if attempt >= self._settings.retries_per_target or isinstance(err, UnsupportedError):
            return False
        if err.status == 504:
            return False  # a timed-out target would likely time out again: spend the time elsewhere
        if err.retry_after_s is not None:
            if err.retry_after_s > self._settings.max_retry_after_s:
                return False
            await self._sleep(err.retry_after_s)
            return True
        await self._sleep(backoff_s(self._settings, attempt))
        return True


def _exhausted(failures: Sequence[tuple[str, str, ProviderCallError]]) -> RouterError:
    """The client's error once every target failed (failures: provider, kind, error of each
    attempt). The last failure of a target that could have answered decides it; when every
    target refused the call as unsupported, a 400 says what is missing and where."""
    unsupported = [(n, k, e) for n, k, e in failures if isinstance(e, UnsupportedError)]
    if len(unsupported) < len(failures):
        last = next(e for _, _, e in reversed(failures) if not isinstance(e, UnsupportedError))
        status = last.status if last.status in (429, 503, 504) else 502
        return ProviderError(f"No provider could answer: {last}", status, last.retry_after_s)
    if not unsupported:
        return ProviderError("No provider is available for this model.", 503)
    features = {e.feature for _, _, e in unsupported}
    feature = features.pop() if len(features) == 1 else None
    if feature is None:
        refusal = unsupported[-1][2]
        return ProviderError(f"No provider of this model supports the call: {refusal}", 400)
    providers = list(dict.fromkeys((name, kind) for name, kind, _ in unsupported))
    return UnsupportedFeatureError(feature, providers)
