"""Anthropic's Messages API, translated to and from OpenAI's chat format (streams included)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

from llmproxy.common.tokens import requested_completion_tokens
from llmproxy.router.providers import sse
from llmproxy.router.providers.base import (
    HttpProvider,
    NoLegacyCompletions,
    ProviderCallError,
    UnsupportedError,
)
from llmproxy.router.providers.usage import count, openai_usage

API_VERSION = "2023-06-01"
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def to_messages_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages", []):
        role = message.get("role")
        if role in ("system", "developer"):
            system.append(_text(message.get("content")))
        elif role in ("user", "assistant"):
            messages.append({"role": role, "content": _text(message.get("content"))})
        else:
            raise UnsupportedError(f"{role!r} messages are not supported by Anthropic targets")
    request: dict[str, Any] = {
        "model": body["model"],
        "messages": messages,
        "max_tokens": requested_completion_tokens(body),
    }
    if system:
        request["system"] = "\n\n".join(system)
    for name in ("temperature", "top_p"):
        if name in body:
            request[name] = body[name]
    stop = body.get("stop")
    if stop:
        request["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("stream"):
        request["stream"] = True
    return request


def usage(counts: Any) -> dict[str, Any]:
    """OpenAI usage from Anthropic's: input_tokens leaves out the prompt's cache reads and
    writes, which OpenAI's prompt_tokens counts; the reads are OpenAI's cached_tokens."""
    read = count(counts, "cache_read_input_tokens")
    written = count(counts, "cache_creation_input_tokens")
    prompt = count(counts, "input_tokens") + read + written
    return openai_usage(prompt, count(counts, "output_tokens"), read)


def to_chat_completion(message: dict[str, Any]) -> dict[str, Any]:
    """An Anthropic message as an OpenAI chat.completion."""
    return {
        "id": f"chatcmpl-{message.get('id', '')}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": message.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": _text(message.get("content"))},
                "finish_reason": FINISH_REASONS.get(message.get("stop_reason") or "", "stop"),
            }
        ],
        "usage": usage(message.get("usage")),
    }


class _ChunkWriter:
    """Turns Anthropic stream events into OpenAI chat.completion.chunk events."""

    def __init__(self) -> None:
        self.id = ""
        self.model = ""
        self.created = int(time.time())
        self.usage: dict[str, int] = {}  # Anthropic's counts: message_start's, then updates

    def chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse.encode(
            {
                "id": f"chatcmpl-{self.id}",
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    def usage_chunk(self) -> bytes:
        return sse.encode(
            {
                "id": f"chatcmpl-{self.id}",
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(self.usage),
            }
        )

    def _add(self, counts: Any) -> None:
        if isinstance(counts, dict):
            self.usage.update((k, v) for k, v in counts.items() if isinstance(v, int))

    def translate(self, event: dict[str, Any]) -> list[bytes]:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message", {})
            self.id = message.get("id", "")
            self.model = message.get("model", "")
            self._add(message.get("usage"))
            return [self.chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_delta" and event.get("delta", {}).get("type") == "text_delta":
            return [self.chunk({"content": event["delta"].get("text", "")})]
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
        return []  # ping, content_block_start/stop: nothing to tell an OpenAI client


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
        writer = _ChunkWriter()
        async for event in events:
            payload = sse.data_json(event)
            if isinstance(payload, dict):
                for chunk in writer.translate(payload):
                    yield chunk

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        """Anthropic has no embeddings API."""
        raise UnsupportedError(f"provider {self.provider.name!r} (anthropic) has no embeddings")
