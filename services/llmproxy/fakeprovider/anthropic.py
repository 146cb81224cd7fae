"""The fake provider's Anthropic Messages API: requests checked, answers and stream events.

Answers are the fake's usual deterministic text. A request offering tools gets a tool_use of
the first one (input `{"query": <last user text>}`) until its last turn carries tool results,
or its tool_choice is none, as the OpenAI fake calls the first function. Tool use is checked
as Anthropic checks it: every tool_use of an assistant turn needs its tool_result in the next
turn, and every tool_result a tool_use in the turn before.
"""

from __future__ import annotations

import json
from typing import Any

from llmproxy.fakeprovider import responses
from llmproxy.fakeprovider.responses import JSON, Answer, ChatRequest, Message
from llmproxy.fakeprovider.validation import (
    ANTHROPIC_ROLES,
    RequestError,
    content_text,
    get_field,
    token_limit,
)


def error_body(error_type: str, message: str) -> JSON:
    """An error body in Anthropic's shape."""
    return {"type": "error", "error": {"type": error_type, "message": message}}


def _bad(message: str) -> RequestError:
    return RequestError(400, message)


def _blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, list):
        raise _bad(f"{where}: Input should be a valid list")
    for index, block in enumerate(content):
        if not isinstance(block, dict) or not isinstance(block.get("type"), str):
            raise _bad(f"{where}.{index}: Input should be an object with a type")
    return content


def _ids(blocks: list[dict[str, Any]], kind: str, field: str) -> list[str]:
    return [str(b.get(field)) for b in blocks if b["type"] == kind]


def _message(raw: Any, where: str) -> tuple[Message, list[dict[str, Any]]]:
    """The fake's view of one turn (a turn of tool results reads as a tool message)."""
    if not isinstance(raw, dict) or raw.get("role") not in ANTHROPIC_ROLES:
        raise _bad(f"{where}.role: Input should be 'user' or 'assistant'")
    blocks = _blocks(raw.get("content"), f"{where}.content")
    results = [b for b in blocks if b["type"] == "tool_result"]
    if results:
        texts = [content_text(r.get("content") or "", f"{where}.content") for r in results]
        return Message("tool", " ".join(texts)), blocks
    return Message(raw["role"], content_text(blocks, f"{where}.content")), blocks


def _check_tool_pairs(turns: list[list[dict[str, Any]]]) -> None:
    for index, blocks in enumerate(turns):
        uses = _ids(blocks, "tool_use", "id")
        following = turns[index + 1] if index + 1 < len(turns) else None
        if uses and following is not None:
            missing = [u for u in uses if u not in _ids(following, "tool_result", "tool_use_id")]
            if missing:
                raise _bad(
                    "messages: `tool_use` ids were found without `tool_result` blocks "
                    f"immediately after: {', '.join(missing)}"
                )
        previous = turns[index - 1] if index else []
        unexpected = [
            r
            for r in _ids(blocks, "tool_result", "tool_use_id")
            if r not in _ids(previous, "tool_use", "id")
        ]
        if unexpected:
            raise _bad(
                f"messages.{index}.content: unexpected `tool_use_id` found in `tool_result` "
                f"blocks: {', '.join(unexpected)}. Each `tool_result` block must have a "
                "corresponding `tool_use` block in the previous message."
            )


def _offered_tool(body: dict[str, Any], last: Message) -> str | None:
    tools = get_field(body, "tools", list) or []
    names = []
    for index, tool in enumerate(tools):
        name = tool.get("name") if isinstance(tool, dict) else None
        if not isinstance(name, str) or not name or not isinstance(tool.get("input_schema"), dict):
            raise _bad(f"tools.{index}: a tool needs a 'name' and an 'input_schema'")
        names.append(name)
    choice = get_field(body, "tool_choice", dict) or {}
    if not names or choice.get("type") == "none" or last.role == "tool":
        return None
    return names[0]


def parse_request(body: dict[str, Any]) -> tuple[ChatRequest, bool]:
    """The fake's view of a Messages request (the tool it will call included) and whether it
    streams."""
    model = get_field(body, "model", str, required=True)
    max_tokens = token_limit(body, "max_tokens", required=True)
    raw_messages = get_field(body, "messages", list, required=True)
    if not raw_messages:
        raise RequestError(400, "messages: at least one message is required", param="messages")
    parsed = [_message(raw, f"messages.{i}") for i, raw in enumerate(raw_messages)]
    _check_tool_pairs([blocks for _, blocks in parsed])
    messages = [message for message, _ in parsed]
    system = get_field(body, "system", (str, list))
    if system is not None:
        messages.insert(0, Message("system", content_text(system, "system")))
    tool = _offered_tool(body, messages[-1])
    stream = get_field(body, "stream", bool) or False
    return ChatRequest(model, tuple(messages), max_tokens=max_tokens, tool=tool), stream


def _head(request: ChatRequest) -> JSON:
    return {
        "id": f"msg_{responses.request_digest(request)}",
        "type": "message",
        "role": "assistant",
        "model": request.model,
    }


def _stop_reason(result: Answer) -> str:
    return "max_tokens" if result.truncated else "end_turn"


def _tool_use(request: ChatRequest) -> JSON:
    return {
        "type": "tool_use",
        "id": f"toolu_{responses.request_digest(request)[:12]}",
        "name": request.tool,
        "input": json.loads(responses.tool_arguments(request)),
    }


def message(request: ChatRequest) -> JSON:
    """The non-streamed Messages API response for `request`."""
    if request.tool is not None:
        result = responses.tool_answer(request)
        content, stop = [_tool_use(request)], "tool_use"
    else:
        result = responses.answer(request)
        content, stop = [{"type": "text", "text": result.text}], _stop_reason(result)
    return {
        **_head(request),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {**_input_usage(result), "output_tokens": result.completion_tokens},
    }


def _input_usage(result: Answer) -> JSON:
    """Anthropic's prompt counts: input_tokens leaves the cache reads out."""
    if not result.cached_tokens:
        return {"input_tokens": result.prompt_tokens}
    return {
        "input_tokens": result.prompt_tokens - result.cached_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": result.cached_tokens,
    }


def _block_events(request: ChatRequest) -> list[tuple[str, JSON]]:
    if request.tool is not None:
        use = _tool_use(request)
        arguments = responses.tool_arguments(request)
        half = len(arguments) // 2
        start = {**use, "input": {}}
        deltas = [
            {"type": "input_json_delta", "partial_json": p}
            for p in (arguments[:half], arguments[half:])
        ]
    else:
        start = {"type": "text", "text": ""}
        pieces = responses.text_pieces(responses.answer(request).text)
        deltas = [{"type": "text_delta", "text": piece} for piece in pieces]
    events = [
        ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": start})
    ]
    events += [
        ("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": delta})
        for delta in deltas
    ]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": 0}))
    return events


def events(request: ChatRequest) -> list[tuple[str, JSON]]:
    """The ``(event type, data)`` pairs of the streamed response, in order."""
    whole = message(request)
    start = {
        **whole,
        "content": [],
        "stop_reason": None,
        # Anthropic reports a provisional output count at the start, the real one at the end.
        "usage": {**whole["usage"], "output_tokens": 1},
    }
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": whole["stop_reason"], "stop_sequence": None},
        "usage": {"output_tokens": whole["usage"]["output_tokens"]},
    }
    return [
        ("message_start", {"type": "message_start", "message": start}),
        *_block_events(request),
        ("message_delta", delta),
        ("message_stop", {"type": "message_stop"}),
    ]


def sse_event(event_type: str, payload: JSON) -> bytes:
    """One Anthropic server-sent event: ``event: <type>`` then ``data: <json>``."""
    return f"event: {event_type}\ndata: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()
