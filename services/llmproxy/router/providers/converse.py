"""Bedrock's Converse API in OpenAI's chat format, and back: pure translations, streams included.

Requests: system and developer messages become `system` blocks; user, assistant and tool
messages become content blocks (text, images from data URLs, toolUse, toolResult), merged so
that roles alternate as Converse requires; sampling options go to `inferenceConfig`, tools to
`toolConfig`. Answers: text and toolUse blocks become the message's content and tool_calls,
`stopReason` the finish_reason, `usage` OpenAI's usage. What Converse cannot express (JSON mode,
n > 1, remote image URLs, embeddings) is an UnsupportedError naming the feature.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from llmproxy.router.providers import sse
from llmproxy.router.providers.base import ProviderCallError, UnsupportedError
from llmproxy.router.providers.usage import count, openai_usage

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


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    arguments = function.get("arguments") or "{}"
    try:
        tool_input = json.loads(arguments)
    except ValueError as exc:
        raise UnsupportedError(
            f"tool call {call.get('id')!r} has arguments that are not JSON"
        ) from exc
    return {
        "toolUse": {
            "toolUseId": call.get("id", ""),
            "name": function.get("name", ""),
            "input": tool_input,
        }
    }


def _message_blocks(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "user":
        return "user", _blocks(message.get("content"))
    if role == "assistant":
        blocks = _blocks(message.get("content"))
        blocks.extend(_tool_use(call) for call in message.get("tool_calls") or [])
        return "assistant", blocks
    if role == "tool":
        result = {
            "toolUseId": message.get("tool_call_id", ""),
            "content": [{"text": _text(message.get("content"))}],
        }
        return "user", [{"toolResult": result}]
    raise _unsupported(f"{role!r} messages")


def _tool_config(body: dict[str, Any], history_has_tools: bool) -> dict[str, Any] | None:
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools or (choice == "none" and not history_has_tools):
        return None  # Converse has no "none": leaving the tools out is how to forbid them
    specs = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise _unsupported("a tool other than a function")
        spec: dict[str, Any] = {
            "name": function.get("name", ""),
            "inputSchema": {
                "json": function.get("parameters") or {"type": "object", "properties": {}}
            },
        }
        if function.get("description"):
            spec["description"] = function["description"]
        specs.append({"toolSpec": spec})
    config: dict[str, Any] = {"tools": specs}
    if choice == "required":
        config["toolChoice"] = {"any": {}}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        config["toolChoice"] = {"tool": {"name": choice["function"].get("name", "")}}
    elif choice == "auto":
        config["toolChoice"] = {"auto": {}}
    return config


def _check_features(body: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    ):
        raise _unsupported(f"JSON mode (response_format {response_format['type']!r})")
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise _unsupported("n > 1")


def to_converse_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as a Converse request (the model goes in the URL, not here)."""
    _check_features(body)
    system: list[dict[str, Any]] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages", []):
        if message.get("role") in ("system", "developer"):
            system.extend(_blocks(message.get("content")))
            continue
        role, blocks = _message_blocks(message)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)  # Converse wants roles to alternate
        else:
            messages.append({"role": role, "content": blocks})
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
    """OpenAI usage from Converse's: inputTokens leaves out the prompt's cache reads and
    writes, which OpenAI's prompt_tokens counts; the reads are OpenAI's cached_tokens."""
    read = count(counts, "cacheReadInputTokens")
    written = count(counts, "cacheWriteInputTokens")
    prompt = count(counts, "inputTokens") + read + written
    return openai_usage(prompt, count(counts, "outputTokens"), read)


def _tool_call(block: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": block.get("toolUseId", ""),
        "type": "function",
        "function": {
            "name": block.get("name", ""),
            "arguments": json.dumps(block.get("input", {})),
        },
    }


def to_chat_completion(answer: dict[str, Any], model: str, request_id: str = "") -> dict[str, Any]:
    """A Converse answer as an OpenAI chat.completion."""
    content = answer.get("output", {}).get("message", {}).get("content", [])
    text = "".join(b["text"] for b in content if isinstance(b, dict) and "text" in b)
    calls = [_tool_call(b["toolUse"]) for b in content if isinstance(b, dict) and "toolUse" in b]
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{request_id or uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": FINISH_REASONS.get(answer.get("stopReason") or "", "stop"),
            }
        ],
        "usage": usage(answer.get("usage")),
    }


class ChunkWriter:
    """Turns ConverseStream events into OpenAI chat.completion.chunk events.

    The finish chunk goes out on messageStop; the usage chunk and [DONE] on the metadata event
    that follows it.
    """

    def __init__(self, model: str, request_id: str = "") -> None:
        self.id = f"chatcmpl-{request_id or uuid.uuid4().hex}"
        self.model = model
        self.created = int(time.time())
        self.usage: Any = None  # the metadata event's usage
        self.stopped = False
        self.done = False
        self._tool_index: dict[int, int] = {}  # contentBlockIndex -> tool call index

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        return sse.encode(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )

    def _usage_chunk(self) -> bytes:
        return sse.encode(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(self.usage),
            }
        )

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
        return [self._usage_chunk(), sse.DONE]


def stream_exception(exception_type: str, payload: dict[str, Any]) -> ProviderCallError:
    """The error for an exception event in a ConverseStream (the answer has begun: 502)."""
    return ProviderCallError(
        f"stream error: {exception_type}: {payload.get('message', '')}",
        status=502,
        retryable=False,
    )
