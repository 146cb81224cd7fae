"""What a client receives: refusals, replays of cached answers, and relays of a flight.

A flight is relayed as it arrives: keep-alives while a stream's first token is awaited, events
that arrived together in one message, usage chunks only for clients that asked, everything in
the shape of the request's API, and a broken stream told as an error event.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

from google.api import httpbody_pb2

from llmproxy.common.contract import CACHE_RESULT_HEADER, PROVIDER_HEADER, STATUS_HEADER
from llmproxy.common.grpc_types import Context
from llmproxy.router.apis.base import InboundApi
from llmproxy.router.cache.flights import Flight
from llmproxy.router.cache.store import CachedAnswer
from llmproxy.router.errors import ProviderError, RouterError
from llmproxy.router.prepared import JSON, SSE, PreparedRequest
from llmproxy.router.providers import ProviderCallError

log = logging.getLogger(__name__)

KEEPALIVE = b": keepalive\n\n"


def http_body(content_type: str, data: bytes) -> httpbody_pb2.HttpBody:
    """One reply message: data with its content type."""
    return httpbody_pb2.HttpBody(content_type=content_type, data=data)


async def refuse(
    context: Context, err: RouterError, api: InboundApi | None = None
) -> httpbody_pb2.HttpBody:
    """The error answer to a request: its status in the headers, its body in the API's shape."""
    log.info("request refused", extra={"status": err.status, "reason": err.message})
    await context.send_initial_metadata(_error_metadata(err))
    return http_body(JSON, err.body() if api is None else api.error_body(err))


def as_router_error(error: BaseException) -> RouterError:
    """The error a failed flight answers with; an unexpected one is logged and becomes a 502."""
    if isinstance(error, RouterError):
        return error
    log.error("provider call failed unexpectedly", exc_info=error)
    return ProviderError("The provider call failed.", 502)


async def replay(
    call: PreparedRequest, hit: CachedAnswer, context: Context
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """A cached answer, as the client asked for it."""
    await context.send_initial_metadata(((CACHE_RESULT_HEADER, "HIT"),))
    if hit.content_type != SSE:
        yield http_body(hit.content_type, call.translated(hit.body))
        return
    # A cached stream is all here: one message (see _relay_attached).
    events = [e + b"\n\n" for e in hit.body.split(b"\n\n") if e]
    visible = b"".join(e for e in events if call.visible(e))
    yield http_body(SSE, call.translated(visible))


async def relay(
    call: PreparedRequest, flight: Flight, context: Context, result: str, keepalive_s: float
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """The flight's answer as it arrives, subscribed to it until the client has it or leaves.

    result is the cache result header's value; keepalive_s the wait before each keep-alive.
    """
    flight.attach()
    try:
        async for reply in _relay_attached(call, flight, context, result, keepalive_s):
            yield reply
    finally:
        flight.detach()


async def _relay_attached(
    call: PreparedRequest, flight: Flight, context: Context, result: str, keepalive_s: float
) -> AsyncIterator[httpbody_pb2.HttpBody]:
    headers_sent = False
    if call.stream:
        # A slow model's first token may take long: keep the connection visibly alive.
        while not await flight.wait_first(keepalive_s):
            if not headers_sent:
                await context.send_initial_metadata(((CACHE_RESULT_HEADER, result),))
                headers_sent = True
            yield http_body(SSE, KEEPALIVE)
    else:
        await flight.wait_first()
    if not flight.chunks and flight.error is not None:
        err = as_router_error(flight.error)
        if headers_sent:
            yield http_body(SSE, call.error_event(err))
        else:
            yield await refuse(context, err, call.api)
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
            visible = [c for c in batch if call.visible(c)] if call.stream else batch
            data = call.translated(b"".join(visible)) if visible else b""
            if data:
                yield http_body(content_type, data)
    except (ProviderCallError, RouterError, ConnectionAbortedError) as err:
        # Headers are gone already: tell the client in the stream, as OpenAI does.
        log.warning("stream broke", extra={"provider": flight.provider, "reason": str(err)})
        yield http_body(SSE, call.error_event(_stream_error(err)))


def _error_metadata(err: RouterError) -> tuple[tuple[str, str], ...]:
    metadata = [(STATUS_HEADER, str(err.status))]
    retry_after = getattr(err, "retry_after_s", None)
    if retry_after is not None:
        metadata.append(("retry-after", str(max(1, round(retry_after)))))
    return tuple(metadata)


def _stream_error(err: BaseException) -> RouterError:
    if isinstance(err, RouterError):
        return err
    return ProviderError("The provider stream broke.")
