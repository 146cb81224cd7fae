"""Validation of the fake provider's request bodies, with errors in the API's own words.

A refused request raises `RequestError`; the app renders it in the calling API's error shape.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from llmproxy.fakeprovider.responses import ChatRequest, Message

OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
ANTHROPIC_ROLES = frozenset({"user", "assistant"})
_JSON_TYPE_NAMES: Mapping[type, str] = {
    str: "a string",
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    list: "an array",
    dict: "an object",
    type(None): "null",
}


class RequestError(Exception):
    """A request the fake provider refuses, with the HTTP status and the error details."""

    def __init__(
        self, status: int, message: str, *, param: str | None = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read())
    except ValueError as exc:
        message = (
            "We could not parse the JSON body of your request. The API expects a JSON payload"
            f" ({exc})."
        )
        raise RequestError(400, message) from None
    if not isinstance(body, dict):
        raise RequestError(400, f"The request body must be a JSON object, not {json_type(body)}.")
    return body


def get_field(
    body: Mapping[str, Any],
    name: str,
    kind: type | tuple[type, ...],
    *,
    required: bool = False,
    prefix: str = "",
) -> Any:
    value = body.get(name)
    param = prefix + name
    if value is None:
        if required:
            message = f"Missing required parameter: '{param}'."
            raise RequestError(400, message, param=param, code="missing_required_parameter")
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    # bool is an int subclass; JSON true is never a valid integer.
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(_JSON_TYPE_NAMES[k] for k in kinds)
        message = (
            f"Invalid type for '{param}': expected {expected}, but got {json_type(value)} instead."
        )
        raise RequestError(400, message, param=param, code="invalid_type")
    return value


def stream_flags(body: Mapping[str, Any]) -> tuple[bool, bool]:
    """Whether the request streams, and whether its stream ends with a usage chunk
    (stream_options.include_usage, allowed only on a streamed request)."""
    stream = get_field(body, "stream", bool) or False
    options = get_field(body, "stream_options", dict)
    if options is not None and not stream:
        message = "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        raise RequestError(400, message, param="stream_options")
    include_usage = (
        get_field(options or {}, "include_usage", bool, prefix="stream_options.") or False
    )
    return stream, include_usage


def token_limit(body: Mapping[str, Any], name: str, *, required: bool = False) -> int | None:
    value: int | None = get_field(body, name, int, required=required)
    if value is not None and value < 1:
        raise RequestError(400, f"'{name}' must be at least 1, got {value}.", param=name)
    return value


def parse_message(raw: object, param: str, roles: frozenset[str]) -> Message:
    if not isinstance(raw, dict):
        message = f"Invalid type for '{param}': expected an object, but got {json_type(raw)}."
        raise RequestError(400, message, param=param, code="invalid_type")
    role = get_field(raw, "role", str, required=True, prefix=f"{param}.")
    if role not in roles:
        message = f"Invalid value for '{param}.role': {role!r} is not one of {sorted(roles)}."
        raise RequestError(400, message, param=f"{param}.role", code="invalid_value")
    content = get_field(raw, "content", (str, list), prefix=f"{param}.")
    return Message(role, content_text(content, f"{param}.content"))


def content_text(content: str | list[Any] | None, param: str) -> str:
    """The text of a message content: a string, or a list of parts of which text ones count."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for index, part in enumerate(content):
        if not isinstance(part, dict) or not isinstance(part.get("type"), str):
            message = f"Invalid content part at '{param}[{index}]': expected an object with a type."
            raise RequestError(400, message, param=f"{param}[{index}]", code="invalid_type")
        if part["type"] == "text":
            texts.append(get_field(part, "text", str, required=True, prefix=f"{param}[{index}]."))
    return " ".join(texts)


def parse_chat(body: dict[str, Any]) -> tuple[ChatRequest, bool]:
    model = get_field(body, "model", str, required=True)
    raw_messages = get_field(body, "messages", list, required=True)
    if not raw_messages:
        raise RequestError(400, "'messages' must contain at least one message.", param="messages")
    messages = tuple(
        parse_message(raw, f"messages[{i}]", OPENAI_ROLES) for i, raw in enumerate(raw_messages)
    )
    stream, include_usage = stream_flags(body)
    max_tokens = token_limit(body, "max_completion_tokens") or token_limit(body, "max_tokens")
    tool = _offered_tool(body, messages)
    chat = ChatRequest(
        model, messages, max_tokens=max_tokens, include_usage=include_usage, tool=tool
    )
    return chat, stream


def _offered_tool(body: dict[str, Any], messages: tuple[Message, ...]) -> str | None:
    """The function the fake calls: the first tool offered, unless the conversation already
    ends with a tool result or the client said tool_choice none."""
    tools = get_field(body, "tools", list) or []
    names = []
    for index, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name or tool.get("type") != "function":
            message = f"Invalid value for 'tools[{index}]': expected a function with a name."
            raise RequestError(400, message, param=f"tools[{index}]", code="invalid_value")
        names.append(name)
    if not names or body.get("tool_choice") == "none" or messages[-1].role == "tool":
        return None
    return names[0]


def json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)
