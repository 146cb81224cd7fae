"""Google Gemini's generateContent API behind OpenAI's chat format (streams included).

Requests are translated in gemini_request; here the answers come back: candidates become
choices, function calls tool calls, usageMetadata usage (thinking tokens count as completion
tokens, as Gemini bills them), and Gemini's errors OpenAI-shaped errors.
"""

from __future__ import annotations

import base64
import json
import struct
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import quote

from llmproxy.common.tokens import estimate_prompt_tokens
from llmproxy.router.providers import sse
from llmproxy.router.providers.base import HttpProvider, NoLegacyCompletions, ProviderCallError
from llmproxy.router.providers.gemini_request import to_batch_embed_request, to_gemini_request
from llmproxy.router.providers.openai_chat import ChunkHead
from llmproxy.router.providers.usage import count, openai_usage

FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}


def finish_reason(gemini: str | None, called_tools: bool) -> str:
    """OpenAI's finish_reason for Gemini's finishReason (anything unnamed ends as "stop")."""
    reason = FINISH_REASONS.get(gemini or "", "stop")
    return "tool_calls" if called_tools and reason == "stop" else reason


def usage(metadata: Any) -> dict[str, Any]:
    """OpenAI usage from Gemini's usageMetadata, whose promptTokenCount includes the cached
    content's tokens, as OpenAI's prompt_tokens does."""
    prompt = count(metadata, "promptTokenCount") + count(metadata, "toolUsePromptTokenCount")
    thoughts = count(metadata, "thoughtsTokenCount")
    completion = count(metadata, "candidatesTokenCount") + thoughts
    result = openai_usage(prompt, completion, count(metadata, "cachedContentTokenCount"))
    if thoughts:
        result["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return result


def _tool_call(call: dict[str, Any]) -> dict[str, Any]:
    call_id = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
    arguments = json.dumps(call.get("args") or {}, separators=(",", ":"))
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call.get("name", ""), "arguments": arguments},
    }


def split_parts(content: Any) -> tuple[str, list[dict[str, Any]]]:
    """(text, tool calls) of a candidate's content; thought summaries are left out."""
    parts = content.get("parts") if isinstance(content, dict) else None
    text: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            text.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            calls.append(_tool_call(part["functionCall"]))
    return "".join(text), calls


def _response_id(answer: dict[str, Any]) -> str:
    return f"chatcmpl-{answer.get('responseId') or uuid.uuid4().hex}"


def to_chat_completion(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """A Gemini GenerateContentResponse as an OpenAI chat.completion."""
    choices = []
    for position, candidate in enumerate(answer.get("candidates") or []):
        text, calls = split_parts(candidate.get("content"))
        message: dict[str, Any] = {"role": "assistant", "content": text or None}
        if calls:
            message["tool_calls"] = calls
        elif not text:
            message["content"] = ""
        choices.append(
            {
                "index": candidate.get("index", position),
                "message": message,
                "finish_reason": finish_reason(candidate.get("finishReason"), bool(calls)),
            }
        )
    if not choices and (answer.get("promptFeedback") or {}).get("blockReason"):
        # The prompt itself was blocked: no candidate, which OpenAI says as a filtered answer.
        message = {"role": "assistant", "content": ""}
        choices.append({"index": 0, "message": message, "finish_reason": "content_filter"})
    return {
        "id": _response_id(answer),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": answer.get("modelVersion") or model,
        "choices": choices,
        "usage": usage(answer.get("usageMetadata")),
    }


class ChunkWriter:
    """Turns Gemini's streamed GenerateContentResponses into chat.completion.chunk events."""

    def __init__(self, model: str) -> None:
        self.head = ChunkHead("", model, int(time.time()))  # the id: the first payload's
        self.usage: Any = None
        self.finished = False
        self._started: set[int] = set()
        self._tool_calls: dict[int, int] = {}  # tool calls so far, per choice

    def _chunk(self, index: int, delta: dict[str, Any], reason: str | None = None) -> bytes:
        return self.head.chunk(delta, reason, index)

    def _candidate(self, index: int, candidate: dict[str, Any]) -> list[bytes]:
        out = []
        if index not in self._started:
            self._started.add(index)
            out.append(self._chunk(index, {"role": "assistant", "content": ""}))
        text, calls = split_parts(candidate.get("content"))
        if text:
            out.append(self._chunk(index, {"content": text}))
        if calls:
            first = self._tool_calls.get(index, 0)
            self._tool_calls[index] = first + len(calls)
            numbered = [{"index": first + n, **call} for n, call in enumerate(calls)]
            out.append(self._chunk(index, {"tool_calls": numbered}))
        if candidate.get("finishReason"):
            self.finished = True
            reason = finish_reason(candidate["finishReason"], index in self._tool_calls)
            out.append(self._chunk(index, {}, reason))
        return out

    def translate(self, payload: dict[str, Any]) -> list[bytes]:
        """The OpenAI chunks for one Gemini stream event."""
        if isinstance(payload.get("error"), dict):
            error = payload["error"]
            raise ProviderCallError(
                f"stream error: {error.get('status')}: {error.get('message')}",
                status=502,
                retryable=False,
            )
        self.head.id = self.head.id or _response_id(payload)
        self.head.model = payload.get("modelVersion") or self.head.model
        if payload.get("usageMetadata"):
            self.usage = payload["usageMetadata"]  # cumulative: the last one is the total
        out: list[bytes] = []
        candidates = payload.get("candidates") or []
        for position, candidate in enumerate(candidates):
            if isinstance(candidate, dict):
                out += self._candidate(candidate.get("index", position), candidate)
        if not candidates and (payload.get("promptFeedback") or {}).get("blockReason"):
            self.finished = True
            out.append(self._chunk(0, {"role": "assistant", "content": ""}, "content_filter"))
        return out

    def end(self) -> list[bytes]:
        """The usage chunk and [DONE] once an answer finished; nothing for a cut stream."""
        if not self.finished:
            return []  # Gemini's stream has no end marker: a cut one must not look whole
        return [self.head.usage_chunk(usage(self.usage)), sse.DONE]


def _gemini_error(err: ProviderCallError) -> ProviderCallError:
    """err with Gemini's error body retold in OpenAI's shape; an invalid key becomes a 401."""
    try:
        error = json.loads(err.body).get("error", {})
    except (ValueError, AttributeError):
        return err
    if not isinstance(error, dict):
        return err
    details = error.get("details")
    reasons = {d.get("reason") for d in details or [] if isinstance(d, dict)}
    status, code = err.status, str(error.get("status") or "").lower() or None
    if "API_KEY_INVALID" in reasons:  # Gemini says 400; every other kind says 401
        status, code = 401, "invalid_api_key"
    kind = "server_error" if status >= 500 else "invalid_request_error"
    message = str(error.get("message") or err)
    body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
    return ProviderCallError(
        f"{err} ({message})"[:300],
        status=status,
        retryable=err.retryable,
        body=json.dumps(body).encode(),
        retry_after_s=err.retry_after_s,
    )


def _model(body: dict[str, Any]) -> str:
    name = str(body.get("model", ""))
    return quote(name.removeprefix("models/"), safe="")


class GeminiClient(NoLegacyCompletions, HttpProvider):
    """Gemini's models/{model}:generateContent behind OpenAI's chat completion format."""

    def headers(self) -> dict[str, str]:
        """Gemini's key header."""
        headers = {"content-type": "application/json"}
        if self.provider.api_key:
            headers["x-goog-api-key"] = self.provider.api_key
        return headers

    async def chat(self, body: dict[str, Any]) -> bytes:
        """POST :generateContent and answer as chat.completion JSON."""
        request = to_gemini_request(body)
        try:
            raw = await self.post(f"/models/{_model(body)}:generateContent", request)
        except ProviderCallError as err:
            raise _gemini_error(err) from err
        return json.dumps(to_chat_completion(json.loads(raw), str(body.get("model")))).encode()

    async def open_chat_stream(self, body: dict[str, Any]) -> AsyncIterator[bytes]:
        """POST :streamGenerateContent?alt=sse; answer as OpenAI chunks with a usage chunk."""
        request = to_gemini_request(body)
        path = f"/models/{_model(body)}:streamGenerateContent?alt=sse"
        try:
            raw = await self.post_stream(path, request)
        except ProviderCallError as err:
            raise _gemini_error(err) from err
        return self._translate(sse.events(raw), ChunkWriter(str(body.get("model"))))

    async def _translate(
        self, events: AsyncIterator[bytes], writer: ChunkWriter
    ) -> AsyncIterator[bytes]:
        async for event in events:
            payload = sse.data_json(event)
            if isinstance(payload, dict):
                for chunk in writer.translate(payload):
                    yield chunk
        for chunk in writer.end():
            yield chunk

    async def embeddings(self, body: dict[str, Any]) -> bytes:
        """POST :batchEmbedContents; answer as an OpenAI embeddings list."""
        request = to_batch_embed_request(body)
        try:
            raw = await self.post(f"/models/{_model(body)}:batchEmbedContents", request)
        except ProviderCallError as err:
            raise _gemini_error(err) from err
        return json.dumps(to_embeddings(json.loads(raw), body)).encode()


def to_embeddings(answer: dict[str, Any], body: dict[str, Any]) -> dict[str, Any]:
    """A batchEmbedContents answer as OpenAI's embeddings list.

    Gemini reports no token count for embeddings: usage is the router's own estimate.
    """
    base64_wanted = body.get("encoding_format") == "base64"
    data = []
    for index, embedding in enumerate(answer.get("embeddings") or []):
        values = [float(v) for v in (embedding or {}).get("values", [])]
        encoded: list[float] | str = values
        if base64_wanted:  # what the openai SDK asks for: packed little-endian float32
            encoded = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = estimate_prompt_tokens(body)
    return {
        "object": "list",
        "data": data,
        "model": body.get("model", ""),
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }
