"""The typed gRPC ChatService, answered by the OpenAI servicer it wraps.

Requests become OpenAI JSON, go through the same cache, failover and accounting, and the
OpenAI answers come back as typed messages; HTTP error statuses become gRPC status codes, since
here there is no transcoder in the way.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from typing import Any, NoReturn, cast

import grpc
from google.api import httpbody_pb2

from llmproxy._gen.router.v1 import chat_pb2, chat_pb2_grpc, openai_pb2
from llmproxy.common.contract import STATUS_HEADER
from llmproxy.common.grpc_types import Context
from llmproxy.router.providers import sse
from llmproxy.router.service import OpenAIServicer

GRPC_CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}


class _Captured:
    """A context that keeps the initial metadata back until the answer is known good."""

    def __init__(self, context: Context) -> None:
        self._context = context
        self.metadata: dict[str, str] = {}
        self.forwarded = False

    def as_context(self) -> Context:
        """Typed as the grpc context: it has the two methods the OpenAI servicer uses."""
        return cast(Context, self)

    def invocation_metadata(self) -> Any:
        return self._context.invocation_metadata()

    async def send_initial_metadata(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self.metadata.update(metadata)

    async def forward(self) -> None:
        """Abort with the mapped code if the answer is an error, else pass the metadata on."""
        if self.forwarded:
            return
        self.forwarded = True
        if STATUS_HEADER in self.metadata:
            return
        await self._context.send_initial_metadata(tuple(self.metadata.items()))


async def _abort(context: Context, status: int, body: bytes) -> NoReturn:
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = body.decode(errors="replace")
    await context.abort(GRPC_CODES.get(status, grpc.StatusCode.UNKNOWN), message)


def _chat_body(request: chat_pb2.ChatRequest) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [{"role": m.role, "content": m.content} for m in request.messages],
    }
    for name in ("temperature", "top_p", "max_tokens", "seed"):
        if request.HasField(name):
            body[name] = getattr(request, name)
    if request.stop:
        body["stop"] = list(request.stop)
    return body


def _usage(raw: Mapping[str, Any] | None) -> chat_pb2.Usage | None:
    if not raw:
        return None
    return chat_pb2.Usage(
        prompt_tokens=raw.get("prompt_tokens", 0),
        completion_tokens=raw.get("completion_tokens", 0),
        total_tokens=raw.get("total_tokens", 0),
    )


def _http(body: dict[str, Any]) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json", data=json.dumps(body).encode())


class ChatServicer(chat_pb2_grpc.ChatServiceServicer):
    """Typed chat and embeddings over the OpenAI servicer."""

    def __init__(self, openai_api: OpenAIServicer) -> None:
        self._openai = openai_api

    async def Chat(self, request: chat_pb2.ChatRequest, context: Context) -> chat_pb2.ChatResponse:
        """One completion."""
        captured = _Captured(context)
        http = openai_pb2.CreateChatCompletionRequest(body=_http(_chat_body(request)))
        replies = [r async for r in self._openai.CreateChatCompletion(http, captured.as_context())]
        await captured.forward()
        if STATUS_HEADER in captured.metadata:
            await _abort(context, int(captured.metadata[STATUS_HEADER]), replies[0].data)
        answer = json.loads(replies[0].data)
        choice = answer["choices"][0]
        return chat_pb2.ChatResponse(
            id=answer.get("id", ""),
            model=answer.get("model", ""),
            content=choice.get("message", {}).get("content") or "",
            finish_reason=choice.get("finish_reason") or "",
            usage=_usage(answer.get("usage")),
        )

    async def StreamChat(
        self, request: chat_pb2.StreamChatRequest, context: Context
    ) -> AsyncIterator[chat_pb2.StreamChatResponse]:
        """Text deltas as the provider sends them."""
        body = {**_chat_body(request.chat), "stream": True}
        if request.include_usage:
            body["stream_options"] = {"include_usage": True}
        captured = _Captured(context)
        http = openai_pb2.CreateChatCompletionRequest(body=_http(body))
        async for reply in self._openai.CreateChatCompletion(http, captured.as_context()):
            await captured.forward()
            if STATUS_HEADER in captured.metadata:
                await _abort(context, int(captured.metadata[STATUS_HEADER]), reply.data)
            for event in sse.split(reply.data):  # events that arrived together come as one
                payload = sse.data_json(event)
                if not isinstance(payload, dict):
                    continue  # keep-alive comments and [DONE]
                if "error" in payload:
                    await context.abort(grpc.StatusCode.UNAVAILABLE, payload["error"]["message"])
                choices = payload.get("choices") or [{}]
                yield chat_pb2.StreamChatResponse(
                    delta=choices[0].get("delta", {}).get("content") or "",
                    finish_reason=choices[0].get("finish_reason") or "",
                    usage=_usage(payload.get("usage")),
                )

    async def Embed(
        self, request: chat_pb2.EmbedRequest, context: Context
    ) -> chat_pb2.EmbedResponse:
        """One vector per input."""
        body: dict[str, Any] = {"model": request.model, "input": list(request.input)}
        if request.HasField("dimensions"):
            body["dimensions"] = request.dimensions
        captured = _Captured(context)
        http = openai_pb2.CreateEmbeddingRequest(body=_http(body))
        reply = await self._openai.CreateEmbedding(http, captured.as_context())
        await captured.forward()
        if STATUS_HEADER in captured.metadata:
            await _abort(context, int(captured.metadata[STATUS_HEADER]), reply.data)
        answer = json.loads(reply.data)
        return chat_pb2.EmbedResponse(
            model=answer.get("model", ""),
            embeddings=[
                chat_pb2.Embedding(index=item.get("index", i), values=item["embedding"])
                for i, item in enumerate(answer.get("data", []))
            ],
            usage=_usage(answer.get("usage")),
        )
