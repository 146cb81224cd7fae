"""Bedrock's Converse API in OpenAI's chat format, and back: pure translations, streams included.

Requests: system and developer messages become `system` blocks; user, assistant and tool
messages become content blocks (text, images from data URLs, toolUse, toolResult), merged so
that roles alternate as Converse requires; sampling options go to `inferenceConfig`, tools to
`toolConfig`. Answers: text and toolUse blocks become the message's content and tool_calls,
`stopReason` the finish_reason, `usage` OpenAI's usage. What Converse cannot express (JSON mode,
n > 1, remote image URLs, embeddings) is an UnsupportedError naming the feature.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from llmproxy.router.providers import sse
from llmproxy.router.providers.base import ProviderCallError, UnsupportedError
from llmproxy.router.providers.openai_chat import (
    ChunkHead,
    chat_completion,
    check_features,
    function_tools,
    tool_call,
    turns,
)
from llmproxy.router.providers.usage import usage_with_cache

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "guardrail_intervened": "content_filter",
    "content_filtered": "content_filter",
}
IMAGE_FORMATS = ("png", "jpeg", "gif", "webp")


def _unsupported(feature: str) -> UnsupportedError:
    return UnsupportedError(f"{feature} is not supported by Bedrock's Converse API")


def _image(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else str(image or "")
    head, _, data = url.partition(",")
    media = head.removeprefix("data:").removesuffix(";base64")
    kind = media.removeprefix("image/")
    if (
        not head.startswith("data:image/")
        or not head.endswith(";base64")
        or kind not in IMAGE_FORMATS
    ):
        raise _unsupported("image_url other than a base64 data URL of png, jpeg, gif or webp")
    return {"image": {"format": kind, "source": {"bytes": data}}}


def _blocks(content: Any) -> list[dict[str, Any]]:
    """OpenAI message content (a string or parts) as Converse content blocks."""
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part))
        else:
            raise _unsupported(f"content part {kind!r}")
    return blocks


def _text(content: Any) -> str:
    return "".join(b["text"] for b in _blocks(content) if "text" in b)


class _ConverseBlocks:
    """OpenAI message parts as Converse content blocks."""

    def system(self, content: Any) -> list[Any]:
        return _blocks(content)

    def content(self, content: Any) -> list[dict[str, Any]]:
        return _blocks(content)

    def tool_use(self, call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
        return {"toolUse": {"toolUseId": call_id, "name": name, "input": arguments}}

    def tool_result(self, call_id: Any, content: Any) -> dict[str, Any]:
        return {"toolResult": {"toolUseId": call_id, "content": [{"text": _text(content)}]}}


def _tool_config(body: dict[str, Any], history_has_tools: bool) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or (choice == "none" and not history_has_tools):
        return None  # Converse has no "none": leaving the tools out is how to forbid them
    specs = []
    for tool in function_tools(body, _unsupported):
        spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool.parameters}}
        if tool.description:
            spec["description"] = tool.description
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        config["toolChoice"] = {"tool": {"name": choice["function"].get("name", "")}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def to_converse_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Converse request (the model goes in the URL, not here)."""
    check_features(body, _unsupported)
    system, messages = turns(body.get("messages", []), _ConverseBlocks(), _unsupported)
    request: dict[str, Any] = {"messages": messages}
    if system:
        request["system"] = system
    inference: dict[str, Any] = {}
    for ours, theirs in (
        ("max_completion_tokens", "maxTokens"),
        ("max_tokens", "maxTokens"),
        ("temperature", "temperature"),
        ("top_p", "topP"),
    ):
        if body.get(ours) is not None and theirs not in inference:
            inference[theirs] = body[ours]
    stop = body.get("stop")
    if stop:
        inference["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    if inference:
        request["inferenceConfig"] = inference
    has_tools = any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])
    tool_config = _tool_config(body, has_tools)
    if tool_config is not None:
        request["toolConfig"] = tool_config
    return request


def usage(counts: Any) -> dict[str, Any]:
    """OpenAI usage from Converse's (its inputTokens leaves out the cache reads and writes)."""
    return usage_with_cache(
        counts,
        prompt="inputTokens",
        completion="outputTokens",
        cache_read="cacheReadInputTokens",
        cache_write="cacheWriteInputTokens",
    )


def to_chat_completion(answer: dict[str, Any], model: str, request_id: str = "") -> dict[str, Any]:
    """A Converse answer as an OpenAI chat.completion."""
    content = answer.get("output", {}).get("message", {}).get("content", [])
    text = "".join(b["text"] for b in content if isinstance(b, dict) and "text" in b)
    calls = [
        tool_call(use.get("toolUseId", ""), use.get("name", ""), use.get("input", {}))
        for use in (b["toolUse"] for b in content if isinstance(b, dict) and "toolUse" in b)
    ]
    return chat_completion(
        f"chatcmpl-{request_id or uuid.uuid4().hex}",
        model,
        text=text,
        calls=calls,
        finish_reason=FINISH_REASONS.get(answer.get("stopReason") or "", "stop"),
        usage=usage(answer.get("usage")),
    )


class ChunkWriter:
    """Turns ConverseStream events into OpenAI chat.completion.chunk events.

    The finish chunk goes out on messageStop; the usage chunk and [DONE] on the metadata event
    that follows it.
    """

    def __init__(self, model: str, request_id: str = "") -> None:
        self.head = ChunkHead(f"chatcmpl-{request_id or uuid.uuid4().hex}", model, int(time.time()))
        self.usage: Any = None  # the metadata event's usage
        self.stopped = False
        self.done = False
        self._tool_index: dict[int, int] = {}  # contentBlockIndex -> tool call index

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return self.head.chunk(delta, finish_reason)

    def translate(self, event_type: str, event: dict[str, Any]) -> list[bytes]:
        """The OpenAI events for one ConverseStream event."""
        if event_type == "messageStart":
            return [self._chunk({"role": "assistant", "content": ""})]
        if event_type == "contentBlockStart":
            return self._start(event)
        if event_type == "contentBlockDelta":
            return self._delta(event)
        if event_type == "messageStop":
            self.stopped = True
            return [self._chunk({}, FINISH_REASONS.get(event.get("stopReason") or "", "stop"))]
        if event_type == "metadata":
            self.usage = event.get("usage")
            return self.finish()
        return []  # contentBlockStop: nothing to tell an OpenAI client

    def _tool(self, event: dict[str, Any]) -> int:
        # Tool calls are numbered among themselves; Converse numbers every content block.
        block = event.get("contentBlockIndex", 0)
        return self._tool_index.setdefault(block, len(self._tool_index))

    def _start(self, event: dict[str, Any]) -> list[bytes]:
        start = event.get("start", {}).get("toolUse")
        if not isinstance(start, dict):
            return []
        call = {
            "index": self._tool(event),
            "id": start.get("toolUseId", ""),
            "type": "function",
            "function": {"name": start.get("name", ""), "arguments": ""},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _delta(self, event: dict[str, Any]) -> list[bytes]:
        delta = event.get("delta", {})
        if "text" in delta:
            return [self._chunk({"content": delta["text"]})]
        tool = delta.get("toolUse")
        if isinstance(tool, dict):
            call = {"index": self._tool(event), "function": {"arguments": tool.get("input", "")}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # reasoning and citations have no place in a chat completion chunk

    def finish(self) -> list[bytes]:
        """The usage chunk and [DONE], once."""
        if self.done:
            return []
        self.done = True
        return [self.head.usage_chunk(usage(self.usage)), sse.DONE]


def stream_exception(exception_type: str, payload: dict[str, Any]) -> ProviderCallError:
    """The error for an exception event in a ConverseStream (the answer has begun: 502)."""
    return ProviderCallError(
        f"stream error: {exception_type}: {payload.get('message', '')}",
        status=502,
        retryable=False,
    )
