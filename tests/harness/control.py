"""Control calls from tests to a running stack: every one presents the stack's admin token."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import grpc

from llmproxy.common.credentials import bearer_metadata
from llmproxy.devstack.stack import Stack


def admin_token(stack: Stack) -> str:
    """The bootstrap admin token the stack's services were started with."""
    return stack.environ[stack.config.control.admin_token_env]


def admin_header(stack: Stack) -> str:
    """The admin token as grpcurl's -H takes it."""
    return f"authorization: Bearer {admin_token(stack)}"


def service_header(stack: Stack) -> str:
    """The stack's service token as grpcurl's -H takes it: for the RPCs only services call."""
    return f"authorization: Bearer {stack.environ[stack.config.control.service_token_env]}"


class _Details(
    NamedTuple(
        "_Details",
        [
            ("method", str),
            ("timeout", Any),
            ("metadata", Any),
            ("credentials", Any),
            ("wait_for_ready", Any),
            ("compression", Any),
        ],
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    """Call details with other metadata (grpc's own class cannot be built)."""


class _WithMetadata(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    def __init__(self, metadata: tuple[tuple[str, str], ...]) -> None:
        self._metadata = metadata

    def _details(self, details: Any) -> Any:
        return _Details(
            details.method,
            details.timeout,
            (*(details.metadata or ()), *self._metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        return continuation(self._details(details), request)


def admin_channel_sync(target: str, token: str) -> grpc.Channel:
    """A blocking channel to target whose every call presents token."""
    return grpc.intercept_channel(
        grpc.insecure_channel(target), _WithMetadata(bearer_metadata(token))
    )


def control_channel(stack: Stack) -> grpc.Channel:
    """A blocking channel to Envoy's control listener, as the stack's admin."""
    envoy = stack.config.envoy
    return admin_channel_sync(f"{envoy.host}:{envoy.control_port}", admin_token(stack))
