"""A chat.completion answer as an Anthropic message, and the pieces streams share with it.

The message's content is a text block (when the answer has text, or has nothing else) followed
by a tool_use block per tool call, its input the call's arguments parsed. The finish reason
becomes the stop reason; chat completions do not say whether a stop sequence ended the answer,
so `stop_sequence` is always null and such an answer ends with `end_turn`. Usage: Anthropic
counts cache reads apart from the other input tokens, so when the provider reports cached
prompt tokens, `input_tokens` is the rest and `cache_read_input_tokens` those.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from llmproxy.common import anthropic_errors
from llmproxy.router.providers.usage import count

log = logging.getLogger(__name__)

STOP_REASONS = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}


def stop_reason(finish_reason: Any) -> str:
    """Anthropic's stop reason for a chat finish reason."""
    if isinstance(finish_reason, str):
        return STOP_REASONS.get(finish_reason, "end_turn")
    return "end_turn"


def message_id(chat_id: Any) -> str:
    """A message id ("msg_...") from a chat completion's id, or a new one."""
    if isinstance(chat_id, str) and chat_id:
        return "msg_" + chat_id.removeprefix("chatcmpl-")
    return f"msg_{uuid.uuid4().hex}"


def tool_use_id(call_id: Any) -> str:
    """A tool_use block's id: the tool call's own, or a new one when the provider gave none."""
    if isinstance(call_id, str) and call_id:
        return call_id
    return f"toolu_{uuid.uuid4().hex[:24]}"


def usage(chat_usage: Any) -> dict[str, int]:
    """Anthropic's usage counts from a chat completion's usage object."""
    counts = as_object(chat_usage)
    prompt = _count(counts, "prompt_tokens")
    details = counts.get("prompt_tokens_details")
    cached = _count(details, "cached_tokens") if isinstance(details, dict) else None
    result = {"input_tokens": prompt - min(cached or 0, prompt)}
    if cached is not None:
        result["cache_creation_input_tokens"] = 0
        result["cache_read_input_tokens"] = min(cached, prompt)
    result["output_tokens"] = _count(counts, "completion_tokens")
    return result


def as_object(value: Any) -> dict[str, Any]:
    """value when it is a JSON object, else an empty one: answers are read defensively."""
    return value if isinstance(value, dict) else {}


def _count(counts: dict[str, Any], name: str) -> int:
    return max(0, count(counts, name))  # a negative count from a provider counts nothing


def tool_input(arguments: Any) -> dict[str, Any]:
    """A tool call's arguments as a tool_use input (an object, as Anthropic's always is).

    A provider's arguments that are not a JSON object give an empty input rather than a
    broken answer: the call's name still reaches the client.
    """
    try:
        parsed = json.loads(arguments) if isinstance(arguments, str) and arguments else {}
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        log.warning("tool call arguments are not a JSON object")
        return {}
    return parsed


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def to_message(answer: dict[str, Any]) -> dict[str, Any]:
    """A chat.completion as an Anthropic message."""
    choices = answer.get("choices")
    choice = as_object(choices[0] if isinstance(choices, list) and choices else None)
    chat_message = as_object(choice.get("message"))
    text = _text(chat_message.get("content"))
    calls = [c for c in chat_message.get("tool_calls") or [] if isinstance(c, dict)]
    content: list[dict[str, Any]] = []
    if text or not calls:
        content.append({"type": "text", "text": text})
    for call in calls:
        function = as_object(call.get("function"))
        content.append(
            {
                "type": "tool_use",
                "id": tool_use_id(call.get("id")),
                "name": function.get("name") or "",
                "input": tool_input(function.get("arguments")),
            }
        )
    return {
        "id": message_id(answer.get("id")),
        "type": "message",
        "role": "assistant",
        "model": answer.get("model") or "",
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason")),
        "stop_sequence": None,
        "usage": usage(answer.get("usage")),
    }


def answer_body(data: bytes) -> bytes:
    """An OpenAI chat.completion JSON body as an Anthropic message body."""
    try:
        answer = json.loads(data)
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        # The status is sent already: the body at least says what went wrong.
        return anthropic_errors.error_body(502, "The provider's answer was not a JSON object.")
    return json.dumps(to_message(answer)).encode()
