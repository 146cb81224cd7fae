"""What an inbound API gives the router: its request as a chat completion, and the way back.

The router answers every generating API with one flow (cache, in-flight sharing, failover,
usage, token reconciliation) run on an OpenAI chat completion body. An API other than chat
completions enters that flow through an InboundApi, which turns its request into a chat body
and its answers, streams and errors back into its own shapes. Cached answers stay in OpenAI's
format, so one cache entry serves every API that asks the same thing.

A translation may depend on state kept between requests (the Responses API's stored
conversations): `load` completes the chat body before the request enters the flow, and `save`
keeps what the answer added once the client has it all. Both are no-ops for stateless APIs, so
those cost nothing more; chat completions do not go through a translation at all.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from llmproxy.router.errors import RouterError


class Translation(Protocol):
    """One request of an inbound API, translated; it may keep state across a stream."""

    chat_body: dict[str, Any]
    """The request as a valid chat completion body (with `model`, `messages`, `stream`; a
    streamed one asks for usage, which the way back needs)."""

    async def load(self) -> None:
        """Complete chat_body from stored state the request points at, before the request is
        answered; raise RouterError (404, 503) when that state cannot be had."""

    async def save(self) -> None:
        """After the whole answer went out: keep what later requests may point at; never
        raises (a failure to keep it does not fail the answer)."""

    def answer(self, data: bytes) -> bytes:
        """An OpenAI chat.completion JSON answer as the API's answer body."""

    def events(self, data: bytes) -> bytes:
        """Whole SSE events of an OpenAI chat stream (one or more, usage and `[DONE]`
        included) as the API's SSE events, possibly none (b"")."""

    def error_event(self, err: RouterError) -> bytes:
        """The API's SSE error event(s) ending a stream that broke after its first event; they
        may continue the stream's own state (sequence numbers, ids)."""


class InboundApi(Protocol):
    """An inbound API's translation and error shape; one serves every request."""

    def start(self, raw: bytes, headers: Mapping[str, str]) -> Translation:
        """Translate a request body; raise RouterError (a 400 saying what is wrong) when it is
        not a valid request of the API or asks for what the gateway cannot translate."""

    def error_body(self, err: RouterError) -> bytes:
        """The API's error body for err (the HTTP status is err.status)."""
