"""Token reconciliations sent in batches: one ReconcileTokensBatch call for many requests.

One ReconcileTokens call per answered request would cost a gRPC call on both sides and a Redis
script call per request. Queued reconciliations go out
together when max_batch are waiting or delay_s after the first one, whichever comes first: a
correction lands at most delay_s later, which the limits tolerate (the reservation already
counts until then, on the safe side). 100 ms by default: at light load (tens of requests a
second) each call then still carries several corrections.

Never raises into the request path: a failed batch is logged and counted and leaves its
reservations counted (as a failed single call did). The queue is bounded: beyond max_pending
reconciliations (queued or in flight) new ones are dropped and counted rather than letting a
slow rate limiter grow the router's memory. aclose() sends what is queued and waits.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

import grpc
from prometheus_client import Counter

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2
from llmproxy.common.ratelimit_client import reconcile_request

log = logging.getLogger(__name__)

RECONCILIATIONS = Counter(
    "llmproxy_router_token_reconciliations_total",
    "Token reconciliations the router handed to the rate limiter, by outcome: sent, failed "
    "(the batch call failed; the reservations stay counted), dropped (queue full).",
    ["outcome"],
)

SendBatch = Callable[[Sequence[ratelimit_pb2.ReconcileTokensRequest]], Awaitable[int]]


class ReconcileBatcher:
    """Collects reconciliations and sends them in batches through send."""

    def __init__(
        self,
        send: SendBatch,
        *,
        max_batch: int = 64,
        delay_s: float = 0.1,
        max_pending: int = 10_000,
    ) -> None:
        if max_batch < 1 or max_pending < max_batch or delay_s < 0:
            raise ValueError(
                "need max_batch >= 1, max_pending >= max_batch and delay_s >= 0, got "
                f"max_batch={max_batch}, max_pending={max_pending}, delay_s={delay_s}"
            )
        self._send = send
        self._max_batch = max_batch
        self._delay_s = delay_s
        self._max_pending = max_pending
        self._queue: list[ratelimit_pb2.ReconcileTokensRequest] = []
        self._in_flight = 0  # reconciliations sent whose batch has not answered yet
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def pending(self) -> int:
        """Reconciliations queued or in flight."""
        return len(self._queue) + self._in_flight

    def reconcile_soon(self, headers: Mapping[str, str], actual_tokens: int) -> None:
        """Queue the reconciliation of the request with these headers (nothing if none)."""
        try:
            request = reconcile_request(headers, actual_tokens)
        except ValueError as exc:  # a negative usage: a bug upstream, not the client's fault
            log.warning("token reconciliation skipped: %s", exc)
            return
        if request is None:
            return
        if self.pending >= self._max_pending:
            RECONCILIATIONS.labels("dropped").inc()
            return
        self._queue.append(request)
        if len(self._queue) >= self._max_batch:
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._delay_s, self._flush)

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while self._queue:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
            self._in_flight += len(batch)
            task = loop.create_task(self._send_batch(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send_batch(self, batch: list[ratelimit_pb2.ReconcileTokensRequest]) -> None:
        try:
            await self._send(batch)
        except grpc.aio.AioRpcError as exc:
            RECONCILIATIONS.labels("failed").inc(len(batch))
            log.warning(
                "token reconciliation batch failed; its reservations stay counted",
                extra={"code": exc.code().name, "details": exc.details(), "items": len(batch)},
            )
        except Exception:  # never into the request path; a bug here must still be seen
            RECONCILIATIONS.labels("failed").inc(len(batch))
            log.exception("token reconciliation batch failed", extra={"items": len(batch)})
        else:
            RECONCILIATIONS.labels("sent").inc(len(batch))
        finally:
            self._in_flight -= len(batch)

    async def aclose(self) -> None:
        """Send everything queued and wait for every batch in flight."""
        self._flush()
        await asyncio.gather(*self._tasks, return_exceptions=True)
