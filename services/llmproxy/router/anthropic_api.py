"""The router's AnthropicService: POST /v1/messages, answered by the OpenAI servicer's one flow.

A Messages request is translated to a chat completion (apis/messages.py) and answered like any
other, through the cache, in-flight sharing, failover, usage accounting and token
reconciliation; its answers, streams and errors come back in Anthropic's shapes.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from google.api import httpbody_pb2

from llmproxy._gen.router.v1 import anthropic_pb2, anthropic_pb2_grpc
from llmproxy.common.grpc_types import Context
from llmproxy.router.apis.base import InboundApi
from llmproxy.router.apis.messages import MessagesApi
from llmproxy.router.service import OpenAIServicer


class AnthropicServicer(anthropic_pb2_grpc.AnthropicServiceServicer):
    """Anthropic's Messages API over the OpenAI servicer."""

    def __init__(self, openai_api: OpenAIServicer, api: InboundApi | None = None) -> None:
        self._openai = openai_api
        self._api = api or MessagesApi()

    async def CreateMessage(
        self, request: anthropic_pb2.CreateMessageRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """Answer with one JSON message, or with Anthropic's server-sent events."""
        async for reply in self._openai.answer_translated(self._api, request.body.data, context):
            yield reply
