"""Control calls from tests to a running stack: as its admin, or generically from the protos.

`control_channel` presents the stack's admin token on every call. Tests that go over every
control RPC (the access table, the secret scan) find the RPCs from the generated descriptors
(`control_methods`), call each with a request built from its descriptor and a credential of
their choosing (`call`), and get back the status and message, never an exception.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import MethodDescriptor
from google.protobuf.message import Message

from llmproxy._gen.authz.v1 import authz_pb2, authz_pb2_grpc
from llmproxy.common.access import Role, Rule, our_rpcs, path_of, rule_for
from llmproxy.common.contract import SERVICES
from llmproxy.common.credentials import bearer_metadata
from llmproxy.config import StackConfig
from llmproxy.devstack.stack import Stack


def admin_token(stack: Stack) -> str:
    """The bootstrap admin token the stack's services were started with."""
    return stack.environ[stack.config.control.admin_token_env]


def service_token(stack: Stack) -> str:
    """The service token the stack's services present to each other."""
    return stack.environ[stack.config.control.service_token_env]


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


# --- Every control RPC, called generically -----------------------------------------------

CHAOS_AGENT = "llmproxy.fault.v1.ChaosAgentService"  # every service serves it on its own port
CALL_TIMEOUT_S = 10.0


def rule_of(method: MethodDescriptor) -> Rule:
    """The method's access rule; every RPC of ours has one (tests/unit/common/test_access.py)."""
    rule = rule_for(path_of(method))
    assert rule is not None, f"{path_of(method)} has no access rule"
    return rule


def control_methods() -> list[MethodDescriptor]:
    """Every RPC of ours whose rule is not open, in the protos' order."""
    return [m for m in our_rpcs() if not rule_of(m).open]


def served_by(method: MethodDescriptor) -> tuple[str, ...]:
    """The services whose own port serves method: its package's, or all of them (chaos agent)."""
    if method.containing_service.full_name == CHAOS_AGENT:
        return SERVICES
    package = method.containing_service.file.package  # llmproxy.<service>.v1
    return (package.split(".")[1],)


def service_target(config: StackConfig, name: str) -> str:
    """host:port of a service's own gRPC port."""
    settings = getattr(config.services, name)
    return f"{settings.host}:{settings.grpc_port}"


def control_target(config: StackConfig) -> str:
    """host:port of Envoy's control listener."""
    return f"{config.envoy.host}:{config.envoy.control_port}"


@dataclass(frozen=True)
class Answer:
    """How a call ended: its status and the message that came with it."""

    code: grpc.StatusCode
    details: str

    def __str__(self) -> str:
        return f"{self.code.name}: {self.details[:160]}"


async def call(
    channel: grpc.aio.Channel,
    method: MethodDescriptor,
    token: str | None,
    request: Message | None = None,
    *,
    timeout_s: float = CALL_TIMEOUT_S,
) -> Answer:
    """Call method (with an empty request unless one is given) presenting token, or none.

    A server-streaming call ends after its first message, which counts as OK.
    """
    if request is None:
        request = message_factory.GetMessageClass(method.input_type)()
    output = message_factory.GetMessageClass(method.output_type)
    kwargs = {
        "request_serializer": lambda m: m.SerializeToString(),
        "response_deserializer": output.FromString,
    }
    metadata = bearer_metadata(token) if token else ()
    try:
        if method.server_streaming:
            stream = channel.unary_stream(path_of(method), **kwargs)(
                request, metadata=metadata, timeout=timeout_s
            )
            async for _ in stream:
                stream.cancel()
                break
        else:
            await channel.unary_unary(path_of(method), **kwargs)(
                request, metadata=metadata, timeout=timeout_s
            )
    except grpc.aio.AioRpcError as exc:
        return Answer(exc.code(), exc.details() or "")
    return Answer(grpc.StatusCode.OK, "")


@dataclass(frozen=True)
class IssuedToken:
    """A control token as CreateControlToken (or RotateControlToken) gave it."""

    token_id: str
    secret: str
    role: Role


async def create_control_token(
    channel: grpc.aio.Channel, admin_token: str, role: Role, name: str, **fields: object
) -> IssuedToken:
    """A new control token of role, created by the holder of admin_token."""
    reply = await authz_pb2_grpc.AuthzServiceStub(channel).CreateControlToken(
        authz_pb2.CreateControlTokenRequest(
            name=name,
            role=role.value,  # Role's values are the proto enum's
            **fields,  # type: ignore[arg-type]
        ),
        metadata=bearer_metadata(admin_token),
        timeout=CALL_TIMEOUT_S,
    )
    return IssuedToken(reply.token.token_id, reply.secret, role)


async def audit_records(
    channel: grpc.aio.Channel, token: str, **selection: str
) -> list[authz_pb2.AuditRecord]:
    """Every audit record the selection (key_id, service) picks, newest first, page by page."""
    stub = authz_pb2_grpc.AuthzServiceStub(channel)
    found: list[authz_pb2.AuditRecord] = []
    page_token = ""
    while True:
        page = await stub.ListAuditRecords(
            authz_pb2.ListAuditRecordsRequest(page_size=500, page_token=page_token, **selection),
            metadata=bearer_metadata(token),
            timeout=CALL_TIMEOUT_S,
        )
        found.extend(page.records)
        page_token = page.next_page_token
        if not page_token:
            return found
