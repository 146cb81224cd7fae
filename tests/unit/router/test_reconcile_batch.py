"""The router's reconciliation batcher: flushes by size and time, on close, counts failures."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from prometheus_client import REGISTRY

from llmproxy._gen.ratelimit.v1 import ratelimit_pb2
from llmproxy.common.contract import RESERVED_AT_HEADER, TOKEN_ESTIMATE_HEADER
from llmproxy.router.reconcile_batch import ReconcileBatcher

HEADERS = {
    "x-llmproxy-tenant": "acme",
    "x-llmproxy-key-id": "k1",
    "x-llmproxy-model": "gpt-4o-mini",
    TOKEN_ESTIMATE_HEADER: "1500",
    RESERVED_AT_HEADER: "1700000000123",
}


class FakeStub:
    """Records each batch; fails with error when set; waits for release when blocking."""

    def __init__(self, error: Exception | None = None, *, blocking: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.error = error
        self.release = asyncio.Event()
        self.sent = asyncio.Event()
        if not blocking:
            self.release.set()

    async def send(self, requests: Sequence[ratelimit_pb2.ReconcileTokensRequest]) -> int:
        self.batches.append([int(r.actual_tokens) for r in requests])
        self.sent.set()
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return len(requests)


def counted(outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "llmproxy_router_token_reconciliations_total", {"outcome": outcome}
    )
    return value or 0.0


async def test_a_full_batch_goes_at_once() -> None:
    stub = FakeStub()
    batcher = ReconcileBatcher(stub.send, max_batch=3, delay_s=60)
    for tokens in range(7):
        batcher.reconcile_soon(HEADERS, tokens)
    await asyncio.sleep(0)
    assert stub.batches == [[0, 1, 2], [3, 4, 5]]  # the seventh waits for more or the delay
    await batcher.aclose()
    assert stub.batches[-1] == [6]


async def test_a_partial_batch_goes_after_the_delay() -> None:
    stub = FakeStub()
    batcher = ReconcileBatcher(stub.send, max_batch=64, delay_s=0.01)
    batcher.reconcile_soon(HEADERS, 5)
    batcher.reconcile_soon(HEADERS, 6)
    await asyncio.sleep(0)
    assert stub.batches == []
    await asyncio.wait_for(stub.sent.wait(), 5)
    assert stub.batches == [[5, 6]]
    await batcher.aclose()
    assert stub.batches == [[5, 6]]


async def test_close_sends_what_is_queued_and_waits_for_it() -> None:
    stub = FakeStub()
    batcher = ReconcileBatcher(stub.send, max_batch=64, delay_s=60)
    sent = counted("sent")
    batcher.reconcile_soon(HEADERS, 1)
    await batcher.aclose()
    assert stub.batches == [[1]]
    assert counted("sent") == sent + 1
    assert batcher.pending == 0


async def test_requests_without_a_reservation_are_not_queued() -> None:
    stub = FakeStub()
    batcher = ReconcileBatcher(stub.send)
    batcher.reconcile_soon({"x-llmproxy-tenant": "acme"}, 10)
    batcher.reconcile_soon(HEADERS, -1)  # a bug upstream: logged, never raised
    assert batcher.pending == 0
    await batcher.aclose()
    assert stub.batches == []


@pytest.mark.parametrize(
    "error",
    [
        grpc.aio.AioRpcError(
            grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down"
        ),
        RuntimeError("a bug"),
    ],
    ids=["rpc-error", "other-error"],
)
async def test_a_failed_batch_is_counted_not_raised(error: Exception) -> None:
    stub = FakeStub(error)
    batcher = ReconcileBatcher(stub.send, max_batch=2, delay_s=60)
    failed = counted("failed")
    batcher.reconcile_soon(HEADERS, 1)
    batcher.reconcile_soon(HEADERS, 2)
    batcher.reconcile_soon(HEADERS, 3)
    await batcher.aclose()
    assert stub.batches == [[1, 2], [3]]
    assert counted("failed") == failed + 3
    assert batcher.pending == 0


async def test_beyond_the_bound_reconciliations_are_dropped_and_counted() -> None:
    stub = FakeStub(blocking=True)  # a rate limiter that does not answer
    batcher = ReconcileBatcher(stub.send, max_batch=2, delay_s=60, max_pending=4)
    dropped = counted("dropped")
    for tokens in range(7):
        batcher.reconcile_soon(HEADERS, tokens)
    await asyncio.sleep(0)
    assert batcher.pending == 4  # two batches in flight
    assert counted("dropped") == dropped + 3
    stub.release.set()
    await batcher.aclose()
    assert stub.batches == [[0, 1], [2, 3]]
    assert batcher.pending == 0
    batcher.reconcile_soon(HEADERS, 9)  # room again once answered
    assert batcher.pending == 1
    await batcher.aclose()


@pytest.mark.parametrize(
    "settings",
    [{"max_batch": 0}, {"max_batch": 10, "max_pending": 5}, {"delay_s": -1.0}],
)
def test_impossible_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="need max_batch >= 1"):
        ReconcileBatcher(FakeStub().send, **settings)  # type: ignore[arg-type]
