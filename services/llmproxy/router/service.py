"""The router's OpenAI-compatible servicer: validation, cache, in-flight sharing, failover.

Every answer, error or not, is an OK gRPC response carrying HTTP bodies: client errors travel as
an OpenAI error body plus the x-llmproxy-status header, which Envoy's Lua filter turns into the
HTTP status (the transcoder would answer 200 for any OK response and replace the body of any
error status with its own).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from google.api import httpbody_pb2
from opentelemetry import trace
from prometheus_client import Counter

from llmproxy._gen.router.v1 import openai_pb2, openai_pb2_grpc
from llmproxy.common.contract import (
    CACHE_RESULT_HEADER,
    KEY_ID_HEADER,
    PROVIDER_HEADER,
    STATUS_HEADER,
    TENANT_HEADER,
    USER_HEADER,
)
from llmproxy.common.grpc_types import Context
from llmproxy.common.usage import Identity, Usage, UsageStore
from llmproxy.router import accounting
from llmproxy.router.apis import anthropic_models
from llmproxy.router.apis.base import InboundApi, Translation
from llmproxy.router.apis.messages import MessagesApi
from llmproxy.router.apis.responses import ResponsesApi
from llmproxy.router.apis.responses_storage import ResponseNotFoundError, ResponseStorage
from llmproxy.router.cache import keys, policy
from llmproxy.router.cache.flights import Flight, Flights
from llmproxy.router.cache.metrics import (
    CACHE_BYTES_SERVED,
    CACHE_SAVED_TOKENS,
    CACHE_SAVED_USD,
)
from llmproxy.router.cache.stats import CacheStats
from llmproxy.router.cache.store import CachedAnswer, ResponseCache
from llmproxy.router.calls import Call, Failover
from llmproxy.router.errors import ModelNotFoundError, ProviderError, RouterError
from llmproxy.router.pricing import NO_TOKENS
from llmproxy.router.providers import ProviderCallError, ProviderClient, sse
from llmproxy.router.requests import (
    parse_chat_request,
    parse_completions_request,
    parse_embeddings_request,
)
from llmproxy.router.settings import ModelSettings, RouterSettings
from llmproxy.router.stored_responses import ResponseStore
from llmproxy.router.usage_metrics import USAGE_METRICS

log = logging.getLogger(__name__)
# No-op unless the process configured tracing (llmproxy.common.tracing).
tracer = trace.get_tracer(__name__)

USAGE_ERRORS = Counter(
    "llmproxy_usage_record_errors_total", "Calls whose usage could not be recorded."
)

JSON = "application/json"
SSE = "text/event-stream"
KEEPALIVE = b": keepalive\n\n"
# What the router records usage under, from the headers authz set.
USAGE_IDENTITY = (TENANT_HEADER, USER_HEADER, KEY_ID_HEADER)
MESSAGES_API = MessagesApi()
# Warming caches every request it is given, sampled or not, under its own identity.
WARMING_HEADERS = {policy.CACHE_HEADER: "force", **dict.fromkeys(USAGE_IDENTITY, "warming")}


def _http_body(content_type: str, data: bytes) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


def _headers(context: Context) -> dict[str, str]:
    return {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}


def _identity(headers: Mapping[str, str]) -> Identity:
    tenant, user, key_id = (headers.get(h, "unknown") for h in USAGE_IDENTITY)
    return Identity(tenant=tenant, user=user, key_id=key_id)


def _error_metadata(err: RouterError) -> tuple[tuple[str, str], ...]:
    metadata = [(STATUS_HEADER, str(err.status))]
    retry_after = getattr(err, "retry_after_s", None)
    if retry_after is not None:
        metadata.append(("retry-after", str(max(1, round(retry_after)))))
    return tuple(metadata)


def _error_event(err: RouterError) -> bytes:
    return sse.encode({"error": {"message": err.message, "type": "upstream_error", "code": None}})


def _stream_error(err: BaseException) -> RouterError:
    if isinstance(err, RouterError):
        return err
    return ProviderError("The provider stream broke.")


@dataclass(frozen=True)
class _Request:
    """One validated request and what the cache does with it."""

    kind: str  # "chat", "completions" (legacy) or "embeddings"
    body: dict[str, Any]
    model: ModelSettings
    decision: policy.CacheDecision
    digest: str  # the cache key; empty when the cache neither looks up nor stores
    cache_tenant: str | None  # whose cache entry it is; None when every tenant shares it
    identity: Identity
    headers: Mapping[str, str]
    api: InboundApi | None = None  # None for OpenAI's own APIs (chat, completions, embeddings)
    translation: Translation | None = None

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))

    @property
    def wants_usage(self) -> bool:
        options = self.body.get("stream_options")
        return isinstance(options, dict) and bool(options.get("include_usage"))


class TokenReconciler(Protocol):
    """The rate limiter's reconciliation of token reservations (router.reconcile_batch)."""

    def reconcile_soon(self, headers: Mapping[str, str], actual_tokens: int) -> None:
        """Replace the request's reserved token estimate with the tokens it used, soon."""


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
        self._usage = usage
        self._reconciler = reconciler
        self._stats = stats or CacheStats()
        self._failover = failover or Failover(clients, settings.failover)
        self._flights = Flights()
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
            yield await self._refuse(context, err)
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
            return await self._refuse(context, err)
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
            yield await self._refuse(context, err)
            return
        async for reply in self._answer(call, context):
            yield reply

    async def ListOpenAIModels(
        self, request: openai_pb2.ListOpenAIModelsRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """GET /v1/models: every served model name and alias, in OpenAI's list format (or
        Anthropic's, for an Anthropic client)."""
        if anthropic_models.wants_anthropic(_headers(context)):
            return _http_body(JSON, anthropic_models.model_list(list(self._by_name)))
        data = [_model_object(name) for name in self._by_name]
        return _http_body(JSON, json.dumps({"object": "list", "data": data}).encode())

    async def GetModel(
        self, request: openai_pb2.GetModelRequest, context: Context
    ) -> httpbody_pb2.HttpBody:
        """GET /v1/models/{model}, in OpenAI's shape (or Anthropic's, for an Anthropic client)."""
        anthropic = anthropic_models.wants_anthropic(_headers(context))
        if request.model not in self._by_name:
            api = MESSAGES_API if anthropic else None
            return await self._refuse(context, ModelNotFoundError(request.model), api)
        found = (
            anthropic_models.model_object(request.model)
            if anthropic
            else _model_object(request.model)
        )
        return _http_body(JSON, json.dumps(found).encode())

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
            raise _as_router_error(flight.error)
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
            yield await self._refuse(context, err, api)
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
            return _http_body(JSON, await operation(storage, response_id, tenant))
        except RouterError as err:
            return await self._refuse(context, err)

    def _prepare(
        self,
        kind: str,
        body: dict[str, Any],
        headers: Mapping[str, str],
        api: InboundApi | None = None,
        translation: Translation | None = None,
    ) -> _Request:
        model = self._by_name.get(body["model"])
        if model is None:
            raise ModelNotFoundError(body["model"])
        decision = policy.decide(kind, body, headers, self._settings.cache, model.cache_ttl_s)
        # Aliases share their model's cache entries. A request the cache leaves alone needs no
        # key, and computing one (normalizing the body) is not free.
        cached = decision.lookup or decision.store
        tenant = self.cache_tenant(headers.get(TENANT_HEADER, ""))
        digest = keys.cache_key(kind, {**body, "model": model.name}, tenant) if cached else ""
        return _Request(
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

    async def _refuse(
        self, context: Context, err: RouterError, api: InboundApi | None = None
    ) -> httpbody_pb2.HttpBody:
        log.info("request refused", extra={"status": err.status, "reason": err.message})
        await context.send_initial_metadata(_error_metadata(err))
        return _http_body(JSON, err.body() if api is None else api.error_body(err))

    async def _answer(
        self, call: _Request, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        if self._cache is not None and call.decision.lookup:
            with tracer.start_as_current_span("cache lookup") as span:
                hit = await self._cache.get(call.digest)
                span.set_attribute("llmproxy.cache.hit", hit is not None)
            if hit is not None:
                self._count_hit(call, hit)
                self._reconcile(call, 0)  # answered without a provider token
                async for reply in self._replay(call, hit, context):
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
        async for reply in self._relay(call, flight, context, result):
            yield reply

    async def _produce(self, call: _Request, flight: Flight) -> None:
        """The provider call of a flight: chunks into the flight, then usage and cache."""
        started = time.perf_counter()
        model = call.model
        if call.stream:
            provider, events = await self._failover.run(
                model.targets,
                call.body,
                _STREAM_CALLS[call.kind],
                model.routing,
                hold=_released_at_end,
            )
            flight.provider = provider
            async for event in events:
                flight.append(event)
        else:
            provider, answer = await self._failover.run(
                model.targets, call.body, _ANSWER_CALLS[call.kind], model.routing
            )
            flight.provider = provider
            flight.append(answer)
        flight.finish()
        await self._settle(call, flight, provider, time.perf_counter() - started)

    async def _settle(self, call: _Request, flight: Flight, provider: str, seconds: float) -> None:
        tokens = (
            accounting.stream_usage(flight.chunks)
            if call.stream
            else accounting.answer_usage(flight.chunks[0])
        ) or NO_TOKENS
        # One price for spend, budgets, metrics and the cache's savings: the answering target's.
        cost = call.model.prices(provider).cost_usd(tokens)
        log.info(
            "answered",
            extra={
                "model": call.model.name,
                "provider": provider,
                "stream": call.stream,
                "prompt_tokens": tokens.prompt,
                "cached_tokens": tokens.cached,
                "completion_tokens": tokens.completion,
                "cost_usd": cost,
                "seconds": round(seconds, 4),
            },
        )
        USAGE_METRICS.observe(
            call.identity.tenant,
            call.model.name,
            tokens.prompt,
            tokens.completion,
            cost,
            cached_tokens=tokens.cached,
        )
        if self._usage is not None:
            try:
                usage = Usage(tokens.prompt, tokens.completion, cost)
                await self._usage.record(call.identity, call.model.name, usage)
            except Exception as exc:  # accounting trouble must not fail the answer
                USAGE_ERRORS.inc()
                log.warning("usage not recorded", extra={"error": type(exc).__name__})
        self._reconcile(call, tokens.total)
        body = b"".join(flight.chunks)
        if (
            self._cache is not None
            and call.decision.store
            and len(body) <= self._settings.cache.max_entry_bytes
        ):
            answer = CachedAnswer(
                SSE if call.stream else JSON,
                body,
                call.model.name,
                tokens.prompt,
                tokens.completion,
                cost,
                tenant=call.cache_tenant or "",
            )
            await self._cache.put(call.digest, answer, call.decision.ttl_s, call.decision.tags)

    def _reconcile(self, call: _Request, actual_tokens: int) -> None:
        """Correct the rate limiter's token reservation, in the next batch (never raises)."""
        if self._reconciler is not None:
            self._reconciler.reconcile_soon(call.headers, actual_tokens)

    # --- replies ---------------------------------------------------------------------------

    def _count_hit(self, call: _Request, hit: CachedAnswer) -> None:
        name = call.model.name
        self._stats.count(name, "hits")
        self._stats.count(name, "bytes_served", len(hit.body))
        self._stats.count(name, "saved_tokens", hit.saved_tokens)
        self._stats.count(name, "saved_usd", hit.cost_usd)
        CACHE_BYTES_SERVED.labels(name).inc(len(hit.body))
        CACHE_SAVED_TOKENS.labels(name).inc(hit.saved_tokens)
        CACHE_SAVED_USD.labels(name).inc(hit.cost_usd)

    def _visible(self, call: _Request, event: bytes) -> bool:
        # The router always asks providers for usage; clients see it only if they asked.
        return call.wants_usage or not accounting.is_usage_only(event)

    async def _replay(
        self, call: _Request, hit: CachedAnswer, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        await context.send_initial_metadata(((CACHE_RESULT_HEADER, "HIT"),))
        if hit.content_type != SSE:
            yield _http_body(hit.content_type, _translated(call, hit.body))
            return
        # A cached stream is all here: one message (see _relay_attached).
        events = [e + b"\n\n" for e in hit.body.split(b"\n\n") if e]
        visible = b"".join(e for e in events if self._visible(call, e))
        yield _http_body(SSE, _translated(call, visible))

    async def _relay(
        self, call: _Request, flight: Flight, context: Context, result: str
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        flight.attach()
        try:
            async for reply in self._relay_attached(call, flight, context, result):
                yield reply
        finally:
            flight.detach()

    async def _relay_attached(
        self, call: _Request, flight: Flight, context: Context, result: str
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        headers_sent = False
        if call.stream:
            # A slow model's first token may take long: keep the connection visibly alive.
            while not await flight.wait_first(self._settings.stream_keepalive_s):
                if not headers_sent:
                    await context.send_initial_metadata(((CACHE_RESULT_HEADER, result),))
                    headers_sent = True
                yield _http_body(SSE, KEEPALIVE)
        else:
            await flight.wait_first()
        if not flight.chunks and flight.error is not None:
            err = _as_router_error(flight.error)
            if headers_sent:
                yield _http_body(SSE, _error_event_of(call, err))
            else:
                yield await self._refuse(context, err, call.api)
            return
        if not headers_sent:
            metadata = [(CACHE_RESULT_HEADER, result)]
            if flight.provider:
                metadata.append((PROVIDER_HEADER, flight.provider))
            await context.send_initial_metadata(tuple(metadata))
        content_type = SSE if call.stream else JSON
        try:
            # Events that arrived together leave together: each gRPC message costs the router
            # and Envoy CPU, and a burst joined into one is never later for the client.
            async for batch in flight.read_batches():
                visible = [c for c in batch if self._visible(call, c)] if call.stream else batch
                data = _translated(call, b"".join(visible)) if visible else b""
                if data:
                    yield _http_body(content_type, data)
        except (ProviderCallError, RouterError, ConnectionAbortedError) as err:
            # Headers are gone already: tell the client in the stream, as OpenAI does.
            log.warning("stream broke", extra={"provider": flight.provider, "reason": str(err)})
            yield _http_body(SSE, _error_event_of(call, _stream_error(err)))


# The provider operation of each kind of request, whole or streamed (embeddings never stream).
_ANSWER_CALLS: Mapping[str, Call[bytes]] = {
    "chat": lambda c, b: c.chat(b),
    "completions": lambda c, b: c.completions(b),
    "embeddings": lambda c, b: c.embeddings(b),
}
_STREAM_CALLS: Mapping[str, Call[AsyncIterator[bytes]]] = {
    "chat": lambda c, b: c.open_chat_stream(b),
    "completions": lambda c, b: c.open_completions_stream(b),
}


async def _released_at_end(
    events: AsyncIterator[bytes], release: Callable[[], None]
) -> AsyncIterator[bytes]:
    """events, then release(): a stream's call stays in flight until it ends or is cancelled."""
    try:
        async for event in events:
            yield event
    finally:
        release()


def _translated(call: _Request, data: bytes) -> bytes:
    """data (OpenAI JSON, or whole SSE events) in the shape of the request's API."""
    if call.translation is None:
        return data
    return call.translation.events(data) if call.stream else call.translation.answer(data)


def _error_event_of(call: _Request, err: RouterError) -> bytes:
    if call.translation is None:
        return _error_event(err)
    return call.translation.error_event(err)


def _as_router_error(error: BaseException) -> RouterError:
    if isinstance(error, RouterError):
        return error
    log.error("provider call failed unexpectedly", exc_info=error)
    return ProviderError("The provider call failed.", 502)


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "llmproxy"}
