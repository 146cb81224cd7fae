"""POST /v1/responses (OpenAI's Responses API), answered through chat completions.

The request becomes a chat completion (responses_request, responses_input); the chat answer
becomes a response object (responses_output) and a chat stream becomes the Responses event
stream (responses_stream). Errors keep OpenAI's shape, the same as chat completions'.

When the gateway stores responses (responses_storage), a request with previous_response_id
gets the stored conversation before its input (load), and an answer whose request did not say
`store: false` is stored once the client has it all (save), with the whole conversation.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

from llmproxy.common.contract import KEY_ID_HEADER, TENANT_HEADER
from llmproxy.router.apis.responses_input import output_messages
from llmproxy.router.apis.responses_output import ResponseShape, new_id, response_of_completion
from llmproxy.router.apis.responses_request import parse_responses_request
from llmproxy.router.apis.responses_storage import ResponseStorage
from llmproxy.router.apis.responses_stream import ResponseStreamWriter
from llmproxy.router.errors import RouterError
from llmproxy.router.stored_responses import StoredResponse


class ResponsesTranslation:
    """One Responses request as a chat completion, and its answers on the way back."""

    def __init__(
        self, raw: bytes, headers: Mapping[str, str], storage: ResponseStorage | None = None
    ) -> None:
        request = self._request = parse_responses_request(raw, storing=storage is not None)
        self.chat_body: dict[str, Any] = request.chat_body
        self._shape = ResponseShape(new_id("resp"), int(time.time()), request.model, request.echo)
        self._stream = ResponseStreamWriter(self._shape)
        self._storage = storage
        self._tenant = headers.get(TENANT_HEADER, "")
        self._key_id = headers.get(KEY_ID_HEADER, "")
        # The conversation so far as a follow-up continues it: no instructions.
        self._conversation = list(request.chat_body["messages"][request.input_at :])
        self._answered: dict[str, Any] | None = None  # the whole response, once answered

    async def load(self) -> None:
        """The stored conversation of previous_response_id before this request's input (after
        its instructions: the earlier turns' instructions are not carried over)."""
        previous = self._request.previous_response_id
        if previous is None or self._storage is None:
            return
        history = await self._storage.conversation(previous, self._tenant)
        self._conversation = [*history, *self._conversation]
        instructions = self.chat_body["messages"][: self._request.input_at]
        self.chat_body["messages"] = [*instructions, *self._conversation]

    async def save(self) -> None:
        """Store the answered response with the whole conversation, unless `store: false`."""
        if self._storage is None or not self._request.store or self._answered is None:
            return
        if self._answered["status"] not in ("completed", "incomplete"):
            return
        await self._storage.save(
            StoredResponse(
                id=self._shape.id,
                tenant=self._tenant,
                key_id=self._key_id,
                model=self._shape.model,
                messages=[*self._conversation, *output_messages(self._answered["output"])],
                response=self._answered,
            )
        )

    def answer(self, data: bytes) -> bytes:
        """A chat.completion JSON answer as the response object."""
        try:
            completion = json.loads(data)
        except ValueError:
            completion = None  # never from the router's providers; an empty answer then
        self._answered = response_of_completion(self._shape, completion)
        return json.dumps(self._answered).encode()

    def events(self, data: bytes) -> bytes:
        """Chat SSE events as Responses events."""
        events = self._stream.events(data)
        self._answered = self._stream.response
        return events

    def error_event(self, err: RouterError) -> bytes:
        """response.failed and an error event, continuing this stream's sequence numbers and
        response id."""
        return self._stream.failed(err)


class ResponsesApi:
    """The Responses API as an InboundApi (router/apis/base.py); storage None stores nothing
    (every answer says `store: false`, previous_response_id is refused)."""

    def __init__(self, storage: ResponseStorage | None = None) -> None:
        self.storage = storage

    def start(self, raw: bytes, headers: Mapping[str, str]) -> ResponsesTranslation:
        """Check and translate the request body (InvalidRequestError when it is not valid)."""
        return ResponsesTranslation(raw, headers, self.storage)

    def error_body(self, err: RouterError) -> bytes:
        """OpenAI's error body, as for chat completions."""
        return err.body()
