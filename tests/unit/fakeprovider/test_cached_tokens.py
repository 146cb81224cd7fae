"""The cached_prompt_tokens knob: each API reports prompt cache reads in its own fields."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from llmproxy.fakeprovider import bedrock
from llmproxy.fakeprovider.responses import ChatRequest, Message
from tests.harness.fake_provider import RunningProvider

HELLO = "one two three four five six"  # six prompt tokens to the fake's tokenizer
CHAT = {"model": "fake-gpt", "messages": [{"role": "user", "content": HELLO}]}
ANTHROPIC = {"x-api-key": "k", "anthropic-version": "2023-06-01"}


def _events(body: str) -> list[Any]:
    return [
        json.loads(line[len("data: ") :])
        for line in body.splitlines()
        if line.startswith("data: {")
    ]


async def test_the_knob_is_set_through_the_control_route(http: httpx.AsyncClient) -> None:
    response = await http.put("/_fake/knobs", json={"cached_prompt_tokens": 4})
    assert response.json()["cached_prompt_tokens"] == 4
    usage = (await http.post("/v1/chat/completions", json=CHAT)).json()["usage"]
    assert usage["prompt_tokens"] == 6
    assert usage["prompt_tokens_details"] == {"cached_tokens": 4}


async def test_no_cache_reads_by_default(http: httpx.AsyncClient) -> None:
    usage = (await http.post("/v1/chat/completions", json=CHAT)).json()["usage"]
    assert "prompt_tokens_details" not in usage


@pytest.mark.parametrize(
    "path", ["/v1/chat/completions", "/openai/deployments/fake-gpt/chat/completions?api-version=1"]
)
async def test_openai_and_azure_report_cached_tokens_whole_and_streamed(
    http: httpx.AsyncClient, provider: RunningProvider, path: str
) -> None:
    provider.knobs.cached_prompt_tokens = 99  # more than the prompt: capped at it
    headers = {"api-key": "k"}
    whole = (await http.post(path, json=CHAT, headers=headers)).json()["usage"]
    assert whole["prompt_tokens"] == 6
    assert whole["prompt_tokens_details"] == {"cached_tokens": 6}
    body = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    streamed = _events((await http.post(path, json=body, headers=headers)).text)
    assert streamed[-1]["usage"] == whole


async def test_anthropic_counts_cache_reads_apart_from_input_tokens(
    http: httpx.AsyncClient, provider: RunningProvider
) -> None:
    provider.knobs.cached_prompt_tokens = 4
    body = {**CHAT, "model": "fake-claude", "max_tokens": 50}
    usage = (await http.post("/v1/messages", json=body, headers=ANTHROPIC)).json()["usage"]
    assert usage["input_tokens"] == 2
    assert usage["cache_read_input_tokens"] == 4
    assert usage["cache_creation_input_tokens"] == 0
    response = await http.post("/v1/messages", json={**body, "stream": True}, headers=ANTHROPIC)
    start = _events(response.text)[0]
    assert start["type"] == "message_start"
    assert start["message"]["usage"]["cache_read_input_tokens"] == 4
    assert start["message"]["usage"]["input_tokens"] == 2


async def test_gemini_counts_cached_content_within_the_prompt(
    http: httpx.AsyncClient, provider: RunningProvider
) -> None:
    provider.knobs.cached_prompt_tokens = 4
    body = {"contents": [{"role": "user", "parts": [{"text": HELLO}]}]}
    path = "/v1beta/models/fake-gpt:generateContent"
    meta = (await http.post(path, json=body, headers={"x-goog-api-key": "k"})).json()
    assert meta["usageMetadata"]["promptTokenCount"] == 6
    assert meta["usageMetadata"]["cachedContentTokenCount"] == 4


def test_bedrock_counts_cache_reads_apart_from_input_tokens() -> None:
    chat = ChatRequest("fake-claude", (Message("user", HELLO),), cached_tokens=4)
    usage = bedrock.converse(chat, None)["usage"]
    assert usage["inputTokens"] == 2
    assert usage["cacheReadInputTokens"] == 4
    assert usage["totalTokens"] == 6 + usage["outputTokens"]
    (metadata,) = [e for kind, e in bedrock.converse_events(chat, None) if kind == "metadata"]
    assert metadata["usage"] == usage
