"""The parts of a Responses request that chat completions shape differently: function tools
(flat in Responses, nested under `function` in chat), tool_choice and text.format (chat's
response_format). Built-in tools run on OpenAI's platform and cannot be translated.
"""

from __future__ import annotations

from typing import Any

from llmproxy.router.errors import InvalidRequestError
from llmproxy.router.json_body import FieldChecks

TOOL_CHOICE_MODES = frozenset({"auto", "none", "required"})
_TOOL_FIELDS: FieldChecks = {
    "description": (lambda v: isinstance(v, str), "a string"),
    "parameters": (lambda v: isinstance(v, dict), "an object"),
    "strict": (lambda v: isinstance(v, bool), "a boolean"),
}


def _invalid(message: str, param: str, code: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def function_tools(tools: list[Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The chat tools of a request's function tools, and the tools as the response echoes
    them; other tool types are refused, naming their type."""
    chat: list[dict[str, Any]] = []
    echoed: list[dict[str, Any]] = []
    for index, tool in enumerate(tools):
        param = f"tools[{index}]"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or not isinstance(kind, str):
            raise _invalid(f"'{param}' must be an object with a string 'type'.", param)
        if kind != "function":
            raise _invalid(
                f"Tools of type {kind!r} ({param}) are not supported by this gateway: built-in "
                "tools run on OpenAI's platform; only function tools are translated.",
                f"{param}.type",
                "unsupported_value",
            )
        name = tool.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid(f"'{param}.name' is required and must be a string.", f"{param}.name")
        function: dict[str, Any] = {"name": name}
        for field, (valid, expected) in _TOOL_FIELDS.items():
            value = tool.get(field)
            if value is None:
                continue
            if not valid(value):
                raise _invalid(f"'{param}.{field}' must be {expected}.", f"{param}.{field}")
            function[field] = value
        chat.append({"type": "function", "function": function})
        echoed.append(
            {
                "type": "function",
                "name": name,
                "description": function.get("description"),
                "parameters": function.get("parameters"),
                "strict": function.get("strict"),
            }
        )
    return chat, echoed


def tool_choice(choice: Any, has_tools: bool) -> Any:
    """The chat tool_choice (None: leave it out, chat's default is the same)."""
    if choice is None:
        return None
    if isinstance(choice, str) and choice in TOOL_CHOICE_MODES:
        chat: Any = choice
    elif (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and isinstance(choice.get("name"), str)
    ):
        chat = {"type": "function", "function": {"name": choice["name"]}}
    elif isinstance(choice, dict) and isinstance(choice.get("type"), str):
        raise _invalid(
            f"tool_choice of type {choice['type']!r} is not supported by this gateway: use "
            "'auto', 'none', 'required' or {\"type\": \"function\", \"name\": ...}.",
            "tool_choice",
            "unsupported_value",
        )
    else:
        raise _invalid(
            "'tool_choice' must be 'auto', 'none', 'required' or "
            '{"type": "function", "name": ...}.',
            "tool_choice",
        )
    if has_tools:
        return chat
    if chat in ("auto", "none"):
        return None
    raise _invalid("'tool_choice' asks for a tool call, but no 'tools' are given.", "tool_choice")


def response_format(text: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The chat response_format of `text` (None for plain text), and text.format as echoed."""
    fmt = text.get("format")
    if fmt is None:
        return None, {"type": "text"}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if not isinstance(fmt, dict) or kind not in ("text", "json_object", "json_schema"):
        raise _invalid(
            "'text.format' must be an object of type 'text', 'json_object' or 'json_schema'.",
            "text.format",
        )
    if kind == "text":
        return None, fmt
    if kind == "json_object":
        return {"type": "json_object"}, fmt
    name, schema = fmt.get("name"), fmt.get("schema")
    if not isinstance(name, str) or not name or not isinstance(schema, dict):
        raise _invalid(
            "A 'json_schema' text.format needs a string 'name' and an object 'schema'.",
            "text.format",
        )
    json_schema: dict[str, Any] = {"name": name, "schema": schema}
    for field in ("strict", "description"):
        if fmt.get(field) is not None:
            json_schema[field] = fmt[field]
    return {"type": "json_schema", "json_schema": json_schema}, fmt
