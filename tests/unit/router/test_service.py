"""The OpenAI servicer with fake providers and an in-memory cache."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.usage import Identity, Usage
from llmproxy.router.providers import sse
from llmproxy.router.settings import ModelSettings, ModelTarget
from tests.unit.router.fakes import (
    Context,
    RecordingReconciler,
    answer,
    failure,
    stream_events,
)
from tests.unit.router.servicers import TwoTargets

MODEL = ModelSettings(
    name="m",
    aliases=["m-alias"],
    targets=[
        ModelTarget(provider="primary", model="up-1"),
        ModelTarget(provider="backup", model="up-2"),
    ],
    input_usd_per_mtok=1_000_000,  # a dollar a token: easy sums
    output_usd_per_mtok=2_000_000,
)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}


class Harness(TwoTargets):
    def __init__(
        self,
        primary: list[Any] | None = None,
        backup: list[Any] | None = None,
        delay_s: float = 0,
        reconciler: Any = None,
        **settings: Any,
    ) -> None:
        super().__init__(MODEL, primary, backup, delay_s=delay_s, reconciler=reconciler, **settings)

    async def chat(
        self, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[dict[str, str], list[bytes]]:
        metadata, messages = await self.messages(body, headers)
        # Stream events that arrived together come in one message: most tests read them singly.
        events = [event for m in messages for event in sse.split(m)]
        return metadata, events if (
            body.get("stream") if isinstance(body, dict) else False
        ) else messages

    async def messages(
        self, body: Any, headers: dict[str, str] | None = None
    ) -> tuple[dict[str, str], list[bytes]]:
        """The gRPC messages of the answer, as the router sent them."""
        context = Context(headers)
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        request = openai_pb2.CreateChatCompletionRequest(body={"data": raw})
        replies = [r.data async for r in self.servicer.CreateChatCompletion(request, context)]  # type: ignore[arg-type]
        return context.metadata, replies


async def test_answer_comes_from_the_first_target_under_its_upstream_name() -> None:
    harness = Harness()
    metadata, replies = await harness.chat(CHAT)
    assert metadata == {"x-cache": "MISS", "x-llmproxy-provider": "primary"}
    assert json.loads(replies[0])["choices"][0]["message"]["content"] == "ok"
    assert harness.primary.calls[0]["model"] == "up-1"
    assert not harness.backup.calls


async def test_second_identical_request_is_a_cache_hit_without_provider_call() -> None:
    harness = Harness()
    await harness.chat(CHAT)
    reordered = {"temperature": 0.0, "messages": CHAT["messages"], "model": "m-alias"}
    metadata, replies = await harness.chat(reordered)
    assert metadata == {"x-cache": "HIT"}
    assert json.loads(replies[0])["choices"][0]["message"]["content"] == "ok"
    assert len(harness.primary.calls) == 1


@pytest.mark.parametrize(
    ("body", "headers", "expected"),
    [
        ({**CHAT, "temperature": 0.7}, {}, "BYPASS"),
        ({k: v for k, v in CHAT.items() if k != "temperature"}, {}, "BYPASS"),
        (CHAT, {"cache-control": "no-store"}, "BYPASS"),
        (CHAT, {"cache-control": "no-cache"}, "BYPASS"),
    ],
)
async def test_requests_that_skip_the_lookup(
    body: Any, headers: dict[str, str], expected: str
) -> None:
    harness = Harness()
    await harness.chat(CHAT)  # cache it
    metadata, _ = await harness.chat(body, headers)
    assert metadata["x-cache"] == expected
    assert len(harness.primary.calls) == 2


async def test_no_cache_refreshes_and_no_store_leaves_no_entry() -> None:
    harness = Harness(primary=[answer("first"), answer("second")])
    await harness.chat(CHAT, {"cache-control": "no-cache"})
    await harness.chat(CHAT, {"cache-control": "no-cache"})
    _, replies = await harness.chat(CHAT)
    assert json.loads(replies[0])["choices"][0]["message"]["content"] == "second"
    fresh = Harness()
    await fresh.chat(CHAT, {"cache-control": "no-store"})
    assert fresh.cache.entries == {}


async def test_opt_in_header_caches_a_sampled_request_with_its_ttl_and_tags() -> None:
    harness = Harness()
    headers = {
        "x-llmproxy-cache": "force",
        "x-llmproxy-cache-ttl": "60",
        "x-llmproxy-cache-tags": "docs,v2",
    }
    await harness.chat({**CHAT, "temperature": 1}, headers)
    ((_, ttl, tags),) = harness.cache.entries.values()
    assert ttl == 60
    assert tags == ("docs", "v2")


@pytest.mark.parametrize(
    "headers", [{"x-llmproxy-cache-ttl": "soon"}, {"x-llmproxy-cache-tags": "bad tag!"}]
)
async def test_bad_cache_headers_are_400(headers: dict[str, str]) -> None:
    metadata, replies = await Harness().chat(CHAT, headers)
    assert metadata["x-llmproxy-status"] == "400"
    assert "x-llmproxy-cache" in json.loads(replies[0])["error"]["message"]


async def test_fifty_concurrent_identical_misses_make_one_provider_call() -> None:
    harness = Harness(delay_s=0.05)
    results = await asyncio.gather(*(harness.chat(CHAT) for _ in range(50)))
    assert len(harness.primary.calls) == 1
    assert {r[1][0] for r in results} == {answer()}
    caches = [r[0]["x-cache"] for r in results]
    assert caches.count("MISS") == 1
    assert caches.count("HIT") == 49


async def test_streams_share_one_call_and_get_usage_only_if_asked() -> None:
    harness = Harness(delay_s=0.05)
    stream = {**CHAT, "stream": True}
    with_usage = {**stream, "stream_options": {"include_usage": True}}
    (_, plain), (_, usage) = await asyncio.gather(harness.chat(stream), harness.chat(with_usage))
    assert len(harness.primary.calls) == 1
    assert b"".join(usage) == b"".join(stream_events())
    assert len(plain) == len(usage) - 1
    assert all(b'"usage"' not in chunk for chunk in plain)
    metadata, replayed = await harness.chat(stream)
    assert metadata == {"x-cache": "HIT"}
    assert replayed == plain


async def test_usage_is_recorded_with_the_identity_and_cost() -> None:
    harness = Harness()
    headers = {"x-llmproxy-tenant": "acme", "x-llmproxy-user": "ann", "x-llmproxy-key-id": "k9"}
    await harness.chat({**CHAT, "stream": True}, headers)
    ((identity, model, usage),) = harness.usage.records
    assert identity == Identity("acme", "ann", "k9")
    assert model == "m"
    assert usage == Usage(3, 2, 3 * 1.0 + 2 * 2.0)


@pytest.mark.parametrize("status", [500, 503, 429, 408])
async def test_retryable_failures_retry_then_fail_over(status: int) -> None:
    harness = Harness(primary=[failure(status), failure(status)])
    metadata, _ = await harness.chat(CHAT)
    assert metadata["x-llmproxy-provider"] == "backup"
    assert len(harness.primary.calls) == 2  # one retry
    assert harness.backup.calls[0]["model"] == "up-2"
    assert len(harness.sleeps) == 1
    assert 0.025 <= harness.sleeps[0] <= 0.05  # jittered first backoff


async def test_retry_after_is_waited_out_when_short_and_skipped_when_long() -> None:
    short = Harness(primary=[failure(429, retry_after_s=1.5), answer("later")])
    metadata, _ = await short.chat(CHAT)
    assert metadata["x-llmproxy-provider"] == "primary"
    assert short.sleeps == [1.5]
    long = Harness(primary=[failure(429, retry_after_s=30)])
    metadata, _ = await long.chat(CHAT)
    assert metadata["x-llmproxy-provider"] == "backup"
    assert long.sleeps == []


async def test_a_provider_4xx_about_the_request_is_relayed_without_failover() -> None:
    harness = Harness(primary=[failure(400)])
    metadata, replies = await harness.chat(CHAT)
    assert metadata == {"x-llmproxy-status": "400"}
    assert json.loads(replies[0]) == {"error": {"message": "upstream says no"}}
    assert not harness.backup.calls


@pytest.mark.parametrize(
    ("status", "expected"), [(503, "503"), (504, "504"), (500, "502"), (429, "429")]
)
async def test_all_targets_failing_maps_to_a_gateway_status(status: int, expected: str) -> None:
    harness = Harness(
        primary=[failure(status)] * 2,
        backup=[failure(status, 3.0)] * 2,
        failover={"max_retry_after_s": 0},
    )
    metadata, replies = await harness.chat(CHAT)
    assert metadata["x-llmproxy-status"] == expected
    if expected == "429":
        assert metadata["retry-after"] == "3"
        assert json.loads(replies[0])["error"]["type"] == "rate_limit_exceeded"
    assert harness.cache.entries == {}  # failures are never cached


async def test_stream_events_that_arrive_together_leave_in_one_message() -> None:
    first, second, usage_only, done = stream_events(("a", "b"))
    harness = Harness(primary=[[first, 0.05, second, usage_only, done]])
    metadata, messages = await harness.messages({**CHAT, "stream": True})
    assert metadata["x-cache"] == "MISS"
    # The first event went out before the pause; the burst after it is one message, without
    # the usage chunk the client did not ask for.
    assert messages == [first, second + done]
    # A replay from the cache is all there at once: one message.
    metadata, messages = await harness.messages({**CHAT, "stream": True})
    assert metadata["x-cache"] == "HIT"
    assert messages == [first + second + done]


async def test_stream_broken_midway_ends_with_an_error_event() -> None:
    events = [*stream_events()[:1], failure(502)]
    harness = Harness(primary=[events])
    metadata, replies = await harness.chat({**CHAT, "stream": True})
    assert metadata["x-cache"] == "MISS"
    assert replies[0] == stream_events()[0]
    assert json.loads(replies[-1].removeprefix(b"data: "))["error"]["type"] == "upstream_error"
    assert harness.cache.entries == {}


async def test_slow_first_token_gets_keepalive_comments() -> None:
    harness = Harness(delay_s=0.25, stream_keepalive_s=0.05)
    metadata, replies = await harness.chat({**CHAT, "stream": True})
    assert metadata == {"x-cache": "MISS"}  # sent before the provider was known
    assert replies[0] == b": keepalive\n\n"
    assert replies[-1] == b"data: [DONE]\n\n"


async def test_a_disconnected_client_cancels_the_upstream_call() -> None:
    harness = Harness(delay_s=5)
    task = asyncio.create_task(harness.chat(CHAT))
    await harness.primary.called.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(harness.primary.was_cancelled.wait(), 5)
    assert harness.primary.cancelled == 1


async def test_unknown_model_is_404_without_a_provider_call() -> None:
    harness = Harness()
    metadata, replies = await harness.chat({**CHAT, "model": "other"})
    assert metadata == {"x-llmproxy-status": "404"}
    assert json.loads(replies[0])["error"]["code"] == "model_not_found"
    assert not harness.primary.calls


async def test_redis_down_serves_uncached() -> None:
    harness = Harness()
    harness.cache.broken = True
    first, _ = await harness.chat(CHAT)
    second, _ = await harness.chat(CHAT)
    assert first["x-cache"] == second["x-cache"] == "MISS"
    assert len(harness.primary.calls) == 2


async def test_token_reservations_are_reconciled_with_actual_usage() -> None:
    reconciler = RecordingReconciler()
    harness = Harness(reconciler=reconciler)
    headers = {"x-llmproxy-token-estimate": "1000", "x-llmproxy-key-id": "k"}
    await harness.chat(CHAT, headers)  # a miss: the provider used 3 + 2 tokens
    await harness.chat(CHAT, headers)  # a hit: no provider token at all
    assert [(h["x-llmproxy-token-estimate"], n) for h, n in reconciler.calls] == [
        ("1000", 5),
        ("1000", 0),
    ]
