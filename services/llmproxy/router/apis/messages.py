"""Anthropic's Messages API (POST /v1/messages) as an InboundApi of the router.

Requests become chat completion bodies (messages_request.py), answers Anthropic messages
(messages_answer.py), streams Anthropic's named events (messages_stream.py), errors Anthropic's
error body with the type of their status (common.anthropic_errors).

The `anthropic-version` header is required, as Anthropic requires it: the anthropic SDKs send
it on every request (and so does Claude Code, which is built on them). Any version is accepted,
since the gateway answers every version alike; `anthropic-beta` is not looked at, and the body
fields of beta features are refused by name like every field the gateway cannot translate.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from llmproxy.common import anthropic_errors
from llmproxy.router.apis.anthropic_models import VERSION_HEADER, wants_anthropic
from llmproxy.router.apis.messages_answer import answer_body
from llmproxy.router.apis.messages_request import to_chat_body
from llmproxy.router.apis.messages_stream import StreamWriter, error_event
from llmproxy.router.errors import InvalidRequestError, RouterError, UpstreamRejection
from llmproxy.router.json_body import load_object


class MessagesTranslation:
    """One Messages request as a chat completion, and its answer or stream on the way back."""

    def __init__(self, chat_body: dict[str, Any]) -> None:
        self.chat_body = chat_body
        self._stream = StreamWriter()

    async def load(self) -> None:
        """Nothing to load: a Messages request carries its whole conversation."""

    async def save(self) -> None:
        """Nothing to keep: Anthropic's API stores nothing."""

    def answer(self, data: bytes) -> bytes:
        """A chat.completion body as an Anthropic message body."""
        return answer_body(data)

    def events(self, data: bytes) -> bytes:
        """Chat SSE events as Anthropic's events."""
        return self._stream.events(data)

    def error_event(self, err: RouterError) -> bytes:
        """Anthropic's `error` event, for a stream that broke after it began."""
        return error_event(err.status, _message(err))


def _message(err: RouterError) -> str:
    """What the client is told: a provider's own refusal in its words, when it gave some."""
    if isinstance(err, UpstreamRejection):
        try:
            found = json.loads(err.body())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            found = None
        if isinstance(found, str) and found:
            return found
    return err.message


class MessagesApi:
    """The InboundApi of POST /v1/messages."""

    def start(self, raw: bytes, headers: Mapping[str, str]) -> MessagesTranslation:
        """Check the version header and translate the body; a 400 naming what is wrong."""
        if not wants_anthropic(headers):
            raise InvalidRequestError(f"{VERSION_HEADER}: header is required")
        return MessagesTranslation(to_chat_body(load_object(raw)))

    def error_body(self, err: RouterError) -> bytes:
        """Anthropic's error body for err."""
        return anthropic_errors.error_body(err.status, _message(err))
