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

from typing import Any

from llmproxy.common.tokens import requested_completion_tokens
from llmproxy.router.providers.base import UnsupportedError
from llmproxy.router.providers.openai_chat import check_features, function_tools, turns


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


class _MessagesBlocks:
    """OpenAI message parts as Anthropic content blocks."""

    def system(self, content: Any) -> list[Any]:
        return [text_of(content)]

    def content(self, content: Any) -> list[dict[str, Any]]:
        return _blocks(content)

    def tool_use(self, call_id: Any, name: Any, arguments: Any) -> dict[str, Any]:
        tool_input = arguments if isinstance(arguments, dict) else {}
        return {"type": "tool_use", "id": call_id, "name": name, "input": tool_input}

    def tool_result(self, call_id: Any, content: Any) -> dict[str, Any]:
        return {"type": "tool_result", "tool_use_id": call_id, "content": text_of(content)}


def _check_features(body: dict[str, Any]) -> None:
    check_features(body, _unsupported)
    if body.get("functions") or body.get("function_call"):
        raise _unsupported("legacy functions (send tools)")


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    tools = []
    for tool in function_tools(body, _unsupported):
        spec: dict[str, Any] = {"name": tool.name, "input_schema": tool.parameters}
        if tool.description:
            spec["description"] = tool.description
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
    system, messages = turns(body.get("messages", []), _MessagesBlocks(), _unsupported)
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
