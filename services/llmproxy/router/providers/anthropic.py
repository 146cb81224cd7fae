"""Anthropic's Messages API, translated to and from OpenAI's chat format (streams included).

Requests: anthropic_request.py. Answers: text blocks become the message's content, tool_use
blocks its tool_calls (the input as JSON arguments), the stop reason the finish reason, usage
OpenAI's (cache reads and writes count as prompt tokens, the reads also as cached tokens).
Streams: text deltas become content deltas, a tool_use block's start and input_json_delta
pieces a tool call's deltas, numbered among the tool calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from llmproxy.router.providers import sse
from llmproxy.router.providers.anthropic_request import text_of, to_messages_request
from llmproxy.router.providers.base import (
    HttpProvider,
    NoLegacyCompletions,
    ProviderCallError,
    UnsupportedError,
)
from llmproxy.router.providers.openai_chat import ChunkHead, chat_completion, tool_call
from llmproxy.router.providers.usage import usage_with_cache

API_VERSION = "2023-06-01"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def usage(counts: Any) -> dict[str, Any]:
    """OpenAI usage from Anthropic's (its input_tokens leaves out the cache reads and writes)."""
    return usage_with_cache(
        counts,
        prompt="input_tokens",
        completion="output_tokens",
        cache_read="cache_read_input_tokens",
        cache_write="cache_creation_input_tokens",
    )


def to_chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message as an OpenAI chat.completion."""
    content = message.get("content") or []
    calls = [
        tool_call(b.get("id", ""), b.get("name", ""), b.get("input", {}))
        for b in content
        if isinstance(b, dict) and b.get("type") == "tool_use"
    ]
    return chat_completion(
        f"chatcmpl-{message.get('id', '')}",
        message.get("model", ""),
        text=text_of(content),
        calls=calls,
        finish_reason=FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
        usage=usage(message.get("usage")),
    )


class ChunkWriter:
    """Turns Anthropic stream events into OpenAI chat.completion.chunk events."""

    def __init__(self) -> None:
        self.head = ChunkHead("chatcmpl-", "", int(time.time()))  # known at message_start
        self.usage: dict[str, int] = {}  # Anthropic's counts: message_start's, then updates
        self.tools: dict[int, int] = {}  # content block index -> tool call index

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self.head.chunk(delta, finish_reason)

    def usage_chunk(self) -> bytes:
        return self.head.usage_chunk(usage(self.usage))

    def _add(self, counts: Any) -> None:
        if isinstance(counts, dict):
            self.usage.update((k, v) for k, v in counts.items() if isinstance(v, int))

    def translate(self, event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message", {})
            self.head.id = f"chatcmpl-{message.get('id', '')}"
            self.head.model = message.get("model", "")
            self._add(message.get("usage"))
            return [self.chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._start(event)
        if kind == "content_block_delta":
            return self._delta(event)
        if kind == "message_delta":
            self._add(event.get("usage"))  # cumulative: the final output count, and more
            reason = event.get("delta", {}).get("stop_reason") or "end_turn"
            return [self.chunk({}, FINISH_REASONS.get(reason, "stop"))]
        if kind == "message_stop":
            return [self.usage_chunk(), sse.DONE]
        if kind == "error":
            error = event.get("error", {})
            raise ProviderCallError(
                f"stream error: {error.get('type')}: {error.get('message')}",
                status=502,
                retryable=False,
            )
        return []  # ping, content_block_stop: nothing to tell an OpenAI client

    def _start(self, event: dict[str, Any]) -> list[bytes]:
        block = event.get("content_block", {})
        if block.get("type") != "tool_use":
            return []
        position = self.tools.setdefault(event.get("index", 0), len(self.tools))
        call = {
            "index": position,
            "id": block.get("id", ""),
            "type": "function",
            "function": {"name": block.get("name", ""), "arguments": ""},
        }
        return [self.chunk({"tool_calls": [call]})]

    def _delta(self, event: dict[str, Any]) -> list[bytes]:
        delta = event.get("delta", {})
        if delta.get("type") == "text_delta":
            return [self.chunk({"content": delta.get("text", "")})]
        position = self.tools.get(event.get("index", 0))
        if delta.get("type") == "input_json_delta" and position is not None:
            pieces = {"arguments": delta.get("partial_json", "")}
            return [self.chunk({"tool_calls": [{"index": position, "function": pieces}]})]
        return []  # thinking, signatures and citations have no place in a chat chunk


class AnthropicClient(NoLegacyCompletions, HttpProvider):
    """Anthropic's /v1/messages behind OpenAI's chat completion format."""

    def headers(self) -> dict[str, str]:
        """Anthropic's key header and API version."""
        headers = {"content-type": "application/json", "anthropic-version": API_VERSION}
        if self.provider.api_key:
            headers["x-api-key"] = self.provider.api_key
        return headers

    async def chat(self, body: dict[str, Any]) -> bytes:
        """POST /messages and answer as chat.completion JSON."""
        answer = json.loads(await self.post("/messages", to_messages_request(body)))
        return json.dumps(to_chat_completion(answer)).encode()

    async def open_chat_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST /messages with stream: true; answer as OpenAI chunks with a usage chunk."""
        request = {**to_messages_request(body), "stream": True}
        raw = await self.post_stream("/messages", request)
        return self._translate(sse.events(raw))

    async def _translate(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        writer = ChunkWriter()
        async for event in events:
            payload = sse.data_json(event)
            if isinstance(payload, dict):
                for chunk in writer.translate(payload):
                    yield chunk

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        """Anthropic has no embeddings API."""
        raise UnsupportedError(f"provider {self.provider.name!r} (anthropic) has no embeddings")
