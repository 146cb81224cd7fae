"""The shape every server interceptor of ours shares: wrap a method's handler once, reuse it.

A subclass says how to wrap a unary and a server-streaming behaviour (or leaves a method
alone by returning None); the wrapped handler is built on a method's first call and reused,
not rebuilt on every call (the rate limiter's decisions are hot enough for that to show).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from llmproxy.common.grpc_types import Context

if TYPE_CHECKING:  # grpc's handler type is generic only in its stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


def status_name(context: Context) -> str:
    """The name of the status code a handler set on context; OK when it set none."""
    code = context.code()
    if code is None:
        return "OK"
    return str(code.name) if isinstance(code, grpc.StatusCode) else str(code)


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """Wraps the behaviour of unary-unary and unary-stream handlers, once per method."""

    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Any, Handler]] = {}

    def wrap_unary(self, behavior: Any, method: str) -> Any | None:
        """A wrapper of a unary behaviour, or None to leave the method alone."""
        return None

    def wrap_stream(self, behavior: Any, method: str) -> Any | None:
        """A wrapper of a server-streaming behaviour, or None to leave the method alone."""
        return None

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Handler, method: str) -> Handler:
        if handler.unary_unary:
            unary = self.wrap_unary(handler.unary_unary, method)
            if unary is not None:
                return grpc.unary_unary_rpc_method_handler(
                    unary,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        elif handler.unary_stream:
            stream = self.wrap_stream(handler.unary_stream, method)
            if stream is not None:
                return grpc.unary_stream_rpc_method_handler(
                    stream,
                    request_deserializer=handler.request_deserializer,
                    response_serializer=handler.response_serializer,
                )
        return handler
