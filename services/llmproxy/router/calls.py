"""Provider calls with failover: targets in order, bounded retries, jittered backoff.

On a connect error, 408, 429 or 5xx a target is retried (respecting Retry-After up to a cap)
and then the next target is tried; a provider's 4xx about the request itself ends the search,
since every target would say the same.

With a health gate (the router's view of the health service), targets it says are unavailable
are skipped without a call, unless every target is: then all are tried in order, as without
it. Each attempt's outcome is reported to the gate.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from llmproxy.router.errors import ProviderError, UpstreamRejection
from llmproxy.router.health_view import CallGate
from llmproxy.router.providers import ProviderCallError, ProviderClient
from llmproxy.router.providers.base import UnsupportedError
from llmproxy.router.settings import FailoverSettings, ModelTarget

log = logging.getLogger(__name__)

T = TypeVar("T")
Call = Callable[[ProviderClient, dict[str, Any]], Awaitable[T]]
Sleep = Callable[[float], Awaitable[None]]


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
    ) -> None:
        self._clients = clients
        self._settings = settings
        self._sleep = sleep
        self._health = health

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
        self, targets: Sequence[ModelTarget], body: dict[str, Any], call: Call[T]
    ) -> tuple[str, T]:
        """(provider name, result) of the first target that answers, or a RouterError."""
        last: ProviderCallError | None = None
        for target in self._candidates(targets):
            client = self._clients.get(target.provider)
            if client is None:
                continue
            for attempt in range(self._settings.retries_per_target + 1):
                started = time.perf_counter()
                try:
                    result = await call(client, {**body, "model": target.model})
                except ProviderCallError as err:
                    self._record(target.provider, err, started)
                    last = err
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
                else:
                    self._record(target.provider, None, started)
                    return target.provider, result
        raise _exhausted(last)

    def _record(self, provider: str, err: ProviderCallError | None, started: float) -> None:
        if self._health is not None:
            self._health.record(provider, err, time.perf_counter() - started)

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


def _exhausted(last: ProviderCallError | None) -> ProviderError:
    if last is None:
        return ProviderError("No provider is available for this model.", 503)
    if isinstance(last, UnsupportedError):
        return ProviderError(f"No provider of this model supports the call: {last}", 400)
    status = last.status if last.status in (429, 503, 504) else 502
    return ProviderError(f"No provider could answer: {last}", status, last.retry_after_s)
