"""POST /v1/responses (OpenAI's Responses API), answered through chat completions.

The request becomes a chat completion (responses_request, responses_input); the chat answer
becomes a response object (responses_output) and a chat stream becomes the Responses event
stream (responses_stream). Errors keep OpenAI's shape, the same as chat completions'.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from llmproxy.router.apis.responses_output import ResponseShape, new_id, response_of_completion
from llmproxy.router.apis.responses_request import parse_responses_request
from llmproxy.router.apis.responses_stream import ResponseStreamWriter
from llmproxy.router.errors import RouterError


class ResponsesTranslation:
    """One Responses request as a chat completion, and its answers on the way back."""

    def __init__(self, raw: bytes) -> None:
        request = parse_responses_request(raw)
        self.chat_body: dict[str, Any] = request.chat_body
        self._shape = ResponseShape(new_id("resp"), int(time.time()), request.model, request.echo)
        self._stream = ResponseStreamWriter(self._shape)

    def answer(self, data: bytes) -> bytes:
        """A chat.completion JSON answer as the response object."""
        try:
            completion = json.loads(data)
        except ValueError:
            completion = None  # never from the router's providers; an empty answer then
        return json.dumps(response_of_completion(self._shape, completion)).encode()

    def events(self, data: bytes) -> bytes:
        """Chat SSE events as Responses events."""
        return self._stream.events(data)

    def error_event(self, err: RouterError) -> bytes:
        """response.failed and an error event, continuing this stream's sequence numbers and
        response id."""
        return self._stream.failed(err)


class ResponsesApi:
    """The Responses API as an InboundApi (router/apis/base.py)."""

    def start(self, raw: bytes, headers: Mapping[str, str]) -> ResponsesTranslation:
        """Check and translate the request body (InvalidRequestError when it is not valid)."""
        return ResponsesTranslation(raw)

    def error_body(self, err: RouterError) -> bytes:
        """OpenAI's error body, as for chat completions."""
        return err.body()
