"""The router's OpenAI-compatible servicer: validation, cache, in-flight sharing, failover.

Every answer, error or not, is an OK gRPC response carrying HTTP bodies: client errors travel as
an OpenAI error body plus the x-llmproxy-status header, which Envoy's Lua filter turns into the
HTTP status (the transcoder would answer 200 for any OK response and replace the body of any
error status with its own). A request is prepared here, its flight filled by produce.py, settled
by settle.py, and relayed to the client by relay.py.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any

from google.api import httpbody_pb2
from opentelemetry import trace

from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc
from llmproxy.common.contract import KEY_ID_HEADER, TENANT_HEADER, USER_HEADER
from llmproxy.common.grpc_types import Context
from llmproxy.common.usage import Identity, UsageStore
from llmproxy.router.apis import anthropic_models
from llmproxy.router.apis.base import InboundApi, Translation
from llmproxy.router.apis.messages import MessagesApi
from llmproxy.router.apis.responses import ResponsesApi
from llmproxy.router.apis.responses_storage import ResponseNotFoundError, ResponseStorage
from llmproxy.router.cache import keys, policy
from llmproxy.router.cache.flights import Flight, Flights
from llmproxy.router.cache.stats import CacheStats
from llmproxy.router.cache.store import ResponseCache
from llmproxy.router.calls import Failover
from llmproxy.router.errors import ModelNotFoundError, RouterError
from llmproxy.router.prepared import JSON, PreparedRequest
from llmproxy.router.produce import Producer
from llmproxy.router.providers import ProviderClient
from llmproxy.router.relay import as_router_error, http_body, refuse, relay, replay
from llmproxy.router.requests import (
    parse_chat_request,
    parse_completions_request,
    parse_embeddings_request,
)
from llmproxy.router.settings import ModelSettings, RouterSettings
from llmproxy.router.settle import Settler, TokenReconciler
from llmproxy.router.stored_responses import ResponseStore

__all__ = ["MESSAGES_API", "WARMING_HEADERS", "OpenAIServicer", "TokenReconciler"]

# No-op unless the process configured tracing (llmproxy.common.tracing).
tracer = trace.get_tracer(__name__)

# What the router records usage under, from the headers authz set.
USAGE_IDENTITY = (TENANT_HEADER, USER_HEADER, KEY_ID_HEADER)
MESSAGES_API = MessagesApi()
# Warming caches every request it is given, sampled or not, under its own identity.
WARMING_HEADERS = {policy.CACHE_HEADER: "force", **dict.fromkeys(USAGE_IDENTITY, "warming")}


def _headers(context: Context) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def _identity(headers: Mapping[str, str]) -> Identity:
    tenant, user, key_id = (headers.get(h, "unknown") for h in USAGE_IDENTITY)
    return Identity(tenant=tenant, user=user, key_id=key_id)


class OpenAIServicer(openai_pb2_grpc.OpenAIServiceServicer):
    """Answers OpenAI-format requests from the cache or the model's providers."""

    def __init__(
        self,
        models: Sequence[ModelSettings],
        clients: Mapping[str, ProviderClient],
        settings: RouterSettings,
        *,
        cache: ResponseCache | None = None,
        usage: UsageStore | None = None,
        reconciler: TokenReconciler | None = None,
        stats: CacheStats | None = None,
        failover: Failover | None = None,
        responses: ResponseStore | None = None,
    ) -> None:
        self._models = models
        self._by_name = {n: m for m in models for n in (m.name, *m.aliases)}
        self._settings = settings
        self._cache = cache
        self._stats = stats or CacheStats()
        self._flights = Flights()
        settler = Settler(self._stats, cache, usage, reconciler, settings.cache.max_entry_bytes)
        producer = Producer(failover or Failover(clients, settings.failover), settler.settle)
        # Bound once: each request calls these as it would its own methods.
        self._produce = producer.produce
        self._count_hit = settler.count_hit
        self._reconcile = settler.reconcile
        # Stored responses (POST /v1/responses' previous_response_id) need a store, and may
        # be turned off for the whole gateway.
        storage = None
        if responses is not None and settings.responses.store:
            storage = ResponseStorage(responses, settings.responses.store_ttl_s)
        self._responses = ResponsesApi(storage)

    # --- RPCs ------------------------------------------------------------------------------

    async def CreateChatCompletion(
        self, request: openai_pb2.CreateChatCompletionRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """Answer with one JSON body, or with SSE chunks as the provider sends them."""
        try:
            call = self._prepare("chat", parse_chat_request(request.body.data), _headers(context))
        except RouterError as err:
            yield await refuse(context, err)
            return
        async for reply in self._answer(call, context):
            yield reply

    async def CreateEmbedding(
        self, request: openai_pb2.CreateEmbeddingRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """Answer POST /v1/embeddings (cached by default: embeddings are deterministic)."""
        try:
            call = self._prepare(
                "embeddings", parse_embeddings_request(request.body.data), _headers(context)
            )
        except RouterError as err:
            return await refuse(context, err)
        replies = [reply async for reply in self._answer(call, context)]
        return replies[0]

    async def CreateResponse(
        self, request: openai_pb2.CreateResponseRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """POST /v1/responses: OpenAI's Responses API, answered as a chat completion."""
        async for reply in self.answer_translated(self._responses, request.body.data, context):
            yield reply

    async def GetResponse(
        self, request: openai_pb2.GetResponseRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """GET /v1/responses/{response_id}: a stored response of the caller's tenant."""
        return await self._stored(context, request.response_id, ResponseStorage.retrieve)

    async def DeleteResponse(
        self, request: openai_pb2.DeleteResponseRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """DELETE /v1/responses/{response_id}: forget a stored response of the caller's
        tenant."""
        return await self._stored(context, request.response_id, ResponseStorage.delete)

    async def CreateCompletion(
        self, request: openai_pb2.CreateCompletionRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """Answer POST /v1/completions (legacy text completions) from the model's
        OpenAI-compatible targets, with one JSON body or SSE chunks, as chat is answered."""
        try:
            body = parse_completions_request(request.body.data)
            call = self._prepare("completions", body, _headers(context))
        except RouterError as err:
            yield await refuse(context, err)
            return
        async for reply in self._answer(call, context):
            yield reply

    async def ListOpenAIModels(
        self, request: openai_pb2.ListOpenAIModelsRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """GET /v1/models: every served model name and alias, in OpenAI's list format (or
        Anthropic's, for an Anthropic client)."""
        if anthropic_models.wants_anthropic(_headers(context)):
            return http_body(JSON, anthropic_models.model_list(list(self._by_name)))
        data = [_model_object(name) for name in self._by_name]
        return http_body(JSON, json.dumps({"object": "list", "data": data}).encode())

    async def GetModel(
        self, request: openai_pb2.GetModelRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """GET /v1/models/{model}, in OpenAI's shape (or Anthropic's, for an Anthropic client)."""
        anthropic = anthropic_models.wants_anthropic(_headers(context))
        if request.model not in self._by_name:
            api = MESSAGES_API if anthropic else None
            return await refuse(context, ModelNotFoundError(request.model), api)
        found = (
            anthropic_models.model_object(request.model)
            if anthropic
            else _model_object(request.model)
        )
        return http_body(JSON, json.dumps(found).encode())

    def cache_tenant(self, tenant: str) -> str | None:
        """Whose entries a request of tenant reads and writes: tenant itself under cache.scope
        tenant, None (shared entries) under scope global."""
        return tenant if self._settings.cache.scope == "tenant" else None

    async def warm(self, kind: str, raw: bytes, tenant: str | None = None) -> bool:
        """Answer one request and cache it whatever its sampling; False if already cached.

        tenant is whose entry it becomes (cache_tenant), and whose usage it counts as.
        Raises RouterError when the request is invalid or no provider answers.
        """
        if self._cache is None:
            raise RouterError("The cache is disabled.")
        body = parse_chat_request(raw) if kind == "chat" else parse_embeddings_request(raw)
        body.pop("stream", None)
        body.pop("stream_options", None)
        headers = WARMING_HEADERS if tenant is None else {**WARMING_HEADERS, TENANT_HEADER: tenant}
        call = self._prepare(kind, body, headers)
        if await self._cache.get(call.digest) is not None:
            return False
        flight, _ = self._flights.join(call.digest, lambda f: self._produce(call, f))
        flight.attach()
        try:
            await flight.wait()
        finally:
            flight.detach()
        if flight.error is not None:
            raise as_router_error(flight.error)
        return True

    # --- request flow ----------------------------------------------------------------------

    async def answer_translated(
        self, api: InboundApi, raw: bytes, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        """Answer a request of another inbound API as a chat completion (apis/base.py)."""
        headers = _headers(context)
        try:
            translation = api.start(raw, headers)
            await translation.load()
            call = self._prepare("chat", translation.chat_body, headers, api, translation)
        except RouterError as err:
            yield await refuse(context, err, api)
            return
        async for reply in self._answer(call, context):
            yield reply
        await translation.save()

    async def _stored(
        self,
        context: Context,
        response_id: str,
        operation: Callable[[ResponseStorage, str, str], Awaitable[bytes]],
    ) -> httpbody_pb2.HttpBody:
        """A retrieval or deletion of a stored response, as the caller's tenant."""
        try:
            storage = self._responses.storage
            if storage is None:
                raise ResponseNotFoundError(response_id, None)  # nothing is ever stored
            tenant = _headers(context).get(TENANT_HEADER, "")
            return http_body(JSON, await operation(storage, response_id, tenant))
        except RouterError as err:
            return await refuse(context, err)

    def _prepare(
        self,
        kind: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        api: InboundApi | None = None,
        translation: Translation | None = None,
    ) -> PreparedRequest:
        model = self._by_name.get(body["model"])
        if model is None:
            raise ModelNotFoundError(body["model"])
        decision = policy.decide(kind, body, headers, self._settings.cache, model.cache_ttl_s)
        # Aliases share their model's cache entries. A request the cache leaves alone needs no
        # key, and computing one (normalizing the body) is not free.
        cached = decision.lookup or decision.store
        tenant = self.cache_tenant(headers.get(TENANT_HEADER, ""))
        digest = keys.cache_key(kind, {**body, "model": model.name}, tenant) if cached else ""
        return PreparedRequest(
            kind,
            body,
            model,
            decision,
            digest,
            tenant,
            _identity(headers),
            headers,
            api,
            translation,
        )

    async def _answer(
        self, call: PreparedRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        if self._cache is not None and call.decision.lookup:
            with tracer.start_as_current_span("cache lookup") as span:
                hit = await self._cache.get(call.digest)
                span.set_attribute("llmproxy.cache.hit", hit is not None)
            if hit is not None:
                self._count_hit(call, hit)
                self._reconcile(call, 0)  # answered without a provider token
                async for reply in replay(call, hit, context):
                    yield reply
                return
        if call.decision.store:
            flight, leader = self._flights.join(call.digest, lambda f: self._produce(call, f))
        else:
            flight, leader = Flight(lambda f: self._produce(call, f)), True
        result = "MISS" if call.decision.lookup else "BYPASS"
        if not leader:
            result = "HIT"  # an identical request is in flight: share its answer
            self._stats.count(call.model.name, "hits")
            self._reconcile(call, 0)
        else:
            self._stats.count(call.model.name, "misses" if call.decision.lookup else "bypasses")
        async for reply in relay(call, flight, context, result, self._settings.stream_keepalive_s):
            yield reply


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llmproxy"}
