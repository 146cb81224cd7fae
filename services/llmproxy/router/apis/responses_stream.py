"""A chat completion stream as the Responses API's typed event stream.

Events go out as `event: <type>` plus `data: <json>` with a `sequence_number` counting from 0:
response.created and response.in_progress first; for the text, response.output_item.added (a
message), response.content_part.added and response.output_text.delta events; for each tool
call, response.output_item.added (a function_call) and response.function_call_arguments.delta
events. At chat's `[DONE]` every item is closed (.done events, in output order) and
response.completed (or response.incomplete, when the answer was cut) carries the whole
response with its usage. Items stay open until the end because chat streams may interleave
text and tool call deltas.

A stream that breaks ends with response.failed and then an `error` event whose data also has
OpenAI's nested `error` object, which the openai SDKs raise as an APIError.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmproxy.router.apis.responses_output import (
    ResponseShape,
    function_call_item,
    incomplete_reason,
    message_item,
    new_id,
    refusal_part,
    text_part,
    usage_of,
)
from llmproxy.router.errors import RouterError
from llmproxy.router.json_body import is_int
from llmproxy.router.providers import sse

# Per content part kind: its delta and done events, and the done event's text field.
_PART_EVENTS = {
    "output_text": ("response.output_text.delta", "response.output_text.done", "text"),
    "refusal": ("response.refusal.delta", "response.refusal.done", "refusal"),
}


@dataclass
class _Part:
    kind: str  # output_text or refusal
    index: int
    text: str = ""

    def body(self) -> dict[str, Any]:
        return text_part(self.text) if self.kind == "output_text" else refusal_part(self.text)


@dataclass
class _Message:
    item_id: str
    output_index: int
    parts: dict[str, _Part] = field(default_factory=dict)

    def item(self, status: str) -> dict[str, Any]:
        return message_item(self.item_id, [p.body() for p in self.parts.values()], status)


@dataclass
class _Call:
    item_id: str
    output_index: int
    call_id: str
    name: str
    arguments: str = ""

    def item(self, status: str) -> dict[str, Any]:
        return function_call_item(self.item_id, self.call_id, self.name, self.arguments, status)


def _int(value: Any, default: int) -> int:
    return value if is_int(value) else default


class ResponseStreamWriter:
    """Turns one request's chat stream events into Responses events, keeping their order."""

    def __init__(self, shape: ResponseShape) -> None:
        self._shape = shape
        self._sequence = 0
        self._started = False
        self._finished = False
        self._message: _Message | None = None
        self._calls: dict[int, _Call] = {}
        self._items = 0
        self._finish_reason: Any = None
        self._usage: Any = None
        self.response: dict[str, Any] | None = None
        """The whole response once the stream ended (completed, incomplete or failed)."""

    def events(self, data: bytes) -> bytes:
        """Whole chat SSE events as Responses events (b"" when they add nothing)."""
        out: list[bytes] = []
        for event in sse.split(data):
            if self._finished:
                break
            if sse.field(event, b"data") == b"[DONE]":
                out += self._finish()
                continue
            payload = sse.data_json(event)
            if not isinstance(payload, dict):
                continue  # comments, keep-alives
            error = payload.get("error")
            if error is not None and not payload.get("choices"):
                # A provider's error inside its stream, relayed as OpenAI sends it.
                message = error.get("message") if isinstance(error, dict) else None
                out += self._fail(str(message or "The provider stream failed."), "server_error")
                continue
            out += self._chunk(payload)
        return b"".join(out)

    def failed(self, err: RouterError) -> bytes:
        """The end of a stream that broke with err: response.failed, then an error event."""
        code = "rate_limit_exceeded" if err.status == 429 else "server_error"
        return b"".join(self._fail(err.message, code, err.code, err.error_type))

    # --- events ----------------------------------------------------------------------------

    def _emit(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, **fields, "sequence_number": self._sequence}
        self._sequence += 1
        return sse.encode_named(kind, payload)

    def _start(self) -> list[bytes]:
        if self._started:
            return []
        self._started = True
        response = self._shape.response("in_progress", [])
        return [
            self._emit("response.created", response=response),
            self._emit("response.in_progress", response=response),
        ]

    def _chunk(self, payload: dict[str, Any]) -> list[bytes]:
        out = self._start()
        choices = payload.get("choices")
        for choice in choices if isinstance(choices, list) else ():
            if not isinstance(choice, dict) or _int(choice.get("index"), 0) != 0:
                continue  # one answer per request: the router never asks for n > 1
            delta = choice.get("delta")
            delta = delta if isinstance(delta, dict) else {}
            for kind, name in (("output_text", "content"), ("refusal", "refusal")):
                text = delta.get(name)
                if isinstance(text, str) and text:
                    out += self._text(kind, text)
            calls = delta.get("tool_calls")
            for call in calls if isinstance(calls, list) else ():
                if isinstance(call, dict):
                    out += self._tool_call(call)
            if choice.get("finish_reason"):
                self._finish_reason = choice["finish_reason"]
        if isinstance(payload.get("usage"), dict):
            self._usage = payload["usage"]
        return out

    def _next_index(self) -> int:
        self._items += 1
        return self._items - 1

    def _text(self, kind: str, delta: str) -> list[bytes]:
        out = []
        message = self._message
        if message is None:
            message = self._message = _Message(new_id("msg"), self._next_index())
            out.append(
                self._emit(
                    "response.output_item.added",
                    output_index=message.output_index,
                    item=message.item("in_progress"),
                )
            )
        part = message.parts.get(kind)
        if part is None:
            part = message.parts[kind] = _Part(kind, len(message.parts))
            out.append(
                self._emit(
                    "response.content_part.added",
                    item_id=message.item_id,
                    output_index=message.output_index,
                    content_index=part.index,
                    part=part.body(),
                )
            )
        part.text += delta
        extra: dict[str, Any] = {"logprobs": []} if kind == "output_text" else {}
        out.append(
            self._emit(
                _PART_EVENTS[kind][0],
                item_id=message.item_id,
                output_index=message.output_index,
                content_index=part.index,
                delta=delta,
                **extra,
            )
        )
        return out

    def _tool_call(self, delta: dict[str, Any]) -> list[bytes]:
        out = []
        index = _int(delta.get("index"), 0)
        function = delta.get("function")
        function = function if isinstance(function, dict) else {}
        name = function.get("name")
        call = self._calls.get(index)
        if call is None:
            call_id = delta.get("id")
            call = self._calls[index] = _Call(
                new_id("fc"),
                self._next_index(),
                call_id if isinstance(call_id, str) and call_id else new_id("call"),
                name if isinstance(name, str) else "",
            )
            out.append(
                self._emit(
                    "response.output_item.added",
                    output_index=call.output_index,
                    item=call.item("in_progress"),
                )
            )
        elif isinstance(name, str) and name and not call.name:
            call.name = name
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            call.arguments += arguments
            out.append(
                self._emit(
                    "response.function_call_arguments.delta",
                    item_id=call.item_id,
                    output_index=call.output_index,
                    delta=arguments,
                )
            )
        return out

    def _items_in_order(self) -> list[_Message | _Call]:
        items: list[_Message | _Call] = [*self._calls.values()]
        if self._message is not None:
            items.append(self._message)
        return sorted(items, key=lambda item: item.output_index)

    def _close(self, item: _Message | _Call, status: str) -> list[bytes]:
        out = []
        where = {"item_id": item.item_id, "output_index": item.output_index}
        if isinstance(item, _Message):
            for part in item.parts.values():
                _, done, text_field = _PART_EVENTS[part.kind]
                extra: dict[str, Any] = {"logprobs": []} if part.kind == "output_text" else {}
                fields = {text_field: part.text, **extra}
                out.append(self._emit(done, **where, content_index=part.index, **fields))
                out.append(
                    self._emit(
                        "response.content_part.done",
                        **where,
                        content_index=part.index,
                        part=part.body(),
                    )
                )
        else:
            out.append(
                self._emit(
                    "response.function_call_arguments.done", **where, arguments=item.arguments
                )
            )
        out.append(
            self._emit(
                "response.output_item.done",
                output_index=item.output_index,
                item=item.item(status),
            )
        )
        return out

    def _finish(self) -> list[bytes]:
        out = self._start()
        reason = incomplete_reason(self._finish_reason)
        status = "incomplete" if reason else "completed"
        items = self._items_in_order()
        for item in items:
            out += self._close(item, status)
        output = [item.item(status) for item in items]
        response = self._shape.response(status, output, usage_of(self._usage), reason=reason)
        self.response = response
        kind = "response.completed" if status == "completed" else "response.incomplete"
        out.append(self._emit(kind, response=response))
        self._finished = True
        return out

    def _fail(
        self,
        message: str,
        code: str,
        error_code: str | None = None,
        error_type: str = "server_error",
    ) -> list[bytes]:
        if self._finished:
            return []
        out = self._start()
        output = [item.item("incomplete") for item in self._items_in_order()]
        error = {"code": code, "message": message}
        response = self._shape.response("failed", output, usage_of(self._usage), error=error)
        self.response = response
        out.append(self._emit("response.failed", response=response))
        detail = {"type": error_type, "code": error_code or code, "message": message, "param": None}
        out.append(
            self._emit("error", code=error_code or code, message=message, param=None, error=detail)
        )
        self._finished = True
        return out
