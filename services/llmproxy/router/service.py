"""The router's gRPC servicers: the OpenAI-compatible API and the control API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from google.api import httpbody_pb2

from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc, router_pb2, router_pb2_grpc
from llmproxy.common.grpc_types import Context
from llmproxy.router.errors import ModelNotFoundError, ProviderError, RouterError
from llmproxy.router.providers import ProviderCallError, ProviderClient
from llmproxy.router.requests import parse_chat_request
from llmproxy.router.settings import ModelTarget

log = logging.getLogger(__name__)

# Envoy's Lua filter turns this response header into the HTTP status: the transcoder would
# otherwise answer 200 for every OK gRPC response, and a gRPC error status would lose
# OpenAI's error body.
STATUS_HEADER = "x-llmproxy-status"
PROVIDER_HEADER = "x-llmproxy-provider"
JSON = "application/json"
SSE = "text/event-stream"


def _http_body(content_type: str, data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


class OpenAIServicer(openai_pb2_grpc.OpenAIServiceServicer):
    """Answers OpenAI-format requests by calling the model's provider targets in order."""

    def __init__(
        self, routes: Mapping[str, Sequence[ModelTarget]], clients: Mapping[str, ProviderClient]
    ) -> None:
        self._routes = routes
        self._clients = clients

    def _targets(self, model: str) -> Sequence[ModelTarget]:
        targets = self._routes.get(model)
        if not targets:
            raise ModelNotFoundError(model)
        return targets

    async def CreateChatCompletion(
        self,
        request: openai_pb2.CreateChatCompletionRequest,
        context: Context,
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """Answer with one JSON body, or with the provider's SSE chunks as they arrive."""
        try:
            body = parse_chat_request(request.body.data)
            targets = self._targets(body["model"])
            if body.get("stream"):
                provider, chunks = await self._open_stream(targets, body)
            else:
                provider, answer = await self._complete(targets, body)
        except RouterError as err:
            log.info("request refused", extra={"status": err.status, "reason": err.message})
            await context.send_initial_metadata(((STATUS_HEADER, str(err.status)),))
            yield _http_body(JSON, err.body())
            return
        await context.send_initial_metadata(((PROVIDER_HEADER, provider),))
        if not body.get("stream"):
            yield _http_body(JSON, answer)
            return
        try:
            async for chunk in chunks:
                yield _http_body(SSE, chunk)
        except ProviderCallError as err:
            # Headers are gone already: tell the client in the stream, as OpenAI does.
            log.warning("stream broke", extra={"provider": provider, "reason": str(err)})
            yield _http_body(SSE, b"data: " + ProviderError(str(err), err.status).body() + b"\n\n")

    async def _complete(
        self, targets: Sequence[ModelTarget], body: dict[str, Any]
    ) -> tuple[str, bytes]:
        last: ProviderCallError | None = None
        for target in targets:
            client = self._clients[target.provider]
            try:
                return target.provider, await client.chat({**body, "model": target.model})
            except ProviderCallError as err:
                last = self._note_failure(target, err)
        raise self._exhausted(last)

    async def _open_stream(
        self, targets: Sequence[ModelTarget], body: dict[str, Any]
    ) -> tuple[str, AsyncIterator[bytes]]:
        last: ProviderCallError | None = None
        for target in targets:
            client = self._clients[target.provider]
            try:
                chunks = await client.open_stream({**body, "model": target.model})
            except ProviderCallError as err:
                last = self._note_failure(target, err)
            else:
                return target.provider, chunks
        raise self._exhausted(last)

    @staticmethod
    def _note_failure(target: ModelTarget, err: ProviderCallError) -> ProviderCallError:
        log.warning(
            "provider call failed",
            extra={"provider": target.provider, "status": err.status, "reason": str(err)},
        )
        if not err.retryable:
            # The provider judged the request itself; pass its status and body through.
            raise _PassThrough(err)
        return err

    @staticmethod
    def _exhausted(last: ProviderCallError | None) -> RouterError:
        status = last.status if last and last.status in (503, 504) else 502
        return ProviderError(f"No provider could answer: {last}", status)


class _PassThrough(RouterError):
    """A provider's 4xx answer about the request, relayed as the provider sent it."""

    def __init__(self, err: ProviderCallError) -> None:
        super().__init__(str(err))
        self.status = err.status
        self._raw = err.body

    def body(self) -> bytes:
        return self._raw or super().body()


class RouterControlServicer(router_pb2_grpc.RouterServiceServicer):
    """The router's control API for operators."""

    def __init__(self, routes: Mapping[str, Sequence[ModelTarget]]) -> None:
        self._routes = routes

    async def ListModels(
        self, request: router_pb2.ListModelsRequest, context: Context
    ) -> router_pb2.ListModelsResponse:
        """List every served model and its targets."""
        return router_pb2.ListModelsResponse(
            models=[
                router_pb2.Model(
                    name=name,
                    targets=[
                        router_pb2.ModelTarget(provider=t.provider, upstream_model=t.model)
                        for t in targets
                    ],
                )
                for name, targets in self._routes.items()
            ]
        )
