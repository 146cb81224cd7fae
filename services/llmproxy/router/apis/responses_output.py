"""Responses API answers from chat completions: the response object, output items and usage.

Chat's finish_reason decides the status: `length` (the max_output_tokens cut) and
`content_filter` make the response `incomplete` with that reason, as OpenAI reports them.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass
from typing import Any

from llmproxy.router.providers.usage import count

# chat finish_reason -> Responses incomplete_details.reason
INCOMPLETE_REASONS = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    """An id in OpenAI's style: resp_..., msg_..., fc_..."""
    return f"{prefix}_{secrets.token_hex(24)}"


def incomplete_reason(finish_reason: Any) -> str | None:
    """The incomplete_details reason a chat finish_reason means (None: the answer is whole)."""
    return INCOMPLETE_REASONS.get(finish_reason) if isinstance(finish_reason, str) else None


@dataclass(frozen=True)
class ResponseShape:
    """What every response object of one request shares: id, creation time, model and the
    request's settings, echoed."""

    id: str
    created_at: int
    model: str
    echo: dict[str, Any]

    def response(
        self,
        status: str,
        output: list[dict[str, Any]],
        usage: dict[str, Any] | None = None,
        *,
        reason: str | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The response object with status (in_progress, completed, incomplete or failed)."""
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created_at,
            "status": status,
            "error": error,
            "incomplete_details": {"reason": reason} if reason else None,
            "model": self.model,
            "output": output,
            "usage": usage,
            **self.echo,
        }
        if status == "completed":
            body["completed_at"] = int(time.time())
        return body


def usage_of(chat_usage: Any) -> dict[str, Any] | None:
    """A chat completion's usage in the Responses shape (None when there is none)."""
    if not isinstance(chat_usage, dict):
        return None
    prompt = count(chat_usage, "prompt_tokens")
    completion = count(chat_usage, "completion_tokens")
    return {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": count(chat_usage.get("prompt_tokens_details"), "cached_tokens"),
            "cache_write_tokens": 0,
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": count(
                chat_usage.get("completion_tokens_details"), "reasoning_tokens"
            )
        },
        "total_tokens": count(chat_usage, "total_tokens") or prompt + completion,
    }


def text_part(text: str) -> dict[str, Any]:
    """An output_text content part."""
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def refusal_part(refusal: str) -> dict[str, Any]:
    """A refusal content part."""
    return {"type": "refusal", "refusal": refusal}


def message_item(item_id: str, parts: list[dict[str, Any]], status: str) -> dict[str, Any]:
    """An assistant message output item."""
    return {
        "id": item_id,
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": parts,
    }


def function_call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str
) -> dict[str, Any]:
    """A function_call output item; call_id is the chat tool call's id."""
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # some providers answer with text parts
        return "".join(
            p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)
        )
    return ""


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _string(value: Any) -> str:
    return value if isinstance(value, str) else ""


def response_of_completion(shape: ResponseShape, completion: Any) -> dict[str, Any]:
    """A chat.completion (parsed JSON) as the response object: a message item with the text
    (and refusal), then a function_call item per tool call."""
    completion = _dict(completion)
    choices = completion.get("choices")
    choice = _dict(choices[0]) if isinstance(choices, list) and choices else {}
    message = _dict(choice.get("message"))
    reason = incomplete_reason(choice.get("finish_reason"))
    status = "incomplete" if reason else "completed"
    calls = [_dict(c) for c in message.get("tool_calls") or () if isinstance(c, dict)]
    parts = []
    text = _text(message.get("content"))
    refusal = _string(message.get("refusal"))
    if text or not (calls or refusal):
        parts.append(text_part(text))
    if refusal:
        parts.append(refusal_part(refusal))
    output = [message_item(new_id("msg"), parts, status)] if parts else []
    for call in calls:
        function = _dict(call.get("function"))
        output.append(
            function_call_item(
                new_id("fc"),
                _string(call.get("id")) or new_id("call"),
                _string(function.get("name")),
                _string(function.get("arguments")),
                status,
            )
        )
    return shape.response(status, output, usage_of(completion.get("usage")), reason=reason)
