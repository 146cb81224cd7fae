"""The parts of OpenAI chat that the adapters to block-based APIs (Anthropic's Messages,
Bedrock's Converse) translate alike.

Requests: system and developer messages go to the system prompt; user, assistant and tool
messages become turns of content blocks (a tool message a block of the next user turn),
consecutive ones of a role merged so that roles alternate, as both APIs require; an assistant's
tool calls become blocks with their arguments parsed; function tools are read once for either
API's tool list; JSON mode and n > 1, which neither API has, are refused. Answers: a text and
tool calls become a one-choice chat.completion, and every streaming adapter (Gemini's too)
writes its chat.completion.chunk events here. Each API's own block shapes stay in its adapter
(`Blocks`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from llmproxy.router.providers import sse
from llmproxy.router.providers.base import UnsupportedError

Unsupported = Callable[[str], UnsupportedError]
"""An adapter's error for a feature, named in a few words, that its API cannot express."""


class Blocks(Protocol):
    """How one API writes the parts of OpenAI chat messages."""

    def system(self, content: Any) -> list[Any]:
        """A system or developer message's content, as items of the system prompt."""
        ...

    def content(self, content: Any) -> list[dict[str, Any]]:
        """A user or assistant message's content (a string or parts) as content blocks."""
        ...

    def tool_use(self, call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
        """An assistant's tool call, its arguments parsed from JSON, as a content block."""
        ...

    def tool_result(self, call_id: Any, content: Any) -> dict[str, Any]:
        """A tool message (the id of the call it answers, its content) as a content block."""
        ...


def turns(
    messages: list[Any], blocks: Blocks, unsupported: Unsupported
) -> tuple[list[Any], list[dict[str, Any]]]:
    """The system prompt's items and the other messages as turns ({"role", "content"}) whose
    roles alternate; a message of another role is an UnsupportedError."""
    system: list[Any] = []
    merged: list[dict[str, Any]] = []
    for message in messages:
        if message.get("role") in ("system", "developer"):
            system.extend(blocks.system(message.get("content")))
            continue
        role, content = _turn(message, blocks, unsupported)
        if merged and merged[-1]["role"] == role:
            merged[-1]["content"].extend(content)  # both APIs want roles to alternate
        else:
            merged.append({"role": role, "content": content})
    return system, merged


def _turn(
    message: dict[str, Any], blocks: Blocks, unsupported: Unsupported
) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "user":
        return "user", blocks.content(message.get("content"))
    if role == "assistant":
        content = blocks.content(message.get("content"))
        content.extend(_tool_use(call, blocks) for call in message.get("tool_calls") or [])
        return "assistant", content
    if role == "tool":
        return "user", [blocks.tool_result(message.get("tool_call_id", ""), message.get("content"))]
    raise unsupported(f"{role!r} messages")


def _tool_use(call: dict[str, Any], blocks: Blocks) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError as exc:
        raise UnsupportedError(
            f"tool call {call.get('id')!r} has arguments that are not JSON"
        ) from exc
    return blocks.tool_use(call.get("id", ""), function.get("name", ""), arguments)


@dataclass(frozen=True)
class FunctionTool:
    """A function tool of an OpenAI chat request."""

    name: Any
    parameters: Any
    """Its JSON schema; an object schema without properties when the request has none."""
    description: Any
    """Falsy when it has none."""


def function_tools(body: dict[str, Any], unsupported: Unsupported) -> list[FunctionTool]:
    """The request's tools; a tool other than a function is an UnsupportedError."""
    tools = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise unsupported("a tool other than a function")
        parameters = function.get("parameters") or {"type": "object", "properties": {}}
        description = function.get("description")
        tools.append(FunctionTool(function.get("name", ""), parameters, description))
    return tools


def check_features(body: dict[str, Any], unsupported: Unsupported) -> None:
    """Refuse what neither block-based API can express: JSON mode and n > 1."""
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    ):
        raise unsupported(f"JSON mode (response_format {response_format['type']!r})")
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise unsupported("n > 1")


def tool_call(call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
    """An OpenAI tool call of an answer, its arguments written as JSON."""
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def chat_completion(
    completion_id: str,
    model: Any,
    *,
    text: str,
    calls: list[dict[str, Any]],
    finish_reason: str,
    usage: dict[str, Any],
) -> dict[str, Any]:
    """A chat.completion of one choice: the text (null when the answer is only tool calls)
    and the tool calls."""
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }


@dataclass
class ChunkHead:
    """What every chat.completion.chunk of one stream repeats: its id, creation time and model
    (the id and model may become known only with the provider's first event)."""

    id: str
    model: Any
    created: int

    def chunk(
        self, delta: dict[str, Any], finish_reason: str | None = None, index: int = 0
    ) -> bytes:
        """The chunk event of one choice's delta."""
        choice = {"index": index, "delta": delta, "finish_reason": finish_reason}
        return self._event({"choices": [choice]})

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        """The last chunk event: no choices, the usage (sent whether the client asked for it or
        not: the router needs it)."""
        return self._event({"choices": [], "usage": usage})

    def _event(self, fields: dict[str, Any]) -> bytes:
        head = {"id": self.id, "object": "chat.completion.chunk", "created": self.created}
        return sse.encode({**head, "model": self.model, **fields})
