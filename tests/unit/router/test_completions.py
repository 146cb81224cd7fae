"""Legacy completions through the OpenAI servicer: the chat flow's cache, sharing, failover,
usage and reconciliation, on the providers' completions operations."""

from __future__ import annotations

import json
from typing import Any

from llmproxy._gen.router.v1 import openai_pb2
from llmproxy.common.usage import Identity, Usage
from llmproxy.router.cache import keys
from llmproxy.router.providers import sse
from tests.unit.router.fakes import Context, RecordingReconciler, failure, text_stream_events
from tests.unit.router.servicers import TwoTargets
from tests.unit.router.test_service import MODEL

PROMPT = {"model": "m", "prompt": "Say this", "temperature": 0}
STREAM = {**PROMPT, "stream": True}


class Harness(TwoTargets):
    """The servicer over a primary and a backup target of the given kinds."""

    def __init__(
        self,
        primary: list[Any] | None = None,
        backup: list[Any] | None = None,
        kinds: tuple[str, str] = ("openai", "openai"),
    ) -> None:
        self.reconciler = RecordingReconciler()
        super().__init__(MODEL, primary, backup, kinds=kinds, reconciler=self.reconciler)

    async def complete(
        self, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> tuple[dict[str, str], list[bytes]]:
        """Initial metadata and the answer: one JSON body, or the SSE events one by one."""
        context = Context(headers)
        request = openai_pb2.CreateCompletionRequest(body={"data": json.dumps(body).encode()})
        replies = [r.data async for r in self.servicer.CreateCompletion(request, context)]  # type: ignore[arg-type]
        if body.get("stream"):
            return context.metadata, [event for r in replies for event in sse.split(r)]
        return context.metadata, replies


def error_of(reply: bytes) -> dict[str, Any]:
    error: dict[str, Any] = json.loads(reply)["error"]
    return error


async def test_answer_comes_from_the_completions_operation_with_usage_and_cost() -> None:
    harness = Harness()
    headers = {"x-llmproxy-tenant": "acme", "x-llmproxy-user": "ann", "x-llmproxy-key-id": "k9"}
    metadata, replies = await harness.complete(PROMPT, headers)
    assert metadata == {"x-cache": "MISS", "x-llmproxy-provider": "primary"}
    answer = json.loads(replies[0])
    assert answer["object"] == "text_completion"
    assert answer["choices"][0]["text"] == "ok"
    assert harness.primary.operations == ["completions"]
    assert harness.primary.calls == [{**PROMPT, "model": "up-1"}]
    assert harness.usage.records == [(Identity("acme", "ann", "k9"), "m", Usage(3, 2, 3 + 4))]
    assert [n for _, n in harness.reconciler.calls] == [5]


async def test_temperature_zero_repeats_are_cache_hits_apart_from_chat() -> None:
    harness = Harness()
    await harness.complete(PROMPT)
    metadata, replies = await harness.complete({**PROMPT, "model": "m-alias"})
    assert metadata == {"x-cache": "HIT"}
    assert json.loads(replies[0])["choices"][0]["text"] == "ok"
    assert len(harness.primary.calls) == 1
    assert [n for _, n in harness.reconciler.calls] == [5, 0]
    # The kind is part of the key: no other API's request can find this entry.
    tenant = harness.servicer.cache_tenant("")
    assert set(harness.cache.entries) == {keys.cache_key("completions", PROMPT, tenant)}
    assert keys.cache_key("chat", PROMPT, tenant) not in harness.cache.entries


async def test_sampled_completions_bypass_the_cache() -> None:
    harness = Harness()
    body = {**PROMPT, "temperature": 0.7}
    first, _ = await harness.complete(body)
    second, _ = await harness.complete(body)
    assert first["x-cache"] == second["x-cache"] == "BYPASS"
    assert len(harness.primary.calls) == 2


async def test_stream_hides_the_usage_chunk_unless_asked_and_counts_it() -> None:
    harness = Harness()
    _, plain = await harness.complete(STREAM)
    assert harness.primary.operations == ["completions stream"]
    texts = [sse.data_json(e)["choices"][0]["text"] for e in plain[:-1]]
    assert texts == ["a", "b"]
    assert plain[-1] == sse.DONE
    assert harness.usage.records[0][2] == Usage(3, 2, 7)
    metadata, with_usage = await harness.complete(
        {**STREAM, "stream_options": {"include_usage": True}}
    )
    assert metadata == {"x-cache": "HIT"}  # stream_options is not part of the key
    assert with_usage == text_stream_events()


async def test_a_provider_without_completions_fails_over_without_retrying() -> None:
    harness = Harness(kinds=("anthropic", "openai"))
    metadata, replies = await harness.complete(PROMPT)
    assert metadata["x-llmproxy-provider"] == "backup"
    assert json.loads(replies[0])["choices"][0]["text"] == "ok"
    assert len(harness.primary.calls) == 1
    assert harness.sleeps == []


async def test_no_provider_with_completions_is_a_400_naming_feature_and_kinds() -> None:
    harness = Harness(kinds=("anthropic", "gemini"))
    for body in (PROMPT, STREAM):
        metadata, replies = await harness.complete(body)
        assert metadata == {"x-llmproxy-status": "400"}
        error = error_of(replies[0])
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "unsupported_feature"
        assert error["message"] == (
            "This model's providers do not support legacy completions:"
            " 'primary' (anthropic), 'backup' (gemini)."
        )
    assert harness.usage.records == []
    assert harness.cache.entries == {}


async def test_a_supporting_target_that_is_down_decides_the_status() -> None:
    harness = Harness(backup=[failure(503)] * 2, kinds=("bedrock", "azure"))
    metadata, replies = await harness.complete(PROMPT)
    assert metadata["x-llmproxy-status"] == "503"
    assert error_of(replies[0])["type"] == "upstream_error"


async def test_invalid_bodies_are_refused_in_openai_shape_without_a_call() -> None:
    harness = Harness()
    cases = [
        ({**PROMPT, "messages": []}, "400", "messages"),
        ({**PROMPT, "max_tokens": "many"}, "400", "max_tokens"),
        ({**PROMPT, "model": "other"}, "404", "model"),
    ]
    for body, status, param in cases:
        metadata, replies = await harness.complete(body)
        assert metadata == {"x-llmproxy-status": status}
        assert error_of(replies[0])["param"] == param
    assert harness.primary.calls == []
