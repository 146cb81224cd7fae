"""The turns of an Anthropic Messages request as chat completion messages, checked on the way.

User turns: text and image blocks (base64 sources as data URLs, URL sources as they are) become
content parts; `tool_result` blocks become `tool` messages, put first, as chat wants them right
after the assistant's calls (an error result says so in its text). Assistant turns: text and
`tool_use` blocks become the assistant message and its tool_calls; thinking blocks of earlier
turns are dropped (Anthropic leaves them out of the context too). Documents, server tool blocks
and a final assistant turn to continue (prefill) are refused with a 400 naming them.
"""

from __future__ import annotations

import json
from typing import Any

from llmproxy.router.errors import InvalidRequestError


def bad(message: str, param: str) -> InvalidRequestError:
    """A 400 saying what is wrong with param, named first as Anthropic does."""
    return InvalidRequestError(f"{param}: {message}", param=param)


def unsupported(feature: str, param: str) -> InvalidRequestError:
    """A 400 naming a feature the gateway cannot translate."""
    return bad(f"{feature} is not supported by this gateway", param)


def text_of(block: dict[str, Any], where: str) -> str:
    """A text block's text, or a 400."""
    text = block.get("text")
    if not isinstance(text, str):
        raise bad("a text block needs a string 'text'", f"{where}.text")
    return text


def _image(block: dict[str, Any], where: str) -> dict[str, Any]:
    source = block.get("source")
    kind = source.get("type") if isinstance(source, dict) else None
    if kind == "base64" and isinstance(source, dict):
        media, data = source.get("media_type"), source.get("data")
        if not isinstance(media, str) or not isinstance(data, str):
            raise bad("a base64 source needs string 'media_type' and 'data'", f"{where}.source")
        return {"type": "image_url", "image_url": {"url": f"data:{media};base64,{data}"}}
    if kind == "url" and isinstance(source, dict) and isinstance(source.get("url"), str):
        return {"type": "image_url", "image_url": {"url": source["url"]}}
    if isinstance(kind, str) and kind not in ("base64", "url"):
        raise unsupported(f"image source type {kind!r}", f"{where}.source.type")
    raise bad("an image block needs a base64 or url 'source'", f"{where}.source")


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    """A message's content as blocks, each an object with a string `type`."""
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list) or not content:
        raise bad("must be a string or a non-empty array of content blocks", where)
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise bad("must be an object with a string 'type'", f"{where}.{index}")
    return content


def _refuse_block(kind: str, where: str) -> InvalidRequestError:
    if kind in ("document", "search_result", "container_upload"):
        return unsupported(f"{kind!r} content blocks", f"{where}.type")
    if kind in ("server_tool_use", "mcp_tool_use", "mcp_tool_result") or kind.endswith(
        "_tool_result"
    ):
        return unsupported(f"server tool blocks ({kind!r})", f"{where}.type")
    return bad(f"unknown content block type {kind!r}", f"{where}.type")


def _tool_result(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = block.get("tool_use_id")
    if not isinstance(call_id, str) or not call_id:
        raise bad("a tool_result block needs a string 'tool_use_id'", f"{where}.tool_use_id")
    content = block.get("content")
    if content is None or content in ("", []):
        text = ""
    elif isinstance(content, str):
        text = content
    else:
        parts = []
        for index, part in enumerate(_blocks(content, f"{where}.content")):
            if part["type"] != "text":
                raise unsupported(
                    f"{part['type']!r} blocks inside a tool_result (chat tool results are text)",
                    f"{where}.content.{index}.type",
                )
            parts.append(text_of(part, f"{where}.content.{index}"))
        text = "\n".join(parts)
    is_error = block.get("is_error")
    if is_error is not None and not isinstance(is_error, bool):
        raise bad("must be a boolean", f"{where}.is_error")
    if is_error:
        text = f"Error: {text}"  # chat has no error flag: the model reads it in the result
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _user_turn(content: Any, where: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(content, f"{where}.content")):
        at, kind = f"{where}.content.{index}", block["type"]
        if kind == "text":
            parts.append({"type": "text", "text": text_of(block, at)})
        elif kind == "image":
            parts.append(_image(block, at))
        elif kind == "tool_result":
            results.append(_tool_result(block, at))
        elif kind == "tool_use":
            raise bad("tool_use blocks belong to assistant turns", f"{at}.type")
        else:
            raise _refuse_block(kind, at)
    if isinstance(content, str):
        return [*results, {"role": "user", "content": content}]
    return [*results, {"role": "user", "content": parts}] if parts or not results else results


def _tool_call(block: dict[str, Any], where: str) -> dict[str, Any]:
    call_id, name, arguments = block.get("id"), block.get("name"), block.get("input")
    if not isinstance(call_id, str) or not call_id or not isinstance(name, str) or not name:
        raise bad("a tool_use block needs string 'id' and 'name'", where)
    if not isinstance(arguments, dict):
        raise bad("must be an object", f"{where}.input")
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments)},
    }


def _assistant_turn(content: Any, where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for index, block in enumerate(_blocks(content, f"{where}.content")):
        at, kind = f"{where}.content.{index}", block["type"]
        if kind == "text":
            texts.append(text_of(block, at))
        elif kind == "tool_use":
            calls.append(_tool_call(block, at))
        elif kind in ("thinking", "redacted_thinking"):
            continue  # earlier turns' thinking is not part of the context (module docstring)
        elif kind in ("image", "tool_result"):
            raise bad(f"{kind} blocks belong to user turns", f"{at}.type")
        else:
            raise _refuse_block(kind, at)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The request's `messages` as chat messages (the system message aside)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad("Field required: a non-empty array of messages", "messages")
    out: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        where = f"messages.{index}"
        if not isinstance(message, dict):
            raise bad("must be an object with 'role' and 'content'", where)
        for name in sorted(message):
            if name not in ("role", "content"):
                raise bad("Extra inputs are not permitted", f"{where}.{name}")
        role = message.get("role")
        if role == "user":
            out.extend(_user_turn(message.get("content"), where))
        elif role == "assistant":
            out.append(_assistant_turn(message.get("content"), where))
        else:
            raise bad("must be 'user' or 'assistant'", f"{where}.role")
    if messages[-1].get("role") == "assistant":
        raise unsupported("a final assistant turn (prefill)", f"messages.{len(messages) - 1}.role")
    return out
