"""Responses API input (a string or a list of items) as chat completion messages.

Message items become chat messages, `function_call` items become an assistant message's
tool_calls and `function_call_output` items become tool messages. Items that only make sense
on OpenAI's own platform (references to stored items, built-in tool calls) are refused with a
400 naming them; `reasoning` items, which clients replay from earlier outputs, carry nothing a
chat completion can take and are dropped.
"""

from __future__ import annotations

from typing import Any

from llmproxy.router.errors import InvalidRequestError

ROLES = frozenset({"user", "assistant", "system", "developer"})
IMAGE_DETAILS = frozenset({"auto", "low", "high"})
# Text parts an assistant turn may carry when a client replays earlier output.
_ASSISTANT_TEXT_PARTS = {"output_text": "text", "input_text": "text", "refusal": "refusal"}

Message = dict[str, Any]


def _invalid(message: str, param: str, code: str | None = None) -> InvalidRequestError:
    return InvalidRequestError(message, param=param, code=code)


def _string(item: dict[str, Any], name: str, param: str) -> str:
    value = item.get(name)
    if not isinstance(value, str):
        raise _invalid(f"'{param}.{name}' is required and must be a string.", f"{param}.{name}")
    return value


def chat_messages(value: Any, instructions: str | None) -> list[Message]:
    """The chat messages of a request's `input` and `instructions` (a leading system message).

    Raises InvalidRequestError naming the item that is malformed or cannot be translated.
    """
    messages: list[Message] = []
    if instructions:
        messages.append({"role": "system", "content": instructions})
    if isinstance(value, str):
        messages.append({"role": "user", "content": value})
        return messages
    for index, item in enumerate(value):
        _add_item(messages, item, f"input[{index}]")
    if not messages:
        raise _invalid("'input' has no message a chat completion can answer.", "input")
    return messages


def output_messages(output: list[Any]) -> list[Message]:
    """A response's output items (its message and function calls) as the chat messages of the
    assistant's turn, as a later turn replays them; reasoning items carry nothing and go."""
    messages: list[Message] = []
    for index, item in enumerate(output):
        _add_item(messages, item, f"output[{index}]")
    return messages


def _add_item(messages: list[Message], item: Any, param: str) -> None:
    if not isinstance(item, dict):
        raise _invalid(f"'{param}' must be an object (an input item).", param)
    kind = item.get("type", "message")
    if kind == "message":
        messages.append(_message(item, param))
    elif kind == "function_call":
        call = {
            "id": _string(item, "call_id", param),
            "type": "function",
            "function": {
                "name": _string(item, "name", param),
                "arguments": _string(item, "arguments", param),
            },
        }
        previous = messages[-1] if messages else None
        # One assistant turn: its text and every call it made (parallel calls are consecutive).
        if previous is not None and previous["role"] == "assistant":
            previous.setdefault("tool_calls", []).append(call)
        else:
            messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
    elif kind == "function_call_output":
        messages.append(
            {
                "role": "tool",
                "tool_call_id": _string(item, "call_id", param),
                "content": _tool_output(item.get("output"), f"{param}.output"),
            }
        )
    elif kind == "reasoning":
        return
    elif kind == "item_reference":
        raise _invalid(
            f"'{param}' is an item_reference: this gateway stores no items (it is stateless). "
            "Send the referenced item itself.",
            f"{param}.type",
            "unsupported_value",
        )
    elif isinstance(kind, str):
        raise _invalid(
            f"Input items of type {kind!r} ({param}) are not supported by this gateway: it "
            "translates message, function_call and function_call_output items.",
            f"{param}.type",
            "unsupported_value",
        )
    else:
        raise _invalid(f"'{param}.type' must be a string.", f"{param}.type")


def _message(item: dict[str, Any], param: str) -> Message:
    role = item.get("role")
    if not isinstance(role, str) or role not in ROLES:
        raise _invalid(
            f"'{param}.role' must be one of 'user', 'assistant', 'system' or 'developer'.",
            f"{param}.role",
        )
    content = item.get("content")
    if isinstance(content, str):
        return {"role": role, "content": content}
    if not isinstance(content, list):
        raise _invalid(
            f"'{param}.content' must be a string or an array of content parts.",
            f"{param}.content",
        )
    if role == "assistant":
        return {"role": role, "content": _assistant_text(content, f"{param}.content")}
    return {
        "role": role,
        "content": [_part(p, f"{param}.content[{i}]") for i, p in enumerate(content)],
    }


def _part_type(part: Any, param: str) -> str:
    kind = part.get("type") if isinstance(part, dict) else None
    if not isinstance(kind, str):
        raise _invalid(f"'{param}' must be a content part: an object with a string 'type'.", param)
    return kind


def _assistant_text(content: list[Any], param: str) -> str:
    texts = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = _part_type(part, where)
        field = _ASSISTANT_TEXT_PARTS.get(kind)
        if field is None:
            raise _invalid(
                f"Assistant content parts of type {kind!r} ({where}) are not supported: "
                "send output_text parts.",
                f"{where}.type",
                "unsupported_value",
            )
        texts.append(_string(part, field, where))
    return "".join(texts)


def _part(part: Any, param: str) -> dict[str, Any]:
    kind = _part_type(part, param)
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": _string(part, "text", param)}
    if kind == "input_image":
        return _image(part, param)
    raise _invalid(
        f"Content parts of type {kind!r} ({param}) are not supported by this gateway: it "
        "translates input_text and input_image (by image_url) parts.",
        f"{param}.type",
        "unsupported_value",
    )


def _image(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = part.get("image_url")
    if part.get("file_id") is not None or not isinstance(url, str) or not url:
        raise _invalid(
            f"'{param}' needs an image_url (a URL or a data: URL): images by file_id live in "
            "OpenAI's file store, which this gateway does not have.",
            f"{param}.image_url",
        )
    image: dict[str, Any] = {"url": url}
    if isinstance(part.get("detail"), str) and part["detail"] in IMAGE_DETAILS:
        image["detail"] = part["detail"]
    return {"type": "image_url", "image_url": image}


def _tool_output(output: Any, param: str) -> str:
    if isinstance(output, str):
        return output
    if not isinstance(output, list):
        raise _invalid(f"'{param}' must be a string or an array of input_text parts.", param)
    texts = []
    for index, part in enumerate(output):
        where = f"{param}[{index}]"
        if _part_type(part, where) != "input_text":
            raise _invalid(
                f"Function outputs other than text ({where}) are not supported by this gateway.",
                f"{where}.type",
                "unsupported_value",
            )
        texts.append(_string(part, "text", where))
    return "".join(texts)
