"""Decisions with fakes: statuses, 429 details, give-backs, the over-limit cache, fallback."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import pytest
from envoy.extensions.common.ratelimit.v3 import ratelimit_pb2 as common_pb2
from envoy.service.ratelimit.v3 import rls_pb2
from google.protobuf.wrappers_pb2 import UInt64Value
from prometheus_client import REGISTRY

from llmproxy.common.contract import RESERVED_AT_HEADER
from llmproxy.ratelimit.batcher import Batcher
from llmproxy.ratelimit.decide import Decider
from llmproxy.ratelimit.errors import DescriptorError, LateAnswerError, StoreError
from llmproxy.ratelimit.fallback import FallbackLimitStore
from llmproxy.ratelimit.memory_store import MemoryLimitStore
from llmproxy.ratelimit.overlimit import OverLimitCache
from llmproxy.ratelimit.reload import LimitsHolder
from llmproxy.ratelimit.service import RateLimitServicer
from llmproxy.ratelimit.store import Adjust, Outcome, Take
from tests.harness.waiting import eventually
from tests.unit.grpc_fakes import Aborted, FakeContext

OK = rls_pb2.RateLimitResponse.OK
OVER_LIMIT = rls_pb2.RateLimitResponse.OVER_LIMIT
LIMITS = """
domain: llmproxy
descriptors:
  - key: tenant
    rate_limit: {unit: minute, requests_per_unit: 5}
    descriptors:
      - key: key_id
        rate_limit: {unit: minute, requests_per_unit: 2, algorithm: sliding_log}
  - key: remote_address
    rate_limit: {unit: second, requests_per_unit: 1}
    shadow_mode: true
  - key: tokens
    descriptors:
      - key: tenant
        rate_limit: {unit: minute, requests_per_unit: 1000}
"""


class CountingStore(MemoryLimitStore):
    """The memory store, counting calls; it fails while `failing` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.take_calls = 0
        self.failing = False

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        self.take_calls += 1
        if self.failing:
            raise StoreError("redis: connection refused")
        return await super().take(ops)

    async def adjust(self, ops: Sequence[Adjust]) -> int:
        if self.failing:
            raise StoreError("redis: connection refused")
        return await super().adjust(ops)

    async def ping(self) -> None:
        if self.failing:
            raise StoreError("redis: connection refused")


def desc(*entries: tuple[str, str], hits: int | None = None) -> common_pb2.RateLimitDescriptor:
    found = common_pb2.RateLimitDescriptor(
        entries=[common_pb2.RateLimitDescriptor.Entry(key=k, value=v) for k, v in entries]
    )
    if hits is not None:
        found.hits_addend.CopyFrom(UInt64Value(value=hits))
    return found


def req(*descriptors: common_pb2.RateLimitDescriptor, hits: int = 0) -> rls_pb2.RateLimitRequest:
    return rls_pb2.RateLimitRequest(domain="llmproxy", descriptors=descriptors, hits_addend=hits)


@pytest.fixture
def primary() -> CountingStore:
    return CountingStore()


@pytest.fixture
def decider(tmp_path: Path, primary: CountingStore) -> Decider:
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS)
    store = FallbackLimitStore(
        primary, MemoryLimitStore(), timeout_s=1, probe_interval_s=0.01, instances=lambda: 2
    )
    return Decider(LimitsHolder(path, "llmproxy"), store, Batcher(store), OverLimitCache(100))


async def test_statuses_carry_the_limit_remaining_and_reset(decider: Decider) -> None:
    reply = await decider.decide(req(desc(("tenant", "a")), desc(("user", "nobody"))))
    assert reply.overall_code == OK
    limited, unlimited = reply.statuses
    assert limited.current_limit.requests_per_unit == 5
    assert limited.current_limit.unit == rls_pb2.RateLimitResponse.RateLimit.MINUTE
    assert limited.limit_remaining == 4
    assert 0 < limited.duration_until_reset.ToMilliseconds() <= 60_000
    assert not unlimited.HasField("current_limit")


async def test_over_limit_answers_with_retry_after_and_a_message(decider: Decider) -> None:
    key = req(desc(("tenant", "a"), ("key_id", "k")))
    for _ in range(2):
        assert (await decider.decide(key)).overall_code == OK
    refused = await decider.decide(key)
    assert refused.overall_code == OVER_LIMIT
    assert refused.statuses[0].code == OVER_LIMIT
    headers = {h.key: h.value for h in refused.response_headers_to_add}
    assert 55 <= int(headers["retry-after"]) <= 60
    assert refused.raw_body.decode().startswith(
        "Rate limit reached for tenant=a, key_id=k on requests per minute: limit 2, used 2"
    )


async def test_request_and_descriptor_hits_addend_are_honoured(decider: Decider) -> None:
    reply = await decider.decide(req(desc(("tenant", "a")), hits=3))
    assert reply.statuses[0].limit_remaining == 2
    tokens = desc(("tokens", "estimate"), ("tenant", "a"), hits=600)
    reply = await decider.decide(req(tokens, desc(("tenant", "b")), hits=2))
    assert [s.limit_remaining for s in reply.statuses] == [400, 3]
    assert [h.key for h in reply.request_headers_to_add] == [RESERVED_AT_HEADER]
    refused = await decider.decide(req(tokens))
    assert refused.overall_code == OVER_LIMIT
    assert "on tokens per minute: limit 1000, used 600, requested 600" in refused.raw_body.decode()
    assert not refused.request_headers_to_add


async def test_the_over_limit_cache_answers_without_the_store(
    decider: Decider, primary: CountingStore
) -> None:
    key = req(desc(("tenant", "a"), ("key_id", "k")), desc(("tenant", "a")))
    for _ in range(3):
        await decider.decide(key)
    calls = primary.take_calls
    for _ in range(5):
        reply = await decider.decide(key)
        assert reply.overall_code == OVER_LIMIT
        # The tenant is not even counted: the request is refused anyway.
        assert reply.statuses[1].code == OK
    assert primary.take_calls == calls
    decider.limits_changed()  # a reload forgets the cache
    await decider.decide(key)
    assert primary.take_calls == calls + 1


async def test_shadow_mode_never_refuses(decider: Decider) -> None:
    ip = req(desc(("remote_address", "1.2.3.4")))
    codes = [(await decider.decide(ip)).overall_code for _ in range(3)]
    assert codes == [OK, OK, OK]


async def test_concurrent_requests_share_store_calls(
    decider: Decider, primary: CountingStore
) -> None:
    replies = await asyncio.gather(
        *(decider.decide(req(desc(("tenant", f"t{i}")))) for i in range(50))
    )
    assert all(r.overall_code == OK for r in replies)
    assert primary.take_calls <= 3


async def test_a_failing_store_degrades_to_local_limits_and_recovers(
    decider: Decider, primary: CountingStore
) -> None:
    def degraded() -> float | None:
        return REGISTRY.get_sample_value("llmproxy_ratelimit_degraded")

    primary.failing = True
    key = req(desc(("tenant", "a")))
    # Two instances share the limit of 5 while degraded: 3 each (rounded up).
    codes = [(await decider.decide(key)).overall_code for _ in range(4)]
    assert codes == [OK, OK, OK, OVER_LIMIT]
    assert degraded() == 1
    primary.failing = False
    await eventually(degraded, lambda found: found == 0, what="the probe finding the store back")
    assert (await decider.decide(key)).overall_code == OK


async def test_the_fallback_divides_each_limit_by_the_instances_live_now(
    primary: CountingStore,
) -> None:
    instances = [2]
    store = FallbackLimitStore(
        primary,
        MemoryLimitStore(),
        timeout_s=1,
        probe_interval_s=60,
        instances=lambda: instances[0],
    )
    primary.failing = True

    async def allowed(key: str, limit: int = 6) -> int:
        """How many single hits of key the store allows, out of limit + 1."""
        took = 0
        for _ in range(limit + 1):
            [outcome] = await store.take([Take(key, "sliding_log", limit, 60_000, 1)])
            took += outcome.allowed
        return took

    try:
        assert await allowed("a") == 3  # 6 / 2
        instances[0] = 3  # an HPA added a limiter: the count read before Redis went away
        assert await allowed("b") == 2
        assert await allowed("a") == 0  # 3 already taken, over this instance's share of 2
        instances[0] = 4
        assert await allowed("c") == 2  # 6 / 4, rounded up
        instances[0] = 1
        assert await allowed("d") == 6
        instances[0] = 0  # never below one share of the whole limit
        assert await allowed("e") == 6
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (rls_pb2.RateLimitRequest(domain="llmproxy"), "the request has no descriptors"),
        (rls_pb2.RateLimitRequest(domain="x", descriptors=[desc(("a", "b"))]), "domain 'x'"),
        (req(common_pb2.RateLimitDescriptor()), "at least one entry"),
    ],
)
async def test_malformed_requests_are_refused(
    decider: Decider, request_: rls_pb2.RateLimitRequest, message: str
) -> None:
    with pytest.raises(DescriptorError, match=message):
        await decider.decide(request_)


async def test_garbage_bytes_are_refused_not_crashed_on(decider: Decider) -> None:
    with pytest.raises(DescriptorError, match="the request is not a RateLimitRequest"):
        await decider.decide_bytes(b"\x0a\xff\xff")


async def test_remembered_requests_follow_a_reload(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS)
    store = FallbackLimitStore(CountingStore(), MemoryLimitStore(), timeout_s=1, probe_interval_s=1)
    holder = LimitsHolder(path, "llmproxy")
    decider = Decider(holder, store, Batcher(store), OverLimitCache(100))
    holder.on_change(decider.limits_changed)
    data = req(desc(("tenant", "a"))).SerializeToString()
    first = rls_pb2.RateLimitResponse.FromString(await decider.decide_bytes(data))
    again = rls_pb2.RateLimitResponse.FromString(await decider.decide_bytes(data))
    assert [first.statuses[0].limit_remaining, again.statuses[0].limit_remaining] == [4, 3]
    path.write_text(LIMITS.replace("requests_per_unit: 5", "requests_per_unit: 50"))
    holder.reload()
    reloaded = rls_pb2.RateLimitResponse.FromString(await decider.decide_bytes(data))
    assert reloaded.statuses[0].current_limit.requests_per_unit == 50


class AllowingStore(CountingStore):
    """Allows everything and keeps nothing: the counters live elsewhere, as in Redis."""

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        return [Outcome(True, 0, op.limit, op.window_ms, 0) for op in ops]


async def test_remembered_requests_leave_nothing_for_the_garbage_collector(
    tmp_path: Path,
) -> None:
    # Tens of thousands of remembered requests must not lengthen every full collection (its
    # pauses stall the service): what they mean is kept in untracked plain tuples.
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS)
    store = FallbackLimitStore(AllowingStore(), MemoryLimitStore(), timeout_s=1, probe_interval_s=1)
    decider = Decider(LimitsHolder(path, "llmproxy"), store, Batcher(store), OverLimitCache(100))

    def request(i: int) -> bytes:
        return bytes(req(desc(("tenant", f"t{i}"), ("key_id", f"k{i}"))).SerializeToString())

    await decider.decide_bytes(request(-1))
    gc.collect()
    before = len(gc.get_objects())
    for i in range(1000):
        await decider.decide_bytes(request(i))
    for _ in range(3):  # a tuple is untracked once what it holds is: one level per collection
        gc.collect()
    assert len(gc.get_objects()) - before < 50  # as objects, four or more per request


class SlowStore(CountingStore):
    """Takes that answer only after `until` (the test's deadline); records corrections."""

    def __init__(self) -> None:
        super().__init__()
        self.until = 0.0
        self.adjusted: list[Adjust] = []

    async def take(self, ops: Sequence[Take]) -> list[Outcome]:
        outcomes = await super().take(ops)
        # The latency of a store slower than the deadline (an input, not a wait for an event).
        await asyncio.sleep(max(0.0, self.until - time.monotonic()) + 0.002)
        return outcomes

    async def adjust(self, ops: Sequence[Adjust]) -> int:
        self.adjusted.extend(ops)
        return await super().adjust(ops)


@pytest.fixture
def slow() -> SlowStore:
    return SlowStore()


@pytest.fixture
def slow_decider(tmp_path: Path, slow: SlowStore) -> Decider:
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS)
    store = FallbackLimitStore(slow, MemoryLimitStore(), timeout_s=5, probe_interval_s=1)
    return Decider(LimitsHolder(path, "llmproxy"), store, Batcher(store), OverLimitCache(100))


async def test_an_answer_ready_after_the_deadline_counts_nothing(
    slow_decider: Decider, slow: SlowStore
) -> None:
    """Envoy has given up on it (or will before it arrives): its hits are given back."""
    tokens = desc(("tokens", "estimate"), ("tenant", "a"), hits=600)
    request = req(desc(("tenant", "a")), tokens).SerializeToString()
    slow.until = time.monotonic() + 0.05
    with pytest.raises(LateAnswerError, match="too close to the deadline"):
        await slow_decider.decide_bytes(request, deadline=slow.until)
    await eventually(lambda: len(slow.adjusted) == 2, what="both hits given back")
    reply = await slow_decider.decide(req(desc(("tenant", "a")), tokens))
    # 5 requests and 1000 tokens: only this request's are counted.
    assert [s.limit_remaining for s in reply.statuses] == [4, 400]


async def test_a_request_already_past_its_deadline_is_not_counted(
    slow_decider: Decider, slow: SlowStore
) -> None:
    request = req(desc(("tenant", "a"))).SerializeToString()
    with pytest.raises(LateAnswerError, match="deadline passed before"):
        await slow_decider.decide_bytes(request, deadline=time.monotonic() - 0.001)
    assert slow.take_calls == 0
    assert await slow_decider.decide_bytes(request, deadline=time.monotonic() + 5)


class DeadlineContext(FakeContext):
    """A call with `left` seconds until its deadline (None: no deadline)."""

    def __init__(self, left: float | None) -> None:
        super().__init__()
        self.left = left

    def time_remaining(self) -> float | None:
        return self.left


async def test_a_call_whose_deadline_leaves_less_than_the_margin_is_refused(
    slow_decider: Decider, slow: SlowStore
) -> None:
    servicer = RateLimitServicer(slow_decider, deadline_margin_s=0.1)
    request = req(desc(("tenant", "a"))).SerializeToString()
    with pytest.raises(Aborted) as aborted:
        await servicer.should_rate_limit(request, DeadlineContext(0.05))  # type: ignore[arg-type]
    assert aborted.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert slow.take_calls == 0
    for left in (None, 5.0):
        answer = await servicer.should_rate_limit(request, DeadlineContext(left))  # type: ignore[arg-type]
        assert rls_pb2.RateLimitResponse.FromString(answer).overall_code == OK
