"""An OpenAI chat stream as Anthropic's stream of named events.

Anthropic's sequence: `message_start`, then per content block `content_block_start`, its
deltas (`text_delta`, or `input_json_delta` for a tool_use block's input) and
`content_block_stop`, then `message_delta` (stop reason and usage) and `message_stop`. Text
opens a text block, each tool call a tool_use block of its own, in the order they come, with
indices counted across all blocks; a block is stopped when the next one starts.

Usage: a chat stream tells its counts only in its last chunk, so `message_start` carries zero
input and output tokens and `message_delta` the real counts, input tokens included, which the
SDKs' accumulated message takes over. A stream with neither text nor tool calls still gets an
empty text block, as the whole answer does. SSE comments (keep-alives) pass through; a
provider's error event becomes Anthropic's `error` event.
"""

from __future__ import annotations

from typing import Any

from llmproxy.common import anthropic_errors
from llmproxy.router.apis.messages_answer import (
    as_object,
    message_id,
    stop_reason,
    tool_use_id,
    usage,
)
from llmproxy.router.providers import sse


def event(kind: str, payload: dict[str, Any]) -> bytes:
    """One Anthropic server-sent event: its type named on the event line and in the data."""
    return sse.encode_named(kind, {"type": kind, **payload})


def error_event(status: int, message: str) -> bytes:
    """Anthropic's `error` event, carrying the error body of status."""
    return event("error", {"error": anthropic_errors.error_object(status, message)["error"]})


class StreamWriter:
    """Turns the events of one chat stream into Anthropic's, keeping count of the blocks."""

    def __init__(self) -> None:
        self._started = False
        self._done = False
        self._blocks = 0  # blocks started so far: the next block's index
        self._open: str | None = None  # the type of the block not yet stopped
        self._tools: dict[int, int] = {}  # chat tool call index -> block index
        self._stop_reason = "end_turn"
        self._usage: Any = None

    def events(self, data: bytes) -> bytes:
        """Whole chat SSE events (one or more) as Anthropic events (possibly none)."""
        out: list[bytes] = []
        for chunk in sse.split(data):
            if self._done:
                break
            payload = sse.data_json(chunk)
            if isinstance(payload, dict):
                out.extend(self._payload(payload))
            elif sse.field(chunk, b"data") == b"[DONE]":
                out.extend(self._finish())
            elif chunk.startswith(b":"):
                out.append(chunk)  # a keep-alive comment: harmless to every SSE reader
        return b"".join(out)

    def _payload(self, payload: dict[str, Any]) -> list[bytes]:
        error = payload.get("error")
        if error is not None:
            self._done = True
            message = error.get("message") if isinstance(error, dict) else None
            return [error_event(502, message if isinstance(message, str) else str(error))]
        out = self._start(payload)
        if payload.get("usage"):
            self._usage = payload["usage"]
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else []:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = as_object(choice.get("delta"))
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.extend(self._text(text))
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else []:
                if isinstance(call, dict):
                    out.extend(self._tool(call))
            if choice.get("finish_reason"):
                self._stop_reason = stop_reason(choice["finish_reason"])
        return out

    def _start(self, payload: dict[str, Any]) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(payload.get("id")),
            "type": "message",
            "role": "assistant",
            "model": payload.get("model") or "",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return [event("message_start", {"message": message})]

    def _begin(self, kind: str, block: dict[str, Any]) -> list[bytes]:
        out = self._stop()
        out.append(event("content_block_start", {"index": self._blocks, "content_block": block}))
        self._blocks += 1
        self._open = kind
        return out

    def _stop(self) -> list[bytes]:
        if self._open is None:
            return []
        self._open = None
        return [event("content_block_stop", {"index": self._blocks - 1})]

    def _text(self, text: str) -> list[bytes]:
        out = [] if self._open == "text" else self._begin("text", {"type": "text", "text": ""})
        delta = {"type": "text_delta", "text": text}
        out.append(event("content_block_delta", {"index": self._blocks - 1, "delta": delta}))
        return out

    def _tool(self, call: dict[str, Any]) -> list[bytes]:
        index = call.get("index")
        position = index if isinstance(index, int) else 0
        function = as_object(call.get("function"))
        out: list[bytes] = []
        if position not in self._tools:
            block: dict[str, Any] = {
                "type": "tool_use",
                "id": tool_use_id(call.get("id")),
                "name": function.get("name") or "",
                "input": {},
            }
            out.extend(self._begin("tool_use", block))
            self._tools[position] = self._blocks - 1
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            delta = {"type": "input_json_delta", "partial_json": arguments}
            block_index = self._tools[position]
            out.append(event("content_block_delta", {"index": block_index, "delta": delta}))
        return out

    def _finish(self) -> list[bytes]:
        self._done = True
        out = self._start({})
        if self._blocks == 0:
            out.extend(self._begin("text", {"type": "text", "text": ""}))
        out.extend(self._stop())
        delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
        out.append(event("message_delta", {"delta": delta, "usage": usage(self._usage)}))
        out.append(event("message_stop", {}))
        return out
