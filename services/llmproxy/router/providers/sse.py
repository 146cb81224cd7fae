"""Server-sent events: splitting a byte stream into whole events, and writing them."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

DONE = b"data: [DONE]\n\n"


async def events(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """Whole events (ending with a blank line) from chunks cut anywhere.

    Only a partial event is ever held back, so nothing is buffered across events.
    """
    pending = b""
    async for chunk in chunks:
        pending += chunk.replace(b"\r\n", b"\n")
        while b"\n\n" in pending:
            event, pending = pending.split(b"\n\n", 1)
            yield event + b"\n\n"
    if pending.strip():
        yield pending.rstrip(b"\n") + b"\n\n"


def split(data: bytes) -> list[bytes]:
    """The whole events in data (one or more, as the router relays them), each with its
    blank line."""
    return [event + b"\n\n" for event in data.split(b"\n\n") if event]


def field(event: bytes, name: bytes) -> bytes | None:
    """The value of the first `name:` line of an event, or None."""
    for line in event.split(b"\n"):
        if line.startswith(name + b":"):
            return line[len(name) + 1 :].strip()
    return None


def data_json(event: bytes) -> Any:
    """The JSON in an event's data line, or None (comments, [DONE], non-JSON)."""
    data = field(event, b"data")
    if not data or data == b"[DONE]":
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


def encode(payload: Any) -> bytes:
    """One `data:` event carrying payload as compact JSON."""
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def encode_named(kind: str, payload: Any) -> bytes:
    """One event named kind on its `event:` line (as Anthropic's and the Responses API's
    streams name theirs), carrying payload as compact JSON."""
    return b"event: " + kind.encode() + b"\n" + encode(payload)
