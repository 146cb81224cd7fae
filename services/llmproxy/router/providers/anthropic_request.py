"""An OpenAI chat request as an Anthropic Messages request.

System and developer messages become `system`; user messages' text and image parts (data URLs
as base64 sources, other URLs as url sources) become content blocks; assistant messages' text
and tool_calls become text and tool_use blocks; tool messages tool_result blocks of a user turn.
Consecutive messages of one role are merged into one turn, so that every tool result answering
an assistant turn's calls is in the next user turn, as Anthropic requires. Function tools
become tools, tool_choice and parallel_tool_calls Anthropic's tool_choice. What Messages cannot
express (JSON mode, n > 1, legacy functions, other content parts) is an UnsupportedError naming
the feature.
"""

from __future__ import annotations

import json
from typing import Any

from llmproxy.common.tokens import requested_completion_tokens
from llmproxy.router.providers.base import UnsupportedError


def _unsupported(feature: str) -> UnsupportedError:
    return UnsupportedError(f"{feature} is not supported by Anthropic's Messages API")


def text_of(content: Any) -> str:
    """The text of OpenAI message content (a string, or parts of which text ones count)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text"
        )
    return ""


def _image(part: dict[str, Any]) -> dict[str, Any]:
    image = part.get("image_url")
    url = image.get("url", "") if isinstance(image, dict) else str(image or "")
    head, _, data = url.partition(",")
    if head.startswith("data:") and head.endswith(";base64"):
        media = head.removeprefix("data:").removesuffix(";base64")
        return {"type": "image", "source": {"type": "base64", "media_type": media, "data": data}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise _unsupported("an image_url that is neither a base64 data URL nor an http(s) URL")


def _blocks(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, list) else []:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image(part))
        else:
            raise _unsupported(f"content part {kind!r}")
    return blocks


def _tool_use(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    try:
        arguments = json.loads(function.get("arguments") or "{}")
    except ValueError as exc:
        raise UnsupportedError(
            f"tool call {call.get('id')!r} has arguments that are not JSON"
        ) from exc
    return {
        "type": "tool_use",
        "id": call.get("id", ""),
        "name": function.get("name", ""),
        "input": arguments if isinstance(arguments, dict) else {},
    }


def _turn(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    role = message.get("role")
    if role == "user":
        return "user", _blocks(message.get("content"))
    if role == "assistant":
        blocks = _blocks(message.get("content"))
        blocks.extend(_tool_use(call) for call in message.get("tool_calls") or [])
        return "assistant", blocks
    if role == "tool":
        result = {
            "type": "tool_result",
            "tool_use_id": message.get("tool_call_id", ""),
            "content": text_of(message.get("content")),
        }
        return "user", [result]
    raise _unsupported(f"{role!r} messages")


def _check_features(body: dict[str, Any]) -> None:
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_object",
        "json_schema",
    ):
        raise _unsupported(f"JSON mode (response_format {response_format['type']!r})")
    if isinstance(body.get("n"), int) and body["n"] > 1:
        raise _unsupported("n > 1")
    if body.get("functions") or body.get("function_call"):
        raise _unsupported("legacy functions (send tools)")


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = []
    for tool in body.get("tools") or []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise _unsupported("a tool other than a function")
        spec: dict[str, Any] = {
            "name": function.get("name", ""),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            spec["description"] = function["description"]
        tools.append(spec)
    return tools


def _tool_choice(body: dict[str, Any]) -> dict[str, Any] | None:
    choice = body.get("tool_choice")
    if choice == "required":
        found: dict[str, Any] = {"type": "any"}
    elif choice == "none":
        found = {"type": "none"}
    elif isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        found = {"type": "tool", "name": choice["function"].get("name", "")}
    else:
        found = {"type": "auto"}
    if body.get("parallel_tool_calls") is False and found["type"] != "none":
        found["disable_parallel_tool_use"] = True
    elif choice is None:
        return None  # Anthropic's default is auto
    return found


def to_messages_request(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat request as an Anthropic Messages request."""
    _check_features(body)
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for message in body.get("messages", []):
        if message.get("role") in ("system", "developer"):
            system.append(text_of(message.get("content")))
            continue
        role, blocks = _turn(message)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)  # one turn, as Anthropic wants
        else:
            messages.append({"role": role, "content": blocks})
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
    if isinstance(body.get("user"), str):
        request["metadata"] = {"user_id": body["user"]}
    tools = _tools(body)
    if tools:
        request["tools"] = tools
        choice = _tool_choice(body)
        if choice is not None:
            request["tool_choice"] = choice
    if body.get("stream"):
        request["stream"] = True
    return request
